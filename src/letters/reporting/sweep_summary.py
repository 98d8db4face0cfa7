"""What a multirun prints when it ends, whatever ran its jobs: a Hydra callback.

``conf/hydra/default.yaml`` registers :class:`SweepSummary` under ``hydra.callbacks``, so Hydra
calls it in the process that started the sweep, after the last job, under every launcher
(basic, joblib, stacked, submitit) and sweeper (basic, Optuna). It prints each job's final line
from its metrics.json (the only way the results of jobs run elsewhere, e.g. by submitit, reach
this console), then the table ``python -m letters.report`` prints (and writes beside the
jobs), the best trial of a search or the best setting's runs of a grid with their checkpoints
and the commands that use them, and where the sweep is.

It never stops a sweep: a file it cannot read becomes a one-line note.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from letters.common.errors import LettersError, first_line
from letters.common.files import shown_path
from letters.common.records import RECORD_FILE, percent, record_line
from letters.reporting.background_pictures import finish_background_pictures
from letters.reporting.sweep import Run, best_group, ranked_trials, shown_keys
from letters.reporting.sweep_report import Report, build_report
from letters.reporting.tables import job_folder, settings_text, shown_value


def sweeper_target(config: DictConfig) -> str:
    try:
        return str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "")
    except Exception:  # an interpolation that does not resolve here: not Optuna's, then
        return ""


def plain_optuna_logs() -> None:
    """Optuna logs through colorlog, with colour codes even into a file or a pipe: tell its
    formatter which stream it writes to, so that colorlog colours only a terminal."""
    import optuna  # noqa: F401  (its import installs the handler adjusted here)

    for handler in logging.getLogger("optuna").handlers:
        formatter = handler.formatter
        if hasattr(formatter, "log_colors") and hasattr(formatter, "stream"):
            formatter.stream = getattr(handler, "stream", None)  # type: ignore[union-attr]


def ending_line(run: Run) -> str:
    """How a job ended: its record's line, or why it has none to read."""
    if run.problem is not None:
        return run.problem
    if run.metrics is None:
        return f"no {RECORD_FILE} (the job did not finish)"
    return record_line(run.metrics, collapsed=run.collapsed is not None)


def job_lines(report: Report) -> list[str]:
    """Each job of the sweep, by its folder and the settings that tell it apart, as it ended."""
    keys = shown_keys(report.runs, report.keys)
    lines = []
    for run in report.runs:
        settings = settings_text(run, keys)
        label = job_folder(run, report.sweep_dir) + (f" ({settings})" if settings else "")
        lines.append(f"  {label}: {ending_line(run)}")
    return lines


def status_counts(runs: list[Run]) -> str:
    """' (20 finished, 27 pruned, 1 failed)': how many ended each way, when not all alike."""
    counts = Counter(run.status_text for run in runs)
    if len(counts) < 2:
        return ""
    return " (" + ", ".join(f"{count} {status}" for status, count in counts.items()) + ")"


def checkpoint_of(run: Run) -> Path | None:
    """The run's best checkpoint, as its metrics.json names it (None when it names none)."""
    checkpoint = (run.metrics or {}).get("best_checkpoint")
    if isinstance(checkpoint, str) and checkpoint:
        return shown_path(run.directory / checkpoint)
    return None


def use_lines(checkpoint: Path) -> list[str]:
    """The commands that take a checkpoint further: its test, and its answers for images."""
    return [
        f"  python -m letters.test ckpt={checkpoint}",
        f"  python -m letters.predict ckpt={checkpoint} images=[a.png,b.jpg]",
    ]


def best_trial_lines(report: Report) -> list[str]:
    best = report.best_trial
    if best is None:
        return ["Best trial: none (no trial finished)."]
    lines = [
        f"Best trial: {best.number}, val acc {percent(best.value('val_acc'))}",
        f"  folder: {shown_path(best.directory)}",
    ]
    checkpoint = checkpoint_of(best)
    if checkpoint is not None:
        lines.append(f"  best checkpoint: {checkpoint}")
        lines += ["Test it, or read letters in images with it:", *use_lines(checkpoint)]
    return lines


def best_setting_lines(report: Report) -> list[str]:
    """After a grid's table: the best setting's runs (one per seed) with their checkpoints,
    and the commands that use the best of them. A sweep of one setting (seeds only): its runs.
    Nothing when no run finished with a checkpoint."""
    usable = [group for group in report.groups if group.values("val_acc")]
    best = best_group(report.groups) or (usable[0] if len(usable) == 1 else None)
    if best is None:
        return []
    runs = [run for run in ranked_trials(best.runs) if checkpoint_of(run) is not None]
    if not runs:
        return []
    setting = " ".join(f"{key}={shown_value(value)}" for key, value in best.setting.items())
    whose = f"Best setting {setting}: its runs" if setting else "The sweep's runs"
    lines = [f"{whose}, best first, with their checkpoints in the sweep's folder:"]
    keys = [key for key in shown_keys(report.runs, report.keys) if key not in best.setting]
    for run in runs:
        folder = job_folder(run, report.sweep_dir)
        settings = settings_text(run, keys)
        checkpoint = run.directory.relative_to(report.sweep_dir) / run.metrics["best_checkpoint"]
        lines.append(
            f"  {folder}{f' ({settings})' if settings else ''}: "
            f"val acc {percent(run.value('val_acc'))}, test acc {percent(run.value('test_acc'))}, "
            f"{checkpoint.as_posix()}"
        )
    best_run = "it" if len(runs) == 1 else "the first"
    lines.append(f"Test {best_run}, or read letters in images with it:")
    return lines + use_lines(checkpoint_of(runs[0]))  # type: ignore[arg-type]


def summary(sweep_dir: Path) -> str:
    """The sweep-end summary's text; the report's files are written into ``sweep_dir``."""
    shown = shown_path(sweep_dir)
    try:
        report = build_report(sweep_dir)
    except LettersError as error:
        return f"sweep summary: {error}"
    what = "trials" if report.search else "jobs"
    lines = [
        "",
        f"== {len(report.runs)} {what} of the sweep{status_counts(report.runs)}, as each ended "
        "(from metrics.json)",
    ]
    lines += job_lines(report)
    lines += ["", report.text.rstrip("\n"), ""]
    lines += best_trial_lines(report) if report.search else best_setting_lines(report)
    try:
        report.write()
        lines.append(f"report: {shown / 'report'}.{{md,csv,json,png}}")
    except (LettersError, OSError, RuntimeError, ValueError) as error:
        lines.append(f"report: not written ({first_line(error)})")
    lines += [f"sweep: {shown}", f"tensorboard --logdir {shown}"]
    return "\n".join(lines)


class SweepSummary(Callback):
    """Prints :func:`summary` when a multirun ends; plain logs when not on a terminal."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "optuna" in sweeper_target(config).lower():
            with contextlib.suppress(Exception):  # only cosmetics: never stop a sweep
                plain_optuna_logs()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:  # a stacked sweep's last pictures: their errors belong in the summary's records
            finish_background_pictures()
        except Exception as error:  # never crash a sweep that has run
            print(f"pictures: not waited for ({type(error).__name__}: {first_line(error)})")
        try:
            text = summary(Path(str(config.hydra.sweep.dir)))
        except Exception as error:  # never crash a sweep that has run
            text = f"sweep summary: not made ({type(error).__name__}: {first_line(error)})"
        print(text, flush=True)
