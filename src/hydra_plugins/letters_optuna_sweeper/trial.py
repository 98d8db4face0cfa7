"""A job's own Optuna trial: how a task function launched by ``hydra/sweeper=optuna`` reports
its intermediate values and learns that the pruner stops it.

    from hydra_plugins.letters_optuna_sweeper.trial import TrialLink

    link = TrialLink.of_current_job()       # None outside this sweeper's jobs
    trial = link.open() if link else None   # an optuna.trial.Trial, in any process
    for epoch in range(1, epochs + 1):
        ...
        if trial is not None:
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

A job that raises ``optuna.TrialPruned`` is told to the study as PRUNED (its last reported
value stands), not as a failure. The sweeper names each job's trial in its Hydra config
(``hydra.sweeper.trial``); the job reaches the study through its storage, so this works
wherever the job runs (in the sweeper's process, or a launcher's worker or cluster job).

Imported by plugin discovery on every Hydra start: Optuna is imported only when a trial is
opened.
"""

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

# What this sweeper's config is called in a job's Hydra config (hydra.sweeper._target_).
SWEEPER_TARGET = "hydra_plugins.letters_optuna_sweeper.optuna_sweeper.OptunaSweeper"
# The study's file in the sweep folder, when hydra.sweeper.storage is null.
DEFAULT_DATABASE = "optuna.db"
# Trial attributes the sweeper sets: which sweep folder and job number a trial is.
SWEEP_DIR_ATTR = "hydra_sweep_dir"
JOB_NUM_ATTR = "hydra_job_num"


def sweep_dir_of(hydra_cfg: DictConfig) -> Path:
    """The sweep folder as an absolute path (relative ones are relative to where the command
    was started, hydra.runtime.cwd, even when a job has changed directory)."""
    sweep_dir = Path(str(hydra_cfg.sweep.dir))
    if not sweep_dir.is_absolute():
        sweep_dir = Path(str(hydra_cfg.runtime.cwd)) / sweep_dir
    return sweep_dir


def storage_url(storage: Any, sweep_dir: Path) -> str:
    """The study's database URL: ``storage``, or the sweep folder's SQLite file."""
    if storage is None:
        return f"sqlite:///{sweep_dir / DEFAULT_DATABASE}"
    return str(storage)


def study_name_of(study_name: str | None, sweep_dir: Path) -> str:
    """The study's name: ``study_name``, or the sweep folder's name."""
    return study_name if study_name else sweep_dir.name


@dataclasses.dataclass(frozen=True)
class TrialLink:
    """Where one job's trial lives: plain values, so that it pickles to any worker."""

    storage: str
    study_name: str
    number: int
    pruner: dict | None  # the pruner's config (with _target_), or None

    @classmethod
    def of_current_job(cls) -> Optional["TrialLink"]:
        """The trial of the job whose Hydra config is current, or None when this job was not
        launched by this sweeper (any other sweeper, a single run)."""
        if not HydraConfig.initialized():
            return None
        return cls.of_hydra_config(HydraConfig.get())

    @classmethod
    def of_hydra_config(cls, hydra_cfg: DictConfig) -> Optional["TrialLink"]:
        sweeper = hydra_cfg.get("sweeper")
        if sweeper is None or sweeper.get("_target_") != SWEEPER_TARGET:
            return None
        if sweeper.get("trial") is None:
            return None
        sweep_dir = sweep_dir_of(hydra_cfg)
        pruner = sweeper.get("pruner")
        return cls(
            storage=storage_url(sweeper.get("storage"), sweep_dir),
            study_name=study_name_of(sweeper.get("study_name"), sweep_dir),
            number=int(sweeper.trial),
            pruner=None if pruner is None else OmegaConf.to_container(pruner, resolve=True),
        )

    def open(self) -> Any:
        """The trial, as an ``optuna.trial.Trial`` bound to the study (with its pruner)."""
        import optuna

        from ._impl import instantiate_optuna

        storage = open_storage(self.storage)
        pruner = optuna.pruners.NopPruner()
        if self.pruner is not None:
            pruner = instantiate_optuna("pruner", self.pruner)
        study = optuna.load_study(
            study_name=self.study_name,
            storage=storage,
            # Nothing is sampled here: the sweeper sampled the trial's parameters already.
            sampler=optuna.samplers.RandomSampler(),
            pruner=pruner,
        )
        study_id = storage.get_study_id_from_name(self.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        return optuna.trial.Trial(study, trial_id)


@functools.lru_cache(maxsize=8)
def open_storage(url: str) -> Any:
    """Optuna's storage for ``url``. SQLite waits for a lock (up to a minute) instead of
    failing at once when another job or sweep writes at the same moment; two sweeps that make
    a new database at the same moment both find it made. One storage per URL and process: a
    stack's trials share its connections."""
    import optuna
    import sqlalchemy.exc

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError) as error:
            # Another process is making the tables right now (a table or alembic's version row
            # exists already): they are all there once it is done.
            racing = "already exists" in str(error) or "alembic_version" in str(error)
            if not racing or attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
