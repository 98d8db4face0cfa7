"""A sweep's report, as ``python -m letters.report`` prints it (its help describes the forms):
which form fits the sweep (a grid of settings or a search, the reference's table it
reproduces), the text assembled from the tables, and report.{md,csv,json,png,svg} written
beside the jobs."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from letters.common.files import write_atomically, write_json
from letters.reporting.reference import TABLES, ReferenceTable
from letters.reporting.sweep import (
    Group,
    Run,
    collect_runs,
    group_runs,
    hydra_record,
    ranked_trials,
    swept_keys,
)
from letters.reporting.tables import (
    collapsed_lines,
    ensemble_records,
    grid_text,
    member_lines,
    problem_lines,
    search_text,
)

# ---------------------------------------------------------------------------------------------
# Which form fits: a grid of settings (mean ± std over seeds) or a search (one row a trial)
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
# The plot's title: what was swept, with which optimizer, on which data
# ---------------------------------------------------------------------------------------------

# The optimizers as a paper spells them (conf/optimizer/*.yaml names them in lower case).
OPTIMIZER_NAMES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
    "adadelta": "Adadelta",
}


def data_name(run: Run) -> str | None:
    """The data a run trained on, as its config.yaml says: the data folder's name and the
    layout (``scene-letters (list)``), or the source (``synthetic``); None when unreadable."""
    try:
        config = yaml.safe_load((run.directory / "config.yaml").read_text())
        target, root = config["data"]["_target_"], config["data"].get("root")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError, AttributeError):
        return None
    kind = str(target).rsplit(".", 1)[-1].removesuffix("DataModule").lower()
    return f"{Path(str(root)).name} ({kind})" if root else kind


def plot_title(runs: list[Run], keys: list[str], search: bool) -> str:
    """The plot's title in a report's words, e.g. "SGD momentum on scene-letters (list)": the
    optimizer when every run used the same one, what was swept, and the data when every run
    trained on the same."""
    swept = " × ".join(keys) or "one setting"
    if search:
        swept = f"search over {', '.join(keys) or 'one setting'}"
    optimizers = {
        (run.metrics.get("params") or {}).get("optimizer")
        for run in runs
        if run.metrics is not None and isinstance(run.metrics.get("params"), dict)
    }
    if not search and "optimizer" not in keys and len(optimizers) == 1 and None not in optimizers:
        (optimizer,) = optimizers
        swept = f"{OPTIMIZER_NAMES.get(str(optimizer), str(optimizer))} {swept}"
    data = Counter(data_name(run) for run in runs)
    if len(data) == 1 and None not in data:
        (name,) = data
        return f"{swept} on {name}"
    return swept


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
        """report.md, report.csv, report.json, report.png and report.svg, into the sweep's
        folder."""
        # matplotlib takes a second to load: only the plot needs it, not reading a sweep.
        from letters.reporting.figures import plot_grid, plot_search

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
        png, title = self.sweep_dir / "report.png", plot_title(self.runs, self.keys, self.search)
        if self.search:
            plot_search(png, self.runs, self.keys, title)
        else:
            plot_grid(png, self.groups, self.keys, title, self.reference)


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
    """The report's text; report.{md,csv,json,png,svg} are written into ``sweep_dir``."""
    made = build_report(sweep_dir)
    made.write()
    return made.text
