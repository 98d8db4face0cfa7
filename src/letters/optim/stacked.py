"""The optimizers a config may name, vectorised over a stack of K models trained at once.

Every parameter of a stack carries a leading member dimension K (a weight is ``[K, out, in]``,
a bias ``[K, out]``), and member k's slice is that member's tensor. ``StackedOptimizer``
updates all K members with one set of tensor ops per step; member k's update is, up to float
rounding, what ``torch.optim.<Kind>`` (its single-tensor implementation, torch 2.x) does for
that member alone with that member's lr, momentum and weight decay. Adam and AdamW instead
take torch's fused kernel where it runs (see "Fused Adam" below): member k's update is then
what ``torch.optim.<Kind>(fused=True)`` does for that member alone. Its learning-rate (and
momentum) schedule lives inside it: ``schedule_factors`` holds torch's OneCycleLR and
CosineAnnealingLR formulas once.

Per-member hyper-parameters are ``[K]`` tensors on the parameters' device, viewed as
``[K, 1, ...]`` to broadcast against a parameter; every per-parameter state tensor (step
counters included) has the leading K dimension, so that a member's slice of the state is its
state (``member_optimizer_state`` cuts a stack's state dict down to one member's).

Masking. ``StackedOptimizer.active`` (bool ``[K]``) freezes the members that are False: their
parameters and state do not change in ``step()``, even if their gradients hold NaN or inf,
and the active members' arithmetic is untouched by them. The mask costs one cheap op per
parameter plus a few ``[K]``-sized ones, and no host sync:

- the (weight-decayed) gradient of a frozen member is replaced by +0.0 with an integer
  multiplication of its bits by 1 (active) or 0 (frozen): a select, so NaN/inf cannot leak
  through (a float multiplication by 0 would let them), as fast as a float multiplication
  (``torch.where`` with a broadcast condition is several times slower on a CPU). Where the
  update only reads the gradient (sgd, adam and adamw off the fused path, adadelta) and there
  is no weight decay to add to it, this is done in place: ``step()`` leaves the frozen
  members' slices of ``p.grad`` +0.0 (the active members' are untouched);
- every decay factor of the state (momentum, beta2, alpha, rho) is ``where(active, factor,
  1)``, lerp's weight (Adam's 1 - beta1) and every step size ``where(active, value, 0)``, and
  step counters advance by ``active``. So a frozen member's state s becomes ``s * 1 + 0 = s``
  and its parameter ``p + 0 * u = p`` exactly;
- these per-member coefficients are ``[K]``-sized ``torch.where`` selects, not products with
  the mask, so that one that is inf/NaN for a member that never stepped (Adam's
  ``lr / (1 - beta1**0)``) is dropped;
- with ``eps == 0`` (torch allows it) a frozen member's denominator could be 0 (0/0 is NaN), so
  1 is added to it for the frozen members only (an extra op, only when eps == 0).

``step(losses=...)`` folds the usual ``active &= isfinite(losses)`` into the step.

Fused Adam. Adam and AdamW take ``_FusedAdam`` when torch has a fused kernel
(``torch._fused_adam_`` / ``torch._fused_adamw_``, what ``torch.optim.Adam(W)(fused=True)``
calls) that runs for the parameters' device and dtype (tried once on a one-element step; CPU
float16 to float64, CUDA, ...): one kernel call per member, on that member's slices of the
parameters, gradients, ``exp_avg``, ``exp_avg_sq`` and step counters (0-dim views of the
stack's tensors, so the state layout is the general path's), with the member's lr (this
step's scheduled one, a Python float computed on the host from the param group exactly as the
general path computes it in float64), beta1 (the schedule's cycled one under onecycle), its
weight decay, and its frozen flag as ``found_inf`` (a 0-dim float32 view on the device, 1.0
when the member is frozen). On ``found_inf == 1`` the kernel returns before touching anything,
on the device, so a frozen member's parameters, state and gradients stay bit-for-bit as they
are (even a non-finite state or eps == 0), and the step counters advance by ``active`` before
the calls, as torch's add-1-then-subtract-found_inf does, with no host sync.

A member of a stack gets the same kernel call on the same values as that member alone (a
stack of one, or torch's fused=True per member), hence bit-for-bit its results (given the
same number of CPU threads: the CPU kernel splits each tensor between them). The fused kernel
rounds differently from the single-tensor ops of the general path (one pass per element, its
own order of operations), by a few ulps: at most 1.5e-8 after 25 steps in the tests (torch
2.14, CPU). It costs K kernel calls per step where torch's fused=True makes one, and on a CPU
one parallel region per member and parameter. The fast path declines a step (the general
path, which keeps the same state, takes it) where a gradient is sparse or of another dtype, a
parameter, gradient or state tensor is not contiguous, or no parameter has a gradient; the
settings it could not do (amsgrad, maximize, capturable, differentiable) ``StackedOptimizer``
refuses anyway. ``StackedOptimizer.fused = False`` (a class attribute) turns it off for the
optimizers built, loaded or copied afterwards.

Per call. Unless a step hook is registered or a profiler runs, ``step()`` skips torch's
Optimizer.step wrapper (a profiler record and the hook loops), and ``zero_grad()`` torch's
profiler record. SGD without a schedule takes a fast path from its second step on
(``_FastSGD``): the same ops, with every list and coefficient prepared once; it holds while
the param group's list, the parameters' device and dtype stay, every parameter has a dense
gradient, and the state is replaced only through ``load_state_dict``.

An active member computes exactly what it would without the mask (the selects give it its own
values, and nothing else changes). On the general path the freeze is bit-for-bit as long as the
frozen member's state is finite, which it is when a member is frozen at its first non-finite
loss or gradient (a state already inf would give ``inf * 0`` = NaN).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor
from torch.optim import optimizer as _torch_optimizer

SCHEDULERS: tuple[str, ...] = ("none", "onecycle", "cosine")

# torch's OneCycleLR arguments that the "onecycle" schedule uses (the rest are torch's defaults).
ONECYCLE_PCT_START = 0.15
ONECYCLE_DIV_FACTOR = 25.0
ONECYCLE_FINAL_DIV_FACTOR = 1e4
ONECYCLE_MAX_MOMENTUM = 0.95
ONECYCLE_BASE_MOMENTUM = 0.85

# The keys of a param group that hold one value per member (member_optimizer_state slices them).
PER_MEMBER_KEYS: tuple[str, ...] = ("lr", "momentum", "weight_decay", "active")


def _annealing_cos(start: float, end: float, pct: float) -> float:
    """OneCycleLR._annealing_cos: from start (pct 0) to end (pct 1) along half a cosine."""
    cos_out = math.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


def schedule_factors(name: str, step: int, total_steps: int) -> tuple[float, float | None]:
    """(lr factor, cycled momentum or None) of the optimizer step ``step`` (0-based).

    A member's lr at that step is its lr times the factor. ``onecycle`` is torch's
    OneCycleLR(max_lr=lr, total_steps, pct_start=0.15) (div_factor 25, final_div_factor 1e4,
    cos anneal) and returns the momentum it cycles (0.95 -> 0.85 -> 0.95; the optimizer uses it
    as the momentum of sgd/rmsprop and beta1 of adam/adamw, and ignores it otherwise); like
    OneCycleLR it refuses a step past ``total_steps``. ``cosine`` is CosineAnnealingLR(
    T_max=total_steps, eta_min=0) in closed form; ``none`` is 1.
    """
    if name == "none":
        return 1.0, None
    if name == "cosine":
        return (1 + math.cos(math.pi * step / total_steps)) / 2, None
    if name != "onecycle":
        raise ValueError(f"schedule must be one of {list(SCHEDULERS)}, got {name!r}")
    if step > total_steps:
        raise ValueError(
            f"Tried to step {step} times. The specified number of total steps is {total_steps}"
        )
    initial = 1.0 / ONECYCLE_DIV_FACTOR
    phases = (  # (end_step, start_lr, end_lr, start_momentum, end_momentum), as OneCycleLR's
        (
            float(ONECYCLE_PCT_START * total_steps) - 1,
            initial,
            1.0,
            ONECYCLE_MAX_MOMENTUM,
            ONECYCLE_BASE_MOMENTUM,
        ),
        (
            total_steps - 1,
            1.0,
            initial / ONECYCLE_FINAL_DIV_FACTOR,
            ONECYCLE_BASE_MOMENTUM,
            ONECYCLE_MAX_MOMENTUM,
        ),
    )
    start_step = 0.0
    for i, (end_step, start_lr, end_lr, start_momentum, end_momentum) in enumerate(phases):
        if step <= end_step or i == len(phases) - 1:
            pct = (step - start_step) / (end_step - start_step)
            return (
                _annealing_cos(start_lr, end_lr, pct),
                _annealing_cos(start_momentum, end_momentum, pct),
            )
        start_step = end_step
    raise AssertionError("unreachable")


# The integer type of a float type's size, to mask floats bitwise.
_INT_OF_SIZE = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _member_views(values: Tensor, ndims: Sequence[int]) -> list[Tensor]:
    """A [K] tensor as one [K, 1, ...] view per parameter of these ndims (to broadcast)."""
    views = {n: values.view((-1,) + (1,) * (n - 1)) for n in set(ndims)}
    return [views[n] for n in ndims]


class _Workspace:
    """One step's per-member coefficients, masked, in the params' dtype: a persistent [R, K]
    tensor whose rows' [K, 1, ...] views (one per parameter) are built once.

    ``layout`` names the rows: (name, per_parameter, off); a per-parameter name has one row
    per parameter (its value differs between parameters, e.g. Adam's step size, which depends
    on the parameter's step count), another one row for all. ``off`` is the row's value for
    the frozen members.
    """

    def __init__(
        self, layout: tuple[tuple[str, bool, float], ...], ndims: list[int], like: Tensor
    ) -> None:
        members, count = like.shape[0], len(ndims)
        offs: list[float] = []
        self.views: dict[str, list[Tensor]] = {}
        rows = sum(count if per_parameter else 1 for _, per_parameter, _ in layout)
        self.values = torch.empty(rows, members, dtype=like.dtype, device=like.device)
        for name, per_parameter, off in layout:
            first = len(offs)
            if per_parameter:
                offs += [off] * count
                self.views[name] = [
                    self.values[first + i].view((-1,) + (1,) * (n - 1)) for i, n in enumerate(ndims)
                ]
            else:
                offs.append(off)
                self.views[name] = _member_views(self.values[first], ndims)
        # Filled on the device: no copy from the host (which would wait for the device).
        self.off = torch.empty((rows, 1), dtype=torch.float64, device=like.device)
        for row, off in enumerate(offs):
            self.off[row].fill_(off)

    def fill(self, active: Tensor, rows: list[Tensor]) -> None:
        """``rows`` (float64, [1, K] or [P, K] each, in layout order) where ``active``, off
        elsewhere, rounded to the params' dtype (as torch rounds a Python float argument)."""
        self.values.copy_(torch.where(active, torch.cat(rows), self.off))

    def rounded(self, rows: list[Tensor]) -> Tensor:
        """``rows`` rounded to the params' dtype once, for ``fill_rounded`` at every step."""
        return torch.cat(rows).to(self.values.dtype)

    def fill_rounded(self, active: Tensor, rounded: Tensor) -> None:
        """``fill`` of rows already rounded: the same values in one select. Rounding commutes
        with selecting, so the bits are those ``fill`` gives."""
        if not hasattr(self, "off_rounded"):
            self.off_rounded = self.off.to(self.values.dtype)
        torch.where(active, rounded, self.off_rounded, out=self.values)


@dataclass
class _Step:
    """What one kind's update needs for one optimizer step (built by StackedOptimizer.step).

    ``params``, ``grads`` and ``states`` are those of the parameters that have a gradient;
    ``all_states`` those of all the group's parameters (per-parameter coefficients are
    computed for all of them, and used for those in ``params``).
    """

    optimizer: StackedOptimizer
    params: list[Tensor]
    grads: list[Tensor]
    states: list[dict[str, Any]]
    all_states: list[dict[str, Any]]
    indices: list[int] | None  # of ``params`` in the group; None: all of them
    lr: Tensor  # float64 [K]: this step's (scheduled) lr of each member
    momentum: Tensor | float  # float64 [K], or the schedule's cycled momentum for all
    settings: Mapping[str, Any]  # the kind's shared settings (betas, eps, ...)
    # True when every step's coefficients are the same (no schedule, no step-dependent
    # terms): they are then built once and only masked at each step.
    static: bool = False

    @property
    def active(self) -> Tensor:
        return self.optimizer.active

    @property
    def dtype(self) -> torch.dtype:
        return self.params[0].dtype

    def subset(self, views: list[Tensor]) -> list[Tensor]:
        """Per-parameter views of the whole group, cut to ``params``."""
        return views if self.indices is None else [views[i] for i in self.indices]

    def coefficients(self, **rows: tuple[Tensor | float, float]) -> dict[str, list[Tensor]]:
        """Each name's (value, off): value (a float64 [K] tensor, a float64 [P, K] tensor with
        one row per parameter of the group, or a float) for the active members, off for the
        frozen ones. Returns each name's [K, 1, ...] views, one per parameter in ``params``.
        All of them cost one torch.where and one copy into a persistent workspace; for a
        ``static`` step, whose values never change, one select of values rounded once."""
        optimizer = self.optimizer
        key = tuple((name, off) for name, (_, off) in rows.items())
        cached = optimizer._static_rows.get(key) if self.static else None
        if cached is None:
            layout = []
            values = []
            like = optimizer._lr
            for name, (value, off) in rows.items():
                per_parameter = isinstance(value, Tensor) and value.dim() == 2
                if not isinstance(value, Tensor):
                    value = torch.full(
                        (1, like.shape[0]), value, dtype=like.dtype, device=like.device
                    )
                elif not per_parameter:
                    value = value.view(1, -1)
                layout.append((name, per_parameter, off))
                values.append(value)
            workspace = optimizer._workspace(tuple(layout))
            if not self.static:
                workspace.fill(self.active, values)
                return {name: self.subset(views) for name, views in workspace.views.items()}
            cached = optimizer._static_rows[key] = (workspace, workspace.rounded(values))
        workspace, rounded = cached
        workspace.fill_rounded(self.active, rounded)
        return {name: self.subset(views) for name, views in workspace.views.items()}

    def state_list(self, name: str) -> list[Tensor]:
        return [state[name] for state in self.states]

    def step_counts(self) -> Tensor:
        """Advance the step counters of ``params`` by ``active``; all parameters' counts as a
        float64 [P, K] tensor (torch computes with them as Python floats)."""
        steps = self.state_list("step")
        increment = self.active.to(steps[0].dtype)
        torch._foreach_add_(steps, [increment] * len(steps))
        return torch.stack([state["step"] for state in self.all_states]).to(torch.float64)

    def gradients(self, *, weight_decay: bool = True, in_place: bool = False) -> list[Tensor]:
        """grad + weight_decay * param (torch's ``grad.add(param, alpha=wd)``) for the active
        members, +0.0 for the frozen ones: new tensors, or with ``in_place`` (for an update
        that only reads them) the gradients themselves when there is no weight decay, their
        frozen members' slices zeroed (the active members' are left as they are).

        The frozen members' values are zeroed by an integer multiplication of their bits by
        ``keep`` (1 for the active members, 0 for the frozen ones): a select that NaN/inf
        cannot pass (unlike a float multiplication by 0), leaves the active members' bits as
        they are, and runs at the speed of a float multiplication, where ``torch.where`` with a
        broadcast condition is several times slower on a CPU.
        """
        optimizer = self.optimizer
        keep = optimizer._keep
        keep.copy_(self.active)  # 1 or 0
        masks = self.subset(optimizer._keep_views)
        itype = keep.dtype
        if weight_decay and optimizer._decays:
            decays = self.subset(optimizer._weight_decay_views)
            grads = torch._foreach_addcmul(self.grads, self.params, decays)
            torch._foreach_mul_([grad.view(itype) for grad in grads], masks)
            return grads
        bits = [grad.view(itype) for grad in self.grads]
        if in_place:
            torch._foreach_mul_(bits, masks)
            return self.grads
        dtype = self.dtype
        return [masked.view(dtype) for masked in torch._foreach_mul(bits, masks)]

    def frozen_guard(self) -> dict[str, tuple[Tensor | float, float]]:
        """With eps == 0 a frozen member's denominator may be 0: a row ``frozen`` (1 for the
        frozen members, 0 for the active ones) to add to it; none otherwise."""
        return {"frozen": (0.0, 1.0)} if self.settings["eps"] == 0 else {}

    def guard(self, denominators: list[Tensor], coefficients: dict[str, list[Tensor]]) -> None:
        if "frozen" in coefficients:
            torch._foreach_add_(denominators, coefficients["frozen"])


# Each update follows torch/optim/<kind>.py's _single_tensor_<kind> op for op; comments give
# torch's line where ours differs in form.


def _sgd_update(s: _Step) -> None:
    c = s.coefficients(momentum=(s.momentum, 1.0), neg_lr=(-s.lr, 0.0))
    grads = s.gradients(in_place=True)
    buffers = s.state_list("momentum_buffer")
    # torch: buf = grad.clone() on the first step, then buf.mul_(momentum).add_(grad); our
    # buffers start at 0, and 0 * momentum + grad == grad. A member with momentum 0 (no buffer
    # in torch) gets buf * 0 + grad == grad.
    torch._foreach_mul_(buffers, c["momentum"])
    torch._foreach_add_(buffers, grads)
    # torch: param.add_(buf, alpha=-lr)
    torch._foreach_addcmul_(s.params, buffers, c["neg_lr"])


def _adam_update(s: _Step, *, decoupled: bool) -> None:
    beta1 = s.momentum  # the setting's beta1, or the schedule's cycled one
    beta2 = s.settings["betas"][1]
    decays = s.optimizer._decays
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
        rows["decay"] = (1 - s.lr * s.optimizer._weight_decay64, 1.0)
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


def _adagrad_update(s: _Step) -> None:
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


def _rmsprop_update(s: _Step) -> None:
    alpha = s.settings["alpha"]
    optimizer = s.optimizer
    cycled = not isinstance(s.momentum, Tensor)  # the schedule's momentum, > 0, for all
    plain = not cycled and not optimizer._any_momentum  # no member has momentum
    mixed = not cycled and optimizer._any_momentum and not optimizer._all_momentum
    rows: dict[str, tuple[Tensor | float, float]] = {
        "alpha": (alpha, 1.0),
        "neg_lr": (-s.lr, 0.0),
        **s.frozen_guard(),
    }
    if not plain:
        rows["momentum"] = (s.momentum, 1.0)
    if mixed:
        with_momentum = optimizer._momentum > 0
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


def _adadelta_update(s: _Step) -> None:
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

    torch_name: str
    takes_momentum: bool  # whether the config's momentum is a setting of it (sgd, rmsprop)
    state_names: tuple[str, ...]  # its per-parameter state, as torch names it
    update: Callable[[_Step], None]
    # The torch.optim arguments besides lr/momentum/weight_decay it takes, with torch's defaults.
    settings: Mapping[str, Any]
    # torch.optim arguments it accepts only at these (torch's default) values.
    fixed: Mapping[str, tuple[Any, ...]]
    # Whether its per-step coefficients depend on the step count (Adam's bias corrections,
    # Adagrad's lr decay); those that do not are built once when no schedule changes them.
    counts_steps: bool = True
    # The name of torch's fused kernel of the kind (torch._fused_adam_, torch._fused_adamw_),
    # which ``_FusedAdam`` calls once per member where it runs; None: no fast path.
    fused: str | None = None

    @property
    def cycled(self) -> str | None:
        """What OneCycleLR(cycle_momentum=True) cycles: "momentum", "beta1" or None."""
        if self.takes_momentum:
            return "momentum"
        return "beta1" if "betas" in self.settings else None


def _fixed(**extra: Any) -> Mapping[str, tuple[Any, ...]]:
    """torch arguments accepted only at these values (its defaults; False = None for foreach,
    fused): the others are a different algorithm or implementation."""
    fixed = {"maximize": (False,), "foreach": (None, False), "differentiable": (False,)}
    fixed.update(
        (key, values if isinstance(values, tuple) else (values,)) for key, values in extra.items()
    )
    return MappingProxyType(fixed)


OPTIMIZERS: dict[str, OptimizerKind] = {
    "sgd": OptimizerKind(
        "SGD",
        True,
        ("momentum_buffer",),
        _sgd_update,
        MappingProxyType({}),
        _fixed(dampening=0, nesterov=False, fused=(None, False)),
        counts_steps=False,
    ),
    "adam": OptimizerKind(
        "Adam",
        False,
        ("step", "exp_avg", "exp_avg_sq"),
        functools.partial(_adam_update, decoupled=False),
        MappingProxyType({"betas": (0.9, 0.999), "eps": 1e-8}),
        _fixed(amsgrad=False, capturable=False, fused=(None, False), decoupled_weight_decay=False),
        fused="_fused_adam_",
    ),
    "adamw": OptimizerKind(
        "AdamW",
        False,
        ("step", "exp_avg", "exp_avg_sq"),
        functools.partial(_adam_update, decoupled=True),
        MappingProxyType({"betas": (0.9, 0.999), "eps": 1e-8}),
        _fixed(amsgrad=False, capturable=False, fused=(None, False)),
        fused="_fused_adamw_",
    ),
    "adagrad": OptimizerKind(
        "Adagrad",
        False,
        ("step", "sum"),
        _adagrad_update,
        MappingProxyType({"lr_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10}),
        _fixed(fused=(None, False)),
    ),
    "rmsprop": OptimizerKind(
        "RMSprop",
        True,
        ("step", "square_avg", "momentum_buffer"),
        _rmsprop_update,
        MappingProxyType({"alpha": 0.99, "eps": 1e-8}),
        _fixed(centered=False, capturable=False),
        counts_steps=False,
    ),
    "adadelta": OptimizerKind(
        "Adadelta",
        False,
        ("step", "square_avg", "acc_delta"),
        _adadelta_update,
        MappingProxyType({"rho": 0.9, "eps": 1e-6}),
        _fixed(capturable=False),
        counts_steps=False,
    ),
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


def _shared_settings(name: str, kind: OptimizerKind, given: dict[str, Any]) -> dict[str, Any]:
    """The kind's shared settings: torch's defaults updated by ``given``, checked."""
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


# torch.optim's global step hooks, which its Optimizer.step wrapper runs (None where this torch
# version has them elsewhere: every step then goes through that wrapper).
_GLOBAL_STEP_HOOKS = tuple(
    getattr(_torch_optimizer, name, None)
    for name in ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")
)
_profiler_enabled: Callable[[], bool] = getattr(
    torch._C._autograd, "_profiler_enabled", lambda: True
)


class _FastSGD:
    """``_sgd_update`` for the steps where nothing but the gradients and ``active`` changes
    (no schedule, every parameter with a gradient, the state built): the same ops, with every
    list, view and coefficient prepared once, and the masked coefficients and the ``keep``
    mask selected by one integer ``torch.where`` (a bit copy of the rounded values)."""

    def __init__(self, optimizer: StackedOptimizer, params: list[Tensor], states: list) -> None:
        p = params[0]
        self.params = params  # the param group's list: the fast path holds while it is
        self.count = len(params)
        self.device, self.dtype = p.device, p.dtype
        self.itype = itype = _INT_OF_SIZE[p.dtype.itemsize]
        self.buffers = [state["momentum_buffer"] for state in states]
        self.decays = optimizer._weight_decay_views if optimizer._decays else None
        members = optimizer.members
        # Rows: momentum (1 when frozen), -lr (0 when frozen), keep (integer 1, 0 when frozen),
        # rounded to the params' dtype as torch rounds a Python float argument.
        rounded = torch.stack([optimizer._momentum, -optimizer._lr]).to(p.dtype).view(itype)
        self.on = torch.cat([rounded, torch.ones(1, members, dtype=itype, device=p.device)])
        off = torch.zeros((3, 1), dtype=p.dtype, device=p.device)
        off[0].fill_(1.0)
        self.off = off.view(itype)
        values = torch.empty((3, members), dtype=p.dtype, device=p.device)
        self.values = values.view(itype)
        ndims = [param.dim() for param in params]
        self.momentum = _member_views(values[0], ndims)
        self.neg_lr = _member_views(values[1], ndims)
        self.keep = _member_views(self.values[2], ndims)

    def run(self, optimizer: StackedOptimizer) -> bool:
        """One step, or False (nothing done) where the fast path does not hold."""
        group = optimizer.param_groups[0]
        params = self.params
        if group["params"] is not params or len(params) != self.count:
            return False
        grads = [p.grad for p in params]
        for grad in grads:
            if grad is None or grad.is_sparse:
                return False
        p = params[0]
        if p.device != self.device or p.dtype != self.dtype:
            return False
        group["schedule_step"] += 1
        torch.where(optimizer.active, self.on, self.off, out=self.values)
        itype = self.itype
        if self.decays is not None:
            grads = torch._foreach_addcmul(grads, params, self.decays)
        torch._foreach_mul_([grad.view(itype) for grad in grads], self.keep)
        buffers = self.buffers
        torch._foreach_mul_(buffers, self.momentum)
        torch._foreach_add_(buffers, grads)
        torch._foreach_addcmul_(params, buffers, self.neg_lr)
        return True


# (kernel name, device, dtype) -> torch's fused kernel, or None where it does not run.
_FUSED_KERNELS: dict[tuple[str, torch.device, torch.dtype], Callable[..., Any] | None] = {}


def _fused_kernel(name: str, device: torch.device, dtype: torch.dtype) -> Callable[..., Any] | None:
    """torch's fused kernel ``torch.<name>`` for parameters of this device and dtype, or None
    where this torch has none or it refuses them: tried once on a one-element step (with the
    0-dim views and the ``found_inf`` the fast path passes), then remembered."""
    key = (name, device, dtype)
    if key not in _FUSED_KERNELS:
        kernel = getattr(torch, name, None)
        if kernel is not None:
            tensors = torch.zeros((4, 1, 1), dtype=dtype, device=device).unbind(0)
            steps = torch.ones((2, 1), dtype=torch.float32, device=device)
            try:
                with torch.no_grad():
                    kernel(
                        *([tensor[0]] for tensor in tensors),
                        [],
                        [steps[0, 0]],
                        amsgrad=False,
                        lr=1e-3,
                        beta1=0.9,
                        beta2=0.999,
                        weight_decay=0.1,
                        eps=1e-8,
                        maximize=False,
                        grad_scale=None,
                        found_inf=steps[1, 0] - 1,
                    )
            except (RuntimeError, NotImplementedError, TypeError):
                kernel = None
        _FUSED_KERNELS[key] = kernel
    return _FUSED_KERNELS[key]


class _FusedAdam:
    """Adam and AdamW by torch's fused kernel (see the module docstring): once per member, on
    the member's slices of the parameters, gradients and state, with the member's lr and
    weight decay, and its frozen flag as ``found_inf`` (the kernel then returns at once).

    ``run`` declines (returns False, nothing done) where the general path must take the step:
    the parameters' device or dtype changed (the general path rebuilds), no parameter has a
    gradient, or a gradient is sparse or of another dtype, or a parameter, its gradient or its
    state is not contiguous (the kernel walks a member's slices as flat memory). The members'
    views of a parameter's state are made once and kept while its state tensors are the same
    objects (``load_state_dict`` replaces them, and rebuilds this object besides).
    """

    def __init__(self, optimizer: StackedOptimizer, kernel: Callable[..., Any]) -> None:
        group = optimizer.param_groups[0]
        p = group["params"][0]
        self.kernel = kernel
        self.device, self.dtype = p.device, p.dtype
        # The general path's values (``_refresh`` builds both from the param group).
        self.lrs = [float(v) for v in group["lr"]]
        self.weight_decays = [float(v) for v in group["weight_decay"]]
        settings = optimizer._settings
        self.beta1, self.beta2 = settings["betas"]
        self.eps = settings["eps"]
        members = len(self.lrs)
        # Row 0: 1.0 for the active members (the step counters' increment); row 1: 1.0 for the
        # frozen ones (found_inf: the kernel skips the member), as 0-dim views, one per member.
        self.flags = torch.empty((2, members), dtype=torch.float32, device=p.device)
        self.found_inf = self.flags[1].unbind(0)
        # Per parameter of the group: (exp_avg, exp_avg_sq, step, their per-member views).
        self.state_views: list[tuple[Tensor, ...] | None] = [None] * len(group["params"])

    def run(self, optimizer: StackedOptimizer) -> bool:
        """One step, or False (nothing done) where the fast path does not hold."""
        group = optimizer.param_groups[0]
        all_params = group["params"]
        p = all_params[0]
        if p.device != self.device or p.dtype != self.dtype:
            return False
        if len(all_params) != len(self.state_views):
            self.state_views = [None] * len(all_params)
        state_of = optimizer.state
        dtype = self.dtype
        params, grads, state_views = [], [], []
        for i, param in enumerate(all_params):
            state = state_of[param]
            if not state:  # as the general path: state for every parameter
                optimizer._init_state(param, state)
            grad = param.grad
            if grad is None:
                continue
            if (
                grad.is_sparse
                or grad.dtype != dtype
                or not grad.is_contiguous()
                or not param.is_contiguous()
            ):
                return False
            exp_avg, exp_avg_sq, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
            views = self.state_views[i]
            if (
                views is None
                or views[0] is not exp_avg
                or views[1] is not exp_avg_sq
                or views[2] is not step
            ):
                if not (exp_avg.is_contiguous() and exp_avg_sq.is_contiguous()):
                    return False
                views = (
                    exp_avg,
                    exp_avg_sq,
                    step,
                    exp_avg.unbind(0),
                    exp_avg_sq.unbind(0),
                    step.unbind(0),
                )
                self.state_views[i] = views
            params.append(param)
            grads.append(grad)
            state_views.append(views)
        if not params:
            return False
        index = group["schedule_step"]
        factor, cycled = schedule_factors(group["schedule"], index, group["total_steps"])
        group["schedule_step"] = index + 1
        active = optimizer.active
        flags = self.flags
        flags[0].copy_(active)
        torch.logical_not(active, out=flags[1])
        torch._foreach_add_([views[2] for views in state_views], [flags[0]] * len(params))
        beta1 = self.beta1 if cycled is None else cycled
        kernel = self.kernel
        # Each list's tensors, as their K per-member views.
        columns = (
            [param.unbind(0) for param in params],
            [grad.unbind(0) for grad in grads],
            *([views[i] for views in state_views] for i in (3, 4, 5)),
        )
        for k, found_inf in enumerate(self.found_inf):
            member_params, member_grads, exp_avgs, exp_avg_sqs, steps = (
                [tensors[k] for tensors in column] for column in columns
            )
            kernel(
                member_params,
                member_grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                amsgrad=False,
                lr=self.lrs[k] * factor,  # the general path's lr (float64) at this step, exactly
                beta1=beta1,
                beta2=self.beta2,
                weight_decay=self.weight_decays[k],
                eps=self.eps,
                maximize=False,
                grad_scale=None,
                found_inf=found_inf,
            )
        return True


class StackedOptimizer(torch.optim.Optimizer):
    """One torch.optim-kind optimizer for a stack of K members (see the module docstring).

    ``lr``, ``momentum`` and ``weight_decay`` hold one value per member (momentum is ignored by
    the kinds that take none); ``settings`` are the kind's other torch.optim arguments, shared
    by all members. ``schedule`` ("none", "onecycle", "cosine") scales each member's lr at
    optimizer step i by ``schedule_factors(schedule, i, total_steps)``; the step count is
    ``param_groups[0]["schedule_step"]``. ``active`` (bool [K]) freezes members that are False.

    ``fused`` (a class attribute, True): whether Adam and AdamW take torch's fused kernel where
    it runs (``_FusedAdam``); set it False before building one to take the general path.
    """

    fused: bool = True

    def __init__(
        self,
        params: Iterable[Tensor],
        kind: str,
        lr: Sequence[float],
        momentum: Sequence[float],
        weight_decay: Sequence[float],
        schedule: str = "none",
        total_steps: int = 1,
        **settings: Any,
    ) -> None:
        if kind not in OPTIMIZERS:
            raise ValueError(f"optimizer kind {kind!r} is not one of: {', '.join(OPTIMIZERS)}")
        self.kind = OPTIMIZERS[kind]
        members = len(lr)
        per_member = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        lists = {key: [float(v) for v in values] for key, values in per_member.items()}
        if members < 1 or any(len(values) != members for values in lists.values()):
            lengths = ", ".join(f"{key}: {len(values)}" for key, values in lists.items())
            raise ValueError(f"lr, momentum and weight_decay need one value per member ({lengths})")
        for key, values in lists.items():
            if any(not v >= 0 for v in values):
                raise ValueError(f"{key}={values} must be >= 0")
        if schedule not in SCHEDULERS:
            raise ValueError(f"schedule must be one of {list(SCHEDULERS)}, got {schedule!r}")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps={total_steps!r} must be a whole number >= 1")
        params = list(params)
        if not params or any(not isinstance(p, Tensor) for p in params):
            raise ValueError("params must be a non-empty iterable of tensors (one param group)")
        for p in params:
            if not p.is_floating_point() or p.dim() < 1 or p.shape[0] != members:
                raise ValueError(
                    f"every parameter must be a real floating tensor with leading dimension "
                    f"K={members} (one slice per member), got {p.dtype} {tuple(p.shape)}"
                )
            if p.device != params[0].device or p.dtype != params[0].dtype:
                raise ValueError("all parameters must share one device and dtype")
        defaults = {
            "kind": kind,
            **lists,
            "schedule": schedule,
            "total_steps": total_steps,
            "schedule_step": 0,
            **_shared_settings(kind, self.kind, settings),
        }
        super().__init__(params, defaults)
        self.active = torch.ones(members, dtype=torch.bool, device=params[0].device)
        self._refresh()

    def __getstate__(self) -> dict[str, Any]:  # pickle and deepcopy: keep the mask
        return {**super().__getstate__(), "active": self.active}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        active = state.pop("active", None)
        super().__setstate__(state)  # also called by torch's load_state_dict, without "active"
        if active is not None:  # unpickling: rebuild the rest
            self.active = active
            self.kind = OPTIMIZERS[self.defaults["kind"]]
            self._refresh()

    def _refresh(self) -> None:
        """Rebuild the per-member tensors from the param group (after init or a load)."""
        group = self.param_groups[0]
        params = group["params"]
        p = params[0]
        self._device = p.device
        self._dtype = p.dtype
        self._ndims = [param.dim() for param in params]
        self._lr = torch.tensor(group["lr"], dtype=torch.float64, device=p.device)
        self._momentum = torch.tensor(group["momentum"], dtype=torch.float64, device=p.device)
        self._weight_decay64 = torch.tensor(
            group["weight_decay"], dtype=torch.float64, device=p.device
        )
        self._weight_decay = self._weight_decay64.to(p.dtype)
        self._weight_decay_views = _member_views(self._weight_decay, self._ndims)
        self._decays = any(v != 0 for v in group["weight_decay"])
        self._any_momentum = any(v > 0 for v in group["momentum"])
        self._all_momentum = all(v > 0 for v in group["momentum"])
        self._settings = {key: group[key] for key in self.kind.settings}
        if self.active.device != p.device:
            self.active = self.active.to(p.device)
        self._keep = torch.empty(
            self.members, dtype=_INT_OF_SIZE[p.dtype.itemsize], device=p.device
        )
        self._keep_views = _member_views(self._keep, self._ndims)
        self._workspaces: dict[tuple[tuple[str, bool, float], ...], _Workspace] = {}
        self._static_rows: dict[tuple[tuple[str, float], ...], tuple[_Workspace, Tensor]] = {}
        self._fast: _FastSGD | _FusedAdam | None = None
        if self.kind.fused is not None and self.fused:
            kernel = _fused_kernel(self.kind.fused, p.device, p.dtype)
            if kernel is not None:
                self._fast = _FusedAdam(self, kernel)

    def _workspace(self, layout: tuple[tuple[str, bool, float], ...]) -> _Workspace:
        workspace = self._workspaces.get(layout)
        if workspace is None:
            like = self.param_groups[0]["params"][0]
            workspace = self._workspaces[layout] = _Workspace(layout, self._ndims, like)
        return workspace

    @property
    def members(self) -> int:
        return len(self.param_groups[0]["lr"])

    def step(
        self, closure: Callable[[], Any] | None = None, *, losses: Tensor | None = None
    ) -> Any:
        """One optimizer step (after ``closure``, which torch's step takes too).

        ``losses`` (optional, [K]): the step's losses; a member whose loss is not finite is
        frozen first (``active &= isfinite(losses)``), in the same device ops a caller would
        spend on it, without a host sync.

        Unless a step hook is registered or a profiler runs, this skips torch's Optimizer.step
        wrapper (a profiler record and the hook loops, several µs).
        """
        pre, post = _GLOBAL_STEP_HOOKS
        if (
            pre is None
            or post is None
            or pre
            or post
            or self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or _profiler_enabled()
        ):
            return self._profiled_step(closure, losses=losses)
        return self._step(closure, losses=losses)

    step.hooked = True  # type: ignore[attr-defined]  # torch: do not wrap it again

    def _step(
        self, closure: Callable[[], Any] | None = None, *, losses: Tensor | None = None
    ) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            if losses is not None:
                # isfinite(losses), in 2 kernels where isfinite takes 4
                self.active.logical_and_(losses.abs() < math.inf)
            fast = self._fast
            if fast is None or not fast.run(self):
                self._update()
        finally:
            torch._C._set_grad_enabled(grad_enabled)
        return loss

    # torch's wrapper (profiler record, step hooks), for when they are in use.
    _profiled_step = torch.optim.Optimizer.profile_hook_step(_step)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's zero_grad; with ``set_to_none`` (the default) and no profiler running,
        without its profiler record (a few µs a call)."""
        if not set_to_none or _profiler_enabled():
            super().zero_grad(set_to_none)
            return
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def _update(self) -> None:
        """The step in general: build what this step needs, then the kind's update."""
        group = self.param_groups[0]
        index = group["schedule_step"]
        factor, cycled = schedule_factors(group["schedule"], index, group["total_steps"])
        group["schedule_step"] = index + 1
        all_params = group["params"]
        indices = [i for i, p in enumerate(all_params) if p.grad is not None]
        if not indices:
            return
        p = all_params[0]
        if p.device != self._device or p.dtype != self._dtype:
            self._refresh()
        all_states = []
        for p in all_params:  # state for all parameters: per-parameter coefficients need it
            state = self.state[p]
            if not state:
                self._init_state(p, state)
            all_states.append(state)
        if len(indices) == len(all_params):
            params, states, subset = all_params, all_states, None
        else:
            params = [all_params[i] for i in indices]
            states = [all_states[i] for i in indices]
            subset = indices
        grads = [p.grad for p in params]
        if any(grad.is_sparse for grad in grads):
            raise RuntimeError("StackedOptimizer does not support sparse gradients")
        cycles = self.kind.cycled
        if cycles == "momentum" and cycled is not None:
            momentum: Tensor | float = cycled
        elif cycles == "beta1":
            momentum = cycled if cycled is not None else self._settings["betas"][0]
        else:
            momentum = self._momentum
        self.kind.update(
            _Step(
                optimizer=self,
                params=params,
                grads=grads,
                states=states,
                all_states=all_states,
                indices=subset,
                lr=self._lr * factor if factor != 1.0 else self._lr,
                momentum=momentum,
                settings=self._settings,
                static=group["schedule"] == "none" and not self.kind.counts_steps,
            )
        )
        if self.kind.update is _sgd_update and group["schedule"] == "none" and subset is None:
            self._fast = _FastSGD(self, all_params, all_states)

    def _init_state(self, p: Tensor, state: dict[str, Any]) -> None:
        for name in self.kind.state_names:
            if name == "step":
                state[name] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
            elif name == "sum":
                value = self._settings["initial_accumulator_value"]
                state[name] = torch.full_like(p, value, memory_format=torch.preserve_format)
            else:
                state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict, plus the active mask as param_groups[0]["active"] (a list)."""
        state_dict = super().state_dict()
        state_dict["param_groups"][0]["active"] = self.active.tolist()
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load (state tensors go to their parameter's device and dtype; so do the step
        counters here), then the per-member values and the active mask."""
        groups = state_dict["param_groups"]
        if len(groups) != 1:
            raise ValueError(f"a StackedOptimizer has one param group, the state has {len(groups)}")
        group = groups[0]
        kind = self.defaults["kind"]
        if group.get("kind") != kind or len(group["lr"]) != self.members:
            raise ValueError(
                f"cannot load the state of a {group.get('kind')!r} optimizer of "
                f"{len(group['lr'])} members into a {kind!r} one of {self.members}"
            )
        super().load_state_dict(state_dict)
        group = self.param_groups[0]
        active = group.pop("active", None)
        for p in group["params"]:
            state = self.state.get(p)
            if state and "step" in state:
                state["step"] = state["step"].to(dtype=torch.float32, device=p.device)
        self._refresh()
        if active is not None:
            self.active.copy_(torch.tensor(active, dtype=torch.bool))


def member_optimizer_state(state_dict: dict[str, Any], index: int) -> dict[str, Any]:
    """The state dict of a stack of one: member ``index``'s slice of ``state_dict`` (a
    StackedOptimizer's). Every state tensor with the leading K dimension is sliced
    ``[index:index+1]`` (and copied), and so are the per-member lists of the param group."""
    group0 = state_dict["param_groups"][0]
    members = len(group0["lr"])
    if not -members <= index < members:
        raise IndexError(f"member {index} of a stack of {members}")
    index %= members

    def cut(value: Any) -> Any:
        if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == members:
            return value[index : index + 1].clone()
        return value

    groups = []
    for group in state_dict["param_groups"]:
        groups.append(
            {
                key: [value[index]]
                if key in PER_MEMBER_KEYS and isinstance(value, list | tuple)
                else cut(value)
                for key, value in group.items()
            }
        )
    return {
        "state": {
            key: {name: cut(value) for name, value in state.items()}
            for key, state in state_dict["state"].items()
        },
        "param_groups": groups,
    }
