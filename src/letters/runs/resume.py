"""Continuing a run in its own directory: ``python -m letters.train resume=RUN_DIR``, and a
whole sweep in its own: the same multirun command plus ``hydra.sweep.dir=DIR resume=true``.

Hydra's run directory follows ``resume`` (conf/hydra/default.yaml uses letters.common.resolvers),
and the run's own saved config comes back with ``resume`` pointing at its ``last.ckpt``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from letters.common.config import check_handed_over
from letters.common.errors import ConfigError, LettersError, first_line
from letters.common.records import (
    FAILED_SCORE,
    RecordError,
    Status,
    is_number,
    read_record,
    score,
    status_of,
)
from letters.runs.pruning import pruned_outcome, trial_of_current_job

log = logging.getLogger("letters.train")


def scheduler_job_id() -> str | None:
    """The scheduler's id of this job when submitit runs it (SLURM's job id, or the local
    executor's): the same when submitit requeues the job after a preemption or time limit."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit  # only under submitit: not a cost for everyone else

    return str(submitit.JobEnvironment().job_id)


def scheduler_stamp() -> dict[str, str]:
    """What a run's record says of the scheduler job that wrote it (nothing outside submitit):
    a requeue of that job then knows the run, to continue it or keep how it ended."""
    job_id = scheduler_job_id()
    return {} if job_id is None else {"scheduler_job_id": job_id}


def requeued_job(run_dir: Path) -> bool:
    """Whether this job is submitit's requeue of one a signal interrupted: its directory holds
    a record that this very scheduler job wrote. An interrupted run then continues from its
    last.ckpt without anyone typing anything, and one that ended before the signal (a stack's
    member pruned or diverged, a stack of the same job that finished) keeps its outcome, as
    resume=true does for a whole sweep."""
    job_id = scheduler_job_id()
    if job_id is None:
        return False
    try:
        record = read_record(run_dir)
    except RecordError:
        return False
    return record is not None and record.get("scheduler_job_id") == job_id


def continue_sweep_job(
    cfg: DictConfig, run_dir: Path, task_overrides: list[str]
) -> DictConfig | float | BaseException:
    """``resume=true`` in a multirun, for the job whose directory is ``run_dir``: a job that
    finished returns its recorded validation accuracy (it is not run again), a pruned trial
    Optuna's TrialPruned; one that was interrupted continues from its last.ckpt (with the
    command's ``epochs``, the one setting a continued run may change); one that never started
    runs from the start."""
    record = read_record(run_dir)
    status = status_of(record)
    if status is Status.FINISHED and record is not None and is_number(record.get("val_acc")):
        log.info("%s: finished before; its recorded val_acc is reused", run_dir)
        return score(record)
    if status is Status.PRUNED and record is not None:
        log.info("%s: pruned before; not run again", run_dir)
        return pruned_outcome(record) if trial_of_current_job() else FAILED_SCORE
    if status in (Status.DIVERGED, Status.FAILED):
        log.info("%s: %s before; not run again", run_dir, status)
        return FAILED_SCORE
    continuable = (run_dir / "checkpoints" / "last.ckpt").is_file() or (
        run_dir / "members"
    ).is_dir()
    if continuable and (run_dir / "config.yaml").is_file():
        cfg.resume = str(run_dir)
        epochs = [o for o in task_overrides if o.startswith("epochs=")]
        return resumed_config(cfg, run_dir, epochs)
    cfg.resume = None
    return cfg


def resumed_config(cfg: DictConfig, run_dir: Path, task_overrides: list[str]) -> DictConfig:
    """The interrupted run's own config, with ``resume`` pointing at its last checkpoint.

    Only ``epochs`` may change (to train a finished run further): anything else would make
    the directory hold a run that no config describes.
    """
    others = [o for o in task_overrides if not o.startswith(("resume=", "epochs="))]
    if others:
        raise ConfigError(
            f"resume={cfg.resume}: a resumed run keeps its configuration; only epochs= may "
            f"change (got {' '.join(others)})"
        )
    saved = run_dir / "config.yaml"
    resumed = read_run_config(saved, cfg.resume)
    if int(resumed.get("ensemble") or 1) > 1:
        # An ensemble run has no checkpoint of its own to continue from: each member continues
        # from its own (train.continue_ensemble), then they are joined again.
        needed, resumed.resume = run_dir / "members", str(run_dir)
    else:
        needed = run_dir / "checkpoints" / "last.ckpt"
        if Path(cfg.resume).suffix == ".ckpt":
            needed = Path(cfg.resume)
        resumed.resume = str(needed)
    if not needed.exists():
        raise LettersError(f"{needed}: not found, so {cfg.resume} cannot be resumed")
    repoint_loggers(resumed, run_dir)
    if any(o.startswith("epochs=") for o in task_overrides):
        resumed.epochs = resumed.trainer.max_epochs = cfg.epochs
    return resumed


def read_run_config(saved: Path, resume: Any) -> DictConfig:
    """A run's saved config.yaml, refusing what it may not instantiate (check_handed_over)."""
    if not saved.is_file():
        raise LettersError(f"{saved}: not found, so {resume} cannot be resumed")
    try:
        resumed = OmegaConf.load(saved)
    except Exception as error:  # not YAML, or YAML that is not a mapping
        raise LettersError(f"{saved}: not a readable config ({first_line(error)})") from None
    if not isinstance(resumed, DictConfig):
        raise LettersError(f"{saved}: not a letters run config (not a mapping)")
    check_handed_over(resumed, saved)
    return resumed


def repoint_loggers(resumed: DictConfig, run_dir: Path) -> None:
    """The trackers that write into the run's folder write where it is now, if it was moved.

    A run saved before trackers became a group (one logger at ``logger``) gets its logger
    under the name ``tensorboard``, as conf/logger/tensorboard.yaml names it today.
    """
    logger = resumed.get("logger")
    if isinstance(logger, DictConfig) and "_target_" in logger:
        resumed.logger = logger = OmegaConf.create({"tensorboard": logger})
    if not isinstance(logger, DictConfig):
        return
    started_in = {str(run_dir), *first_run_dirs(run_dir)}
    for node in logger.values():
        if not isinstance(node, DictConfig):
            continue
        if node.get("save_dir") in started_in:
            node.save_dir = str(run_dir)
        if OmegaConf.select(node, "tags.run_dir") in started_in:
            node.tags.run_dir = str(run_dir)


def first_run_dirs(run_dir: Path) -> set[str]:
    """Where the run in ``run_dir`` was when it started: Hydra's record of it."""
    try:
        hydra = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml")
        return {str(hydra.hydra.runtime.output_dir)}
    except Exception:  # no record (or an unreadable one): nothing else to re-point
        return set()
