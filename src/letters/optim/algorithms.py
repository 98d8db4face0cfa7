"""The optimizers a config may name (``OPTIMIZERS``), what each takes, and each one's update
of a whole stack at once on the general path.

Each update follows torch/optim/<kind>.py's ``_single_tensor_<kind>`` op for op, on
``UpdateStep``'s masked coefficients and gradients; comments give torch's line where ours
differs in form.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from letters.optim.update_step import UpdateStep


def momentum_sgd_(
    params: list[Tensor],
    buffers: list[Tensor],
    grads: list[Tensor],
    momentum: list[Tensor],
    neg_lr: list[Tensor],
) -> None:
    """SGD with momentum, in place, with per-member coefficients ([K, 1, ...] views):
    ``buf = buf * momentum + grad; param += -lr * buf``.

    torch: buf = grad.clone() on the first step, then buf.mul_(momentum).add_(grad); our
    buffers start at 0, and 0 * momentum + grad == grad. A member with momentum 0 (no buffer in
    torch) gets buf * 0 + grad == grad. torch's param.add_(buf, alpha=-lr) rounds as addcmul.
    The general path and the fast SGD path both step by this.
    """
    torch._foreach_mul_(buffers, momentum)
    torch._foreach_add_(buffers, grads)
    torch._foreach_addcmul_(params, buffers, neg_lr)


def _sgd_update(s: UpdateStep) -> None:
    c = s.coefficients(momentum=(s.momentum, 1.0), neg_lr=(-s.lr, 0.0))
    grads = s.gradients(in_place=True)
    momentum_sgd_(s.params, s.state_list("momentum_buffer"), grads, c["momentum"], c["neg_lr"])


def _adam_update(s: UpdateStep, *, decoupled: bool) -> None:
    beta1 = s.momentum  # the setting's beta1, or the schedule's cycled one
    beta2 = s.settings["betas"][1]
    decays = s.members.decays
    # The bias corrections, in float64 like torch's Python floats, one row per parameter.
    step = s.step_counts()
    bias_correction1 = 1 - torch.pow(beta1, step)
    bias_correction2 = 1 - torch.pow(beta2, step)
    rows: dict[str, tuple[Tensor | float, float]] = {
        "lerp_weight": (1 - beta1, 0.0),
        "beta2": (beta2, 1.0),
        "neg_step_size": (-s.lr / bias_correction1, 0.0),  # torch: lr / bias_correction1
        "bias_correction2_sqrt": (bias_correction2.sqrt(), 1.0),  # torch: ** 0.5
        **s.frozen_guard(),
    }
    if decoupled and decays:
        rows["decay"] = (1 - s.lr * s.members.weight_decay64, 1.0)
    c = s.coefficients(**rows)
    if decoupled and decays:
        torch._foreach_mul_(s.params, c["decay"])  # torch: param.mul_(1 - lr * weight_decay)
    grads = s.gradients(weight_decay=not decoupled, in_place=True)
    exp_avgs = s.state_list("exp_avg")
    exp_avg_sqs = s.state_list("exp_avg_sq")
    torch._foreach_lerp_(exp_avgs, grads, c["lerp_weight"])
    torch._foreach_mul_(exp_avg_sqs, c["beta2"])
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    # torch: denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    denominators = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denominators, c["bias_correction2_sqrt"])
    torch._foreach_add_(denominators, s.settings["eps"])
    s.guard(denominators, c)
    # torch: param.addcdiv_(exp_avg, denom, value=-step_size), which computes
    # param + (-step_size * exp_avg) / denom: the same two roundings as here.
    numerators = torch._foreach_mul(exp_avgs, c["neg_step_size"])
    torch._foreach_addcdiv_(s.params, numerators, denominators)


def _adagrad_update(s: UpdateStep) -> None:
    step = s.step_counts()
    # torch: clr = lr / (1 + (step - 1) * lr_decay)
    clr = s.lr / (1 + (step - 1) * s.settings["lr_decay"])
    c = s.coefficients(neg_clr=(-clr, 0.0), **s.frozen_guard())
    grads = s.gradients()
    sums = s.state_list("sum")
    torch._foreach_addcmul_(sums, grads, grads, value=1)
    std = torch._foreach_sqrt(sums)
    torch._foreach_add_(std, s.settings["eps"])
    s.guard(std, c)
    # torch: param.addcdiv_(grad, std, value=-clr) == param + (-clr * grad) / std
    torch._foreach_mul_(grads, c["neg_clr"])
    torch._foreach_addcdiv_(s.params, grads, std)


def _rmsprop_update(s: UpdateStep) -> None:
    alpha = s.settings["alpha"]
    members = s.members
    cycled = not isinstance(s.momentum, Tensor)  # the schedule's momentum, > 0, for all
    plain = not cycled and not members.any_momentum  # no member has momentum
    mixed = not cycled and members.any_momentum and not members.all_momentum
    rows: dict[str, tuple[Tensor | float, float]] = {
        "alpha": (alpha, 1.0),
        "neg_lr": (-s.lr, 0.0),
        **s.frozen_guard(),
    }
    if not plain:
        rows["momentum"] = (s.momentum, 1.0)
    if mixed:
        with_momentum = members.momentum > 0
        rows["neg_lr"] = (torch.where(with_momentum, -s.lr, 0.0), 0.0)
        rows["neg_lr_plain"] = (torch.where(with_momentum, 0.0, -s.lr), 0.0)
    elif plain:
        rows["neg_lr_plain"] = rows.pop("neg_lr")
    c = s.coefficients(**rows)
    s.step_counts()
    grads = s.gradients()
    square_avgs = s.state_list("square_avg")
    torch._foreach_mul_(square_avgs, c["alpha"])
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
    avg = torch._foreach_sqrt(square_avgs)
    torch._foreach_add_(avg, s.settings["eps"])
    s.guard(avg, c)
    if not plain:
        # torch (momentum > 0): buf.mul_(momentum).addcdiv_(grad, avg); param.add_(buf, alpha=-lr)
        buffers = s.state_list("momentum_buffer")
        torch._foreach_mul_(buffers, c["momentum"])
        torch._foreach_addcdiv_(buffers, grads, avg)
        torch._foreach_addcmul_(s.params, buffers, c["neg_lr"])
    if plain or mixed:
        # torch (momentum 0): param.addcdiv_(grad, avg, value=-lr) == param + (-lr * grad) / avg.
        # In a stack mixing members with and without momentum each member gets its own
        # formula, the other one adding an exact 0; the momentum_buffer of a member without
        # momentum (torch keeps none) is then scratch: grad / avg of the last step.
        torch._foreach_mul_(grads, c["neg_lr_plain"])
        torch._foreach_addcdiv_(s.params, grads, avg)


def _adadelta_update(s: UpdateStep) -> None:
    rho = s.settings["rho"]
    eps = s.settings["eps"]
    c = s.coefficients(rho=(rho, 1.0), neg_lr=(-s.lr, 0.0), **s.frozen_guard())
    s.step_counts()
    grads = s.gradients(in_place=True)
    square_avgs = s.state_list("square_avg")
    acc_deltas = s.state_list("acc_delta")
    torch._foreach_mul_(square_avgs, c["rho"])
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)
    std = torch._foreach_add(square_avgs, eps)
    torch._foreach_sqrt_(std)
    s.guard(std, c)
    delta = torch._foreach_add(acc_deltas, eps)
    torch._foreach_sqrt_(delta)
    torch._foreach_div_(delta, std)
    torch._foreach_mul_(delta, grads)
    torch._foreach_mul_(acc_deltas, c["rho"])
    torch._foreach_addcmul_(acc_deltas, delta, delta, value=1 - rho)
    # torch: param.add_(delta, alpha=-lr)
    torch._foreach_addcmul_(s.params, delta, c["neg_lr"])


@dataclass(frozen=True, eq=False)
class OptimizerKind:
    """One optimizer a config may name: ``torch_name`` is its torch.optim class."""

    name: str  # as a config names it (optimizer=<name>)
    torch_name: str
    takes_momentum: bool  # whether the config's momentum is a setting of it (sgd, rmsprop)
    state_names: tuple[str, ...]  # its per-parameter state, as torch names it
    update: Callable[[UpdateStep], None]
    # The torch.optim arguments besides lr/momentum/weight_decay it takes, with torch's defaults.
    settings: Mapping[str, Any]
    # torch.optim arguments it accepts only at these (torch's default) values.
    fixed: Mapping[str, tuple[Any, ...]]
    # Whether its per-step coefficients depend on the step count (Adam's bias corrections,
    # Adagrad's lr decay); those that do not are built once when no schedule changes them.
    counts_steps: bool = True
    # The name of torch's fused kernel of the kind (torch._fused_sgd_, _fused_adam_,
    # _fused_adamw_), which the fused path calls once per member where it runs; None: none.
    fused: str | None = None

    @property
    def cycled(self) -> str | None:
        """What OneCycleLR(cycle_momentum=True) cycles: "momentum", "beta1" or None."""
        if self.takes_momentum:
            return "momentum"
        return "beta1" if "betas" in self.settings else None

    def initial_state(self, p: Tensor, settings: Mapping[str, Any]) -> dict[str, Tensor]:
        """A parameter's state before its first step: every tensor with the leading member
        dimension (step counters [K] float32, as torch's are float32 scalars)."""
        state = {}
        for name in self.state_names:
            if name == "step":
                state[name] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
            elif name == "sum":
                value = settings["initial_accumulator_value"]
                state[name] = torch.full_like(p, value, memory_format=torch.preserve_format)
            else:
                state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state


def _fixed(**extra: Any) -> Mapping[str, tuple[Any, ...]]:
    """torch arguments accepted only at these values (its defaults; False = None for foreach,
    fused): the others are a different algorithm or implementation."""
    fixed = {"maximize": (False,), "foreach": (None, False), "differentiable": (False,)}
    fixed.update(
        (key, values if isinstance(values, tuple) else (values,)) for key, values in extra.items()
    )
    return MappingProxyType(fixed)


OPTIMIZERS: dict[str, OptimizerKind] = {
    kind.name: kind
    for kind in (
        OptimizerKind(
            "sgd",
            "SGD",
            True,
            ("momentum_buffer",),
            _sgd_update,
            MappingProxyType({}),
            _fixed(dampening=0, nesterov=False, fused=(None, False)),
            counts_steps=False,
            fused="_fused_sgd_",
        ),
        OptimizerKind(
            "adam",
            "Adam",
            False,
            ("step", "exp_avg", "exp_avg_sq"),
            functools.partial(_adam_update, decoupled=False),
            MappingProxyType({"betas": (0.9, 0.999), "eps": 1e-8}),
            _fixed(
                amsgrad=False, capturable=False, fused=(None, False), decoupled_weight_decay=False
            ),
            fused="_fused_adam_",
        ),
        OptimizerKind(
            "adamw",
            "AdamW",
            False,
            ("step", "exp_avg", "exp_avg_sq"),
            functools.partial(_adam_update, decoupled=True),
            MappingProxyType({"betas": (0.9, 0.999), "eps": 1e-8}),
            _fixed(amsgrad=False, capturable=False, fused=(None, False)),
            fused="_fused_adamw_",
        ),
        OptimizerKind(
            "adagrad",
            "Adagrad",
            False,
            ("step", "sum"),
            _adagrad_update,
            MappingProxyType({"lr_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10}),
            _fixed(fused=(None, False)),
        ),
        OptimizerKind(
            "rmsprop",
            "RMSprop",
            True,
            ("step", "square_avg", "momentum_buffer"),
            _rmsprop_update,
            MappingProxyType({"alpha": 0.99, "eps": 1e-8}),
            _fixed(centered=False, capturable=False),
            counts_steps=False,
        ),
        OptimizerKind(
            "adadelta",
            "Adadelta",
            False,
            ("step", "square_avg", "acc_delta"),
            _adadelta_update,
            MappingProxyType({"rho": 0.9, "eps": 1e-6}),
            _fixed(capturable=False),
            counts_steps=False,
        ),
    )
}

# Shared settings' valid ranges, as torch.optim checks them.
_SETTING_CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {
    "eps": (lambda v: v >= 0, ">= 0"),
    "lr_decay": (lambda v: v >= 0, ">= 0"),
    "initial_accumulator_value": (lambda v: v >= 0, ">= 0"),
    "alpha": (lambda v: v >= 0, ">= 0"),
    "rho": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}


def _same(value: Any, accepted: Any) -> bool:
    if accepted is None or isinstance(accepted, bool):
        return value is accepted
    return not isinstance(value, bool) and value == accepted


def shared_settings(kind: OptimizerKind, given: Mapping[str, Any]) -> dict[str, Any]:
    """The kind's shared settings (those of all members): torch's defaults updated by
    ``given``, checked as torch.optim checks them; what it does not do is refused."""
    name = kind.name
    unknown = sorted(set(given) - set(kind.settings) - set(kind.fixed))
    if unknown:
        accepted = ", ".join([*kind.settings, *kind.fixed]) or "none"
        raise ValueError(
            f"optimizer {name!r} takes no setting {', '.join(unknown)} "
            f"(torch.optim.{kind.torch_name}'s settings here: {accepted})"
        )
    unsupported = sorted(
        f"{key}={value!r}"
        for key, value in given.items()
        if key in kind.fixed and not any(_same(value, accepted) for accepted in kind.fixed[key])
    )
    if unsupported:
        raise ValueError(
            f"StackedOptimizer does not support {', '.join(unsupported)} for {name!r}: "
            "amsgrad, nesterov, centered, maximize, dampening, foreach, fused, capturable and "
            "differentiable may only have torch's default values"
        )
    settings = {key: given.get(key, default) for key, default in kind.settings.items()}
    for key, value in settings.items():
        if key == "betas":
            try:
                betas = tuple(float(beta) for beta in value)
            except (TypeError, ValueError):
                betas = ()
            if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
                raise ValueError(f"betas={value!r} must be two numbers in [0, 1)")
            settings[key] = betas
            continue
        check, bounds = _SETTING_CHECKS[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not check(value):
            raise ValueError(f"{key}={value!r} must be a number {bounds}")
        settings[key] = float(value)
    return settings
