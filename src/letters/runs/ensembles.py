"""``ensemble=K``: one run of K differently seeded members whose probabilities are averaged.

The members are ordinary runs (``RUN/members/<i>/``, each with its own checkpoints, metrics
and trackers) trained by the same engine as one stack, beside any other job of the sweep.
Afterwards their best checkpoints are joined into one K-member checkpoint,
``RUN/checkpoints/best.ckpt``, whose forward pass averages the members' probabilities: the
run's validation and test accuracy, ``letters.test`` and ``letters.predict`` all read it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from letters.common.errors import LettersError
from letters.common.files import write_atomically
from letters.common.records import (
    MemberSummary,
    RecordError,
    RunRecord,
    Status,
    percent,
    read_record,
    score,
    write_record,
)
from letters.data.modules import LetterDataModule
from letters.engine.checkpoint import load_classifier, read_checkpoint
from letters.engine.evaluate import Predictions, predict_split
from letters.reporting.pictures import evaluation_pictures, run_name
from letters.runs.jobs import Job, multirun, record_failure
from letters.runs.recording import flat_params, print_summary
from letters.runs.resume import read_run_config, scheduler_stamp
from letters.runs.trackers import RunTrackers
from letters.runs.training import train_stack

log = logging.getLogger("letters.train")

# Member i of a run with seed s has seed s + i * SEED_STEP: member 0 is the run alone, and the
# members of runs with nearby seeds (a seed=1,2,3 sweep) never share a seed.
SEED_STEP = 10007


def member_seeds(seed: int, size: int) -> list[int]:
    return [seed + SEED_STEP * index for index in range(size)]


def member_config(cfg: DictConfig, run_dir: Path, index: int, member_dir: Path) -> DictConfig:
    """Member ``index``'s config: the run's, with its own seed, folder and trackers' folders,
    one member, and no pictures (the ensemble draws its own)."""
    member = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    member.seed = member_seeds(int(cfg.seed), int(cfg.ensemble))[index]
    member.ensemble = 1
    member.pictures = False
    for tracker in (member.get("logger") or {}).values():
        if isinstance(tracker, DictConfig) and tracker.get("save_dir") == str(run_dir):
            tracker.save_dir = str(member_dir)
        if isinstance(tracker, DictConfig) and OmegaConf.select(tracker, "tags.run_dir"):
            tracker.tags.run_dir = str(member_dir)
    return member


def joined_checkpoint(paths: list[Path]) -> dict[str, Any]:
    """One checkpoint holding every member of ``paths`` (one-member checkpoints of the same
    model): weights stacked along the member dimension, members and histories listed. It is
    for evaluation only: optimizer and loop states are left out."""

    parts = [read_checkpoint(path) for path in paths]
    first = parts[0]
    joined = {
        "state_dict": {
            name: torch.cat([part["state_dict"][name] for part in parts])
            for name in first["state_dict"]
        },
        "hyper_parameters": {
            **first["hyper_parameters"],
            "members": [m for part in parts for m in part["hyper_parameters"]["members"]],
        },
        "history": [h for part in parts for h in part.get("history", [])],
        "ensemble_of": [str(path) for path in paths],
    }
    for key in ("pytorch-lightning_version", "epoch", "global_step"):
        if key in first:
            joined[key] = first[key]
    return joined


def member_summary(member_dir: Path) -> MemberSummary:
    """What the ensemble's metrics.json says of one member: its seed and accuracies."""
    try:
        record = read_record(member_dir)
    except RecordError:
        record = None
    if record is None:
        return {"run_dir": str(member_dir), "status": Status.MISSING}
    keys = ("status", "val_acc", "best_val_acc", "test_acc", "train_loss", "epochs_completed")
    summary: MemberSummary = {key: record.get(key) for key in keys}  # type: ignore[assignment]
    summary.update(seed=record.get("params", {}).get("seed"), run_dir=str(member_dir))
    return summary


def new_member(job: Job, index: int) -> Job:
    """Member ``index`` of the ensemble run ``job``, to train from the start: its folder and
    config.yaml (letters.runs.ensembles.member_config)."""

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
        if summary["status"] != Status.FINISHED or summary["epochs_completed"] != epochs:
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


def finish_ensemble(
    job: Job, members: list[Job], data: LetterDataModule | None, strict: bool
) -> float:
    """Join the members' best checkpoints into the run's own, evaluate it on validation and
    test (the members' mean probabilities), and record it like any run."""
    started = time.perf_counter()
    summaries = [member_summary(member.run_dir) for member in members]
    bests = [m.run_dir / "checkpoints" / "best.ckpt" for m in members]
    bests = [path for path in bests if path.is_file()]
    if not bests or data is None:
        error = LettersError(f"{job.run_dir}: no member of the ensemble has a best checkpoint")
        if strict:
            raise error
        return record_failure(job, error)
    best = job.run_dir / "checkpoints" / "best.ckpt"
    joined = joined_checkpoint(bests)
    write_atomically(best, lambda handle: torch.save(joined, handle))
    model = load_classifier(best, data.splits["test"][0].device)  # where the data already is
    validation = predict_split(model, *data.splits["validation"])
    test = predict_split(model, *data.splits["test"])
    record = ensemble_record(job, summaries, len(bests), validation, test)
    report_ensemble(job, record, data, test)
    record["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_record(job.run_dir, record)
    members_text = ", ".join(percent(summary.get("test_acc")) for summary in summaries)
    log.info(
        "ensemble of %d: val_acc %s, test_acc %s (members' test_acc: %s)",
        len(bests),
        percent(validation.accuracy),
        percent(test.accuracy),
        members_text,
    )
    if not multirun():
        print_summary(job.run_dir)
    return score(record)


def ensemble_record(
    job: Job,
    summaries: list[MemberSummary],
    joined: int,
    validation: Predictions,
    test: Predictions,
) -> RunRecord:
    """The ensemble run's metrics.json: its joined checkpoint's numbers, its members'."""
    losses = [s["train_loss"] for s in summaries if isinstance(s.get("train_loss"), float)]
    return {
        "status": Status.FINISHED,
        "params": flat_params(job.cfg),
        "run_dir": str(job.run_dir),
        "ensemble": len(summaries),
        "members_in_checkpoint": joined,
        "val_acc": validation.accuracy,
        "best_val_acc": validation.accuracy,
        "val_loss": validation.loss,
        "test_acc": test.accuracy,
        "test_loss": test.loss,
        "train_loss": sum(losses) / len(losses) if losses else None,
        "epochs_completed": summaries[0].get("epochs_completed"),
        "predicted_classes": int(test.predicted.unique().numel()),
        "best_checkpoint": "checkpoints/best.ckpt",
        "members": summaries,
        **scheduler_stamp(),
    }


def report_ensemble(job: Job, record: RunRecord, data: LetterDataModule, test: Predictions) -> None:
    """The ensemble's final numbers to its trackers, and its own pictures."""
    cfg = job.cfg
    trackers = RunTrackers.from_config(cfg.get("logger"))
    trackers.open()
    step = int(record["epochs_completed"] or 0) * data.steps_per_epoch
    final = {
        "accuracy/val": record["val_acc"],
        "accuracy/test": record["test_acc"],
        "loss/val": record["val_loss"],
        "loss/test": record["test_loss"],
    }
    trackers.log_final(record["params"], final, step)
    if cfg.pictures:
        tensorboard = trackers.tensorboard
        evaluation_pictures(
            job.run_dir / "pictures",
            data.splits["test"][0].cpu(),
            data.splits["test"][1].cpu(),
            test.logits,
            data.classes,
            cfg.norm_size,
            title=f"test split, ensemble of {record['members_in_checkpoint']}",
            run=run_name(job.run_dir, cfg),
            writer=tensorboard.experiment if tensorboard is not None else None,
            step=step,
            seed=cfg.seed,
        )
    trackers.finalize("success")
