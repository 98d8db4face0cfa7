"""The command a multirun was started with, read back from the sweep's multirun.yaml (the
basic sweeper writes it before launching anything): what each job may want to know of the
whole sweep, such as which keys it varies and how many jobs run at once."""

from __future__ import annotations

import functools
import stat
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf


def read_sweep(multirun_yaml: str | Path) -> DictConfig | None:
    """The sweep's config (SWEEP_DIR/multirun.yaml), read-only, or None when the sweep left
    none (the Optuna sweeper keeps its command to itself) or it cannot be read. Read once
    while the file stays as it is: every job of a sweep asks (0.03 s of YAML each)."""
    path = Path(multirun_yaml)
    try:
        status = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return _read_sweep(str(path.resolve()), status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=8)
def _read_sweep(path: str, mtime_ns: int, size: int) -> DictConfig | None:
    try:
        config = OmegaConf.load(path)
    except Exception:  # an unreadable record of the sweep: nothing is known of it
        return None
    if not isinstance(config, DictConfig):
        return None
    OmegaConf.set_readonly(config, True)  # shared by every caller
    return config


def sweep_overrides(sweep: DictConfig) -> list[Any] | None:
    """The sweep's overrides, parsed (Hydra's ``Override``): its sweeper's ``params`` as
    ``key=values``, then the command line's; None when they cannot be parsed."""
    try:
        params = OmegaConf.select(sweep, "hydra.sweeper.params") or {}
        arguments = [f"{key}={value}" for key, value in params.items()]
        arguments += list(OmegaConf.select(sweep, "hydra.overrides.task") or [])
        return list(_parsed(tuple(arguments)))
    except Exception:  # a record of the sweep we cannot read: nothing is known of it
        return None


@functools.lru_cache(maxsize=8)
def _parsed(arguments: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(OverridesParser.create().parse_overrides(list(arguments)))
