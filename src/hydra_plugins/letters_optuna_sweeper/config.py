"""The sweeper's config, ``hydra/sweeper=optuna``, and the choices of its two groups:
``hydra/sweeper/sampler`` (tpe, random, grid, cmaes, nsgaii, gp, qmc) and
``hydra/sweeper/pruner`` (median, percentile, successive_halving, hyperband, threshold,
patient). Any other sampler or pruner is named by its ``_target_``.

The keys are those of Hydra's Optuna sweeper (hydra-optuna-sweeper), plus ``pruner``; a
sampler's or pruner's fields are its Optuna constructor's arguments, and a field left null
keeps the default of the Optuna installed.

Plugin discovery imports this module on every start of every Hydra app: it imports nothing
but Hydra, OmegaConf and the standard library, and no string annotations (see
letters_stacked_launcher's config for why).
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Direction(Enum):
    minimize = 1
    maximize = 2


@dataclass
class SamplerConfig:
    _target_: str = MISSING


@dataclass
class TPESamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.TPESampler.html"""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool | None = None
    group: bool = False
    # Trials asked together (n_jobs > 1, a stack) are spread apart instead of all sampled
    # from the same model: the running ones count as having the worst value seen so far.
    # (null: Optuna's default, true since Optuna 5.)
    constant_liar: bool | None = None
    consider_endpoints: bool | None = None
    prior_weight: float | None = None
    warn_independent_sampling: bool | None = None


@dataclass
class RandomSamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.RandomSampler.html"""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class GridSamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.GridSampler.html

    Its search space is made from ``hydra.sweeper.params`` at run time (discrete choices,
    ranges with a step)."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: int | None = None


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.CmaEsSampler.html"""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: str | None = None
    inc_popsize: int | None = None
    use_separable_cma: bool = False


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.NSGAIISampler.html"""

    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class GPSamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.GPSampler.html"""

    _target_: str = "optuna.samplers.GPSampler"
    seed: int | None = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False


@dataclass
class QMCSamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.QMCSampler.html"""

    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = None
    qmc_type: str = "sobol"
    scramble: bool = False


@dataclass
class PrunerConfig:
    _target_: str = MISSING


@dataclass
class MedianPrunerConfig(PrunerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.MedianPruner.html"""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConfig(PrunerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.PercentilePruner.html"""

    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConfig(PrunerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.SuccessiveHalvingPruner.html"""

    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.HyperbandPruner.html

    Give ``max_resource`` (the last step a trial reports: for letters, ``epochs``) when trials
    run side by side: with "auto" nothing is pruned until one trial has finished."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class ThresholdPrunerConfig(PrunerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.ThresholdPruner.html"""

    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class PatientPrunerConfig(PrunerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.PatientPruner.html
    (its ``wrapped_pruner`` is another pruner's config, or null)."""

    _target_: str = "optuna.pruners.PatientPruner"
    wrapped_pruner: Any | None = None
    patience: int = 1
    min_delta: float = 0.0


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.letters_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # The sweeper makes its sampler and pruner itself (Optuna's defaults for keys left null,
    # one line for one that cannot be made): Hydra hands them over as configs.
    _recursive_: bool = False
    # _self_ first: a pruner chosen in its group replaces this config's null.
    defaults: list[Any] = field(
        default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": None}]
    )

    # How trials are sampled (hydra/sweeper/sampler=...). https://optuna.readthedocs.io/en/stable/reference/samplers/index.html
    sampler: Any = MISSING
    # Which trials stop early, on the values they report (null: none).
    # https://optuna.readthedocs.io/en/stable/reference/pruners.html
    pruner: Any | None = None
    # minimize | maximize, or a list of them for several objectives.
    direction: Any = Direction.minimize
    # Where the study lives: a database URL (sqlite:///FILE, postgresql://..., mysql://...);
    # null: SWEEP/optuna.db, the sweep folder's own SQLite file. Several sweeps given one URL
    # and one study_name work on one study together.
    storage: Any | None = None
    # The study's name in its storage; null: the sweep folder's name.
    study_name: str | None = None
    # How many trials the study holds when the sweep ends: a sweep continued in its folder,
    # or one beside others on a shared study, runs only those still missing.
    n_trials: int = 20
    # Trials asked for and launched together (as one stack under hydra/launcher=stacked).
    n_jobs: int = 2
    # The share of a batch's jobs that may fail (raise) before the sweep stops.
    max_failure_rate: float = 0.0
    # The search space, in Hydra's override syntax: key: choice(...) | range(...) |
    # interval(...) | tag(log, interval(...)), or a fixed value.
    params: dict[str, str] | None = None
    # A callable (dotted path) (cfg, trial) -> None that suggests more parameters.
    custom_search_space: str | None = None
    # Set by the sweeper on each job it launches: the number of the Optuna trial that the job
    # is (hydra_plugins.letters_optuna_sweeper.trial). Not for the command line.
    trial: int | None = None


def _store() -> None:
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="letters")
    samplers = {
        "tpe": TPESamplerConfig,
        "random": RandomSamplerConfig,
        "grid": GridSamplerConfig,
        "cmaes": CmaEsSamplerConfig,
        "nsgaii": NSGAIISamplerConfig,
        "gp": GPSamplerConfig,
        "qmc": QMCSamplerConfig,
    }
    for name, node in samplers.items():
        store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="letters")
    pruners = {
        "median": MedianPrunerConfig,
        "percentile": PercentilePrunerConfig,
        "successive_halving": SuccessiveHalvingPrunerConfig,
        "hyperband": HyperbandPrunerConfig,
        "threshold": ThresholdPrunerConfig,
        "patient": PatientPrunerConfig,
    }
    for name, node in pruners.items():
        store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="letters")


_store()
