"""Checks of a composed config, run before any data is decoded or any training starts, so that
a typo costs a second and one clear line instead of a traceback minutes into a run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from letters.autograd import ACTIVATIONS, REDUCTIONS
from letters.errors import ConfigError
from letters.model import INITS, INPUT_NORMS
from letters.optimizers import OPTIMIZERS, SCHEDULERS

log = logging.getLogger(__name__)


def choice(cfg: DictConfig, key: str, allowed: Sequence[str]) -> None:
    value = cfg.get(key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of: {', '.join(allowed)}")


def number(
    cfg: DictConfig,
    key: str,
    *,
    low: float,
    low_inclusive: bool,
    high: float | None = None,
    integer: bool = False,
) -> None:
    value = cfg.get(key)
    kind = "a whole number" if integer else "a number"
    valid_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not valid_type:
        raise ConfigError(f"{key}={value!r} must be {kind}")
    above = value >= low if low_inclusive else value > low
    below = high is None or value < high
    if not (above and below):
        bounds = f"{'>=' if low_inclusive else '>'} {low}" + (
            "" if high is None else f" and < {high}"
        )
        raise ConfigError(f"{key}={value!r} must be {bounds}")


def validate_model(cfg: DictConfig) -> None:
    choice(cfg, "activation", sorted(ACTIVATIONS))
    choice(cfg, "init", INITS)
    choice(cfg, "reduction", REDUCTIONS)
    choice(cfg, "input_norm", INPUT_NORMS)
    sizes = cfg.get("hidden_sizes")
    if (
        sizes is None
        or isinstance(sizes, str | int)
        or not all(
            isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in sizes
        )
    ):
        raise ConfigError(
            f"hidden_sizes={sizes!r} must be a list of whole numbers > 0, e.g. [64,32]"
        )


def validate_training(cfg: DictConfig, task_overrides: Sequence[str] = ()) -> None:
    """All of train.yaml's keys; ``task_overrides`` (as typed) decide the momentum warning."""
    validate_model(cfg)
    optimizer: Any = cfg.get("optimizer")
    name = optimizer.get("name") if isinstance(optimizer, DictConfig) else None
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer={name!r} is not one of: {', '.join(OPTIMIZERS)}")
    choice(cfg, "scheduler", SCHEDULERS)
    number(cfg, "lr", low=0, low_inclusive=False)
    number(cfg, "momentum", low=0, low_inclusive=True, high=1)
    number(cfg, "weight_decay", low=0, low_inclusive=True)
    for key in ("epochs", "batch_size", "val_interval", "norm_size", "steps_per_call"):
        number(cfg, key, low=1, low_inclusive=True, integer=True)
    number(cfg, "seed", low=0, low_inclusive=True, integer=True)
    takes_momentum = OPTIMIZERS[name].takes_momentum
    if not takes_momentum and any(o.startswith("momentum=") for o in task_overrides):
        log.warning("momentum=%s is ignored: optimizer %s has no momentum", cfg.momentum, name)
