"""StackedOptimizer: one torch.optim-kind optimizer for a stack of K models trained at once.

Every parameter carries a leading member dimension K; member k's update is, up to float
rounding, what ``torch.optim.<Kind>`` does for that member alone with its own lr, momentum and
weight decay, and a boolean mask freezes the members that diverged without a host sync.
docs/stacked-optimizer.md explains how (masking, the fast paths, what is exact).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from letters.common.compat import (
    profiled_step,
    profiler_enabled,
    set_grad_enabled,
    step_hooks_registered,
    unwrapped_step,
)
from letters.optim.algorithms import OPTIMIZERS, OptimizerKind, shared_settings
from letters.optim.fast_paths import FUSED_PATHS, FastSGD, FusedStep, runnable_fused_kernel
from letters.optim.schedules import SCHEDULERS, schedule_factors
from letters.optim.state import OPTIMIZER_MEMBER_KEYS
from letters.optim.update_step import MemberTensors, UpdateStep


def fused_sgd_pays(kind: OptimizerKind, device: torch.device) -> bool:
    """Whether the fused path is the faster for this kind here. SGD's is not on a CPU with
    several threads: its kernel, called once per member on a member's small slices, keeps to
    one thread, while the fast path's few whole-stack operations use them all (1024-32-26,
    batch 8, 2 threads, per step: a stack of 15 1.04 ms fast against 1.18 ms fused; one thread,
    the optimizer alone: 0.50 ms against 0.37 ms). Adam's fused kernel wins everywhere."""
    return kind is not OPTIMIZERS["sgd"] or device.type != "cpu" or torch.get_num_threads() == 1


class StackedOptimizer(torch.optim.Optimizer):
    """One torch.optim-kind optimizer for a stack of K members (docs/stacked-optimizer.md).

    ``lr``, ``momentum`` and ``weight_decay`` hold one value per member (momentum is ignored by
    the kinds that take none); ``settings`` are the kind's other torch.optim arguments, shared
    by all members. ``schedule`` ("none", "onecycle", "cosine") scales each member's lr at
    optimizer step i by ``schedule_factors(schedule, i, total_steps)``; the step count is
    ``param_groups[0]["schedule_step"]``. ``active`` (bool [K]) freezes members that are False;
    ``keep_members`` sheds members for good (a stack whose frozen members are dropped).

    ``fused`` (a class attribute, True): whether SGD, Adam and AdamW take torch's fused kernel
    where it runs; read when the step path is prepared (the first step after the optimizer is built,
    loaded, copied or moved): set it False before then to take the general path.
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
        lists = {
            key: [float(v) for v in values]
            for key, values in zip(OPTIMIZER_MEMBER_KEYS, (lr, momentum, weight_decay), strict=True)
        }
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
            **shared_settings(self.kind, settings),
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
        """Rebuild what the steps use from the param group (after init, a load or a move):
        the per-member tensors, the shared settings; the step path is chosen again."""
        group = self.param_groups[0]
        self._members = MemberTensors(group)
        self._settings = {key: group[key] for key in self.kind.settings}
        device = self._members.device
        if self.active.device != device:
            self.active = self.active.to(device)
        self._initial_state = functools.partial(self.kind.initial_state, settings=self._settings)
        self._fast_path: FusedStep | FastSGD | None = None

    @property
    def members(self) -> int:
        return len(self.param_groups[0]["lr"])

    @unwrapped_step
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
        if step_hooks_registered(self) or profiler_enabled():
            return self._profiled_step(closure, losses=losses)
        return self._step(closure, losses=losses)

    def _step(
        self, closure: Callable[[], Any] | None = None, *, losses: Tensor | None = None
    ) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_enabled = torch.is_grad_enabled()
        set_grad_enabled(False)
        try:
            if losses is not None:
                # isfinite(losses), in 2 kernels where isfinite takes 4
                self.active.logical_and_(losses.abs() < math.inf)
            self._take_step()
        finally:
            set_grad_enabled(grad_enabled)
        return loss

    # torch's wrapper (profiler record, step hooks), for when they are in use.
    _profiled_step = profiled_step(_step)

    def _take_step(self) -> None:
        """Take this step by the first of three paths that holds, as torch.optim's sgd() and
        adam() pick their single-tensor, foreach or fused implementation in one place. All
        three keep the same state, so that consecutive steps may take different paths.

        1. Fused (``FusedSGD``, ``FusedAdam``: torch's fused kernel once per member) where
           - the kind has a fused kernel (sgd, adam, adamw: ``OptimizerKind.fused``),
           - ``StackedOptimizer.fused`` is True,
           - for sgd, the parameters are on a GPU or torch uses one CPU thread
             (``fused_sgd_pays``),
           - torch has that kernel and it runs for the parameters' device and dtype (tried
             once: ``runnable_fused_kernel``),
           and for this step: the parameters' device and dtype are those it was prepared for,
           at least one parameter has a gradient, every gradient is dense, of the parameters'
           dtype and contiguous, and so is every parameter with a gradient and its state.
        2. Fast SGD (``FastSGD``: the general path's ops with everything prepared once) where
           - the kind is sgd and the schedule "none", and no fused path was prepared (the
             class attribute ``fused`` False, or no runnable kernel),
           - every parameter has its state (so from the second step on: the first, general,
             step makes it),
           and for this step: the param group's list of parameters is the one it was prepared
           from, every parameter has a dense gradient, and their device and dtype are unchanged.
        3. The general path (``_general_step``) for every other step.

        The fast path is prepared at the first step after the optimizer is built, loaded,
        copied or moved (``_refresh``), and kept until one of those happens again.
        """
        group = self.param_groups[0]
        path = self._fast_path
        if path is None:
            path = self._fast_path = self._prepare_fast_path(group)
        if path is None or not path.run(group, self.state, self.active):
            self._general_step()

    def _prepare_fast_path(self, group: dict[str, Any]) -> FusedStep | FastSGD | None:
        """The fast path for the steps to come (``_take_step``'s conditions that do not depend
        on the step), or None."""
        kind, params = self.kind, group["params"]
        if kind.fused is not None and self.fused and fused_sgd_pays(kind, params[0].device):
            p = params[0]
            kernel = runnable_fused_kernel(kind.fused, p.device, p.dtype)
            if kernel is not None:
                path = FUSED_PATHS[kind.fused]
                return path(group, self._settings, kernel, self._initial_state)
        if kind is OPTIMIZERS["sgd"] and group["schedule"] == "none":
            states = [self.state.get(param) for param in params]
            if all(states):
                return FastSGD(params, states, self._members)
        return None

    def _general_step(self) -> None:
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
        if p.device != self._members.device or p.dtype != self._members.dtype:
            self._refresh()
        all_states = []
        for p in all_params:  # state for all parameters: per-parameter coefficients need it
            state = self.state[p]
            if not state:
                state.update(self._initial_state(p))
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
            momentum = self._members.momentum
        lr = self._members.lr
        self.kind.update(
            UpdateStep(
                members=self._members,
                active=self.active,
                params=params,
                grads=grads,
                states=states,
                all_states=all_states,
                indices=subset,
                lr=lr * factor if factor != 1.0 else lr,
                momentum=momentum,
                settings=self._settings,
                static=group["schedule"] == "none" and not self.kind.counts_steps,
            )
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's zero_grad; with ``set_to_none`` (the default) and no profiler running,
        without its profiler record (a few µs a call)."""
        if not set_to_none or profiler_enabled():
            super().zero_grad(set_to_none)
            return
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def keep_members(self, kept: Sequence[int], params: Sequence[Tensor]) -> None:
        """Keep only the members at positions ``kept`` (in this order), so that the steps to
        come cost what a stack of ``len(kept)`` costs. ``params`` replace the param group's
        parameters, in its order: each holds the old one's rows ``kept`` (the model cuts its
        weights so: letters.nn.model.MLP.keep_members). Every state tensor's member dimension,
        the per-member lists and ``active`` are cut the same way, and the step path is prepared
        again (the fast paths hold views and coefficients of all K members).

        One copy of the state on the device; the members kept go on bit for bit as they would
        have.
        """
        members = self.members
        kept = list(kept)
        if not kept or len(set(kept)) != len(kept) or not all(0 <= k < members for k in kept):
            raise ValueError(f"members to keep: distinct positions in 0..{members - 1}, got {kept}")
        group = self.param_groups[0]
        old_params, params = group["params"], list(params)
        shapes = [(len(kept), *p.shape[1:]) for p in old_params]
        if [tuple(p.shape) for p in params] != shapes:
            raise ValueError(
                f"params: one for each of the group's {len(old_params)}, with the {len(kept)} "
                f"members kept, shaped {shapes}"
            )
        positions = torch.tensor(kept, device=self.active.device)
        for old, new in zip(old_params, params, strict=True):
            state = self.state.pop(old, None)
            if state:
                self.state[new] = {
                    name: value.index_select(0, positions.to(value.device))
                    if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == members
                    else value
                    for name, value in state.items()
                }
        group["params"] = params
        for key in OPTIMIZER_MEMBER_KEYS:
            group[key] = [group[key][k] for k in kept]
        self.active = self.active.index_select(0, positions)
        self._refresh()

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
