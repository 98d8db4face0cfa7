"""``python -m letters.report SWEEP_DIR``: the table of a sweep, in the reference's form.

Runs are grouped by the parameters that vary between them (all but ``seed``, which repeats a
setting); each group shows the mean and spread of its validation accuracy at the last epoch and
its test accuracy, with the number of runs. Runs that failed or diverged are listed, never
dropped in silence. The table is printed as Markdown and written beside the runs as
report.md, report.csv, report.json and report.png.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from letters.errors import LettersError, exit_on_user_error
from letters.files import write_atomically, write_json

REPLICATE_KEYS = ("seed",)
# Overrides that say how a job ran, not what it is: a sweep continued with resume=true is the
# same sweep.
NOT_SETTINGS = ("resume",)
METRICS = (("val_acc", "val acc (last epoch)"), ("test_acc", "test acc"))  # key, column title


@dataclass
class Run:
    """One job of a sweep: where it is, the overrides it ran with, and what it recorded."""

    directory: Path
    overrides: dict[str, str]
    metrics: dict[str, Any] | None

    @property
    def status(self) -> str:
        return "missing metrics.json" if self.metrics is None else self.metrics.get("status", "?")

    @property
    def usable(self) -> bool:
        return self.status == "finished" and all(
            isinstance(self.metrics.get(key), int | float) for key, _ in METRICS
        )


@dataclass
class Group:
    setting: dict[str, str]
    runs: list[Run] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [run.metrics[key] for run in self.runs if run.usable]

    def summary(self, key: str) -> dict[str, float | None]:
        values = self.values(key)
        if not values:
            return {"mean": None, "std": None}
        std = statistics.stdev(values) if len(values) > 1 else None
        return {"mean": statistics.fmean(values), "std": std}


def parse_overrides(lines: list[str]) -> dict[str, str]:
    parsed = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        key = key.lstrip("+~")
        if key not in NOT_SETTINGS:
            parsed[key] = value
    return parsed


def collect_runs(sweep_dir: Path) -> list[Run]:
    """Every job below ``sweep_dir`` (a job is a folder with Hydra's .hydra/overrides.yaml)."""
    if not sweep_dir.is_dir():
        raise LettersError(f"{sweep_dir}: not a folder")
    runs = []
    for overrides_file in sorted(sweep_dir.rglob(".hydra/overrides.yaml")):
        directory = overrides_file.parent.parent
        try:
            overrides = parse_overrides(yaml.safe_load(overrides_file.read_text()) or [])
        except (OSError, yaml.YAMLError) as error:
            raise LettersError(f"{overrides_file}: unreadable ({error})") from None
        metrics_file = directory / "metrics.json"
        metrics = None
        if metrics_file.is_file():
            try:
                metrics = json.loads(metrics_file.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise LettersError(f"{metrics_file}: unreadable ({error})") from None
        runs.append(Run(directory, overrides, metrics))
    if not runs:
        raise LettersError(f"{sweep_dir}: no runs found (no */.hydra/overrides.yaml below it)")
    return sorted(runs, key=lambda run: job_order(run.directory, sweep_dir))


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
        if key not in REPLICATE_KEYS and len({run.overrides.get(key) for run in runs}) > 1
    ]


def sort_key(value: str | None) -> tuple:
    """Numbers in numeric order, then everything else as text."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def group_runs(runs: list[Run], keys: list[str]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for run in runs:
        setting = {key: run.overrides.get(key, "(default)") for key in keys}
        groups.setdefault(tuple(setting.values()), Group(setting)).runs.append(run)
    return sorted(groups.values(), key=lambda g: [sort_key(v) for v in g.setting.values()])


def shown(value: str) -> str:
    """A swept value for the table: long floats (Optuna's) to 4 significant digits."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return f"{number:.4g}" if len(value) > 8 and "." in value else value


def percent(summary: dict[str, float | None]) -> str:
    if summary["mean"] is None:
        return "-"
    text = f"{100 * summary['mean']:.1f}"
    return text + (f" ± {100 * summary['std']:.1f}" if summary["std"] is not None else "")


def markdown_table(groups: list[Group], keys: list[str]) -> str:
    header = [*(keys or ["setting"]), *(title + " %" for _, title in METRICS), "runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        usable = len(group.values(METRICS[0][0]))
        runs = f"{usable}" if usable == len(group.runs) else f"{usable} of {len(group.runs)}"
        cells = [shown(value) for value in group.setting.values()] if keys else ["all"]
        cells += [percent(group.summary(key)) for key, _ in METRICS]
        lines.append("| " + " | ".join([*cells, runs]) + " |")
    return "\n".join(lines)


def problem_lines(runs: list[Run], sweep_dir: Path) -> list[str]:
    lines = []
    for run in runs:
        if run.usable:
            continue
        where = run.directory.relative_to(sweep_dir) if run.directory != sweep_dir else "."
        detail = run.status
        if run.metrics and run.status == "diverged":
            detail += f" at epoch {run.metrics.get('diverged_epoch')}"
            detail += f", step {run.metrics.get('diverged_step')}"
        elif run.metrics and run.metrics.get("error"):
            detail += f": {run.metrics['error']}"
        setting = " ".join(
            f"{k}={v}" for k, v in run.overrides.items() if not k.startswith("hydra")
        )
        lines.append(f"- {where} ({setting}): {detail}")
    return lines


def report_rows(groups: list[Group]) -> list[dict[str, Any]]:
    rows = []
    for group in groups:
        row: dict[str, Any] = dict(group.setting)
        for key, _ in METRICS:
            summary = group.summary(key)
            row[f"{key}_mean"], row[f"{key}_std"] = summary["mean"], summary["std"]
        row["runs"] = len(group.values(METRICS[0][0]))
        row["runs_total"] = len(group.runs)
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["runs"])
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda handle: handle.write(buffer.getvalue().encode()))


def plot(path: Path, groups: list[Group], keys: list[str], title: str) -> None:
    """Accuracy against the swept value, mean with one standard deviation as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [", ".join(group.setting.values()) or "all" for group in groups]
    numeric = len(keys) == 1 and all(sort_key(label)[0] == 0 for label in labels)
    positions = [float(label) for label in labels] if numeric else list(range(len(labels)))
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    for offset, (key, name) in zip((-0.08, 0.08), METRICS, strict=True):
        summaries = [group.summary(key) for group in groups]
        points = [
            (x + (0 if numeric else offset), 100 * s["mean"], 100 * (s["std"] or 0))
            for x, s in zip(positions, summaries, strict=True)
            if s["mean"] is not None
        ]
        if points:
            xs, ys, errors = zip(*points, strict=True)
            axes.errorbar(xs, ys, yerr=errors, marker="o", capsize=4, label=name)
    if not numeric:
        axes.set_xticks(positions, labels, rotation=30 if len(labels) > 4 else 0, ha="right")
    axes.set_xlabel(", ".join(keys) or "setting")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"{title}: mean ± 1 std over seeds", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    write_atomically(path, lambda handle: handle.write(buffer.getvalue()))


def report(sweep_dir: Path) -> str:
    runs = collect_runs(sweep_dir)
    keys = swept_keys(runs)
    groups = group_runs(runs, keys)
    table = markdown_table(groups, keys)
    problems = problem_lines(runs, sweep_dir)
    usable = sum(run.usable for run in runs)
    text = f"# {sweep_dir.name}\n\n{table}\n\nmean ± standard deviation over seeds; "
    text += f"{usable} of {len(runs)} runs in the table.\n"
    ranked = [g for g in groups if g.summary("val_acc")["mean"] is not None]
    if len(ranked) > 1:
        best = max(ranked, key=lambda g: g.summary("val_acc")["mean"])
        setting = ", ".join(f"{k}={v}" for k, v in best.setting.items())
        text += f"Best by validation accuracy: {setting}.\n"
    if problems:
        text += "\nNot in the table:\n" + "\n".join(problems) + "\n"
    rows = report_rows(groups)
    write_atomically(sweep_dir / "report.md", lambda handle: handle.write(text.encode()))
    write_csv(sweep_dir / "report.csv", rows)
    write_json(
        sweep_dir / "report.json",
        {"swept": keys, "groups": rows, "problems": problems, "runs": len(runs)},
    )
    plot(sweep_dir / "report.png", groups, keys, sweep_dir.name)
    return text


@exit_on_user_error
def run(sweep_dir: str) -> None:
    print(report(Path(sweep_dir)), end="")
    print(f"\nwritten: {Path(sweep_dir) / 'report'}.{{md,csv,json,png}}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m letters.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep_dir", help="a multirun's directory, e.g. outputs/sweeps/<sweep>")
    args = parser.parse_args(argv)
    run(args.sweep_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
