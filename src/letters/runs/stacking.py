"""Prepared jobs to trained runs: which jobs may share a stack, and how a stack of them is
trained when some are ensembles (``ensemble=K`` brings K members to the stack) or continue
from their own checkpoints (resume=true, a requeue: they continue as one stack again)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from letters.common.errors import LettersError, first_line
from letters.engine.callbacks import MemberCheckpoints
from letters.engine.checkpoint import read_checkpoint
from letters.engine.members import CheckpointsDiffer, continues_from_checkpoint, stack_key
from letters.runs.ensembles import continue_ensemble, finish_ensemble, new_member
from letters.runs.jobs import Job
from letters.runs.training import train_stack

log = logging.getLogger("letters.train")


def job_stack_key(job: Job) -> str:
    """Jobs with equal keys may train as one stack (letters.engine.members.stack_key)."""
    return stack_key(job.cfg)


@dataclass
class StackOfJobs:
    """Jobs (by their positions among those given to train_jobs) that train as one stack, and
    the checkpoint they continue from when several continue from checkpoints of their own."""

    positions: list[int]
    continue_from: dict[str, Any] | None = None


def train_jobs(jobs: list[Job], strict: bool = False) -> list[float | BaseException]:
    """Train ``jobs`` as one stack; return each job's validation accuracy (FAILED_SCORE for a
    job that failed or diverged, recorded in its metrics.json; Optuna's TrialPruned for a
    search's trial that its pruner stopped). ``strict`` (a single run): errors and divergence
    raise instead.

    Jobs that continue from checkpoints of their own (the interrupted jobs of a stack) continue
    as one stack where their checkpoints are at one point (stacks_to_train); an ensemble run
    that continues (``resume=RUN``) continues on its own (letters.runs.ensembles)."""
    outcomes: dict[int, float | BaseException] = {}
    others = []
    for position, job in enumerate(jobs):
        if int(job.cfg.get("ensemble") or 1) > 1 and job.cfg.get("resume"):
            outcomes[position] = continue_ensemble(job, strict)
        else:
            others.append(position)
    for stack in stacks_to_train(jobs, others):
        stacked = [jobs[position] for position in stack.positions]
        alone = strict and len(stack.positions) == len(jobs)
        trained = train_together(stacked, alone, stack.continue_from)
        outcomes.update(zip(stack.positions, trained, strict=True))
    return [outcomes[position] for position in range(len(jobs))]


def train_together(
    jobs: list[Job], strict: bool, continue_from: dict[str, Any] | None
) -> list[float | BaseException]:
    """Train ``jobs`` as one stack (continuing from ``continue_from`` where given). A job of
    ``ensemble=K`` brings K members to the stack (letters.runs.ensembles), joined into its own
    K-member checkpoint once they are trained."""
    members: list[Job] = []
    groups: list[list[int]] = []
    for job in jobs:
        size = int(job.cfg.get("ensemble") or 1)
        if size == 1:
            groups.append([len(members)])
            members.append(job)
            continue
        groups.append(list(range(len(members), len(members) + size)))
        members += [new_member(job, index) for index in range(size)]
    scores, data = train_stack(members, strict and len(members) == len(jobs), continue_from)
    return [
        scores[group[0]]
        if len(group) == 1
        else finish_ensemble(job, [members[i] for i in group], data, strict)
        for job, group in zip(jobs, groups, strict=True)
    ]


def stacks_to_train(jobs: list[Job], positions: list[int]) -> list[StackOfJobs]:
    """The stacks that ``jobs[positions]`` train in: those that start from the start, one; of
    those that continue from a checkpoint of their own, one for each point (epoch and step)
    their checkpoints are at, continuing from those checkpoints stacked into one. Jobs whose
    checkpoints cannot be stacked (unreadable, of letters 0.1, differing in something else)
    continue one by one, as a stack of one reads its own (one log line says why)."""
    fresh = [p for p in positions if not continues_from_checkpoint(jobs[p].cfg)]
    continuing = [p for p in positions if p not in fresh]
    stacks = [StackOfJobs(fresh)] if fresh else []
    if len(continuing) <= 1:
        return stacks + ([StackOfJobs(continuing)] if continuing else [])
    checkpoints, alone = {}, []
    for position in continuing:
        try:
            checkpoint = read_checkpoint(jobs[position].cfg.resume)
        except LettersError:  # its own stack says so, and records it (fit reads it again)
            alone.append(position)
            continue
        if "upgraded_from" in checkpoint:  # fit's own line says it cannot continue
            alone.append(position)
        else:
            checkpoints[position] = checkpoint
    points: dict[str, list[int]] = {}
    for position, checkpoint in checkpoints.items():
        points.setdefault(point_of(checkpoint), []).append(position)
    if len(points) > 1:
        where = "; ".join(f"{job_names(jobs, at)} {point}" for point, at in points.items())
        log.info("continuing from their checkpoints, %s: a stack for each", where)
    for point, at in points.items():
        if len(at) == 1:
            alone += at
            continue
        try:
            stacked = MemberCheckpoints.stacked([checkpoints[position] for position in at])
        except CheckpointsDiffer as differ:
            why = f"differ in {differ}"
        except (KeyError, TypeError, ValueError) as error:  # a checkpoint of another make
            why = f"cannot be stacked ({type(error).__name__}: {first_line(error)})"
        else:
            names = " and ".join(sorted({Path(jobs[p].cfg.resume).name for p in at}))
            log.info("continuing %d runs as one stack from their %s, %s", len(at), names, point)
            stacks.append(StackOfJobs(at, stacked))
            continue
        log.warning(
            "%s cannot continue as one stack: their checkpoints %s; each continues on its own",
            job_names(jobs, at),
            why,
        )
        alone += at
    return stacks + [StackOfJobs([position]) for position in sorted(alone)]


def point_of(checkpoint: dict[str, Any]) -> str:
    """Where training stands in a checkpoint: after which epoch (from 1), at which step."""
    epoch, step = checkpoint.get("epoch"), checkpoint.get("global_step")
    return f"after epoch {epoch + 1 if isinstance(epoch, int) else epoch} (step {step})"


def job_names(jobs: list[Job], positions: list[int]) -> str:
    """'jobs 0, 2' or 'job 1': the jobs' folder names (a sweep's job numbers)."""
    names = ", ".join(jobs[position].run_dir.name for position in positions)
    return f"job{'s' if len(positions) > 1 else ''} {names}"
