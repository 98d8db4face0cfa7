"""A stack run: build the data, the stacked model, each member's trackers and checkpoints and
the Trainer for K prepared jobs, then fit them (pre-training first where the recipe has it)."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.plugins.environments import SLURMEnvironment

from letters.common.errors import LettersError
from letters.common.records import seconds_owner
from letters.data.modules import LetterDataModule
from letters.engine.callbacks import (
    GracefulStop,
    MemberCheckpoints,
    MemberPruning,
    StepProgressBar,
    ValidateLastEpoch,
)
from letters.engine.checkpoint import checkpoint_file, read_checkpoint
from letters.engine.members import MEMBER_KEYS, member_settings
from letters.engine.module import LetterClassifier
from letters.runs.jobs import Job
from letters.runs.threads import runs_beside_others, set_torch_threads
from letters.runs.trackers import RunTrackers

log = logging.getLogger("letters.train")


@dataclass
class StackRun:
    """One training of K jobs as one stack: everything it needs, built from their configs.
    (A "stack" is the K members trained as one batched model; this is one run of it.)"""

    jobs: list[Job]
    data: LetterDataModule
    model: LetterClassifier
    trainer: pl.Trainer
    checkpoints: MemberCheckpoints
    trackers: list[RunTrackers]  # one per member
    started: float
    stopper: GracefulStop  # which signal, if any, stopped training
    pretrain_data: LetterDataModule | None = None  # pretrain=...'s data, when the recipe has it
    pretrained: dict[str, Any] | None = None  # what pre-training did, for each metrics.json
    interrupted_in_pretraining: bool = False  # a signal came before the real data trained

    @cached_property
    def labels(self) -> list[str]:
        """What each member's own lines start with (run_labels)."""
        return run_labels(self.jobs)


# Lightning's lines that no one acts on: its advertising, and which accelerators exist, on
# every run (letters' "training starts on DEVICE" line names the one used; Lightning's warning
# that a GPU is available but not used stays).
LIGHTNING_NOISE = {
    "pytorch_lightning.utilities.rank_zero": ("Tip:", "GPU available: ", "TPU available: "),
    "pytorch_lightning.accelerators.cuda": ("CUDA_VISIBLE_DEVICES: ",),
}


def quiet_lightning() -> None:
    """Drop Lightning's noise (LIGHTNING_NOISE) and a deprecation warning it raises on itself."""
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # letters logs per epoch only; Lightning warns when an epoch has fewer calls than this.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    for name, noise in LIGHTNING_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(one, NoiseFilter) for one in logger.filters):  # once a process
            logger.addFilter(NoiseFilter(noise))


class NoiseFilter(logging.Filter):
    """Drops the records whose message contains any of ``noise``."""

    def __init__(self, noise: tuple[str, ...]) -> None:
        super().__init__()
        self.noise = noise

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.noise)


def build_stack_run(
    jobs: list[Job], should_prune: Callable[[int, int, float], bool] | None = None
) -> StackRun:
    """Data, the stacked model, one logger and one checkpoint directory per member, Trainer.

    ``should_prune(member, epoch, val_acc)``, when given, is asked after each validation for
    every member still training, and stops those it says to (letters.engine.callbacks.
    MemberPruning), after MemberCheckpoints has saved that validation's best.ckpt.
    """

    started = time.perf_counter()
    cfg = jobs[0].cfg  # everything but the member settings is the same in every job
    quiet_lightning()

    set_torch_threads(cfg)  # torch_threads, or by launcher when null
    data = instantiate(cfg.data).prepare()
    log.info("data: %s", data.describe())
    pretrain_data = None
    if cfg.get("pretrain") and not cfg.resume:  # a resumed run's weights are already trained
        pretrain_data = instantiate(cfg.pretrain.data).prepare()
        log.info("pre-training data: %s", pretrain_data.describe())
    model = build_model(jobs, data.classes)
    trackers = [RunTrackers.from_config(job.cfg.get("logger")) for job in jobs]
    for member_trackers in trackers:
        member_trackers.open()  # an unwritable folder fails now, before any training
    model.member_trackers = trackers
    checkpoints = MemberCheckpoints([job.run_dir for job in jobs])
    stopper = GracefulStop()
    settings = trainer_settings(cfg)
    trainer = pl.Trainer(
        **settings,
        logger=False,  # each member logs to its own trackers (LetterClassifier.log_member)
        enable_checkpointing=False,  # each member's checkpoints: MemberCheckpoints
        callbacks=[ValidateLastEpoch(), checkpoints]
        + ([MemberPruning(should_prune)] if should_prune is not None else [])
        + [stopper]
        + ([StepProgressBar()] if settings["enable_progress_bar"] else []),
        default_root_dir=jobs[0].run_dir,
    )
    return StackRun(
        jobs, data, model, trainer, checkpoints, trackers, started, stopper, pretrain_data
    )


def build_model(jobs: list[Job], classes: str) -> LetterClassifier:
    """The stacked model of ``jobs``: the first job's architecture and recipe (the stack's
    jobs share them), one member per job with its own settings."""
    cfg = jobs[0].cfg
    return LetterClassifier(
        norm_size=cfg.norm_size,
        classes=classes,
        hidden_sizes=list(cfg.hidden_sizes),
        activation=cfg.activation,
        reduction=cfg.reduction,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        data=OmegaConf.to_container(cfg.data, resolve=True),
        input_norm=cfg.input_norm,
        augment=OmegaConf.to_container(cfg.augment, resolve=True) if cfg.augment else None,
        scheduler=cfg.scheduler,
        test_time_polarity=cfg.test_time_polarity,
        test_time_shift=cfg.test_time_shift,
        members=[member_settings(job.cfg) for job in jobs],
    )


def trainer_settings(cfg: DictConfig) -> dict[str, Any]:
    """The Trainer's arguments from the ``trainer`` group, with what letters decides itself:
    the progress bar and, under SLURM, who requeues."""
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    if settings.get("enable_progress_bar") is None:  # a terminal, and no other job beside
        settings["enable_progress_bar"] = sys.stderr.isatty() and not runs_beside_others()

    if SLURMEnvironment.detect() and not settings.get("plugins"):
        # One requeue mechanism: submitit's (GracefulStop), which saves every member and
        # records each run; Lightning's own would write a checkpoint of the whole stack.
        settings["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    return settings


def fit(stack: StackRun, continue_from: dict[str, Any] | None = None) -> None:
    """Train the stack, continuing from ``continue_from`` (its members' checkpoints stacked
    into one: letters.runs.stacking) or, for a stack of one, from its job's ``resume``."""

    resume = stack.jobs[0].cfg.resume if continue_from is None else None
    if resume:
        if len(stack.jobs) > 1:  # each its own checkpoint: letters.runs.stacking stacks them
            raise ValueError("a stack of several continues from continue_from, not resume")
        # One clear line if it is damaged or too old, before Lightning reads it.
        if "upgraded_from" in read_checkpoint(resume):
            raise LettersError(
                f"{resume}: written by letters 0.1, before stacks; letters.test and "
                "letters.predict read it, but training cannot continue from it"
            )
        log.info("resuming from %s", resume)
    if len(stack.jobs) > 1:
        log.info("%s", stack_line(stack.jobs))
    stack.stopper.install()
    try:
        if stack.pretrain_data is not None:
            pretrain(stack)
            if stack.interrupted_in_pretraining:
                return
        with continued_checkpoint(stack, continue_from, resume) as ckpt_path:
            # weights_only: a checkpoint is data; resuming from one must not run code from it.
            stack.trainer.fit(
                stack.model, datamodule=stack.data, ckpt_path=ckpt_path, weights_only=True
            )
    finally:
        stack.stopper.restore()


@contextmanager
def continued_checkpoint(
    stack: StackRun, continue_from: dict[str, Any] | None, resume: str | None
) -> Iterator[str | None]:
    """The path Lightning continues from: the stacked checkpoint's, written for the fit into
    the first member's checkpoints folder; else the job's own ``resume``; else none."""
    if continue_from is None:
        yield resume or None
        return
    with checkpoint_file(continue_from, stack.jobs[0].run_dir / "checkpoints") as path:
        yield str(path)


def pretrain(stack: StackRun) -> None:
    """Train every member on the pre-training data (pretrain=...) for its own epochs, with
    the run's optimizer and schedule, before the real data trains it with fresh ones.

    Nothing of it is validated, checkpointed or logged per epoch: the run's records, curves
    and checkpoints are those of the real data. A signal during pre-training leaves nothing
    to continue from: ``interrupted_in_pretraining`` says so, and the run's record says to start
    again.
    """

    cfg, model = stack.jobs[0].cfg, stack.model
    epochs = int(cfg.pretrain.epochs)
    log.info("pre-training: %d epochs of %s", epochs, stack.pretrain_data.name)
    settings = trainer_settings(cfg)
    settings.update(max_epochs=epochs, limit_val_batches=0, num_sanity_val_steps=0)
    bar = []
    if settings["enable_progress_bar"]:  # it also says the whole run's time left
        then_steps = stack.data.steps_per_epoch * int(cfg.epochs)
        bar = [StepProgressBar("Pre-training epoch", then_steps)]
    trainer = pl.Trainer(
        **settings,
        logger=False,
        enable_checkpointing=False,
        callbacks=[stack.stopper, *bar],
        default_root_dir=stack.jobs[0].run_dir,
    )
    started = time.perf_counter()
    trackers, model.member_trackers = model.member_trackers, []
    try:
        trainer.fit(model, datamodule=stack.pretrain_data, weights_only=True)
    finally:
        model.member_trackers = trackers
    losses = [
        history["train_loss"][-1] if history["train_loss"] else None for history in model.histories
    ]
    model.start_afresh()
    stack.pretrained = {
        "data": stack.pretrain_data.name,
        "epochs": trainer.current_epoch,
        "seconds": round(time.perf_counter() - started, 2),
    }
    for member, loss in enumerate(losses):
        log.info(
            "%spre-trained: %d epochs of %s, train_loss %s, %s%.1f s",
            stack.labels[member],
            trainer.current_epoch,
            stack.pretrain_data.name,
            "-" if loss is None else f"{loss:.4f}",
            seconds_owner({"stack_size": len(stack.jobs)}),
            stack.pretrained["seconds"],
            extra={"member": member},
        )
    stack.pretrain_data = None  # its tensors are not needed again (on a GPU, its memory)
    stack.interrupted_in_pretraining = stack.stopper.signal is not None


# How many values of a varying setting the stack's line lists before it only counts them.
LISTED_VALUES = 6


def varying_settings(jobs: list[Job]) -> dict[str, list[str]]:
    """The per-member settings that differ within the stack, each job's value of each, as the
    sweep's report orders them: the seed (a replicate, not a setting) last."""
    settings = [member_settings(job.cfg) for job in jobs]
    keys = sorted(MEMBER_KEYS, key=lambda key: key == "seed")
    columns = {key: [str(s[key]) for s in settings] for key in keys}
    return {key: values for key, values in columns.items() if len(set(values)) > 1}


def run_labels(jobs: list[Job]) -> list[str]:
    """What a stack's per-run lines start with, so that each says whose it is: the settings
    that tell its run apart, aligned ('momentum=0.9  seed=1: '), or its folder's name where
    none do; nothing for a run alone (its folder is printed when it ends)."""
    if len(jobs) == 1:
        return [""]
    varying = varying_settings(jobs)
    if not varying:
        return [f"{job.run_dir.name}: " for job in jobs]
    columns = [[f"{key}={value}" for value in values] for key, values in varying.items()]
    widths = [max(len(cell) for cell in column) for column in columns]
    return [
        " ".join(
            column[index].ljust(width) for column, width in zip(columns, widths, strict=True)
        ).rstrip()
        + ": "
        for index in range(len(jobs))
    ]


def stack_line(jobs: list[Job]) -> str:
    """The stack in one short line: 'a stack of 10 runs: momentum 0.88, 0.9, 0.95 x seed 1, 2'
    (how many values, beyond LISTED_VALUES of them)."""
    parts = []
    for key, values in varying_settings(jobs).items():
        distinct = list(dict.fromkeys(values))
        shown = ", ".join(distinct) if len(distinct) <= LISTED_VALUES else f"{len(distinct)} values"
        parts.append(f"{key} {shown}")
    return f"a stack of {len(jobs)} runs" + (f": {' x '.join(parts)}" if parts else "")
