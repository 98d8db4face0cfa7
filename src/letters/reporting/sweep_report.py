"""``python -m letters.report SWEEP_DIR``: the table of a sweep, in the form that fits it.

A sweep over settings (a grid: ``-m momentum=0.9,0.95 seed=1,2``, the experiment tables):
runs are grouped by the parameters that vary between them (all but ``seed``, which repeats a
setting); each group shows its validation accuracy at the last epoch and its test accuracy,
as mean ± standard deviation when it has several seeds, with the number of runs. The best
setting (highest mean validation accuracy) is marked, and a sweep of the reference's tables
(SGD momentum, Adam weight decay) shows the reference's published numbers beside ours.

A search (an Optuna study, or trials whose settings differ in several keys without forming a
grid): one row per trial, best validation accuracy first, with its trial (job) number and
folder and the parameters that vary.

An ensemble run (``ensemble=K``) is one job of the sweep, its members (``RUN/members/<i>/``)
are not: the grid shows the members' accuracies beside the ensemble's (mean ± std over every
member of a setting's runs, with their range), and a section under the table lists each run's
members one by one, so that the gain of averaging them is read at a glance.

Runs that collapsed (predict one class, or nearly, for every image) are marked; runs that
failed, diverged or were interrupted are listed under the table, never dropped in silence.
The table is printed as Markdown and written beside the runs as report.md, report.csv,
report.json and report.png.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from letters.common.errors import LettersError, first_line
from letters.common.files import write_atomically, write_json
from letters.reporting.reference import TABLES, ReferenceTable

REPLICATE_KEYS = ("seed",)
# Overrides that say how a job ran, not what it is: a sweep continued with resume=true is the
# same sweep.
NOT_SETTINGS = ("resume",)
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


@dataclass
class Run:
    """One job of a sweep: where it is, the overrides it ran with, and what it recorded."""

    directory: Path
    overrides: dict[str, str]
    metrics: dict[str, Any] | None
    problem: str | None = None  # why its files could not be read
    number: int | None = None  # its job number (hydra.job.num): an Optuna trial's number

    @property
    def status(self) -> str:
        if self.problem is not None:
            return self.problem
        return "missing metrics.json" if self.metrics is None else self.metrics.get("status", "?")

    @property
    def usable(self) -> bool:
        return (
            self.problem is None
            and self.metrics is not None
            and self.status == "finished"
            and all(is_number(self.metrics.get(key)) for key, _ in METRICS)
        )

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


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Group:
    setting: dict[str, str]
    runs: list[Run] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [run.value(key) for run in self.runs if run.usable]

    def summary(self, key: str) -> dict[str, float | None]:
        values = self.values(key)
        if not values:
            return {"mean": None, "std": None}
        std = statistics.stdev(values) if len(values) > 1 else None
        return {"mean": statistics.fmean(values), "std": std}

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


def parse_overrides(lines: list[str]) -> dict[str, str]:
    parsed = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        key = key.lstrip("+~")
        if key not in NOT_SETTINGS:
            parsed[key] = value
    return parsed


def read_metrics(directory: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A job's metrics.json (None when there is none), or why it cannot be read."""
    metrics_file = directory / "metrics.json"
    if not metrics_file.is_file():
        return None, None
    try:
        metrics = json.loads(metrics_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"unreadable metrics.json ({first_line(error, 120)})"
    if not isinstance(metrics, dict):
        return None, "unreadable metrics.json (not a JSON object)"
    return metrics, None


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
    if directory.name.isdigit():
        return int(directory.name)
    number = (hydra_record(directory).get("job") or {}).get("num")
    return number if isinstance(number, int) else None


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
        metrics, problem = read_metrics(directory)
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
        metrics, _ = read_metrics(run)
        if (run / ".hydra" / "overrides.yaml").is_file() or "members" in (metrics or {}):
            return run
    return None


def job_order(directory: Path, sweep_dir: Path) -> tuple:
    parts = directory.relative_to(sweep_dir).parts
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts)


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


def sort_key(value: str | None) -> tuple:
    """Numbers in numeric order, then everything else as text."""
    try:
        return (0, float(value), "")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def group_runs(runs: list[Run], keys: list[str]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for run in runs:
        setting = {key: run.setting(key) for key in keys}
        groups.setdefault(tuple(setting.values()), Group(setting)).runs.append(run)
    return sorted(groups.values(), key=lambda g: [sort_key(v) for v in g.setting.values()])


def shown(value: str) -> str:
    """A swept value for the table: long floats (Optuna's) to 4 significant digits."""
    try:
        float(value)
    except (TypeError, ValueError):
        return value
    return f"{float(value):.4g}" if len(value) > 8 and "." in value else value


def percent(summary: dict[str, float | None]) -> str:
    if summary["mean"] is None:
        return "-"
    text = f"{100 * summary['mean']:.1f}"
    return text + (f" ± {100 * summary['std']:.1f}" if summary["std"] is not None else "")


def one_percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def members_percent(summary: dict[str, float | None]) -> str:
    """Members' accuracy for the table: mean ± std, and their range (min–max) when it is one."""
    text = percent(summary)
    if summary["min"] is not None and summary["min"] != summary["max"]:
        text += f" ({one_percent(summary['min'])}–{one_percent(summary['max'])})"
    return text


def where(run: Run, sweep_dir: Path) -> str:
    """A job's folder, relative to its sweep."""
    return "." if run.directory == sweep_dir else run.directory.relative_to(sweep_dir).as_posix()


def settings_text(run: Run, keys: list[str] | None = None) -> str:
    """``key=value ...`` of a run's overrides (or of ``keys``), leaving out keys it does not use."""
    items = run.overrides.items() if keys is None else ((k, run.setting(k)) for k in keys)
    return " ".join(
        f"{k}={shown(v)}" for k, v in items if not k.startswith("hydra") and v != UNUSED
    )


# ---------------------------------------------------------------------------------------------
# What kind of sweep: a grid of settings (mean ± std over seeds) or a search (one row a trial)
# ---------------------------------------------------------------------------------------------


def sweeper_of(sweep_dir: Path, runs: list[Run]) -> str:
    """The sweeper that made the sweep, as its jobs' Hydra config names it ('' if unknown)."""
    if (sweep_dir / "optimization_results.yaml").is_file():
        return "optuna"
    for run in runs[:3]:
        hydra = hydra_record(run.directory)
        if hydra:
            choice = ((hydra.get("runtime") or {}).get("choices") or {}).get("hydra/sweeper")
            target = (hydra.get("sweeper") or {}).get("_target_") or ""
            return str(choice or target.rsplit(".", 1)[-1])
    return ""


def is_search(sweep_dir: Path, runs: list[Run], keys: list[str], groups: list[Group]) -> bool:
    """An Optuna study, or trials that differ in several keys without forming a grid."""
    if "optuna" in sweeper_of(sweep_dir, runs).lower():
        return True
    if len(keys) < 2 or any(len(group.runs) > 1 for group in groups):
        return False
    grid = math.prod(len({run.setting(key) for run in runs}) for key in keys)
    return len(groups) < grid


def reference_for(runs: list[Run], keys: list[str]) -> ReferenceTable | None:
    """The reference's table this sweep reproduces: its experiment config, or its one swept
    key with the table's optimizer."""
    if len(keys) != 1:
        return None
    for table in TABLES:
        if keys[0] != table.key:
            continue
        if {run.overrides.get("experiment") for run in runs} == {table.experiment}:
            return table
        optimizers = {
            (run.metrics.get("params") or {}).get("optimizer")
            for run in runs
            if run.metrics is not None and isinstance(run.metrics.get("params"), dict)
        }
        if optimizers == {table.optimizer}:
            return table
    return None


# ---------------------------------------------------------------------------------------------
# The two tables
# ---------------------------------------------------------------------------------------------


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def best_group(groups: list[Group]) -> Group | None:
    """The setting of the highest mean validation accuracy, when there is a choice."""
    ranked = [g for g in groups if g.summary("val_acc")["mean"] is not None]
    if len(ranked) < 2:
        return None
    return max(ranked, key=lambda g: g.summary("val_acc")["mean"])


def group_note(group: Group, best: Group | None) -> str:
    notes = ["best"] if group is best else []
    if group.collapsed:
        total = len(group.runs)
        notes.append(
            "collapsed" if group.collapsed == total else f"{group.collapsed} of {total} collapsed"
        )
    return ", ".join(notes)


def grid_table(
    groups: list[Group], keys: list[str], reference: ReferenceTable | None
) -> tuple[str, list[dict[str, Any]]]:
    best = best_group(groups)
    notes = [group_note(group, best) for group in groups]
    ensembles = has_ensembles(groups)
    header = [*(keys or ["setting"]), *metric_titles(ensembles), "runs"]
    if reference is not None:
        header.append("reference val / test %")
    if any(notes):
        header.append("note")
    rows, records = [], []
    for group, note in zip(groups, notes, strict=True):
        usable = len(group.values(METRICS[0][0]))
        runs = f"{usable}" if usable == len(group.runs) else f"{usable} of {len(group.runs)}"
        cells = [shown(value) for value in group.setting.values()] if keys else ["all"]
        cells += metric_cells(group, ensembles)
        cells.append(runs)
        record: dict[str, Any] = dict(group.setting)
        for key, _ in METRICS:
            summary = group.summary(key)
            record[f"{key}_mean"], record[f"{key}_std"] = summary["mean"], summary["std"]
        if ensembles:
            record.update(member_fields(group.member_values))
        record["runs"] = usable
        record["runs_total"] = len(group.runs)
        if reference is not None:
            published = reference.lookup(group.setting[reference.key])
            cells.append(
                "-" if published is None else " / ".join(one_percent(v) for v in published)
            )
            record["reference_val_acc"], record["reference_test_acc"] = published or (None, None)
        if any(notes):
            cells.append(note)
        record["best"] = group is best
        record["collapsed"] = group.collapsed
        rows.append(cells)
        records.append(record)
    return markdown(header, rows), records


def has_ensembles(groups: list[Group]) -> bool:
    """Whether the table needs the members' columns: some run in it is an ensemble."""
    return any(group.member_values(key) for group in groups for key, _ in MEMBER_METRICS)


def metric_titles(ensembles: bool) -> list[str]:
    """The accuracy columns' titles: each of METRICS, with its members' column after it."""
    titles = []
    for (_, title), (_, members_title) in zip(METRICS, MEMBER_METRICS, strict=True):
        titles += [f"{title} %", f"{members_title} %"] if ensembles else [f"{title} %"]
    return titles


def metric_cells(group: Group, ensembles: bool) -> list[str]:
    """A group's accuracy cells, in the order of ``metric_titles``."""
    cells = []
    for (key, _), (member_key, _) in zip(METRICS, MEMBER_METRICS, strict=True):
        cells.append(percent(group.summary(key)))
        if ensembles:
            cells.append(members_percent(spread_of(group.member_values(member_key))))
    return cells


def member_fields(values_of: Callable[[str], list[float]]) -> dict[str, Any]:
    """The members' columns for report.csv/json: ``members_<key>_{mean,std,min,max}`` of
    ``values_of(key)`` (a group's or a run's member values) and how many members have a test
    accuracy."""
    fields: dict[str, Any] = {}
    for key, _ in MEMBER_METRICS:
        fields.update((f"members_{key}_{stat}", v) for stat, v in spread_of(values_of(key)).items())
    fields["members"] = len(values_of("test_acc"))
    return fields


def ranked_trials(runs: list[Run]) -> list[Run]:
    """The trials in the table: best validation accuracy first, then by trial number."""
    usable = [run for run in runs if run.usable]
    return sorted(usable, key=lambda run: (-run.value("val_acc"), run.number or 0))


def search_table(
    runs: list[Run], keys: list[str], sweep_dir: Path
) -> tuple[str, list[dict[str, Any]]]:
    ranked = ranked_trials(runs)
    best = ranked[0] if ranked else None
    header = ["trial", "folder", *keys, *(title + " %" for _, title in METRICS), "note"]
    rows = []
    for run in ranked:
        notes = ["best"] if run is best else []
        notes += ["collapsed"] if run.collapsed else []
        rows.append(
            [
                str(run.number if run.number is not None else "?"),
                where(run, sweep_dir),
                *(shown(run.setting(key)) for key in keys),
                *(one_percent(run.value(key)) for key, _ in METRICS),
                ", ".join(notes),
            ]
        )
    if not any(row[-1] for row in rows):
        header.pop()
        rows = [row[:-1] for row in rows]
    others = sorted((run for run in runs if not run.usable), key=lambda run: run.number or 0)
    ensembles = any(run.members for run in runs)
    records = []
    for run in [*ranked, *others]:
        record: dict[str, Any] = {"trial": run.number, "folder": where(run, sweep_dir)}
        record.update((key, run.setting(key)) for key in keys)
        for key, _ in METRICS:
            value = (run.metrics or {}).get(key)
            record[key] = value if is_number(value) else None
        if ensembles:
            record.update(member_fields(run.member_values))
        record["status"] = run.status
        record["best"] = run is best
        record["collapsed"] = run.collapsed is not None
        records.append(record)
    return markdown(header, rows), records


def problem_lines(runs: list[Run], sweep_dir: Path) -> list[str]:
    lines = []
    for run in runs:
        if run.usable:
            continue
        detail = run.status
        if run.metrics and run.status == "diverged":
            detail += f" at epoch {run.metrics.get('diverged_epoch')}"
            detail += f", step {run.metrics.get('diverged_step')}"
        elif run.metrics and run.metrics.get("error"):
            detail += f": {run.metrics['error']}"
        lines.append(f"- {where(run, sweep_dir)} ({settings_text(run)}): {detail}")
    return lines


def collapsed_lines(runs: list[Run], sweep_dir: Path, keys: list[str]) -> list[str]:
    shown = shown_keys(runs, keys)
    return [
        f"- {where(run, sweep_dir)} ({settings_text(run, shown) or 'the only setting'}): "
        f"val {one_percent(run.value('val_acc'))}%, test {one_percent(run.value('test_acc'))}%, "
        f"{run.collapsed}"
        for run in runs
        if run.collapsed
    ]


def shown_keys(runs: list[Run], keys: list[str]) -> list[str]:
    """The keys that tell one run from another: the swept ones, and the seed when it varies."""
    return keys + [k for k in REPLICATE_KEYS if len({r.setting(k) for r in runs}) > 1]


def member_lines(runs: list[Run], sweep_dir: Path, keys: list[str]) -> list[str]:
    """One line per ensemble run: its test accuracy, then each member's and their mean, to
    see what averaging the members gained over each of them."""
    lines = []
    for run in runs:
        if not run.members:
            continue
        settings = settings_text(run, shown_keys(runs, keys)) or "the only setting"
        tests = [member.get("test_acc") for member in run.members]
        each = ", ".join(one_percent(v) if is_number(v) else "-" for v in tests)
        mean = spread_of(run.member_values("test_acc"))["mean"]
        ensemble = (run.metrics or {}).get("test_acc")
        lines.append(
            f"- {where(run, sweep_dir)} ({settings}): ensemble of {len(run.members)}, test "
            f"{one_percent(ensemble) if is_number(ensemble) else '-'}% | members {each} "
            f"(mean {one_percent(mean)})"
        )
    return lines


def ensemble_records(runs: list[Run], sweep_dir: Path, keys: list[str]) -> list[dict[str, Any]]:
    """report.json's ``ensemble_members``: what ``member_lines`` says, run by run."""
    records = []
    for run in runs:
        if not run.members:
            continue
        record: dict[str, Any] = {"folder": where(run, sweep_dir)}
        record.update((key, run.setting(key)) for key in shown_keys(runs, keys))
        for key in ("val_acc", "test_acc"):
            value = (run.metrics or {}).get(key)
            record[key] = value if is_number(value) else None
        record["members"] = [
            {key: member.get(key) for key in ("seed", "status", "best_val_acc", "test_acc")}
            for member in run.members
        ]
        records.append(record)
    return records


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------


def save_figure(path: Path, figure: Any) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.15)
    plt.close(figure)
    write_atomically(path, lambda handle: handle.write(buffer.getvalue()))


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_grid(
    path: Path,
    groups: list[Group],
    keys: list[str],
    title: str,
    reference: ReferenceTable | None,
) -> None:
    """Accuracy against the swept value: the mean, with one standard deviation as error bars
    where a setting has several seeds; the reference's numbers beside it; the best marked."""
    plt = pyplot()
    labels = [", ".join(shown(v) for v in group.setting.values()) or "all" for group in groups]
    numeric = len(keys) == 1 and all(
        sort_key(v)[0] == 0 for g in groups for v in g.setting.values()
    )
    positions = (
        [float(next(iter(group.setting.values()))) for group in groups]
        if numeric
        else list(range(len(groups)))
    )
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    colours = ("tab:blue", "tab:orange")
    for offset, (key, name), colour in zip((-0.08, 0.08), METRICS, colours, strict=True):
        summaries = [group.summary(key) for group in groups]
        points = [
            (x + (0 if numeric else offset), 100 * s["mean"], 100 * (s["std"] or 0))
            for x, s in zip(positions, summaries, strict=True)
            if s["mean"] is not None
        ]
        if points:
            xs, ys, errors = zip(*points, strict=True)
            axes.errorbar(xs, ys, yerr=errors, marker="o", capsize=4, label=name, color=colour)
        if reference is not None:
            index = [key for key, _ in METRICS].index(key)
            published = [
                (x + (0 if numeric else offset), 100 * values[index])
                for x, group in zip(positions, groups, strict=True)
                if (values := reference.lookup(group.setting[reference.key])) is not None
            ]
            if published:
                xs, ys = zip(*published, strict=True)
                axes.plot(
                    xs,
                    ys,
                    linestyle=":",
                    marker="s",
                    markerfacecolor="none",
                    color=colour,
                    label=f"reference {name}",
                )
    best = best_group(groups)
    if best is not None:
        x = positions[groups.index(best)] + (0 if numeric else -0.08)
        y = 100 * best.summary("val_acc")["mean"]  # type: ignore[operator]
        axes.plot(
            [x],
            [y],
            marker="*",
            markersize=16,
            color="gold",
            markeredgecolor="black",
            linestyle="none",
            label="best (val acc)",
            zorder=5,
        )
    if not numeric:
        rotation = 30 if len(labels) > 4 or max(map(len, labels)) > 12 else 0
        axes.set_xticks(positions, labels, rotation=rotation, ha="right" if rotation else "center")
    axes.set_xlabel(", ".join(keys) or "setting")
    axes.set_ylabel("accuracy (%)")
    several = any(len(group.values("val_acc")) > 1 for group in groups)
    spread = "mean ± 1 std over seeds" if several else "one run per setting"
    axes.set_title(f"{title}: {spread}", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    save_figure(path, figure)


def plot_search(path: Path, runs: list[Run], keys: list[str], title: str) -> None:
    """Validation accuracy trial by trial, the best so far as a step line, the best trial
    starred and its settings written under the plot."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    trials = sorted(runs, key=lambda run: run.number or 0)
    usable = [run for run in trials if run.usable]
    failed = [run for run in trials if not run.usable]
    collapsed = [run for run in usable if run.collapsed]
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    if usable:
        numbers = [run.number or 0 for run in usable]
        axes.scatter(
            numbers,
            [100 * run.value("val_acc") for run in usable],
            color="tab:blue",
            label="val acc (last epoch)",
            zorder=3,
        )
        axes.scatter(
            numbers,
            [100 * run.value("test_acc") for run in usable],
            marker="D",
            s=18,
            facecolors="none",
            edgecolors="tab:orange",
            label="test acc",
            zorder=3,
        )
    if collapsed:
        axes.scatter(
            [run.number or 0 for run in collapsed],
            [100 * run.value("val_acc") for run in collapsed],
            s=160,
            facecolors="none",
            edgecolors="grey",
            label="collapsed",
        )
    if failed:
        axes.scatter(
            [run.number or 0 for run in failed],
            [0] * len(failed),
            marker="x",
            color="tab:red",
            label="failed, diverged or unfinished (scores 0)",
            zorder=3,
        )
    running, best_so_far = [], 0.0
    for run in trials:
        best_so_far = max(best_so_far, 100 * run.value("val_acc") if run.usable else 0.0)
        running.append(best_so_far)
    if trials:
        axes.step(
            [run.number or 0 for run in trials],
            running,
            where="post",
            color="tab:green",
            alpha=0.7,
            label="best val acc so far",
        )
    ranked = ranked_trials(runs)
    note = "no trial finished"
    if ranked:
        best = ranked[0]
        axes.plot(
            [best.number or 0],
            [100 * best.value("val_acc")],
            marker="*",
            markersize=18,
            color="gold",
            markeredgecolor="black",
            linestyle="none",
            zorder=5,
            label=f"best: trial {best.number}",
        )
        note = (
            f"best: trial {best.number} (folder {best.directory.name}), val "
            f"{one_percent(best.value('val_acc'))}%, test {one_percent(best.value('test_acc'))}%"
            f"\n" + textwrap.fill(settings_text(best, keys) or "-", 100)
        )
    axes.text(
        0.0,
        -0.16,
        note,
        transform=axes.transAxes,
        va="top",
        ha="left",
        fontsize=8.5,
        family="monospace",
    )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trial (job number)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"{title}: {len(trials)} trials", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(path, figure)


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    fields: list[str] = []
    for row in rows:
        fields += [key for key in row if key not in fields]
    writer = csv.DictWriter(buffer, fieldnames=fields or ["runs"])
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda handle: handle.write(buffer.getvalue().encode()))


def grid_text(
    runs: list[Run], keys: list[str], groups: list[Group], reference: ReferenceTable | None
) -> tuple[str, list[dict[str, Any]]]:
    table, rows = grid_table(groups, keys, reference)
    several = [len(group.values("val_acc")) > 1 for group in groups]
    if all(several):
        spread = "mean ± standard deviation over seeds"
    elif any(several):
        spread = "mean ± standard deviation over seeds where a setting has several"
    else:
        spread = "one run per setting"
    usable = sum(run.usable for run in runs)
    text = f"{table}\n\n{spread}; {usable} of {len(runs)} runs in the table.\n"
    if has_ensembles(groups):
        text += (
            "An ensemble's val and test acc are its joined checkpoint's; members best val / "
            "test %: mean ± standard deviation over every member of the setting's runs "
            "(min–max), each member's best checkpoint (the ones the ensemble averages).\n"
        )
    best = best_group(groups)
    if best is not None:
        setting = ", ".join(f"{k}={shown(v)}" for k, v in best.setting.items())
        text += f"Best by validation accuracy: {setting} (marked best).\n"
    if reference is not None:
        text += (
            f"reference val / test %: {reference.name} ({reference.recipe}), as published: "
            "single runs of 50 epochs on its own data set.\n"
        )
    return text, rows


def search_text(runs: list[Run], keys: list[str], sweep_dir: Path) -> tuple[str, list[dict]]:
    table, rows = search_table(runs, keys, sweep_dir)
    usable = sum(run.usable for run in runs)
    text = (
        f"{table}\n\n{len(runs)} trials, best validation accuracy first; {usable} of "
        f"{len(runs)} in the table.\n"
    )
    ranked = ranked_trials(runs)
    if ranked:
        best = ranked[0]
        text += (
            f"Best: trial {best.number} (folder {where(best, sweep_dir)}), val "
            f"{one_percent(best.value('val_acc'))}%, test {one_percent(best.value('test_acc'))}%: "
            f"{settings_text(best, keys) or 'no parameter varies'}.\n"
        )
    return text, rows


@dataclass
class Report:
    """What a sweep holds, as its report says it; ``write`` puts the report beside the jobs."""

    sweep_dir: Path
    runs: list[Run]
    keys: list[str]
    groups: list[Group]
    search: bool
    reference: ReferenceTable | None
    text: str
    rows: list[dict[str, Any]]
    collapsed: list[str]
    problems: list[str]
    ensembles: list[dict[str, Any]] = field(default_factory=list)  # runs of ensemble=K

    @property
    def best_trial(self) -> Run | None:
        ranked = ranked_trials(self.runs)
        return ranked[0] if ranked else None

    def write(self) -> None:
        """report.md, report.csv, report.json and report.png, into the sweep's folder."""
        text = self.text
        write_atomically(self.sweep_dir / "report.md", lambda handle: handle.write(text.encode()))
        write_csv(self.sweep_dir / "report.csv", self.rows)
        summary: dict[str, Any] = {
            "kind": "search" if self.search else "grid",
            "swept": self.keys,
            "trials" if self.search else "groups": self.rows,
            "reference": None if self.reference is None else self.reference.name,
            "collapsed": self.collapsed,
            "problems": self.problems,
            "ensemble_members": self.ensembles,
            "runs": len(self.runs),
        }
        write_json(self.sweep_dir / "report.json", summary)
        png, name = self.sweep_dir / "report.png", self.sweep_dir.name
        if self.search:
            plot_search(png, self.runs, self.keys, name)
        else:
            plot_grid(png, self.groups, self.keys, name, self.reference)


def build_report(sweep_dir: Path) -> Report:
    """Read the sweep and make its report (nothing is written)."""
    runs = collect_runs(sweep_dir)
    keys = swept_keys(runs)
    groups = group_runs(runs, keys)
    search = is_search(sweep_dir, runs, keys, groups)
    reference = None if search else reference_for(runs, keys)
    if search:
        body, rows = search_text(runs, keys, sweep_dir)
    else:
        body, rows = grid_text(runs, keys, groups, reference)
    text = f"# {sweep_dir.name}\n\n{body}"
    members = member_lines(runs, sweep_dir, keys)
    if members:
        text += "\nEnsemble members (test %, each member's best checkpoint):\n"
        text += "\n".join(members) + "\n"
    collapsed = collapsed_lines(runs, sweep_dir, keys)
    if collapsed:
        text += "\nCollapsed (one class for every image, or accuracy at chance):\n" + "\n".join(
            collapsed
        )
        text += "\n"
    problems = problem_lines(runs, sweep_dir)
    if problems:
        text += "\nNot in the table:\n" + "\n".join(problems) + "\n"
    ensembles = ensemble_records(runs, sweep_dir, keys)
    return Report(
        sweep_dir, runs, keys, groups, search, reference, text, rows, collapsed, problems, ensembles
    )


def report(sweep_dir: Path) -> str:
    """The report's text; report.{md,csv,json,png} are written into ``sweep_dir``."""
    made = build_report(sweep_dir)
    made.write()
    return made.text


def final_line(run: Run) -> str:
    """A job's last word, from its metrics.json: status, validation and test accuracy."""
    if run.problem is not None:
        return run.problem
    metrics = run.metrics
    if metrics is None:
        return "no metrics.json (the job did not finish)"

    def pct(key: str) -> str:
        value = metrics.get(key)
        return f"{100 * value:.1f}%" if is_number(value) else "-"

    status = str(metrics.get("status", "?"))
    line = f"{status}: val_acc {pct('val_acc')} (best {pct('best_val_acc')}), "
    line += f"test_acc {pct('test_acc')}"
    if status == "diverged":
        line += f"; at epoch {metrics.get('diverged_epoch')}, step {metrics.get('diverged_step')}"
    elif status == "interrupted" and metrics.get("resume"):
        line += f"; continue with {metrics['resume']}"
    elif metrics.get("error"):
        line = f"{status}: {metrics['error']}"
    if run.collapsed:
        line += "; collapsed"
    return line
