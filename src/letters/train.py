"""``python -m letters.train [overrides]``: train a stack of runs, test each member's best
checkpoint, and leave everything a report or a person needs in each run's directory.

A single run is a stack of one. ``hydra/launcher=stacked`` hands a multirun's compatible jobs
to the same engine as one stack (the task function's ``stacking`` attribute): prepare each job,
then build, fit and record the stack.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from letters.common.entry import hydra_command
from letters.common.files import shown_path
from letters.runs import resume as _resume  # noqa: F401  (registers the run-directory resolvers)
from letters.runs import trackers as _trackers  # noqa: F401  (registers the run-label resolver)

log = logging.getLogger("letters.train")

# What a failed or diverged run returns to a sweeper: the lowest possible accuracy.
FAILED_SCORE = 0.0


@dataclass
class Job:
    """One run of a sweep (or the single run): its resolved config and its directory."""

    cfg: DictConfig
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    member_of: Path | None = None  # the ensemble run (ensemble=K) this job is a member of


@dataclass
class Stack:
    """Everything one training of K jobs needs, built from their configs."""

    jobs: list[Job]
    data: Any
    model: Any
    trainer: Any
    checkpoints: Any
    trackers: list[Any]  # letters.runs.trackers.RunTrackers, one per member
    started: float
    stopper: Any  # letters.engine.callbacks.GracefulStop: which signal, if any, stopped training
    pretrain_data: Any = None  # the data of pre-training (pretrain=...), when the recipe has it
    pretrained: dict[str, Any] | None = None  # what pre-training did, for each metrics.json


def flat_params(cfg: DictConfig) -> dict[str, Any]:
    """The hyper-parameters a table or the HParams dashboard compares runs by."""
    return {
        "optimizer": cfg.optimizer.name,
        "lr": cfg.lr,
        "momentum": cfg.optimizer.get("momentum"),
        "weight_decay": cfg.weight_decay,
        "hidden_sizes": ",".join(str(size) for size in cfg.hidden_sizes),
        "activation": cfg.activation,
        "init": cfg.init,
        "reduction": cfg.reduction,
        "input_norm": cfg.input_norm,
        "augment": "photo" if cfg.augment else "none",
        "scheduler": cfg.scheduler,
        "test_time_polarity": cfg.test_time_polarity,
        "test_time_shift": cfg.get("test_time_shift", 0),
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "norm_size": cfg.norm_size,
        "data": cfg.data._target_.rsplit(".", 1)[-1],
        "ensemble": cfg.get("ensemble", 1),
        "pretrain": pretrain_name(cfg),
    }


def pretrain_name(cfg: DictConfig) -> str:
    """What the run pre-trains on, e.g. 'synthetic x10' (epochs), or 'none'."""
    pretrain = cfg.get("pretrain")
    if not pretrain:
        return "none"
    source = pretrain.data._target_.rsplit(".", 1)[-1].removesuffix("DataModule").lower()
    return f"{source} x{pretrain.epochs}"


def quiet_lightning() -> None:
    """Drop Lightning's advertising and a deprecation warning it raises on itself."""
    import warnings

    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # letters logs per epoch only; Lightning warns when an epoch has fewer calls than this.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: "Tip:" not in record.getMessage()
    )


def multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


# ---------------------------------------------------------------------------------------------
# Prepare: one job's config, checked and resolved while Hydra's config for that job is current
# ---------------------------------------------------------------------------------------------


def prepare_job(cfg: DictConfig) -> Job | float:
    """Validate and resolve one job's config, and save it as the run's ``config.yaml``.

    Called with Hydra's config for this job current (inside run_job). In a multirun a bad
    config is recorded in the job's metrics.json and scores FAILED_SCORE so the others go on;
    a single run raises (one line, through letters.common.errors).
    """
    from hydra.core.hydra_config import HydraConfig

    from letters.common.config import validate_training
    from letters.common.errors import ConfigError
    from letters.runs.resume import continue_sweep_job, requeued_job, resumed_config

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    try:
        if multirun() and not cfg.get("resume") and requeued_job(run_dir):
            log.info("%s: requeued after an interruption; continuing from last.ckpt", run_dir)
            cfg.resume = True
        if cfg.get("resume") is True:
            if not multirun():
                raise ConfigError(
                    "resume=true continues a sweep: add it to the sweep's own command with -m "
                    "and hydra.sweep.dir=DIR (resume=RUN_DIR continues one run)"
                )
            continued = continue_sweep_job(cfg, run_dir, overrides)
            if not isinstance(continued, DictConfig):
                return continued  # finished before: its recorded score
            cfg = continued
            if cfg.resume:
                overrides = []
        elif cfg.get("resume"):
            cfg, overrides = resumed_config(cfg, run_dir, overrides), []
        validate_training(cfg, overrides)
        resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        OmegaConf.save(resolved, run_dir / "config.yaml")
        return Job(resolved, run_dir, overrides)
    except Exception as error:
        if not multirun():
            raise
        record_failure(run_dir, error)
        return FAILED_SCORE


def record_failure(job_or_run_dir: Job | Path, error: BaseException, member: int | None = None):
    """A job that could not train: one log line, and metrics.json saying why."""
    from letters.common.errors import LettersError
    from letters.common.files import write_json

    run_dir = job_or_run_dir.run_dir if isinstance(job_or_run_dir, Job) else job_or_run_dir
    extra = {} if member is None else {"member": member}
    if isinstance(error, LettersError):
        message = str(error)
        log.error("error: %s", message, extra=extra)
    else:
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        log.error("job failed: %s", message, exc_info=error, extra=extra)
    try:
        write_json(Path(run_dir) / "metrics.json", {"status": "failed", "error": message})
    except LettersError as unwritable:  # the same full disk, say: the log line must do
        log.error("%s", unwritable, extra=extra)


# ---------------------------------------------------------------------------------------------
# The engine: build, fit, record one stack of jobs
# ---------------------------------------------------------------------------------------------


def train_jobs(jobs: list[Job], strict: bool = False) -> list[float]:
    """Train ``jobs`` as one stack; return each job's validation accuracy (FAILED_SCORE for a
    job that failed or diverged, recorded in its metrics.json). ``strict`` (a single run):
    errors and divergence raise instead.

    A job of ``ensemble=K`` brings K members to the stack (letters.runs.ensembles), joined into
    its own K-member checkpoint once they are trained."""
    members: list[Job] = []
    groups: list[list[int]] = []
    for job in jobs:
        size = int(job.cfg.get("ensemble") or 1)
        if size > 1 and job.cfg.get("resume"):  # resume= never shares a stack (stack_key)
            return [continue_ensemble(job, strict)]
        if size == 1:
            groups.append([len(members)])
            members.append(job)
            continue
        groups.append(list(range(len(members), len(members) + size)))
        members += [new_member(job, index) for index in range(size)]
    scores, data = train_stack(members, strict and len(members) == len(jobs))
    return [
        scores[group[0]]
        if len(group) == 1
        else finish_ensemble(job, [members[i] for i in group], data, strict)
        for job, group in zip(jobs, groups, strict=True)
    ]


def new_member(job: Job, index: int) -> Job:
    """Member ``index`` of the ensemble run ``job``, to train from the start: its folder and
    config.yaml (letters.runs.ensembles.member_config)."""
    from letters.runs.ensembles import member_config

    member_dir = job.run_dir / "members" / str(index)
    member_dir.mkdir(parents=True, exist_ok=True)
    member_cfg = member_config(job.cfg, job.run_dir, index, member_dir)
    member_cfg.resume = None
    OmegaConf.save(member_cfg, member_dir / "config.yaml")
    return Job(member_cfg, member_dir, member_of=job.run_dir)


def continue_ensemble(job: Job, strict: bool) -> float:
    """``resume=RUN`` of an ensemble run: each member continues from its own last.ckpt (a
    stack of one each: only those resume), members that never started train together, members
    that finished are left as they are; then the members are joined again."""
    from hydra.utils import instantiate

    from letters.runs.ensembles import member_summary
    from letters.runs.resume import read_run_config

    epochs = int(job.cfg.epochs)
    members, resumed, fresh = [], [], []
    for index in range(int(job.cfg.ensemble)):
        member_dir = job.run_dir / "members" / str(index)
        last = member_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            members.append(new_member(job, index))
            fresh.append(members[-1])
            continue
        member_cfg = read_run_config(member_dir / "config.yaml", job.cfg.resume)
        member_cfg.epochs = member_cfg.trainer.max_epochs = epochs
        members.append(Job(member_cfg, member_dir, member_of=job.run_dir))
        summary = member_summary(member_dir)
        if summary["status"] != "finished" or summary["epochs_completed"] != epochs:
            member_cfg.resume = str(last)
            OmegaConf.save(member_cfg, member_dir / "config.yaml")
            resumed.append(members[-1])
    log.info(
        "continuing an ensemble of %d: %d members from their last.ckpt, %d from the start, "
        "%d finished before",
        len(members),
        len(resumed),
        len(fresh),
        len(members) - len(resumed) - len(fresh),
    )
    data = None
    for stack in [[member] for member in resumed] + ([fresh] if fresh else []):
        _, data = train_stack(stack, strict=False)
    if data is None:  # every member had finished: only the join is redone
        data = instantiate(job.cfg.data).prepare()
    return finish_ensemble(job, members, data, strict)


def finish_ensemble(job: Job, members: list[Job], data: Any, strict: bool) -> float:
    """Join the members' best checkpoints into the run's own, evaluate it on validation and
    test (the members' mean probabilities), and record it like any run."""
    import torch

    from letters.common.errors import LettersError
    from letters.common.files import write_atomically, write_json
    from letters.engine.checkpoint import load_classifier
    from letters.engine.evaluate import predict_split
    from letters.runs.ensembles import joined_checkpoint, member_summary
    from letters.runs.trackers import RunTrackers

    started = time.perf_counter()
    cfg, run_dir = job.cfg, job.run_dir
    summaries = [member_summary(member.run_dir) for member in members]
    bests = [m.run_dir / "checkpoints" / "best.ckpt" for m in members]
    bests = [path for path in bests if path.is_file()]
    if not bests or data is None:
        error = LettersError(f"{run_dir}: no member of the ensemble has a best checkpoint")
        if strict:
            raise error
        record_failure(job, error)
        return FAILED_SCORE
    best = run_dir / "checkpoints" / "best.ckpt"
    joined = joined_checkpoint(bests)
    write_atomically(best, lambda handle: torch.save(joined, handle))
    model = load_classifier(best, data.splits["test"][0].device)  # where the data already is
    validation = predict_split(model, *data.splits["validation"])
    test = predict_split(model, *data.splits["test"])
    losses = [s["train_loss"] for s in summaries if isinstance(s.get("train_loss"), float)]
    record: dict[str, Any] = {
        "status": "finished",
        "params": flat_params(cfg),
        "run_dir": str(run_dir),
        "ensemble": len(members),
        "members_in_checkpoint": len(bests),
        "val_acc": validation.accuracy,
        "best_val_acc": validation.accuracy,
        "val_loss": validation.loss,
        "test_acc": test.accuracy,
        "test_loss": test.loss,
        "train_loss": sum(losses) / len(losses) if losses else None,
        "epochs_completed": summaries[0].get("epochs_completed"),
        "predicted_classes": int(test.predicted.unique().numel()),
        "best_checkpoint": str(best.relative_to(run_dir)),
        "members": summaries,
    }
    trackers = RunTrackers.from_config(cfg.get("logger"))
    trackers.open()
    step = int(record["epochs_completed"] or 0) * data.steps_per_epoch
    final = {
        "accuracy/val": validation.accuracy,
        "accuracy/test": test.accuracy,
        "loss/val": validation.loss,
        "loss/test": test.loss,
    }
    trackers.log_final(record["params"], final, step)
    if cfg.pictures:
        from letters.reporting.pictures import evaluation_pictures

        tensorboard = trackers.tensorboard
        evaluation_pictures(
            run_dir / "pictures",
            data.splits["test"][0].cpu(),
            data.splits["test"][1].cpu(),
            test.logits,
            data.classes,
            cfg.norm_size,
            title=f"test split, ensemble of {len(bests)}",
            writer=tensorboard.experiment if tensorboard is not None else None,
            step=step,
            seed=cfg.seed,
        )
    trackers.finalize("success")
    record["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_json(run_dir / "metrics.json", record)
    members_text = ", ".join(
        "-" if s.get("test_acc") is None else f"{100 * s['test_acc']:.1f}%" for s in summaries
    )
    log.info(
        "ensemble of %d: val_acc %.1f%%, test_acc %.1f%% (members' test_acc: %s)",
        len(bests),
        100 * validation.accuracy,
        100 * test.accuracy,
        members_text,
    )
    if not multirun():
        print_summary(run_dir)
    return float(validation.accuracy)


def train_stack(jobs: list[Job], strict: bool = False) -> tuple[list[float], Any]:
    """The engine: build, fit and record ``jobs`` as one stack (see train_jobs). Returns the
    scores and the stack's data (None when the stack could not be built), which an ensemble
    evaluates its joined checkpoint on."""
    data = None
    try:
        stack = build(jobs)
        data = stack.data
        fit(stack)
        return record(stack, strict), data
    except Exception as error:
        if strict:
            raise
        for member, job in enumerate(jobs):
            record_failure(job, error, member if len(jobs) > 1 else None)
        return [FAILED_SCORE] * len(jobs), data


def build(jobs: list[Job]) -> Stack:
    """Data, the stacked model, one logger and one checkpoint directory per member, Trainer."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from letters.engine.callbacks import (
        GracefulStop,
        MemberCheckpoints,
        StepProgressBar,
        ValidateLastEpoch,
    )
    from letters.engine.members import member_settings
    from letters.engine.module import LetterClassifier
    from letters.runs.trackers import RunTrackers

    started = time.perf_counter()
    cfg = jobs[0].cfg  # everything but the member settings is the same in every job
    quiet_lightning()
    from letters.runs.threads import set_torch_threads  # torch_threads, or by launcher when null

    set_torch_threads(cfg)
    data = instantiate(cfg.data).prepare()
    log.info("data: %s", data.describe())
    pretrain_data = None
    if cfg.get("pretrain") and not cfg.resume:  # a resumed run's weights are already trained
        pretrain_data = instantiate(cfg.pretrain.data).prepare()
        log.info("pre-training data: %s", pretrain_data.describe())
    model = LetterClassifier(
        norm_size=cfg.norm_size,
        classes=data.classes,
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
        callbacks=[ValidateLastEpoch(), checkpoints, stopper]
        + ([StepProgressBar()] if settings["enable_progress_bar"] else []),
        default_root_dir=jobs[0].run_dir,
    )
    return Stack(jobs, data, model, trainer, checkpoints, trackers, started, stopper, pretrain_data)


def trainer_settings(cfg: DictConfig) -> dict[str, Any]:
    """The Trainer's arguments from the ``trainer`` group, with what letters decides itself:
    the progress bar and, under SLURM, who requeues."""
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    if settings.get("enable_progress_bar") is None:  # a terminal, and no other job beside
        from letters.runs.threads import runs_beside_others

        settings["enable_progress_bar"] = sys.stderr.isatty() and not runs_beside_others()
    from pytorch_lightning.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect() and not settings.get("plugins"):
        # One requeue mechanism: submitit's (GracefulStop), which saves every member and
        # records each run; Lightning's own would write a checkpoint of the whole stack.
        settings["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    return settings


def fit(stack: Stack) -> None:
    from letters.engine.checkpoint import read_checkpoint

    resume = stack.jobs[0].cfg.resume
    if resume:  # only a stack of one resumes: stack_key keeps resume= jobs apart
        # One clear line if it is damaged or too old, before Lightning reads it.
        if "upgraded_from" in read_checkpoint(resume):
            from letters.common.errors import LettersError

            raise LettersError(
                f"{resume}: written by letters 0.1, before stacks; letters.test and "
                "letters.predict read it, but training cannot continue from it"
            )
        log.info("resuming from %s", resume)
    if len(stack.jobs) > 1:
        log.info("a stack of %d runs: %s", len(stack.jobs), ", ".join(describe(stack.jobs)))
    stack.stopper.install()
    try:
        if stack.pretrain_data is not None:
            pretrain(stack)
        # weights_only: a checkpoint is data; resuming from one must not run code from it.
        stack.trainer.fit(
            stack.model, datamodule=stack.data, ckpt_path=resume or None, weights_only=True
        )
    finally:
        stack.stopper.restore()


def pretrain(stack: Stack) -> None:
    """Train every member on the pre-training data (pretrain=...) for its own epochs, with
    the run's optimizer and schedule, before the real data trains it with fresh ones.

    Nothing of it is validated, checkpointed or logged per epoch: the run's records, curves
    and checkpoints are those of the real data. A signal during pre-training leaves nothing
    to continue from; the run says so and exits as an interrupted one does.
    """
    import pytorch_lightning as pl

    from letters.engine.callbacks import StepProgressBar

    cfg, model = stack.jobs[0].cfg, stack.model
    epochs = int(cfg.pretrain.epochs)
    log.info("pre-training: %d epochs of %s", epochs, stack.pretrain_data.name)
    settings = trainer_settings(cfg)
    settings.update(max_epochs=epochs, limit_val_batches=0, num_sanity_val_steps=0)
    progress = settings["enable_progress_bar"]
    trainer = pl.Trainer(
        **settings,
        logger=False,
        enable_checkpointing=False,
        callbacks=[stack.stopper] + ([StepProgressBar("Pre-training epoch")] if progress else []),
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
            "pre-trained: %d epochs of %s in %.1f s, train_loss %s",
            trainer.current_epoch,
            stack.pretrain_data.name,
            stack.pretrained["seconds"],
            "-" if loss is None else f"{loss:.4f}",
            extra={"member": member},
        )
    stack.pretrain_data = None  # its tensors are not needed again (on a GPU, its memory)
    if stack.stopper.signal is not None:
        record_interrupted(stack, stack.stopper.signal, pretraining=True)


def describe(jobs: list[Job]) -> list[str]:
    """Each job's per-member settings that differ within the stack, e.g. 'momentum=0.9 seed=1'."""
    from letters.engine.members import MEMBER_KEYS, member_settings

    settings = [member_settings(job.cfg) for job in jobs]
    varying = [key for key in MEMBER_KEYS if len({str(s[key]) for s in settings}) > 1]
    return [" ".join(f"{key}={s[key]}" for key in varying) or "-" for s in settings]


def record(stack: Stack, strict: bool) -> list[float]:
    """Per member: test its best checkpoint, draw its pictures, log and write its metrics."""
    stopped_by = stack.stopper.signal
    if stopped_by is not None and stack.trainer.current_epoch < stack.trainer.max_epochs:
        record_interrupted(stack, stopped_by)
    tested = [test_member(stack, member) for member in range(len(stack.jobs))]
    pictures = {
        member: picture_task(stack, member, predictions)
        for member, (_, predictions) in enumerate(tested)
        if predictions is not None and stack.jobs[member].cfg.pictures
    }
    unwritten = draw(stack, pictures)
    for member, message in unwritten.items():
        tested[member][0]["pictures_error"] = message
    scores = [finish_member(stack, member, record) for member, (record, _) in enumerate(tested)]
    if strict and unwritten:  # the run is recorded; its exit status says what went wrong
        from letters.common.errors import LettersError

        raise LettersError(unwritten[0])
    diverged = stack.model.diverged_at[0]
    if strict and diverged is not None:
        from letters.common.errors import LettersError

        run_dir = shown_path(stack.jobs[0].run_dir)
        raise LettersError(
            f"training diverged (non-finite loss at epoch {diverged[0]}, step {diverged[1]}); "
            f"{run_dir}/metrics.json records it"
        )
    return scores


def draw(stack: Stack, pictures: dict[int, dict[str, Any]]) -> dict[int, str]:
    """Draw each member's pictures. A picture that cannot be written (a full disk, a folder
    that cannot be made) is logged in one line and returned by member, so that every run is
    still tested and recorded."""
    from letters.common.errors import LettersError

    if len(pictures) == 1:  # one run: draw here, into its open TensorBoard writer
        from letters.reporting.pictures import evaluation_pictures

        ((member, task),) = pictures.items()
        tensorboard = stack.trackers[member].tensorboard
        try:
            writer = tensorboard.experiment if tensorboard is not None else None
            evaluation_pictures(**task, writer=writer)
            errors: dict[int, BaseException | None] = {member: None}
        except (LettersError, OSError) as error:
            errors = {member: error}
    elif pictures:  # a stack: each member's pictures in a worker process, side by side
        from letters.reporting.pictures import draw_in_parallel

        tasks = [
            (getattr(stack.trackers[member].tensorboard, "log_dir", None), task)
            for member, task in pictures.items()
        ]
        errors = dict(zip(pictures, draw_in_parallel(tasks), strict=True))
    else:
        errors = {}
    unwritten = {}
    for member, error in errors.items():
        if error is None:
            continue
        if not isinstance(error, LettersError | OSError):
            raise error
        unwritten[member] = written_error(error)
        log.error("pictures not drawn: %s", unwritten[member], extra={"member": member})
    return unwritten


def written_error(error: BaseException) -> str:
    """One line for a failed write: a LettersError's own, or an OSError's file and reason."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return str(error)


def record_interrupted(stack: Stack, stopped_by: Any, pretraining: bool = False) -> None:
    """A signal stopped training: each member's metrics.json (and an ensemble's own) says so
    and how to continue, then the process exits with 128 + the signal's number (143 for
    SIGTERM, 130 for SIGINT), as a scheduler expects of a job it stopped. Nothing is tested or
    drawn: the time a scheduler grants after its signal is short. Under submitit its
    preemption signal goes on to submitit's handler instead, which requeues the job; the
    requeued job continues from last.ckpt by itself (letters.runs.resume.requeued_job).

    Stopped during ``pretraining`` there is no checkpoint yet: the record says the run must
    start again (``resume`` null, and no scheduler job id, so that a requeue starts it over).
    """
    from letters.common.files import write_json
    from letters.runs.resume import scheduler_job_id

    epochs = stack.trainer.current_epoch
    job_id = None if pretraining else scheduler_job_id()
    then = "Continue with:"
    if stack.stopper.requeue:
        then = "submitit requeues the job, which continues from it by itself; by hand:"
    ensembles: dict[Path, dict[str, Any]] = {}
    for member, job in enumerate(stack.jobs):
        # A member of an ensemble continues with the whole ensemble, which joins it again.
        command = f"python -m letters.train resume={shown_path(job.member_of or job.run_dir)}"
        record = member_record(stack, member, "interrupted")
        record.update(
            signal=stopped_by.name, epochs=job.cfg.epochs, resume=None if pretraining else command
        )
        if job_id is not None:
            record["scheduler_job_id"] = job_id  # a requeue of this job continues the run
        write_json(job.run_dir / "metrics.json", record)
        if job.member_of is not None:
            keys = ("signal", "epochs", "epochs_completed", "resume", "scheduler_job_id")
            ensembles[job.member_of] = {"status": "interrupted"} | {
                key: record[key] for key in keys if key in record
            }
        stack.trackers[member].finalize("interrupted")
        if pretraining:
            log.warning(
                "interrupted by %s during pre-training; no checkpoint yet: run the command again",
                stopped_by.name,
                extra={"member": member},
            )
            continue
        log.warning(
            "interrupted by %s after epoch %d of %d; last.ckpt is saved. %s %s",
            stopped_by.name,
            epochs,
            job.cfg.epochs,
            then,
            command,
            extra={"member": member},
        )
    for run_dir, ensemble in ensembles.items():
        write_json(run_dir / "metrics.json", ensemble)
    stack.stopper.hand_over()  # submitit's preemption signal: its handler requeues and exits
    raise SystemExit(128 + int(stopped_by))


def member_record(stack: Stack, member: int, status: str) -> dict[str, Any]:
    """What training left of one member, for its metrics.json: ``status`` unless it
    diverged, its settings, where it stands and its last and best validation accuracy."""
    job, history = stack.jobs[member], stack.model.histories[member]
    diverged = stack.model.diverged_at[member]
    record: dict[str, Any] = {
        "status": status if diverged is None else "diverged",
        "params": flat_params(job.cfg),
        "run_dir": str(job.run_dir),
        "stack_size": len(stack.jobs),
    }
    if diverged is not None:
        record.update(diverged_epoch=diverged[0], diverged_step=diverged[1])
    record["val_acc"] = history["val_acc"][-1] if history["val_acc"] else None
    record["train_loss"] = history["train_loss"][-1] if history["train_loss"] else None
    record["train_seconds"] = round(time.perf_counter() - stack.started, 2)
    record["epochs_completed"] = len(history["epoch"])
    record["best_val_acc"] = stack.checkpoints.best_scores[member]
    if stack.pretrained is not None:
        record["pretrained"] = stack.pretrained
    return record


def test_member(stack: Stack, member: int) -> tuple[dict[str, Any], Any]:
    """A member's record so far, and its best checkpoint's predictions on the test split."""
    from letters.engine.checkpoint import load_classifier
    from letters.engine.evaluate import predict_split

    job, model = stack.jobs[member], stack.model
    record = member_record(stack, member, "finished")
    record["test_acc"] = record["test_loss"] = None
    best = stack.checkpoints.best_path(member)
    if best is None or not best.is_file():
        return record, None
    # Exactly what letters.test does with this file: a stack of one rebuilt from it.
    predictions = predict_split(load_classifier(best, model.device), *stack.data.splits["test"])
    record.update(test_acc=predictions.accuracy, test_loss=predictions.loss)
    # How many letters it ever answers: one or two means it collapsed (letters.report flags it).
    record["predicted_classes"] = int(predictions.logits.argmax(-1).unique().numel())
    record["best_checkpoint"] = str(best.relative_to(job.run_dir))
    return record, predictions


def picture_task(stack: Stack, member: int, predictions: Any) -> dict[str, Any]:
    """evaluation_pictures' arguments for one member, but its TensorBoard writer."""
    job = stack.jobs[member]
    return {
        "out_dir": job.run_dir / "pictures",
        "inputs": stack.data.splits["test"][0].cpu(),
        "labels": stack.data.splits["test"][1].cpu(),
        "logits": predictions.logits,
        "classes": stack.data.classes,
        "norm_size": job.cfg.norm_size,
        "title": "test split, best checkpoint",
        "history": stack.model.histories[member],
        "step": stack.trainer.global_step,
        "seed": job.cfg.seed,
    }


def finish_member(stack: Stack, member: int, record: dict[str, Any]) -> float:
    """Give the member's trackers its test metrics and hyper-parameters, write its
    metrics.json, say so."""
    from letters.common.files import write_json

    job, trackers = stack.jobs[member], stack.trackers[member]
    final = {}
    if record["test_acc"] is not None:
        final = {"accuracy/test": record["test_acc"], "loss/test": record["test_loss"]}
    record["wall_seconds"] = round(time.perf_counter() - stack.started, 2)
    trackers.log_final(record["params"], final, stack.trainer.global_step)
    trackers.finalize("success")
    write_json(job.run_dir / "metrics.json", record)
    log.info("%s", summary_line(record), extra={"member": member})
    if not multirun() and job.member_of is None:  # a sweep or an ensemble sums up itself
        print_summary(job.run_dir)
    finished = record["status"] == "finished" and record["val_acc"] is not None
    return float(record["val_acc"]) if finished else FAILED_SCORE


def summary_line(record: dict[str, Any]) -> str:
    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    loss = "-" if record["train_loss"] is None else f"{record['train_loss']:.4f}"
    return (
        f"{record['status']}: val_acc {percent(record['val_acc'])} (best "
        f"{percent(record['best_val_acc'])}), test_acc {percent(record['test_acc'])} "
        f"[best checkpoint], train_loss {loss}, {record['wall_seconds']:.1f} s"
    )


def print_summary(run_dir: Path) -> None:
    """Where the run's files are (its summary line is logged just before)."""
    run_dir = shown_path(run_dir)
    print(f"outputs: {run_dir}\ntensorboard --logdir {run_dir}", flush=True)


# ---------------------------------------------------------------------------------------------
# The task function: a single run, or one job of a multirun under any launcher
# ---------------------------------------------------------------------------------------------


def train(cfg: DictConfig) -> float:
    """Fit, test and record one run; return the validation accuracy (what a sweeper maximises).

    In a multirun, a job that fails records why in its metrics.json and returns 0.0 so that
    the other jobs go on; a single run raises. A failed or diverged run scores 0.0, the lowest
    accuracy, rather than NaN: the Optuna sweeper ends the whole study on a NaN, while 0.0
    lets it go on and steer away from that region.
    """
    job = prepare_job(cfg)
    if not isinstance(job, Job):
        return job
    return train_jobs([job], strict=not multirun())[0]


def stack_key(job: Job) -> str:
    from letters.engine.members import stack_key as config_key

    return config_key(job.cfg)


# What hydra/launcher=stacked looks for on the task function (see hydra_plugins).
train.stacking = SimpleNamespace(
    prepare=prepare_job, key=stack_key, train=train_jobs, record_failure=record_failure
)

main = hydra_command("train", train)


if __name__ == "__main__":
    main()
