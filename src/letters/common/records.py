"""A run's record, ``RUN/metrics.json``: what every part of letters reads to know how a run
ended. Its statuses, its fields, the one writer, the one reader, the one line that states it,
and the score a sweeper gets for it are defined here and nowhere else."""

from __future__ import annotations

import json
import math
import os
from enum import Enum
from pathlib import Path
from typing import Any, TypedDict

from letters.common.errors import LettersError, first_line
from letters.common.files import write_json

RECORD_FILE = "metrics.json"

# What a run that failed, diverged or never finished gives a sweeper: the lowest accuracy.
# Not NaN: Hydra's Optuna sweeper ends the whole study on a NaN, 0.0 lets it steer away.
FAILED_SCORE = 0.0


class Status(str, Enum):
    """How a run ended (its record's ``status``)."""

    FINISHED = "finished"  # trained, tested, recorded
    INTERRUPTED = "interrupted"  # a signal stopped it; ``resume`` says how to continue
    DIVERGED = "diverged"  # its loss or weights became non-finite; it stopped there
    PRUNED = "pruned"  # a search's pruner stopped it early (``pruned_epoch``), as a bad trial
    FAILED = "failed"  # it could not train; ``error`` says why in one line
    MISSING = "missing"  # no record (yet): an ensemble's member that never wrote one

    def __str__(self) -> str:
        return self.value


class MemberSummary(TypedDict, total=False):
    """What an ensemble's record says of one of its members."""

    status: str
    seed: int | None
    run_dir: str
    val_acc: float | None
    best_val_acc: float | None
    test_acc: float | None
    train_loss: float | None
    epochs_completed: int | None


class RunRecord(TypedDict, total=False):
    """The fields of metrics.json. Every record has ``status``; the rest depend on it."""

    status: str
    error: str  # failed: the one-line reason
    params: dict[str, Any]  # the hyper-parameters tables and HParams compare runs by
    run_dir: str
    stack_size: int  # how many runs trained together in its stack
    val_acc: float | None  # at the last validation
    best_val_acc: float | None
    val_loss: float | None
    test_acc: float | None  # of the best checkpoint
    test_loss: float | None
    train_loss: float | None  # of the last epoch
    predicted_classes: int  # how many letters the best checkpoint ever answers
    best_checkpoint: str  # relative to run_dir
    epochs_completed: int
    train_seconds: float  # the stack's training, start to end
    wall_seconds: float  # the stack's training, testing and recording
    pictures_error: str
    pretrained: dict[str, Any]  # data, epochs, seconds of pre-training
    diverged_epoch: int
    diverged_step: int
    pruned_epoch: int  # pruned: the epoch of the validation after which it stopped
    signal: str  # interrupted: the signal's name
    epochs: int  # interrupted: the epochs the run was to train
    resume: str | None  # interrupted: the command that continues it (None: start again)
    scheduler_job_id: str  # under submitit, the job that wrote it: its requeue continues the run
    ensemble: int  # an ensemble run: its number of members
    members_in_checkpoint: int
    members: list[MemberSummary]


class RecordError(LettersError):
    """A metrics.json that exists but cannot be read; ``reason`` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: unreadable ({reason})")
        self.path, self.reason = path, reason


def record_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / RECORD_FILE


def write_record(run_dir: str | os.PathLike, record: RunRecord) -> None:
    """Write the run's record atomically (letters.common.files.write_json)."""
    write_json(record_path(run_dir), {**record, "status": str(record["status"])})


def read_record(run_dir: str | os.PathLike) -> RunRecord | None:
    """The run's record, or None when it has none; RecordError when it cannot be read."""
    path = record_path(run_dir)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(path, first_line(error, 120)) from None
    if not isinstance(record, dict):
        raise RecordError(path, "not a JSON object")
    return record  # type: ignore[return-value]


def status_of(record: RunRecord | None) -> Status | str:
    """The record's status as a Status, or the unknown text it holds ("?" when none)."""
    if record is None:
        return Status.MISSING
    value = record.get("status", "?")
    try:
        return Status(value)
    except ValueError:
        return str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def score(record: RunRecord | None) -> float:
    """What a sweeper maximises: the last validation accuracy of a finished run, else
    FAILED_SCORE."""
    if record is not None and status_of(record) is Status.FINISHED:
        value = record.get("val_acc")
        if is_number(value):
            return float(value)  # type: ignore[arg-type]
    return FAILED_SCORE


def percent(value: Any) -> str:
    """An accuracy as the tables and lines print it: '63.7%', or '-' when there is none."""
    return f"{100 * value:.1f}%" if is_number(value) else "-"


def seconds_owner(record: RunRecord) -> str:
    """Whose time a record's seconds are: '' for a run alone, 'stack of K: ' for a run trained
    in a stack of K (its times are the whole stack's, not one run's cost)."""
    size = record.get("stack_size")
    return f"stack of {size}: " if is_number(size) and size > 1 else ""


def record_line(record: RunRecord, collapsed: bool = False) -> str:
    """The one line that states how a run ended: logged when it ends (console and train.log,
    after the run's label in a stack) and printed for each job by the sweep-end summary."""
    status = status_of(record)
    diverged = status is Status.DIVERGED
    pruned = status is Status.PRUNED
    continuable = status is Status.INTERRUPTED and record.get("resume")
    if record.get("error") and not (diverged or continuable):
        return f"{status}: {record['error']}"
    after = f" after epoch {record.get('pruned_epoch')}" if pruned else ""
    line = (
        f"{status}{after}: val_acc {percent(record.get('val_acc'))} "
        f"(best {percent(record.get('best_val_acc'))}), "
        f"test_acc {percent(record.get('test_acc'))}"
    )
    if is_number(record.get("train_loss")):
        line += f", train_loss {record['train_loss']:.4f}"
    if is_number(record.get("wall_seconds")):
        line += f", {seconds_owner(record)}{record['wall_seconds']:.1f} s"
    if diverged:
        line += f"; at epoch {record.get('diverged_epoch')}, step {record.get('diverged_step')}"
    elif continuable:
        line += f"; continue with {record['resume']}"
    if collapsed:
        line += "; collapsed"
    return line
