"""A sweep's tables and the text around them: the grid (one row a setting, mean ± std over its
seeds, the reference's numbers beside ours) or the search (one row a trial, best first), then
the lines on ensemble members, collapsed runs and runs not in the table. Each table comes as
Markdown and as rows for report.csv and report.json."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from letters.common.records import Status, is_number, percent
from letters.reporting.reference import ReferenceTable
from letters.reporting.sweep import (
    MEMBER_METRICS,
    METRICS,
    UNUSED,
    Group,
    Run,
    best_group,
    ranked_pruned,
    ranked_trials,
    shown_keys,
    spread_of,
)

# ---------------------------------------------------------------------------------------------
# How values and runs are written
# ---------------------------------------------------------------------------------------------


def shown_value(value: str) -> str:
    """A swept value for the table: long floats (Optuna's) to 4 significant digits."""
    try:
        float(value)
    except (TypeError, ValueError):
        return value
    return f"{float(value):.4g}" if len(value) > 8 and "." in value else value


def percent_figure(value: Any) -> str:
    """An accuracy under a column titled '... %': records' percent without its sign ('63.7'),
    '-' when there is none."""
    return percent(value).removesuffix("%")


def spread_figure(spread: dict[str, float | None]) -> str:
    """Accuracies under a '%' column: mean ± std ('63.7 ± 1.2'), the mean alone for one run."""
    text = percent_figure(spread["mean"])
    return text + (f" ± {percent_figure(spread['std'])}" if spread["std"] is not None else "")


def members_spread_figure(spread: dict[str, float | None]) -> str:
    """Members' accuracy for the table: mean ± std, and their range (min–max) when it is one."""
    text = spread_figure(spread)
    if spread["min"] is not None and spread["min"] != spread["max"]:
        text += f" ({percent_figure(spread['min'])}–{percent_figure(spread['max'])})"
    return text


def job_folder(run: Run, sweep_dir: Path) -> str:
    """A job's folder, relative to its sweep."""
    return "." if run.directory == sweep_dir else run.directory.relative_to(sweep_dir).as_posix()


def settings_text(run: Run, keys: list[str] | None = None) -> str:
    """``key=value ...`` of a run's overrides (or of ``keys``), leaving out keys it does not use."""
    items = run.overrides.items() if keys is None else ((k, run.setting(k)) for k in keys)
    return " ".join(
        f"{k}={shown_value(v)}" for k, v in items if not k.startswith("hydra") and v != UNUSED
    )


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The grid: one row a setting
# ---------------------------------------------------------------------------------------------


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
        cells = [shown_value(value) for value in group.setting.values()] if keys else ["all"]
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
                "-" if published is None else " / ".join(percent_figure(v) for v in published)
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
        cells.append(spread_figure(group.summary(key)))
        if ensembles:
            cells.append(members_spread_figure(spread_of(group.member_values(member_key))))
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


def grid_text(
    runs: list[Run], keys: list[str], groups: list[Group], reference: ReferenceTable | None
) -> tuple[str, list[dict[str, Any]]]:
    """The grid's table and what it shows: the spread, the best setting, the reference."""
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
        setting = ", ".join(f"{k}={shown_value(v)}" for k, v in best.setting.items())
        text += f"Best by validation accuracy: {setting} (marked best).\n"
    if reference is not None:
        text += (
            f"reference val / test %: {reference.name} ({reference.recipe}), as published: "
            "single runs of 50 epochs on its own data set.\n"
        )
    return text, rows


# ---------------------------------------------------------------------------------------------
# The search: one row a trial
# ---------------------------------------------------------------------------------------------


def search_table(
    runs: list[Run], keys: list[str], sweep_dir: Path
) -> tuple[str, list[dict[str, Any]]]:
    ranked = ranked_trials(runs)
    pruned = ranked_pruned(runs)
    best = ranked[0] if ranked else None
    header = ["trial", "folder", *keys, *(title + " %" for _, title in METRICS), "note"]
    rows = []
    for run in ranked + pruned:
        notes = ["best"] if run is best else []
        notes += ["collapsed"] if run.collapsed else []
        notes += [f"pruned after epoch {run.pruned_epoch}"] if run.pruned else []
        rows.append(
            [
                str(run.number if run.number is not None else "?"),
                job_folder(run, sweep_dir),
                *(shown_value(run.setting(key)) for key in keys),
                *(percent_figure(run.value(key)) for key, _ in METRICS),
                ", ".join(notes),
            ]
        )
    if not any(row[-1] for row in rows):
        header.pop()
        rows = [row[:-1] for row in rows]
    others = sorted(
        (run for run in runs if not (run.usable or run.pruned)), key=lambda run: run.number or 0
    )
    ensembles = any(run.members for run in runs)
    records = []
    for run in [*ranked, *pruned, *others]:
        record: dict[str, Any] = {"trial": run.number, "folder": job_folder(run, sweep_dir)}
        record.update((key, run.setting(key)) for key in keys)
        for key, _ in METRICS:
            value = (run.metrics or {}).get(key)
            record[key] = value if is_number(value) else None
        if ensembles:
            record.update(member_fields(run.member_values))
        record["status"] = run.status_text
        record["pruned_epoch"] = run.pruned_epoch
        record["best"] = run is best
        record["collapsed"] = run.collapsed is not None
        records.append(record)
    return markdown(header, rows), records


def search_text(runs: list[Run], keys: list[str], sweep_dir: Path) -> tuple[str, list[dict]]:
    """The search's table and its best trial."""
    table, rows = search_table(runs, keys, sweep_dir)
    usable, pruned = sum(run.usable for run in runs), sum(run.pruned for run in runs)
    text = f"{table}\n\n{len(runs)} trials, best validation accuracy first; "
    if pruned:
        text += (
            f"{usable} finished, then {pruned} pruned (at their last validation, tested at "
            f"their best checkpoint); {usable + pruned} of {len(runs)} in the table.\n"
        )
    else:
        text += f"{usable} of {len(runs)} in the table.\n"
    ranked = ranked_trials(runs)
    if ranked:
        best = ranked[0]
        text += (
            f"Best: trial {best.number} (folder {job_folder(best, sweep_dir)}), val "
            f"{percent(best.value('val_acc'))}, test {percent(best.value('test_acc'))}: "
            f"{settings_text(best, keys) or 'no parameter varies'}.\n"
        )
    return text, rows


# ---------------------------------------------------------------------------------------------
# Under the table: ensemble members, collapsed runs, runs not in the table
# ---------------------------------------------------------------------------------------------


def member_lines(runs: list[Run], sweep_dir: Path, keys: list[str]) -> list[str]:
    """One line per ensemble run: its test accuracy, then each member's and their mean, to
    see what averaging the members gained over each of them."""
    lines = []
    for run in runs:
        if not run.members:
            continue
        settings = settings_text(run, shown_keys(runs, keys)) or "the only setting"
        each = ", ".join(percent_figure(member.get("test_acc")) for member in run.members)
        mean = spread_of(run.member_values("test_acc"))["mean"]
        ensemble = (run.metrics or {}).get("test_acc")
        lines.append(
            f"- {job_folder(run, sweep_dir)} ({settings}): ensemble of {len(run.members)}, test "
            f"{percent_figure(ensemble)}% | members {each} (mean {percent_figure(mean)})"
        )
    return lines


def ensemble_records(runs: list[Run], sweep_dir: Path, keys: list[str]) -> list[dict[str, Any]]:
    """report.json's ``ensemble_members``: what ``member_lines`` says, run by run."""
    records = []
    for run in runs:
        if not run.members:
            continue
        record: dict[str, Any] = {"folder": job_folder(run, sweep_dir)}
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


def collapsed_lines(runs: list[Run], sweep_dir: Path, keys: list[str]) -> list[str]:
    shown = shown_keys(runs, keys)
    return [
        f"- {job_folder(run, sweep_dir)} ({settings_text(run, shown) or 'the only setting'}): "
        f"val {percent(run.value('val_acc'))}, test {percent(run.value('test_acc'))}, "
        f"{run.collapsed}"
        for run in runs
        if run.collapsed
    ]


def problem_lines(runs: list[Run], sweep_dir: Path) -> list[str]:
    """The runs not in the table, each with why: its status and what its record adds."""
    lines = []
    for run in runs:
        if run.usable or run.pruned:
            continue
        detail = run.status_text
        if run.metrics and run.status is Status.DIVERGED:
            detail += f" at epoch {run.metrics.get('diverged_epoch')}"
            detail += f", step {run.metrics.get('diverged_step')}"
        elif run.metrics and run.metrics.get("error"):
            detail += f": {run.metrics['error']}"
        lines.append(f"- {job_folder(run, sweep_dir)} ({settings_text(run)}): {detail}")
    return lines
