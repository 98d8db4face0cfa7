"""The steps StackedOptimizer takes faster than its general path, where they hold: fast SGD
(the general path's ops, everything prepared once) and fused Adam (torch's fused kernel, once
per member). StackedOptimizer._take_step says when each one takes a step.

Each ``run`` does the whole step and returns True, or returns False, having done nothing,
where this step is not one it can take: the general path then takes it on the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from letters.common.compat import fused_adam_kernel
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


# (kernel name, device, dtype) -> torch's fused kernel, or None where it does not run.
_FUSED_KERNELS: dict[tuple[str, torch.device, torch.dtype], Callable[..., Any] | None] = {}


def runnable_fused_kernel(
    name: str, device: torch.device, dtype: torch.dtype
) -> Callable[..., Any] | None:
    """torch's fused kernel ``torch.<name>`` for parameters of this device and dtype, or None
    where this torch has none or it refuses them: tried once on a one-element step (with the
    0-dim views and the ``found_inf`` the fused path passes), then remembered."""
    key = (name, device, dtype)
    if key not in _FUSED_KERNELS:
        kernel = fused_adam_kernel(name)
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


class FusedAdam:
    """Adam and AdamW by torch's fused kernel (docs/stacked-optimizer.md, "Fused Adam"): once
    per member, on the member's slices of the parameters, gradients and state, with the
    member's lr and weight decay, and its frozen flag as ``found_inf`` (the kernel then returns
    at once).

    ``run`` declines (returns False, nothing done) where the general path must take the step:
    the parameters' device or dtype changed (the general path rebuilds), no parameter has a
    gradient, or a gradient is sparse or of another dtype, or a parameter, its gradient or its
    state is not contiguous (the kernel walks a member's slices as flat memory). The members'
    views of a parameter's state are made once and kept while its state tensors are the same
    objects (a load replaces them, and a new FusedAdam besides).
    """

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
        self.beta1, self.beta2 = settings["betas"]
        self.eps = settings["eps"]
        members = len(self.lrs)
        # Row 0: 1.0 for the active members (the step counters' increment); row 1: 1.0 for the
        # frozen ones (found_inf: the kernel skips the member), as 0-dim views, one per member.
        self.flags = torch.empty((2, members), dtype=torch.float32, device=p.device)
        self.found_inf = self.flags[1].unbind(0)
        # Per parameter of the group: (exp_avg, exp_avg_sq, step, their per-member views).
        self.state_views: list[tuple[Any, ...] | None] = [None] * len(group["params"])

    def run(
        self, group: dict[str, Any], state_of: Mapping[Tensor, dict[str, Tensor]], active: Tensor
    ) -> bool:
        """One step of the param group ``group`` (its parameters' state in ``state_of``, made
        where there is none yet), or False (nothing done) where the fused path does not hold."""
        lists = self._step_lists(group, state_of)
        if lists is None:
            return False
        params, grads, state_views = lists
        index = group["schedule_step"]
        factor, cycled = schedule_factors(group["schedule"], index, group["total_steps"])
        group["schedule_step"] = index + 1
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

    def _step_lists(
        self, group: dict[str, Any], state_of: Mapping[Tensor, dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor], list[tuple[Any, ...]]] | None:
        """This step's parameters with a gradient, their gradients and their state's views, or
        None where the kernel cannot take them (``run`` declines)."""
        all_params = group["params"]
        p = all_params[0]
        if p.device != self.device or p.dtype != self.dtype:
            return None
        if len(all_params) != len(self.state_views):
            self.state_views = [None] * len(all_params)
        dtype = self.dtype
        params, grads, state_views = [], [], []
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
            exp_avg, exp_avg_sq, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
            views = self.state_views[i]
            if (
                views is None
                or views[0] is not exp_avg
                or views[1] is not exp_avg_sq
                or views[2] is not step
            ):
                if not (exp_avg.is_contiguous() and exp_avg_sq.is_contiguous()):
                    return None
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
        return (params, grads, state_views) if params else None
