"""Reading a sweep: its jobs (each with Hydra's records of it and its metrics.json), the keys
that vary between them, the groups of jobs that share a setting, and which are best.

An ensemble run (``ensemble=K``) is one job of the sweep; its members (``RUN/members/<i>/``)
are not: their accuracies are read from the ensemble's metrics.json.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from letters.common.errors import LettersError, first_line
from letters.common.records import (
    RECORD_FILE,
    RecordError,
    RunRecord,
    Status,
    is_number,
    read_record,
    status_of,
)
from letters.common.settings import CONTINUATION_KEYS

REPLICATE_KEYS = ("seed",)  # keys that repeat a setting rather than make another
METRICS = (("val_acc", "val acc (last epoch)"), ("test_acc", "test acc"))  # key, column title
# The members' columns of an ensemble, beside METRICS' (same order). An ensemble joins each
# member's best checkpoint, and a member's test_acc is that checkpoint's: its best_val_acc is
# the validation accuracy of the same checkpoint, the one to set beside the ensemble's.
MEMBER_METRICS = (("best_val_acc", "members best val"), ("test_acc", "members test"))
CHANCE = 1 / 26  # the accuracy of a guess, or of always answering the same letter (balanced)
# A run that gives every test image one of at most this many classes has collapsed (read from
# metrics.json's predicted_classes when it is recorded; otherwise accuracy at chance says so).
COLLAPSED_CLASSES = 2
UNUSED = "-"  # a key a run does not use (momentum for Adam): its metrics.json records null
DEFAULT = "(default)"  # a key a run was not given: the config's default
NO_RECORD = f"{Status.MISSING} {RECORD_FILE}"  # the status shown for a job without a record


@dataclass
class Run:
    """One job of a sweep: where it is, the overrides it ran with, and what it recorded."""

    directory: Path
    overrides: dict[str, str]
    metrics: RunRecord | None
    problem: str | None = None  # why its files could not be read
    number: int | None = None  # its job number (hydra.job.num): an Optuna trial's number

    @property
    def status(self) -> Status | str:
        """Why its files could not be read, else its record's status (Status.MISSING without a
        record; the text itself when letters does not know it)."""
        return self.problem if self.problem is not None else status_of(self.metrics)

    @property
    def status_text(self) -> str:
        """``status`` as the report shows it."""
        return NO_RECORD if self.status is Status.MISSING else str(self.status)

    @property
    def usable(self) -> bool:
        return (
            self.status is Status.FINISHED
            and self.metrics is not None
            and all(is_number(self.metrics.get(key)) for key, _ in METRICS)
        )

    @property
    def pruned(self) -> bool:
        """A search's trial that its pruner stopped early, with its numbers at that point
        (its last validation, its best checkpoint's test): listed after the finished ones."""
        return (
            self.status is Status.PRUNED
            and self.metrics is not None
            and all(is_number(self.metrics.get(key)) for key, _ in METRICS)
        )

    @property
    def pruned_epoch(self) -> int | None:
        epoch = (self.metrics or {}).get("pruned_epoch")
        return int(epoch) if is_number(epoch) else None

    def value(self, key: str) -> float:
        return float(self.metrics[key])  # type: ignore[index]

    def setting(self, key: str) -> str:
        """The value this run had for ``key``, as typed; UNUSED or DEFAULT when not typed."""
        if key in self.overrides:
            return self.overrides[key]
        params = (self.metrics or {}).get("params")
        if isinstance(params, dict) and key in params and params[key] is None:
            return UNUSED
        return DEFAULT

    @property
    def members(self) -> list[dict[str, Any]]:
        """An ensemble run's members, as its metrics.json lists them; [] for a plain run."""
        members = (self.metrics or {}).get("members")
        return [m for m in members if isinstance(m, dict)] if isinstance(members, list) else []

    def member_values(self, key: str) -> list[float]:
        """``key`` of each member that recorded it (a member that failed has no test_acc)."""
        return [float(member[key]) for member in self.members if is_number(member.get(key))]

    @property
    def collapsed(self) -> str | None:
        """Why this finished run looks collapsed (one class for every image), or None."""
        if not self.usable:
            return None
        classes = self.metrics.get("predicted_classes")  # type: ignore[union-attr]
        if is_number(classes):
            if classes <= COLLAPSED_CLASSES:
                return f"predicts {int(classes)} class{'es' * (classes != 1)} for every test image"
            return None
        if all(self.value(key) <= CHANCE + 1e-6 for key, _ in METRICS):
            return f"val and test accuracy at or below chance (1/26 = {100 * CHANCE:.1f}%)"
        return None


@dataclass
class Group:
    """The runs of one setting (the same value of every swept key): seeds of one experiment."""

    setting: dict[str, str]
    runs: list[Run] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [run.value(key) for run in self.runs if run.usable]

    def summary(self, key: str) -> dict[str, float | None]:
        """``spread_of`` the group's finished runs' ``key``."""
        return spread_of(self.values(key))

    def member_values(self, key: str) -> list[float]:
        """``key`` of every member of the group's ensembles, pooled: the runs in the table only,
        like ``values``."""
        return [value for run in self.runs if run.usable for value in run.member_values(key)]

    @property
    def collapsed(self) -> int:
        return sum(run.collapsed is not None for run in self.runs)


def spread_of(values: list[float]) -> dict[str, float | None]:
    """Mean, standard deviation (None for fewer than two values), min and max of ``values``."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}


# ---------------------------------------------------------------------------------------------
# A job's files
# ---------------------------------------------------------------------------------------------


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """``key=value`` lines of .hydra/overrides.yaml as a dict, without the keys that only
    continue a job (CONTINUATION_KEYS)."""
    parsed = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        key = key.lstrip("+~")
        if key not in CONTINUATION_KEYS:
            parsed[key] = value
    return parsed


def job_record(directory: Path) -> tuple[RunRecord | None, str | None]:
    """A job's metrics.json (None when there is none), or why it cannot be read."""
    try:
        return read_record(directory), None
    except RecordError as error:
        return None, f"unreadable {RECORD_FILE} ({error.reason})"


def hydra_record(directory: Path) -> dict[str, Any]:
    """The job's .hydra/hydra.yaml (its Hydra config), or {} when it cannot be read."""
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        record = yaml.load((directory / ".hydra" / "hydra.yaml").read_text(), Loader=loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    hydra = record.get("hydra") if isinstance(record, dict) else None
    return hydra if isinstance(hydra, dict) else {}


def job_number(directory: Path) -> int | None:
    """The job's number: its folder's name, or hydra.job.num when the folder has another."""
    if directory.name.isdigit():
        return int(directory.name)
    number = (hydra_record(directory).get("job") or {}).get("num")
    return number if isinstance(number, int) else None


# ---------------------------------------------------------------------------------------------
# The jobs of a sweep
# ---------------------------------------------------------------------------------------------


def collect_runs(sweep_dir: Path) -> list[Run]:
    """Every job below ``sweep_dir`` (a job is a folder with Hydra's .hydra/overrides.yaml).

    A job whose files cannot be read is kept, with the problem as its status. An ensemble's
    members are not jobs of the sweep (a member continued with resume= has a .hydra/ of its
    own): their accuracies are read from the ensemble's metrics.json."""
    if not sweep_dir.is_dir():
        raise LettersError(f"{sweep_dir}: not a folder")
    runs = []
    for overrides_file in sorted(sweep_dir.rglob(".hydra/overrides.yaml")):
        directory = overrides_file.parent.parent
        if ensemble_of(directory, sweep_dir) is not None:
            continue
        metrics, problem = job_record(directory)
        try:
            lines = yaml.safe_load(overrides_file.read_text()) or []
            overrides = parse_overrides(lines if isinstance(lines, list) else [])
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            overrides, problem = {}, f"unreadable .hydra/overrides.yaml ({first_line(error, 120)})"
        runs.append(Run(directory, overrides, metrics, problem, job_number(directory)))
    if not runs:
        raise LettersError(f"{sweep_dir}: no runs found (no */.hydra/overrides.yaml below it)")
    return sorted(runs, key=lambda run: job_order(run.directory, sweep_dir))


def ensemble_of(directory: Path, sweep_dir: Path) -> Path | None:
    """The ensemble run that ``directory`` is a member of (``RUN/members/<i>``, RUN below or at
    ``sweep_dir``), or None. RUN is an ensemble when it is a job itself (it may still be
    training, with no metrics.json yet) or its metrics.json lists members."""
    parts = directory.relative_to(sweep_dir).parts
    for index in range(len(parts) - 1):
        if parts[index] != "members" or not parts[index + 1].isdigit():
            continue
        run = sweep_dir.joinpath(*parts[:index])
        metrics, _ = job_record(run)
        if (run / ".hydra" / "overrides.yaml").is_file() or "members" in (metrics or {}):
            return run
    return None


def job_order(directory: Path, sweep_dir: Path) -> tuple:
    """Jobs in numeric order of their folders (2 before 10), then by name."""
    parts = directory.relative_to(sweep_dir).parts
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts)


# ---------------------------------------------------------------------------------------------
# What varies, and the groups it makes
# ---------------------------------------------------------------------------------------------


def swept_keys(runs: list[Run]) -> list[str]:
    """Keys whose value differs between runs, in the order they were typed."""
    keys: list[str] = []
    for run in runs:
        keys += [key for key in run.overrides if key not in keys]
    return [
        key
        for key in keys
        if key not in REPLICATE_KEYS and len({run.setting(key) for run in runs}) > 1
    ]


def shown_keys(runs: list[Run], keys: list[str]) -> list[str]:
    """The keys that tell one run from another: the swept ones, and the seed when it varies."""
    return keys + [k for k in REPLICATE_KEYS if len({r.setting(k) for r in runs}) > 1]


def sort_key(value: str | None) -> tuple:
    """Numbers in numeric order, then everything else as text."""
    try:
        return (0, float(value), "")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def group_runs(runs: list[Run], keys: list[str]) -> list[Group]:
    """The runs grouped by their values of ``keys``, in the order of those values."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        setting = {key: run.setting(key) for key in keys}
        groups.setdefault(tuple(setting.values()), Group(setting)).runs.append(run)
    return sorted(groups.values(), key=lambda g: [sort_key(v) for v in g.setting.values()])


def best_group(groups: list[Group]) -> Group | None:
    """The setting of the highest mean validation accuracy, when there is a choice."""
    ranked = [g for g in groups if g.summary("val_acc")["mean"] is not None]
    if len(ranked) < 2:
        return None
    return max(ranked, key=lambda g: g.summary("val_acc")["mean"])


def ranked_trials(runs: list[Run]) -> list[Run]:
    """The trials that finished: best validation accuracy first, then by trial number."""
    usable = [run for run in runs if run.usable]
    return sorted(usable, key=lambda run: (-run.value("val_acc"), run.number or 0))


def ranked_pruned(runs: list[Run]) -> list[Run]:
    """The trials a pruner stopped, best last validation accuracy first."""
    pruned = [run for run in runs if run.pruned]
    return sorted(pruned, key=lambda run: (-run.value("val_acc"), run.number or 0))
