"""A job: one run of a sweep (or the single run), its resolved config and its folder; and what
is recorded when a job cannot train at all."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from letters.common.errors import LettersError
from letters.common.records import FAILED_SCORE, Status, write_record

log = logging.getLogger("letters.train")


@dataclass
class Job:
    """One run of a sweep (or the single run): its resolved config and its directory."""

    cfg: DictConfig
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    member_of: Path | None = None  # the ensemble run (ensemble=K) this job is a member of


def multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(
    job_or_run_dir: Job | Path, error: BaseException, member: int | None = None
) -> float:
    """A job that could not train: one log line, and metrics.json saying why. Returns the
    job's score (FAILED_SCORE), what a sweeper gets for it."""
    run_dir = job_or_run_dir.run_dir if isinstance(job_or_run_dir, Job) else job_or_run_dir
    extra = {} if member is None else {"member": member}
    if isinstance(error, LettersError):
        message = str(error)
        log.error("error: %s", message, extra=extra)
    else:
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        log.error("job failed: %s", message, exc_info=error, extra=extra)
    try:
        write_record(run_dir, {"status": Status.FAILED, "error": message})
    except LettersError as unwritable:  # the same full disk, say: the log line must do
        log.error("%s", unwritable, extra=extra)
    return FAILED_SCORE
