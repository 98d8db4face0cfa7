"""A job: one run of a sweep (or the single run), its resolved config and its folder; and what
is recorded when a job cannot train at all.

The rule for a run that fails: what the command line names wrongly (an unknown key or config
choice) is refused before Hydra makes any folder (letters.common.overrides); once a run's folder
exists, it ends with a metrics.json, and a run that could not train says ``failed`` there with
the error line that also ends its train.log, a single run as much as a sweep's job."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from letters.common.errors import LettersError, user_error_line
from letters.common.records import FAILED_SCORE, RecordError, Status, read_record, write_record

log = logging.getLogger("letters.train")


@dataclass
class Job:
    """One run of a sweep (or the single run): its resolved config and its directory."""

    cfg: DictConfig
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    member_of: Path | None = None  # the ensemble run (ensemble=K) this job is a member of
    # hydra/sweeper=optuna: the job's own trial (a TrialLink), which it reports to and the
    # pruner may stop (letters.runs.pruning)
    trial: Any = None


def multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(
    job_or_run_dir: Job | Path,
    error: BaseException,
    member: int | None = None,
    console: bool = True,
) -> float:
    """A job that could not train: one log line, and metrics.json saying why. Returns the
    job's score (FAILED_SCORE), what a sweeper gets for it. ``console=False`` (a single run,
    whose entry point prints the line itself): the line goes to the log files only."""
    run_dir = job_or_run_dir.run_dir if isinstance(job_or_run_dir, Job) else job_or_run_dir
    extra = {} if member is None else {"member": member}
    line = user_error_line(error)
    if line is not None:
        message, text, trace = line, f"error: {line}", None
    else:  # a bug: its traceback goes to the log
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        text, trace = f"job failed: {message}", error
    if console:
        log.error("%s", text, exc_info=trace, extra=extra)
    else:
        log_to_files(text, trace, extra)
    try:
        write_record(run_dir, {"status": Status.FAILED, "error": message})
    except LettersError as unwritable:  # the same full disk, say: the log line must do
        log.error("%s", unwritable, extra=extra)
    return FAILED_SCORE


def log_to_files(text: str, trace: BaseException | None, extra: dict[str, int]) -> None:
    """Log ``text`` (with the traceback of ``trace``) to the log files, the run's train.log,
    and not to the console."""
    exc_info = None if trace is None else (type(trace), trace, trace.__traceback__)
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (text,), exc_info)
    record.__dict__.update(extra)
    for handler in logging.getLogger().handlers + log.handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)


@contextmanager
def failure_recorded() -> Iterator[None]:
    """An error that leaves the current Hydra job (a single run's, or a sweep job's that no
    one recorded) is recorded in its folder, then raised on: whoever catches it prints it,
    so the line goes to its train.log alone. A run that already has a record keeps it: a
    divergence records itself, and a resumed run's record still says how it ended."""
    try:
        yield
    except Exception as error:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            recorded = read_record(run_dir) is not None
        except RecordError:
            recorded = True  # not ours to overwrite either
        if not recorded:
            record_failure(run_dir, error, console=False)
        raise
