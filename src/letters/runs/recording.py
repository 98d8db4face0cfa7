"""Recording a stack run: each member's test of its best checkpoint, its pictures, its
trackers' final values and its metrics.json (letters.common.records); or, when a signal stopped
training, each member's interrupted record and the exit a scheduler expects."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from letters.common.errors import LettersError, user_error_line
from letters.common.files import shown_path
from letters.common.records import (
    RunRecord,
    Status,
    percent,
    record_line,
    score,
    write_record,
)
from letters.engine.checkpoint import load_stacked_classifier
from letters.engine.evaluate import Predictions, predict_members
from letters.reporting.background_pictures import (
    PendingRun,
    background_pictures,
    member_log_files,
    settle_background_pictures,
)
from letters.reporting.pictures import draw_in_parallel, evaluation_pictures, run_name
from letters.runs.jobs import multirun
from letters.runs.pruning import is_pruned, pruned_outcome
from letters.runs.resume import scheduler_job_id, scheduler_stamp
from letters.runs.stack_run import StackRun
from letters.runs.threads import available_cores, cores_left_by_training, trains_stacks_here

log = logging.getLogger("letters.train")


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


def record_stack(stack: StackRun, strict: bool) -> list[float | BaseException]:
    """Per member: test its best checkpoint, draw its pictures, log and write its metrics."""
    stopped_by = stack.stopper.signal
    if stack.interrupted_in_pretraining:
        record_interrupted(stack, stopped_by, pretraining=True)
    if stopped_by is not None and stack.trainer.current_epoch < stack.trainer.max_epochs:
        record_interrupted(stack, stopped_by)
    settle_background_pictures()  # an earlier stack's pictures that could not be written
    beside = cores_beside_training(stack)
    log.info("%s", testing_line(stack, beside > 0))
    tested = test_members(stack, list(range(len(stack.jobs))))
    pictures = {  # none of a pruned trial: it is one that a search found bad
        member: picture_task(stack, member, predictions)
        for member, (_, predictions) in enumerate(tested)
        if predictions is not None
        and stack.jobs[member].cfg.pictures
        and stack.model.pruned_at[member] is None
    }
    if beside:
        draw_beside_training(stack, pictures, beside)
        unwritten = {}
    else:
        unwritten = draw_pictures(stack, pictures)
    for member, message in unwritten.items():
        tested[member][0]["pictures_error"] = message
    scores = [finish_member(stack, member, record) for member, (record, _) in enumerate(tested)]
    if strict and unwritten:  # the run is recorded; its exit status says what went wrong
        raise LettersError(unwritten[0])
    diverged = stack.model.diverged_at[0]
    if strict and diverged is not None:
        run_dir = shown_path(stack.jobs[0].run_dir)
        raise LettersError(
            f"training diverged (non-finite loss at epoch {diverged[0]}, step {diverged[1]}); "
            f"{run_dir}/metrics.json records it"
        )
    return scores


def testing_line(stack: StackRun, beside_training: bool = False) -> str:
    """What the end of training does next, said before it: on a stack, a while."""
    drawing = any(job.cfg.pictures for job in stack.jobs)
    if len(stack.jobs) == 1:
        pictures = " and drawing its pictures" if drawing else ""
        tested = "testing the best checkpoint on the test split"
    else:
        pictures = " and drawing their pictures" if drawing else ""
        tested = f"testing {len(stack.jobs)} runs, each its best checkpoint on the test split"
    if drawing and beside_training:
        whose = "its" if len(stack.jobs) == 1 else "their"
        pictures = f" ({whose} pictures are drawn while the sweep goes on)"
    return tested + pictures


def cores_beside_training(stack: StackRun) -> int:
    """How many workers may draw this stack's pictures while the sweep's next stack trains:
    the cores its training leaves idle, where the sweep trains its stacks in this process
    (hydra/launcher=stacked); 0 draws them now, on every core."""
    if not any(job.cfg.pictures for job in stack.jobs) or not trains_stacks_here():
        return 0
    return cores_left_by_training(stack.model.device.type)


def draw_beside_training(
    stack: StackRun, pictures: dict[int, dict[str, Any]], workers: int
) -> None:
    """Hand each member's pictures to the sweep's background workers
    (letters.reporting.background_pictures), which say and record what they cannot write."""
    queue = background_pictures(workers, available_cores())
    for member, task in pictures.items():
        job = stack.jobs[member]
        queue.submit(
            PendingRun(
                run_dir=job.run_dir,
                # Said beside another stack's lines: the name TensorBoard knows it by.
                label=f"{task['run']}: ",
                log_files=member_log_files(member),
                task=(getattr(stack.trackers[member].tensorboard, "log_dir", None), task),
            )
        )


def draw_pictures(stack: StackRun, pictures: dict[int, dict[str, Any]]) -> dict[int, str]:
    """Draw each member's pictures. A picture that cannot be written (a full disk, a folder
    that cannot be made) is logged in one line and returned by member, so that every run is
    still tested and recorded."""

    if len(pictures) == 1:  # one run: draw here, into its open TensorBoard writer
        ((member, task),) = pictures.items()
        tensorboard = stack.trackers[member].tensorboard
        try:
            writer = tensorboard.experiment if tensorboard is not None else None
            evaluation_pictures(**task, writer=writer)
            errors: dict[int, BaseException | None] = {member: None}
        except (LettersError, OSError) as error:
            errors = {member: error}
    elif pictures:  # a stack: each member's pictures in a worker process, side by side
        tasks = [
            (getattr(stack.trackers[member].tensorboard, "log_dir", None), task)
            for member, task in pictures.items()
        ]
        with picture_progress(stack, list(pictures)) as on_done:
            errors = dict(zip(pictures, draw_in_parallel(tasks, on_done), strict=True))
    else:
        errors = {}
    unwritten = {}
    for member, error in errors.items():
        if error is None:
            continue
        if not isinstance(error, LettersError | OSError):
            raise error
        unwritten[member] = written_error(error)
        log.error(
            "%spictures not drawn: %s",
            stack.labels[member],
            unwritten[member],
            extra={"member": member},
        )
    return unwritten


@contextmanager
def picture_progress(
    stack: StackRun, members: list[int]
) -> Iterator[Callable[[int, BaseException | None], None]]:
    """What draw_in_parallel calls as each member's pictures are done (``members[index]``):
    on a terminal (where training showed its bar) a bar of its own; elsewhere a line per
    member, on the console and in its train.log."""
    total = len(members)
    if stack.trainer.progress_bar_callback is not None:
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        bar = tqdm(total=total, desc="Pictures", unit="run", dynamic_ncols=True, file=sys.stderr)
        with logging_redirect_tqdm(), bar:

            def advance(index: int, error: BaseException | None) -> None:
                bar.set_postfix_str(stack.labels[members[index]].removesuffix(": "), refresh=False)
                bar.update()

            yield advance
        return
    done = 0

    def say(index: int, error: BaseException | None) -> None:
        nonlocal done
        done += 1
        member = members[index]
        log.info(
            "%spictures %s (%d of %d)",
            stack.labels[member],
            "drawn" if error is None else "not drawn",
            done,
            total,
            extra={"member": member},
        )

    yield say


def written_error(error: BaseException) -> str:
    """One line for a failed write: a LettersError's own, or an OSError's file and reason."""
    return user_error_line(error) or str(error)


def record_interrupted(stack: StackRun, stopped_by: Any, pretraining: bool = False) -> None:
    """A signal stopped training: each member's metrics.json (and an ensemble's own) says so
    and how to continue, then the process exits with 128 + the signal's number (143 for
    SIGTERM, 130 for SIGINT), as a scheduler expects of a job it stopped. Nothing is tested or
    drawn: the time a scheduler grants after its signal is short. Under submitit its
    preemption signal goes on to submitit's handler instead, which requeues the job; the
    requeued job continues from last.ckpt by itself (letters.runs.resume.requeued_job).

    Stopped during ``pretraining`` there is no checkpoint yet: the record says the run must
    start again (``resume`` null, and no scheduler job id, so that a requeue starts it over).
    """

    job_id = None if pretraining else scheduler_job_id()
    ensembles: dict[Path, RunRecord] = {}
    for member, job in enumerate(stack.jobs):
        if not pretraining and job.member_of is None and ended_before(stack, member):
            # Pruned or diverged before the signal: it has ended, and is recorded as it would
            # have been at the stack's end (a continued sweep does not run it again).
            ((record, _),) = test_members(stack, [member])
            finish_member(stack, member, record)
            continue
        record = interrupted_record(stack, member, stopped_by, pretraining, job_id)
        write_record(job.run_dir, record)
        if job.member_of is not None:  # the ensemble continues as a whole, and joins again
            keys = ("signal", "epochs", "epochs_completed", "resume", "scheduler_job_id")
            ensembles[job.member_of] = {"status": Status.INTERRUPTED} | {
                key: record[key] for key in keys if key in record
            }
        stack.trackers[member].finalize(Status.INTERRUPTED)
        if pretraining:
            log.warning(
                "%sinterrupted by %s during pre-training; no checkpoint yet: run the command again",
                stack.labels[member],
                stopped_by.name,
                extra={"member": member},
            )
            continue
        then = "Continue with:"
        if stack.stopper.requeue:
            then = "submitit requeues the job, which continues from it by itself; by hand:"
        log.warning(
            "%sinterrupted by %s after epoch %d of %d; last.ckpt is saved. %s %s",
            stack.labels[member],
            stopped_by.name,
            stack.trainer.current_epoch,
            job.cfg.epochs,
            then,
            record["resume"],
            extra={"member": member},
        )
    for run_dir, ensemble in ensembles.items():
        write_record(run_dir, ensemble)
    stack.stopper.hand_over()  # submitit's preemption signal: its handler requeues and exits
    raise SystemExit(128 + int(stopped_by))


def ended_before(stack: StackRun, member: int) -> bool:
    """Whether the member stopped training for good before the stack stopped: pruned, or
    diverged."""
    model = stack.model
    return model.pruned_at[member] is not None or model.diverged_at[member] is not None


def interrupted_record(
    stack: StackRun, member: int, stopped_by: Any, pretraining: bool, job_id: str | None
) -> RunRecord:
    """A stopped member's record: where it stands, and the command that continues it (that
    of its ensemble, for a member of one; none before pre-training ended)."""
    job = stack.jobs[member]
    command = f"python -m letters.train resume={shown_path(job.member_of or job.run_dir)}"
    record = member_record(stack, member, Status.INTERRUPTED)
    record.update(
        signal=stopped_by.name, epochs=job.cfg.epochs, resume=None if pretraining else command
    )
    if job_id is None:  # stopped before a checkpoint: a requeue starts it over
        record.pop("scheduler_job_id", None)
    return record


def member_record(stack: StackRun, member: int, status: Status) -> RunRecord:
    """What training left of one member, for its metrics.json: ``status`` unless it
    diverged or was pruned, its settings, where it stands and its last and best validation
    accuracy."""
    job, history = stack.jobs[member], stack.model.histories[member]
    diverged, pruned = stack.model.diverged_at[member], stack.model.pruned_at[member]
    if diverged is not None:
        status = Status.DIVERGED
    elif pruned is not None:
        status = Status.PRUNED
    record: RunRecord = {
        "status": status,
        "params": flat_params(job.cfg),
        "run_dir": str(job.run_dir),
        "stack_size": len(stack.jobs),
    }
    record.update(scheduler_stamp())
    if diverged is not None:
        record.update(diverged_epoch=diverged[0], diverged_step=diverged[1])
    if pruned is not None:
        record["pruned_epoch"] = pruned
    record["val_acc"] = history["val_acc"][-1] if history["val_acc"] else None
    record["train_loss"] = history["train_loss"][-1] if history["train_loss"] else None
    record["train_seconds"] = round(time.perf_counter() - stack.started, 2)
    record["epochs_completed"] = len(history["epoch"])
    record["best_val_acc"] = stack.checkpoints.best_scores[member]
    if stack.pretrained is not None:
        record["pretrained"] = stack.pretrained
    return record


def test_members(stack: StackRun, members: list[int]) -> list[tuple[RunRecord, Predictions | None]]:
    """Each member's record so far, and its best checkpoint's predictions on the test split
    (None without one): the best checkpoints' weights as one stacked model, in one pass over
    the split; for each member what letters.test gives for its best.ckpt."""
    bests: dict[int, Path] = {}
    for member in members:
        best = stack.checkpoints.best_path(member)
        if best is not None and best.is_file():
            bests[member] = best
    predictions: dict[int, Predictions] = {}
    if bests:
        model = load_stacked_classifier(list(bests.values()), stack.model.device)
        tested = predict_members(model, *stack.data.splits["test"])
        predictions = dict(zip(bests, tested, strict=True))
    return [
        tested_record(stack, member, bests.get(member), predictions.get(member))
        for member in members
    ]


def tested_record(
    stack: StackRun, member: int, best: Path | None, predictions: Predictions | None
) -> tuple[RunRecord, Predictions | None]:
    """A member's record so far, with its best checkpoint's (``best``) ``predictions`` on the
    test split where it has one."""
    job, model = stack.jobs[member], stack.model
    record = member_record(stack, member, Status.FINISHED)
    record["test_acc"] = record["test_loss"] = None
    if best is None or predictions is None:
        return record, None
    record.update(test_acc=predictions.accuracy, test_loss=predictions.loss)
    if len(stack.jobs) > 1:  # the first numbers of a stack's end, while its pictures are drawn
        log.info(
            "%stested best.ckpt (epoch %s): test_acc %s",
            stack.labels[member],
            best_epoch(model.histories[member]),
            percent(predictions.accuracy),
            extra={"member": member},
        )
    # How many letters it ever answers: one or two means it collapsed (letters.report flags it).
    record["predicted_classes"] = int(predictions.logits.argmax(-1).unique().numel())
    record["best_checkpoint"] = str(best.relative_to(job.run_dir))
    return record, predictions


def best_epoch(history: dict[str, list[float]]) -> int | str:
    """The epoch of the best checkpoint: the first of the highest validation accuracy (as
    MemberCheckpoints keeps it), '?' when the history has none."""
    accuracies = history["val_acc"]
    if not accuracies:
        return "?"
    return int(history["val_epoch"][accuracies.index(max(accuracies))])


def picture_task(stack: StackRun, member: int, predictions: Any) -> dict[str, Any]:
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
        "run": run_name(job.run_dir, job.cfg),
        "history": stack.model.histories[member],
        "step": stack.trainer.global_step,
        "seed": job.cfg.seed,
    }


def finish_member(stack: StackRun, member: int, record: RunRecord) -> float | BaseException:
    """Give the member's trackers its test metrics and hyper-parameters, write its
    metrics.json, say so. Returns its score, or what a pruned trial's job ends with."""

    job, trackers = stack.jobs[member], stack.trackers[member]
    final = {}
    if record["test_acc"] is not None:
        final = {"accuracy/test": record["test_acc"], "loss/test": record["test_loss"]}
    record["wall_seconds"] = round(time.perf_counter() - stack.started, 2)
    # How it ended beside its settings: HPARAMS can then tell pruned trials from finished ones
    # (their metrics are their last values, those at the validation that stopped them).
    shown = {**record["params"], "status": str(record["status"])}
    trackers.log_final(shown, final, stack.trainer.global_step)
    trackers.finalize("success")
    write_record(job.run_dir, record)
    log.info("%s%s", stack.labels[member], record_line(record), extra={"member": member})
    if not multirun() and job.member_of is None:  # a sweep or an ensemble sums up itself
        print_summary(job.run_dir)
    if is_pruned(record) and job.trial is not None:
        return pruned_outcome(record)
    return score(record)


def print_summary(run_dir: Path) -> None:
    """Where the run's files are (its summary line is logged just before)."""
    run_dir = shown_path(run_dir)
    print(f"outputs: {run_dir}\ntensorboard --logdir {run_dir}", flush=True)
