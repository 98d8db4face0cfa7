"""The report's plot, report.png and report.svg: a grid's accuracy against the swept value (the
reference's numbers beside it, the best setting starred), or a search's accuracy trial by trial
(the best so far as a step line, the best trial starred and its settings under the plot)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from letters.common.records import FAILED_SCORE, percent
from letters.reporting.figure_files import new_figure, save_figure
from letters.reporting.reference import ReferenceTable
from letters.reporting.sweep import METRICS, Group, Run, best_group, ranked_trials, sort_key
from letters.reporting.tables import settings_text, shown_value

# The report's plot keeps its legend and the notes under it, with a small margin around; a
# PNG fit for print and, beside it, a drawing that scales (report.svg).
SAVED = {"bbox_inches": "tight", "pad_inches": 0.15, "dpi": 200}
VECTOR = "svg"
# Each metric as the legend names it: which split, and which checkpoint the number comes from.
LEGEND = {"val_acc": "validation, last epoch", "test_acc": "test, best checkpoint"}
REFERENCE_LEGEND = {"val_acc": "validation, epoch 50", "test_acc": "test"}
# Under a plot that shows the reference's numbers: they are not from this data set.
REFERENCE_CAVEAT = (
    "reference (dotted, hollow squares): {name} ({recipe}), as published: single runs of 50 "
    "epochs on its own 2,000 photographs, not on this data"
)


def plot_grid(
    path: Path,
    groups: list[Group],
    keys: list[str],
    title: str,
    reference: ReferenceTable | None,
) -> None:
    """Accuracy against the swept value: the mean, with one standard deviation as error bars
    where a setting has several seeds; the reference's numbers beside it; the best marked."""
    labels = [
        ", ".join(shown_value(v) for v in group.setting.values()) or "all" for group in groups
    ]
    numeric = len(keys) == 1 and all(
        sort_key(v)[0] == 0 for g in groups for v in g.setting.values()
    )
    positions = (
        [float(next(iter(group.setting.values()))) for group in groups]
        if numeric
        else list(range(len(groups)))
    )
    figure = new_figure(figsize=(7, 4.2), dpi=120)
    axes = figure.subplots()
    draw_metric_curves(axes, groups, positions, numeric, reference)
    star_best_group(axes, groups, positions, numeric)
    rotation = 0
    if not numeric:
        rotation = 30 if len(labels) > 4 or max(map(len, labels)) > 12 else 0
        axes.set_xticks(positions, labels, rotation=rotation, ha="right" if rotation else "center")
    axes.set_xlabel(", ".join(keys) or "setting")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"{title}\n{spread_text(axes, groups, positions)}", fontsize=10)
    axes.grid(alpha=0.3)
    legend_beside(axes)
    if reference is not None:
        caveat = REFERENCE_CAVEAT.format(name=reference.name, recipe=reference.recipe)
        note_under(axes, caveat, -0.22 if rotation else -0.14)
    save_figure(figure, path, VECTOR, **SAVED)


def spread_text(axes: Axes, groups: list[Group], positions: list[float]) -> str:
    """What each point is (a mean ± 1 std, or one run) and its n, the runs per setting: said
    once when every setting has the same n, else written under each point."""
    counted = [  # the plotted points: a setting without a finished run has none
        (x, len(group.values("val_acc")))
        for x, group in zip(positions, groups, strict=True)
        if group.values("val_acc")
    ]
    counts = {count for _, count in counted}
    spread = "mean ± 1 std over seeds" if max(counts, default=0) > 1 else "one run per setting"
    if len(counts) <= 1:
        return spread if max(counts, default=0) <= 1 else f"{spread}, n = {counted[0][1]} runs each"
    for x, count in counted:
        axes.annotate(
            f"n={count}",
            (x, 0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=7.5,
            color="dimgrey",
        )
    return f"{spread}, n (runs per setting) under each point"


def legend_beside(axes: Axes) -> None:
    """The legend right of the plot, where it hides no point: ours, the reference's, the
    best."""
    handles, names = axes.get_legend_handles_labels()
    order = sorted(
        range(len(names)), key=lambda i: (names[i].startswith("best"), names[i].startswith("ref"))
    )
    axes.legend(
        [handles[i] for i in order],
        [names[i] for i in order],
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )


def note_under(axes: Axes, note: str, y: float) -> None:
    """A note under the plot, in the figure itself: it stays with the picture."""
    axes.text(
        0.0,
        y,
        textwrap.fill(note, 105),
        transform=axes.transAxes,
        va="top",
        ha="left",
        fontsize=8,
        color="dimgrey",
    )


def draw_metric_curves(
    axes: Axes,
    groups: list[Group],
    positions: list[float],
    numeric: bool,
    reference: ReferenceTable | None,
) -> None:
    """One curve per metric (mean ± std), and the reference's published numbers beside it."""
    colours = ("tab:blue", "tab:orange")
    for offset, (key, _), colour in zip((-0.08, 0.08), METRICS, colours, strict=True):
        summaries = [group.summary(key) for group in groups]
        points = [
            (x + (0 if numeric else offset), 100 * s["mean"], 100 * (s["std"] or 0))
            for x, s in zip(positions, summaries, strict=True)
            if s["mean"] is not None
        ]
        if points:
            xs, ys, errors = zip(*points, strict=True)
            axes.errorbar(
                xs, ys, yerr=errors, marker="o", capsize=4, label=LEGEND[key], color=colour
            )
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
                    label=f"reference: {REFERENCE_LEGEND[key]}",
                )


def star_best_group(axes: Axes, groups: list[Group], positions: list[float], numeric: bool) -> None:
    """A star on the best setting's mean validation accuracy."""
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
            label="best setting (validation)",
            zorder=5,
        )


def plot_search(path: Path, runs: list[Run], keys: list[str], title: str) -> None:
    """Validation accuracy trial by trial, the best so far as a step line, the best trial
    starred and its settings written under the plot."""
    trials = sorted(runs, key=lambda run: run.number or 0)
    figure = new_figure(figsize=(8, 4.5), dpi=120)
    axes = figure.subplots()
    scatter_trials(axes, trials)
    step_best_so_far(axes, trials)
    note = star_best_trial(axes, runs, keys)
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
    save_figure(figure, path, VECTOR, **SAVED)


def scatter_trials(axes: Axes, trials: list[Run]) -> None:
    """Each trial's accuracies; collapsed ones ringed, pruned ones hollow at their last
    validation, failed ones crossed at their score."""
    usable = [run for run in trials if run.usable]
    pruned = [run for run in trials if run.pruned]
    failed = [run for run in trials if not (run.usable or run.pruned)]
    collapsed = [run for run in usable if run.collapsed]
    if usable:
        numbers = [run.number or 0 for run in usable]
        axes.scatter(
            numbers,
            [100 * run.value("val_acc") for run in usable],
            color="tab:blue",
            label=LEGEND["val_acc"],
            zorder=3,
        )
        axes.scatter(
            numbers,
            [100 * run.value("test_acc") for run in usable],
            marker="D",
            s=18,
            facecolors="none",
            edgecolors="tab:orange",
            label=LEGEND["test_acc"],
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
    if pruned:
        axes.scatter(
            [run.number or 0 for run in pruned],
            [100 * run.value("val_acc") for run in pruned],
            facecolors="none",
            edgecolors="tab:blue",
            alpha=0.6,
            label="pruned: validation when stopped",
            zorder=3,
        )
    if failed:
        axes.scatter(
            [run.number or 0 for run in failed],
            [100 * FAILED_SCORE] * len(failed),
            marker="x",
            color="tab:red",
            label=f"failed, diverged or unfinished (scores {100 * FAILED_SCORE:g})",
            zorder=3,
        )


def step_best_so_far(axes: Axes, trials: list[Run]) -> None:
    """The best validation accuracy up to each trial, as a step line."""
    running, best_so_far = [], 100 * FAILED_SCORE
    for run in trials:
        score = 100 * run.value("val_acc") if run.usable else 100 * FAILED_SCORE
        best_so_far = max(best_so_far, score)
        running.append(best_so_far)
    if trials:
        axes.step(
            [run.number or 0 for run in trials],
            running,
            where="post",
            color="tab:green",
            alpha=0.7,
            label="best validation so far",
        )


def star_best_trial(axes: Axes, runs: list[Run], keys: list[str]) -> str:
    """Star the best trial; return the note written under the plot about it."""
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
            f"{percent(best.value('val_acc'))}, test {percent(best.value('test_acc'))}"
            f"\n" + textwrap.fill(settings_text(best, keys) or "-", 100)
        )
    return note
