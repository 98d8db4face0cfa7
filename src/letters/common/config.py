"""Checks of config values, and of configs read from files a user hands over: one clear line
naming the key, before anything slow starts."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from letters.common.entry import CONF_DIR
from letters.common.errors import ConfigError

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
    prefix: str = "",
) -> None:
    """``cfg[key]`` is a number within bounds; the message names it as ``prefix + key``."""
    value = cfg.get(key)
    key = prefix + key
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


@functools.cache
def shipped_targets() -> frozenset[str]:
    """Every ``_target_`` that letters' own config groups name (data sources, loggers)."""

    def collect(node: Any) -> None:
        if isinstance(node, DictConfig):
            for key, value in node.items_ex(resolve=False):
                if key == "_target_" and isinstance(value, str):
                    targets.add(value)
                collect(value)

    targets: set[str] = set()
    for path in CONF_DIR.glob("*/*.yaml"):
        if path.parent.name != "hydra":
            collect(OmegaConf.load(path))
    return frozenset(targets)


def check_handed_over(node: Any, source: str | os.PathLike, where: str = "") -> None:
    """A config read from a file the user hands over (a run's config.yaml, a checkpoint's
    hyper-parameters) may name only the classes letters' own configs name: instantiating any
    other ``_target_`` would run whatever code the file chooses."""
    if isinstance(node, dict | DictConfig):
        items = node.items() if isinstance(node, dict) else node.items_ex(resolve=False)
        for key, value in items:
            here = f"{where}.{key}" if where else str(key)
            if key == "_target_" and value not in shipped_targets():
                raise ConfigError(
                    f"{Path(source)}: {here}={value!r} is not a class letters' configs use "
                    f"({', '.join(sorted(shipped_targets()))}); refusing to run it"
                )
            check_handed_over(value, source, here)
    elif isinstance(node, list | ListConfig):
        for index, value in enumerate(node):
            check_handed_over(value, source, f"{where}[{index}]")
