"""What an optimizer kind's update works with on the general path, masked so that frozen
members do not change: the members' settings as device tensors (``MemberTensors``), and one
step's parameters, gradients, state and per-member coefficients (``UpdateStep``).

docs/stacked-optimizer.md explains the masking: a frozen member's gradient becomes +0.0 by an
integer multiplication of its bits, its decay factors 1 and its step sizes 0, all by selects
of [K]-sized tensors, without a host sync.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

# The integer type of a float type's size, to mask floats bitwise.
INT_OF_SIZE = {2: torch.int16, 4: torch.int32, 8: torch.int64}

# A workspace's rows: (name, per_parameter, value for the frozen members), see CoefficientRows.
Layout = tuple[tuple[str, bool, float], ...]


def member_views(values: Tensor, ndims: Sequence[int]) -> list[Tensor]:
    """A [K] tensor as one [K, 1, ...] view per parameter of these ndims (to broadcast)."""
    views = {n: values.view((-1,) + (1,) * (n - 1)) for n in set(ndims)}
    return [views[n] for n in ndims]


def masked_gradients(
    grads: list[Tensor],
    params: list[Tensor],
    decays: list[Tensor] | None,
    keep: list[Tensor],
    itype: torch.dtype,
    *,
    in_place: bool,
) -> list[Tensor]:
    """grad + weight_decay * param (torch's ``grad.add(param, alpha=wd)``; ``decays`` None: no
    weight decay) for the active members, +0.0 for the frozen ones: new tensors, or with
    ``in_place`` and no weight decay the gradients themselves, their frozen members' slices
    zeroed (the active members' are left as they are).

    ``keep`` ([K, 1, ...] views of an integer tensor of the gradients' size, ``itype``, one
    per parameter: 1 for the active members, 0 for the frozen ones) multiplies their bits: a
    select that NaN/inf cannot pass (unlike a float multiplication by 0), that leaves the
    active members' bits as they are, and that runs at the speed of a float multiplication,
    where ``torch.where`` with a broadcast condition is several times slower on a CPU.
    """
    if decays is not None:
        grads = torch._foreach_addcmul(grads, params, decays)
        torch._foreach_mul_([grad.view(itype) for grad in grads], keep)
        return grads
    bits = [grad.view(itype) for grad in grads]
    if in_place:
        torch._foreach_mul_(bits, keep)
        return grads
    dtype = grads[0].dtype
    return [masked.view(dtype) for masked in torch._foreach_mul(bits, keep)]


class CoefficientRows:
    """One step's per-member coefficients, masked, in the params' dtype: a persistent [R, K]
    tensor whose rows' [K, 1, ...] views (one per parameter) are built once.

    ``layout`` names the rows: (name, per_parameter, off); a per-parameter name has one row
    per parameter (its value differs between parameters, e.g. Adam's step size, which depends
    on the parameter's step count), another one row for all. ``off`` is the row's value for
    the frozen members.
    """

    def __init__(self, layout: Layout, ndims: list[int], like: Tensor) -> None:
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
                self.views[name] = member_views(self.values[first], ndims)
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


class MemberTensors:
    """A param group's per-member settings (its lists ``lr``, ``momentum``, ``weight_decay``)
    as [K] tensors on the parameters' device, their [K, 1, ...] views, and the scratch tensors
    of the masking; built by StackedOptimizer when it is built, loaded or moved."""

    def __init__(self, group: Mapping[str, Any]) -> None:
        params = group["params"]
        p = params[0]
        self.device, self.dtype = p.device, p.dtype
        self.ndims = [param.dim() for param in params]
        self.count = len(group["lr"])
        self.lr = torch.tensor(group["lr"], dtype=torch.float64, device=p.device)
        self.momentum = torch.tensor(group["momentum"], dtype=torch.float64, device=p.device)
        self.weight_decay64 = torch.tensor(
            group["weight_decay"], dtype=torch.float64, device=p.device
        )
        self.weight_decay_views = member_views(self.weight_decay64.to(p.dtype), self.ndims)
        self.decays = any(v != 0 for v in group["weight_decay"])
        self.any_momentum = any(v > 0 for v in group["momentum"])
        self.all_momentum = all(v > 0 for v in group["momentum"])
        self.keep = torch.empty(self.count, dtype=INT_OF_SIZE[p.dtype.itemsize], device=p.device)
        self.keep_views = member_views(self.keep, self.ndims)
        self.like = p
        self.workspaces: dict[Layout, CoefficientRows] = {}
        # A static step's rows (UpdateStep.static), rounded once: per (name, off) key.
        self.static_rows: dict[tuple[tuple[str, float], ...], tuple[CoefficientRows, Tensor]] = {}

    def workspace(self, layout: Layout) -> CoefficientRows:
        workspace = self.workspaces.get(layout)
        if workspace is None:
            workspace = self.workspaces[layout] = CoefficientRows(layout, self.ndims, self.like)
        return workspace


@dataclass
class UpdateStep:
    """What one kind's update needs for one optimizer step on the general path.

    ``params``, ``grads`` and ``states`` are those of the parameters that have a gradient;
    ``all_states`` those of all the group's parameters (per-parameter coefficients are
    computed for all of them, and used for those in ``params``).
    """

    members: MemberTensors
    active: Tensor  # bool [K]: the members this step updates
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

    def subset(self, views: list[Tensor]) -> list[Tensor]:
        """Per-parameter views of the whole group, cut to ``params``."""
        return views if self.indices is None else [views[i] for i in self.indices]

    def coefficients(self, **rows: tuple[Tensor | float, float]) -> dict[str, list[Tensor]]:
        """Each name's (value, off): value (a float64 [K] tensor, a float64 [P, K] tensor with
        one row per parameter of the group, or a float) for the active members, off for the
        frozen ones. Returns each name's [K, 1, ...] views, one per parameter in ``params``.
        All of them cost one torch.where and one copy into a persistent workspace; for a
        ``static`` step, whose values never change, one select of values rounded once."""
        members = self.members
        key = tuple((name, off) for name, (_, off) in rows.items())
        cached = members.static_rows.get(key) if self.static else None
        if cached is None:
            layout = []
            values = []
            like = members.lr
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
            workspace = members.workspace(tuple(layout))
            if not self.static:
                workspace.fill(self.active, values)
                return {name: self.subset(views) for name, views in workspace.views.items()}
            cached = members.static_rows[key] = (workspace, workspace.rounded(values))
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
        """``masked_gradients`` of this step: with the members' weight decay unless
        ``weight_decay`` is False (AdamW decays the parameters instead); ``in_place`` for an
        update that only reads them."""
        members = self.members
        members.keep.copy_(self.active)  # 1 or 0
        decays = None
        if weight_decay and members.decays:
            decays = self.subset(members.weight_decay_views)
        keep = self.subset(members.keep_views)
        itype = members.keep.dtype
        return masked_gradients(self.grads, self.params, decays, keep, itype, in_place=in_place)

    def frozen_guard(self) -> dict[str, tuple[Tensor | float, float]]:
        """With eps == 0 a frozen member's denominator may be 0: a row ``frozen`` (1 for the
        frozen members, 0 for the active ones) to add to it; none otherwise."""
        return {"frozen": (0.0, 1.0)} if self.settings["eps"] == 0 else {}

    def guard(self, denominators: list[Tensor], coefficients: dict[str, list[Tensor]]) -> None:
        if "frozen" in coefficients:
            torch._foreach_add_(denominators, coefficients["frozen"])
