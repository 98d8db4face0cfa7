"""What a multirun prints when it ends, whatever ran its jobs: a Hydra callback.

``conf/hydra/default.yaml`` registers :class:`SweepSummary` under ``hydra.callbacks``, so Hydra
calls it in the process that started the sweep, after the last job, under every launcher
(basic, joblib, stacked, submitit) and sweeper (basic, Optuna). It prints each job's final line
from its metrics.json (the only way the results of jobs run elsewhere, e.g. by submitit, reach
this console), then the table ``python -m letters.report`` prints (and writes beside the
jobs), the best trial of a search with its checkpoint, and where the sweep is.

It never stops a sweep: a file it cannot read becomes a one-line note.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from letters.common.errors import LettersError, first_line
from letters.common.files import shown_path
from letters.common.records import RECORD_FILE, percent, record_line
from letters.reporting.sweep import Run, shown_keys
from letters.reporting.sweep_report import Report, build_report
from letters.reporting.tables import job_folder, settings_text


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


def best_trial_lines(report: Report) -> list[str]:
    best = report.best_trial
    if best is None:
        return ["Best trial: none (no trial finished)."]
    lines = [
        f"Best trial: {best.number}, val acc {percent(best.value('val_acc'))}",
        f"  folder: {shown_path(best.directory)}",
    ]
    checkpoint = best.metrics.get("best_checkpoint")
    if isinstance(checkpoint, str) and checkpoint:
        lines.append(f"  best checkpoint: {shown_path(best.directory / checkpoint)}")
    return lines


def summary(sweep_dir: Path) -> str:
    """The sweep-end summary's text; the report's files are written into ``sweep_dir``."""
    shown = shown_path(sweep_dir)
    try:
        report = build_report(sweep_dir)
    except LettersError as error:
        return f"sweep summary: {error}"
    what = "trials" if report.search else "jobs"
    lines = ["", f"== {len(report.runs)} {what} of the sweep, as each ended (from metrics.json)"]
    lines += job_lines(report)
    lines += ["", report.text.rstrip("\n"), ""]
    if report.search:
        lines += best_trial_lines(report)
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
        try:
            text = summary(Path(str(config.hydra.sweep.dir)))
        except Exception as error:  # never crash a sweep that has run
            text = f"sweep summary: not made ({type(error).__name__}: {first_line(error)})"
        print(text, flush=True)
