"""Prepared jobs to trained runs: which jobs may share a stack, and how a stack of them is
trained when some are ensembles (``ensemble=K`` brings K members to the stack)."""

from __future__ import annotations

from letters.engine.members import stack_key
from letters.runs.ensembles import continue_ensemble, finish_ensemble, new_member
from letters.runs.jobs import Job
from letters.runs.training import train_stack


def job_stack_key(job: Job) -> str:
    """Jobs with equal keys may train as one stack (letters.engine.members.stack_key)."""
    return stack_key(job.cfg)


def train_jobs(jobs: list[Job], strict: bool = False) -> list[float | BaseException]:
    """Train ``jobs`` as one stack; return each job's validation accuracy (FAILED_SCORE for a
    job that failed or diverged, recorded in its metrics.json; Optuna's TrialPruned for a
    search's trial that its pruner stopped). ``strict`` (a single run): errors and divergence
    raise instead.

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
