"""The optimizers a config may name, and how a config's settings become one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

# Config name -> torch.optim class name. Momentum is a setting only of sgd and rmsprop.
OPTIMIZERS: dict[str, str] = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "adadelta": "Adadelta",
}


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter], settings: dict[str, Any]
) -> torch.optim.Optimizer:
    """``settings`` is an optimizer config: its ``name`` plus the class's keyword arguments."""
    settings = dict(settings)
    optimizer_class = getattr(torch.optim, OPTIMIZERS[settings.pop("name")])
    return optimizer_class(parameters, **settings)


SCHEDULERS: tuple[str, ...] = ("none", "onecycle", "cosine")


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """A learning-rate schedule stepped once per optimizer step, peaking at the config's lr.

    onecycle: warm up over the first 15% of the steps, then anneal (cosine) to near zero;
    cosine: anneal from the start.
    """
    peak = optimizer.param_groups[0]["lr"]
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peak, total_steps=total_steps, pct_start=0.15
        )
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    raise ValueError(f"scheduler must be one of {list(SCHEDULERS)}, got {name!r}")
