"""The trackers each run reports to — TensorBoard, CSV, MLflow, Weights & Biases — through
Lightning's own loggers (``conf/logger/*.yaml``; several at once: ``logger=[tensorboard,csv]``).

Every tracker of a run receives the same scalars while it trains (``loss/train``,
``loss/val``, ``accuracy/val``, ``accuracy/best_val``; the x-axis is the optimizer step), then its
hyper-parameters and final metrics (``accuracy/test``, ``loss/test``) at the end. Accuracy goes to
them in percent, as the console and the reports show it; metrics.json keeps fractions. A
multirun's runs are named by what the sweep varies (``momentum=0.9,seed=2``), not by their job
number.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger

from letters.common.records import Status

log = logging.getLogger("letters.train")

# The scalars a tracker shows in percent (63.7 rather than 0.637): every tag under it.
PERCENT_PREFIX = "accuracy/"

# TensorBoard's CUSTOM SCALARS: one chart per measure, every split on it.
CHARTS = {
    "letters": {
        "loss (train, val, test)": ["Multiline", ["loss/train", "loss/val", "loss/test"]],
        "accuracy (val, best val, test)": [
            "Multiline",
            ["accuracy/val", "accuracy/best_val", "accuracy/test"],
        ],
    }
}


class RunTrackers:
    """The loggers of one run (one member of a stack), built from its ``logger`` config."""

    def __init__(self, loggers: list[Any]) -> None:
        self.loggers = loggers

    @classmethod
    def from_config(cls, logger_cfg: DictConfig | None) -> RunTrackers:
        if not logger_cfg:
            return cls([])
        mlflow = logger_cfg.get("mlflow")
        if mlflow and not mlflow.get("tracking_uri"):
            # The default local store is MLflow's file store, which MLflow 3 keeps working but
            # refuses unless asked: a tracking URI (a server, sqlite:///...) needs none of it.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return cls([instantiate(node) for node in logger_cfg.values() if node])

    @property
    def tensorboard(self) -> Any:
        """The run's TensorBoard logger, if it has one (pictures and the projector go there)."""
        return next((lg for lg in self.loggers if isinstance(lg, TensorBoardLogger)), None)

    def open(self) -> None:
        """Make each tracker's folder or run now: an unwritable one fails before training.
        TensorBoard also gets its CUSTOM SCALARS layout: train, validation and test of each
        measure on one chart, over the same optimizer steps."""
        for logger in self.loggers:
            logger.experiment  # noqa: B018  (created on first use)
        if self.tensorboard is not None:
            self.tensorboard.experiment.add_custom_scalars(CHARTS)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Fractions in, each tracker's scalars out: accuracy in percent (``tracked_values``)."""
        shown = tracked_values(metrics)
        for logger in self.loggers:
            try:
                logger.log_metrics(shown, step)
            except ValueError as error:  # Lightning's TensorBoardLogger words a failed write so
                if isinstance(error.__cause__, OSError):
                    raise error.__cause__ from None
                raise

    def log_final(self, params: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        """The run's hyper-parameters and final metrics, in the form each tracker shows best.

        TensorBoard gets the HParams plugin's session records only: TensorBoard then works out
        which hyper-parameters differ between the runs (and shows those first) and takes the
        metrics from the scalars themselves, so no ``hparams/*`` copies of them are written.
        """
        known = {key: value for key, value in params.items() if value is not None}
        if metrics:
            self.log_metrics(metrics, step)
        for logger in self.loggers:
            if logger is self.tensorboard:
                write_hparams_session(logger, hparams_view(known, str(logger.version)))
            else:
                logger.log_hyperparams(known)

    def finalize(self, status: str) -> None:
        """Lightning's ``success``, or Status.INTERRUPTED (MLflow's word for it is KILLED)."""
        for logger in self.loggers:
            mlflow = isinstance(logger, MLFlowLogger)
            interrupted = status == Status.INTERRUPTED
            logger.finalize("KILLED" if mlflow and interrupted else str(status))


def tracked_values(metrics: dict[str, float]) -> dict[str, float]:
    """The values a tracker gets: accuracies (fractions in metrics.json) in percent, so that
    TensorBoard's charts and HPARAMS, MLflow and W&B read as the console does."""
    return {
        key: 100 * value if key.startswith(PERCENT_PREFIX) and value is not None else value
        for key, value in metrics.items()
    }


def hparams_view(params: dict[str, Any], label: str) -> dict[str, Any]:
    """What TensorBoard's HPARAMS shows of a run: in a multirun, the hyper-parameters the
    sweep varies (its run label's keys; the dashboard then opens on them and the metrics, the
    rest is in config.yaml and metrics.json), else all of them, and how the run ended
    (``status``, given by letters.runs.recording). Whole numbers become text,
    which it shows as 8 rather than 8.0000."""
    swept = set(re.findall(r"(?:^|,)([\w.]+)=", label))
    shown = {key: value for key, value in params.items() if key in swept} or params
    if "status" in params:  # how the run ended: finished, pruned (its metrics are its last)
        shown = {**shown, "status": params["status"]}
    return {
        key: str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        for key, value in shown.items()
    }


def write_hparams_session(logger: Any, params: dict[str, Any]) -> None:
    """The HParams plugin's session start and end for this run, without an experiment record:
    with none, TensorBoard builds the experiment from all the runs it sees."""
    from torch.utils.tensorboard.summary import hparams  # start-up: only with TensorBoard

    _, session_start, session_end = hparams(params, {})
    writer = logger.experiment.file_writer
    writer.add_summary(session_start)
    writer.add_summary(session_end)
    logger.experiment.flush()
