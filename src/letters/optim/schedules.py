"""The learning-rate (and momentum) schedules a config may name, in closed form.

StackedOptimizer scales each member's lr by ``schedule_factors`` at every optimizer step, so
that torch's OneCycleLR and CosineAnnealingLR formulas live here once, without a torch
scheduler object per member.
"""

from __future__ import annotations

import math

SCHEDULERS: tuple[str, ...] = ("none", "onecycle", "cosine")

# torch's OneCycleLR arguments that the "onecycle" schedule uses (the rest are torch's defaults).
ONECYCLE_PCT_START = 0.15
ONECYCLE_DIV_FACTOR = 25.0
ONECYCLE_FINAL_DIV_FACTOR = 1e4
ONECYCLE_MAX_MOMENTUM = 0.95
ONECYCLE_BASE_MOMENTUM = 0.85


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
