"""Continuing a run in its own directory: ``python -m letters.train resume=RUN_DIR``, and a
whole sweep in its own: the same multirun command plus ``hydra.sweep.dir=DIR resume=true``.

Hydra's run directory follows ``resume`` (conf/hydra/default.yaml uses the resolvers below),
and the run's own saved config comes back with ``resume`` pointing at its ``last.ckpt``.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from letters.common.errors import ConfigError, LettersError, first_line

log = logging.getLogger("letters.train")


def resumed_run_dir(resume: str | bool | None, new_run_dir: str) -> str:
    """hydra.run.dir: a resumed run finishes in its own directory, a new run gets a new one."""
    if not resume or resume is True:  # resume=true is for sweeps (their own directories)
        return new_run_dir
    path = Path(resume)
    return str(path.parent.parent if path.suffix == ".ckpt" else path)


OmegaConf.register_new_resolver("letters_run_dir", resumed_run_dir, replace=True)


def hydra_subdir(resume: str | bool | None, output_dir: str) -> str:
    """hydra.output_subdir: a continued run keeps the .hydra/ it started with and records how
    it was continued beside it; a run that never started gets .hydra/ as usual."""
    if resume and (Path(output_dir) / ".hydra").is_dir():
        return f".hydra-resumed/{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"
    return ".hydra"


OmegaConf.register_new_resolver("letters_hydra_subdir", hydra_subdir, replace=True)


def scheduler_job_id() -> str | None:
    """The scheduler's id of this job when submitit runs it (SLURM's job id, or the local
    executor's): the same when submitit requeues the job after a preemption or time limit."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit

    return str(submitit.JobEnvironment().job_id)


def requeued_job(run_dir: Path) -> bool:
    """Whether this job is submitit's requeue of one a signal interrupted: its directory holds
    the interrupted run that this very scheduler job left. It then continues from its
    last.ckpt without anyone typing anything (resume=true does the same for a whole sweep)."""
    job_id = scheduler_job_id()
    if job_id is None:
        return False
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (
        isinstance(record, dict)
        and record.get("status") == "interrupted"
        and record.get("scheduler_job_id") == job_id
    )


def continue_sweep_job(
    cfg: DictConfig, run_dir: Path, task_overrides: list[str]
) -> DictConfig | float:
    """``resume=true`` in a multirun, for the job whose directory is ``run_dir``: a job that
    finished returns its recorded validation accuracy (it is not run again); one that was
    interrupted continues from its last.ckpt (with the command's ``epochs``, the one setting
    a continued run may change); one that never started runs from the start."""
    previous = run_dir / "metrics.json"
    if previous.is_file():
        try:
            record = json.loads(previous.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise LettersError(f"{previous}: unreadable ({error})") from None
        status = record.get("status")
        if status == "finished" and isinstance(record.get("val_acc"), int | float):
            log.info("%s: finished before; its recorded val_acc is reused", run_dir)
            return float(record["val_acc"])
        if status in ("diverged", "failed"):
            from letters.train import FAILED_SCORE

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
    from letters.common.config import check_handed_over

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
