"""The steps StackedOptimizer takes faster than its general path, where they hold: fused SGD,
Adam and AdamW (torch's fused kernel, once per member) and fast SGD (the general path's ops,
everything prepared once). StackedOptimizer._take_step says when each one takes a step.

Each ``run`` does the whole step and returns True, or returns False, having done nothing,
where this step is not one it can take: the general path then takes it on the same state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from letters.common.compat import fused_kernel
from letters.optim.algorithms import momentum_sgd_
from letters.optim.schedules import schedule_factors
from letters.optim.update_step import INT_OF_SIZE, MemberTensors, masked_gradients, member_views


class FastSGD:
    """The general path's SGD (``momentum_sgd_`` on masked gradients) for the steps where
    nothing but the gradients and ``active`` changes (no schedule, every parameter with a
    gradient, the state built): every list, view and coefficient is prepared once, and the
    masked coefficients and the ``keep`` mask are selected by one integer ``torch.where`` (a
    bit copy of the rounded values)."""

    def __init__(
        self, params: list[Tensor], states: list[dict[str, Tensor]], members: MemberTensors
    ) -> None:
        p = params[0]
        self.params = params  # the param group's list: the fast path holds while it is
        self.count = len(params)
        self.device, self.dtype = p.device, p.dtype
        self.itype = itype = INT_OF_SIZE[p.dtype.itemsize]
        self.buffers = [state["momentum_buffer"] for state in states]
        self.decays = members.weight_decay_views if members.decays else None
        # Rows: momentum (1 when frozen), -lr (0 when frozen), keep (integer 1, 0 when frozen),
        # rounded to the params' dtype as torch rounds a Python float argument.
        rounded = torch.stack([members.momentum, -members.lr]).to(p.dtype).view(itype)
        self.on = torch.cat([rounded, torch.ones(1, members.count, dtype=itype, device=p.device)])
        off = torch.zeros((3, 1), dtype=p.dtype, device=p.device)
        off[0].fill_(1.0)
        self.off = off.view(itype)
        values = torch.empty((3, members.count), dtype=p.dtype, device=p.device)
        self.values = values.view(itype)
        ndims = [param.dim() for param in params]
        self.momentum = member_views(values[0], ndims)
        self.neg_lr = member_views(values[1], ndims)
        self.keep = member_views(self.values[2], ndims)

    def run(
        self, group: dict[str, Any], state_of: Mapping[Tensor, dict[str, Tensor]], active: Tensor
    ) -> bool:
        """One step of the param group ``group``, or False (nothing done) where the fast path
        does not hold (``state_of``: unused, the state's buffers are bound already)."""
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
        torch.where(active, self.on, self.off, out=self.values)
        grads = masked_gradients(grads, params, self.decays, self.keep, self.itype, in_place=True)
        momentum_sgd_(params, self.buffers, grads, self.momentum, self.neg_lr)
        return True


class MemberViews(NamedTuple):
    """A parameter's and its state's per-member views (``unbind(0)``), made once and kept
    while the parameter's data and its state tensors are the same."""

    data_ptr: int  # the parameter's, when the views were made
    state: tuple[Tensor, ...]  # the state tensors (``FusedStep.state_names``) viewed
    param: tuple[Tensor, ...]
    state_views: tuple[tuple[Tensor, ...], ...]  # one tuple of K views per state tensor


def member_slices(grads: list[Tensor], views: list[MemberViews]) -> zip:
    """Each member's slices, member after member: (its parameters, its gradients, then its
    views of each state tensor in ``FusedStep.state_names`` order), each a tuple over the
    parameters, from each parameter's K views."""

    def by_member(per_parameter: list[tuple[Tensor, ...]]) -> zip:
        return zip(*per_parameter, strict=True)

    states = len(views[0].state_views)
    return zip(
        by_member([known.param for known in views]),
        by_member([grad.unbind(0) for grad in grads]),
        *(by_member([known.state_views[i] for known in views]) for i in range(states)),
        strict=True,
    )


class FusedStep(ABC):
    """What torch's fused kernels share (docs/stacked-optimizer.md, "Fused steps"): one kernel
    call per member, on the member's slices of the parameters, gradients and state (views made
    once and kept while the tensors are the same), with the member's own settings, and its
    frozen flag as ``found_inf`` (the kernel then returns at once, touching nothing).

    ``run`` declines (returns False, nothing done) where the general path must take the step:
    the parameters' device or dtype changed (the general path rebuilds), no parameter has a
    gradient, or a gradient is sparse or of another dtype, or a parameter, its gradient or its
    state is not contiguous (the kernel walks a member's slices as flat memory).

    A subclass names its kernel's state (``state_names``), says how to try the kernel once
    (``trial``) and makes the calls of one step (``call_members``).
    """

    state_names: tuple[str, ...]

    def __init__(
        self,
        group: Mapping[str, Any],
        settings: Mapping[str, Any],
        kernel: Callable[..., Any],
        initial_state: Callable[[Tensor], dict[str, Tensor]],
    ) -> None:
        p = group["params"][0]
        self.kernel = kernel
        self.initial_state = initial_state  # a parameter's state before its first step
        self.device, self.dtype = p.device, p.dtype
        # The general path's values (MemberTensors holds them from the same param group).
        self.lrs = [float(v) for v in group["lr"]]
        self.weight_decays = [float(v) for v in group["weight_decay"]]
        members = len(self.lrs)
        # Row 0: 1.0 for the active members (for step counters); row 1: 1.0 for the frozen ones
        # (found_inf: the kernel skips the member), as 0-dim views, one per member.
        self.flags = torch.empty((2, members), dtype=torch.float32, device=p.device)
        self.found_inf = self.flags[1].unbind(0)
        # Per parameter of the group: its members' views, once made.
        self.views: list[MemberViews | None] = [None] * len(group["params"])

    @staticmethod
    @abstractmethod
    def trial(kernel: Callable[..., Any], tensors: tuple[Tensor, ...], flag: Tensor) -> None:
        """One call of ``kernel`` on one-element views (``tensors``: four of them, zero) with
        ``flag`` (a 0-dim float32 zero) as found_inf; raises where the kernel does not run for
        their device and dtype."""

    @abstractmethod
    def call_members(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        views: list[MemberViews],
        active: Tensor,
        factor: float,
        cycled: float | None,
        first: bool,
    ) -> None:
        """This step's kernel calls: ``factor`` and ``cycled`` are the schedule's (lr factor,
        cycled momentum or beta1), ``first`` whether this is the optimizer's first step;
        ``found_inf`` is already set from ``active``."""

    def run(
        self, group: dict[str, Any], state_of: Mapping[Tensor, dict[str, Tensor]], active: Tensor
    ) -> bool:
        """One step of the param group ``group`` (its parameters' state in ``state_of``, made
        where there is none yet), or False (nothing done) where the fused path does not hold."""
        lists = self._step_lists(group, state_of)
        if lists is None:
            return False
        params, grads, views = lists
        index = group["schedule_step"]
        factor, cycled = schedule_factors(group["schedule"], index, group["total_steps"])
        group["schedule_step"] = index + 1
        torch.logical_not(active, out=self.flags[1])
        self.call_members(params, grads, views, active, factor, cycled, index == 0)
        return True

    def _step_lists(
        self, group: dict[str, Any], state_of: Mapping[Tensor, dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor], list[MemberViews]] | None:
        """This step's parameters with a gradient, their gradients and their views, or None
        where the kernel cannot take them (``run`` declines)."""
        all_params = group["params"]
        p = all_params[0]
        if p.device != self.device or p.dtype != self.dtype:
            return None
        if len(all_params) != len(self.views):
            self.views = [None] * len(all_params)
        dtype, names = self.dtype, self.state_names
        params, grads, views = [], [], []
        for i, param in enumerate(all_params):
            state = state_of[param]
            if not state:  # as the general path: state for every parameter
                state.update(self.initial_state(param))
            grad = param.grad
            if grad is None:
                continue
            if (
                grad.is_sparse
                or grad.dtype != dtype
                or not grad.is_contiguous()
                or not param.is_contiguous()
            ):
                return None
            tensors = tuple(state[name] for name in names)
            known = self.views[i]
            if (
                known is None
                or known.data_ptr != param.data_ptr()  # its data replaced (param.data = ...)
                or any(old is not new for old, new in zip(known.state, tensors, strict=True))
            ):
                if not all(tensor.is_contiguous() for tensor in tensors):
                    return None
                unbound = tuple(tensor.unbind(0) for tensor in tensors)
                known = MemberViews(param.data_ptr(), tensors, param.unbind(0), unbound)
                self.views[i] = known
            params.append(param)
            grads.append(grad)
            views.append(known)
        return (params, grads, views) if params else None


class FusedSGD(FusedStep):
    """SGD with momentum by ``torch._fused_sgd_``, what ``torch.optim.SGD(fused=True)`` calls:
    once per member with its lr (this step's scheduled one), momentum (the schedule's cycled
    one under onecycle) and weight decay. A member without momentum gets torch's call without
    momentum buffers (its buffer, scratch on the general path, is left as it is)."""

    state_names = ("momentum_buffer",)

    def __init__(
        self,
        group: Mapping[str, Any],
        settings: Mapping[str, Any],
        kernel: Callable[..., Any],
        initial_state: Callable[[Tensor], dict[str, Tensor]],
    ) -> None:
        super().__init__(group, settings, kernel, initial_state)
        self.momenta = [float(v) for v in group["momentum"]]

    @staticmethod
    def trial(kernel: Callable[..., Any], tensors: tuple[Tensor, ...], flag: Tensor) -> None:
        kernel(
            [tensors[0]],
            [tensors[1]],
            [tensors[2]],
            weight_decay=0.1,
            momentum=0.9,
            lr=1e-3,
            dampening=0.0,
            nesterov=False,
            maximize=False,
            is_first_step=False,
            grad_scale=None,
            found_inf=flag,
        )

    def call_members(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        views: list[MemberViews],
        active: Tensor,
        factor: float,
        cycled: float | None,
        first: bool,
    ) -> None:
        kernel = self.kernel
        members = member_slices(grads, views)
        for k, (member_params, member_grads, buffers) in enumerate(members):
            momentum = self.momenta[k] if cycled is None else cycled
            kernel(
                member_params,
                member_grads,
                buffers if momentum != 0 else (),
                weight_decay=self.weight_decays[k],
                momentum=momentum,
                lr=self.lrs[k] * factor,  # the general path's lr (float64) at this step, exactly
                dampening=0.0,
                nesterov=False,
                maximize=False,
                # torch's first step: buffer = gradient (ours start at 0, which 0 * momentum +
                # gradient also gives, but for the sign of a zero)
                is_first_step=first,
                grad_scale=None,
                found_inf=self.found_inf[k],
            )


class FusedAdam(FusedStep):
    """Adam and AdamW by torch's fused kernel (``torch._fused_adam_`` or ``_fused_adamw_``),
    once per member with its lr (this step's scheduled one), beta1 (the schedule's cycled one
    under onecycle) and weight decay; the step counters advance by ``active`` before the calls,
    as torch's add-1-then-subtract-found_inf does."""

    state_names = ("exp_avg", "exp_avg_sq", "step")

    def __init__(
        self,
        group: Mapping[str, Any],
        settings: Mapping[str, Any],
        kernel: Callable[..., Any],
        initial_state: Callable[[Tensor], dict[str, Tensor]],
    ) -> None:
        super().__init__(group, settings, kernel, initial_state)
        self.beta1, self.beta2 = settings["betas"]
        self.eps = settings["eps"]

    @staticmethod
    def trial(kernel: Callable[..., Any], tensors: tuple[Tensor, ...], flag: Tensor) -> None:
        steps = torch.ones((), dtype=torch.float32, device=flag.device)
        kernel(
            *([tensor] for tensor in tensors),
            [],
            [steps],
            amsgrad=False,
            lr=1e-3,
            beta1=0.9,
            beta2=0.999,
            weight_decay=0.1,
            eps=1e-8,
            maximize=False,
            grad_scale=None,
            found_inf=flag,
        )

    def call_members(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        views: list[MemberViews],
        active: Tensor,
        factor: float,
        cycled: float | None,
        first: bool,
    ) -> None:
        increments = self.flags[0]
        increments.copy_(active)  # 1.0 for the active members
        torch._foreach_add_([known.state[2] for known in views], [increments] * len(params))
        beta1 = self.beta1 if cycled is None else cycled
        kernel = self.kernel
        members = member_slices(grads, views)
        for k, (member_params, member_grads, exp_avgs, exp_avg_sqs, steps) in enumerate(members):
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
                found_inf=self.found_inf[k],
            )


# Each fused kernel's path (OptimizerKind.fused names the kernel).
FUSED_PATHS: dict[str, type[FusedStep]] = {
    "_fused_sgd_": FusedSGD,
    "_fused_adam_": FusedAdam,
    "_fused_adamw_": FusedAdam,
}

# (kernel name, device, dtype) -> torch's fused kernel, or None where it does not run.
_FUSED_KERNELS: dict[tuple[str, torch.device, torch.dtype], Callable[..., Any] | None] = {}


def runnable_fused_kernel(
    name: str, device: torch.device, dtype: torch.dtype
) -> Callable[..., Any] | None:
    """torch's fused kernel ``torch.<name>`` for parameters of this device and dtype, or None
    where this torch has none or it refuses them: tried once on a one-element step (with the
    0-dim views and the ``found_inf`` its path passes: ``FusedStep.trial``), then
    remembered."""
    key = (name, device, dtype)
    if key not in _FUSED_KERNELS:
        kernel = fused_kernel(name)
        if kernel is not None:
            tensors = torch.zeros((4, 1), dtype=dtype, device=device).unbind(0)
            flag = torch.zeros((), dtype=torch.float32, device=device)
            try:
                with torch.no_grad():
                    FUSED_PATHS[name].trial(kernel, tensors, flag)
            except (RuntimeError, NotImplementedError, TypeError):
                kernel = None
        _FUSED_KERNELS[key] = kernel
    return _FUSED_KERNELS[key]
