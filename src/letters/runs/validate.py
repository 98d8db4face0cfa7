"""The training config's checks, run before any data is decoded or any training starts, so that
a typo costs a second and one clear line instead of a traceback minutes into a run; a data
folder's layout is among them (looked at, not read)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from letters.common.config import choice, number
from letters.common.errors import ConfigError
from letters.data.list_layout import check_layout
from letters.nn.autograd import ACTIVATIONS, REDUCTIONS
from letters.nn.model import INITS, INPUT_NORMS
from letters.optim import OPTIMIZERS, SCHEDULERS

log = logging.getLogger(__name__)


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
    if "test_time_shift" in cfg:  # runs saved before test-time shifts have no such key
        number(cfg, "test_time_shift", low=0, low_inclusive=True, integer=True)
        if cfg.test_time_shift * 4 > cfg.norm_size:
            raise ConfigError(
                f"test_time_shift={cfg.test_time_shift} moves a {cfg.norm_size}-pixel letter by "
                f"more than a quarter of its size; use at most {cfg.norm_size // 4}"
            )
    if "ensemble" in cfg:  # runs saved before ensembles have no such key
        number(cfg, "ensemble", low=1, low_inclusive=True, integer=True)
    if cfg.get("pretrain"):
        pretrain = cfg.pretrain
        if not isinstance(pretrain, DictConfig) or "data" not in pretrain:
            raise ConfigError(
                f"pretrain={pretrain!r} must be a pre-training config (pretrain=synthetic|emnist)"
            )
        number(pretrain, "epochs", low=1, low_inclusive=True, integer=True, prefix="pretrain.")
    validate_data(cfg.get("data"))
    if cfg.get("pretrain"):
        validate_data(cfg.pretrain.get("data"), "pretrain.data")
    takes_momentum = OPTIMIZERS[name].takes_momentum
    if not takes_momentum and any(o.startswith("momentum=") for o in task_overrides):
        log.warning("momentum=%s is ignored: optimizer %s has no momentum", cfg.momentum, name)


def validate_data(data: Any, key: str = "data") -> None:
    """A list-layout data source's folder (``data.root``), looked at before anything slow
    loads: one line saying what it must hold, or which folder was probably meant."""
    target = data.get("_target_") if isinstance(data, DictConfig) else None
    if not isinstance(target, str) or target.rpartition(".")[2] != "ListDataModule":
        return
    if OmegaConf.is_missing(data, "root"):
        raise ConfigError(
            f"{key}.root=DIR is needed: a folder holding train.json, validation.json, test.json "
            "and images/"
        )
    check_layout(Path(str(data.root)).expanduser())
