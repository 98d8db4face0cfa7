"""The trackers each run reports to — TensorBoard, CSV, MLflow, Weights & Biases — through
Lightning's own loggers (``conf/logger/*.yaml``; several at once: ``logger=[tensorboard,csv]``).

Every tracker of a run receives the same scalars while it trains (``loss/train``,
``loss/val``, ``accuracy/val``, ``accuracy/best_val``; the x-axis is the optimizer step), then its
hyper-parameters and final metrics (``accuracy/test``, ``loss/test``) at the end. A multirun's runs
are named by what the sweep varies (``momentum=0.9,seed=2``), not by their job number.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("letters.train")

# Overrides that choose where and how a run happens rather than what it is: never in a name.
SETUP_KEYS = (
    "data",
    "hydra",
    "experiment",
    "hparams_search",
    "resume",
    "pictures",
    "torch_threads",
    "cache_dir",
    "debug",
    "logger",
    "trainer",
    "name",
)


def swept_keys(hydra_cfg: Any) -> set[str] | None:
    """The keys a multirun varies, when the sweep says so: its sweeper's ``params`` and the
    command line's sweeps (``momentum=0.9,0.95``, from the sweep's multirun.yaml); None when
    the sweeper keeps the command line to itself (Optuna)."""
    from letters.common.multirun import read_sweep, sweep_overrides

    sweep = read_sweep(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
    parsed = sweep_overrides(sweep) if sweep is not None else None
    if parsed is None:
        return None
    keys = set(OmegaConf.select(hydra_cfg, "sweeper.params") or {})
    return keys | {o.key_or_group for o in parsed if o.is_sweep_override()}


def run_label(single: str = "") -> str:
    """A multirun job's values of what the sweep varies, e.g. ``momentum=0.9,seed=2``. For a
    single run: "", or its folder's name with ``single="name"``. Resolved
    (``${letters_run_label:}``) while Hydra's config of the job is current, then saved in
    the run's config.yaml."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return Path(HydraConfig.get().runtime.output_dir).name if single == "name" else ""
    hydra_cfg = HydraConfig.get()
    keys = swept_keys(hydra_cfg)
    parts = []
    for override in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task)):
        key = override.key_or_group
        if keys is not None and key not in keys:
            continue
        if keys is None and key.split(".")[0].split("/")[0] in SETUP_KEYS:
            continue
        parts.append(f"{key}={override.get_value_element_as_str()}")
    label = ",".join(parts) or str(hydra_cfg.job.num)
    return label.replace("/", "_").replace(" ", "")


OmegaConf.register_new_resolver("letters_run_label", run_label, replace=True)


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
        from hydra.utils import instantiate

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
        from pytorch_lightning.loggers import TensorBoardLogger

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
        for logger in self.loggers:
            try:
                logger.log_metrics(metrics, step)
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
        """``success`` or ``interrupted`` (MLflow's word for the latter is KILLED)."""
        from pytorch_lightning.loggers import MLFlowLogger

        for logger in self.loggers:
            mlflow = isinstance(logger, MLFlowLogger)
            logger.finalize("KILLED" if mlflow and status == "interrupted" else status)


def hparams_view(params: dict[str, Any], label: str) -> dict[str, Any]:
    """What TensorBoard's HPARAMS shows of a run: in a multirun, the hyper-parameters the
    sweep varies (its run label's keys; the dashboard then opens on them and the metrics, the
    rest is in config.yaml and metrics.json), else all of them. Whole numbers become text,
    which it shows as 8 rather than 8.0000."""
    swept = set(re.findall(r"(?:^|,)([\w.]+)=", label))
    shown = {key: value for key, value in params.items() if key in swept} or params
    return {
        key: str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        for key, value in shown.items()
    }


def write_hparams_session(logger: Any, params: dict[str, Any]) -> None:
    """The HParams plugin's session start and end for this run, without an experiment record:
    with none, TensorBoard builds the experiment from all the runs it sees."""
    from torch.utils.tensorboard.summary import hparams

    _, session_start, session_end = hparams(params, {})
    writer = logger.experiment.file_writer
    writer.add_summary(session_start)
    writer.add_summary(session_end)
    logger.experiment.flush()
