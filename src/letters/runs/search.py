"""The conditional part of the Optuna search space (``conf/hparams_search/*.yaml``).

``hydra.sweeper.custom_search_space: letters.runs.search.momentum_where_used`` is called by the
Optuna sweeper for every trial after it has sampled ``hydra.sweeper.params``: it samples the
momentum only for the optimizers that use one (sgd, rmsprop), so that no Adam trial is given
a momentum it ignores (and warns about), and the sampler does not learn from a value that
had no effect.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from letters.optim import OPTIMIZERS

# The momentum's range, as ``momentum: interval(0.8, 0.98)`` in hydra.sweeper.params would be.
MOMENTUM = (0.8, 0.98)


def trial_optimizer(cfg: DictConfig, trial: Any) -> str | None:
    """The optimizer of this trial: sampled, fixed on the command line, or the config's."""
    if "optimizer" in trial.params:
        return str(trial.params["optimizer"])
    if "optimizer" in trial.user_attrs:  # optimizer=adam typed with hparams_search=...
        return str(trial.user_attrs["optimizer"])
    name = OmegaConf.select(cfg, "optimizer.name", default=None)
    return None if name is None else str(name)


def momentum_where_used(cfg: DictConfig, trial: Any) -> None:
    """Sample ``momentum`` in MOMENTUM for a trial whose optimizer takes one.

    A momentum given on the command line (fixed, or as a range of its own) is left to the
    sweeper: it applies to every trial, as typed."""
    if "momentum" in trial.params or "momentum" in trial.user_attrs:
        return
    kind = OPTIMIZERS.get(trial_optimizer(cfg, trial) or "")
    if kind is not None and kind.takes_momentum:
        trial.suggest_float("momentum", *MOMENTUM)
