"""Training one stack of prepared jobs from start to end: build, fit, record."""

from __future__ import annotations

from typing import Any

from letters.data.modules import LetterDataModule
from letters.runs.jobs import Job, record_failure
from letters.runs.pruning import trial_judge
from letters.runs.recording import record_stack
from letters.runs.stack_run import build_stack_run, fit


def train_stack(
    jobs: list[Job], strict: bool = False, continue_from: dict[str, Any] | None = None
) -> tuple[list[float | BaseException], LetterDataModule | None]:
    """Build, fit and record ``jobs`` as one stack. Returns each job's outcome (its score, or
    the TrialPruned of a search's trial that was pruned) and the stack's data (None when the
    stack could not be built), which an ensemble evaluates its joined checkpoint on.
    ``strict`` (a single run): errors raise instead of being recorded. ``continue_from``: the
    jobs' checkpoints stacked into one, which the stack continues from (letters.runs.stacking).
    """
    data = None
    try:
        stack = build_stack_run(jobs, should_prune=trial_judge([job.trial for job in jobs]))
        data = stack.data
        fit(stack, continue_from)
        return record_stack(stack, strict), data
    except Exception as error:
        if strict:
            raise
        if len(jobs) == 1:
            return [record_failure(jobs[0], error)], data
        return [record_failure(job, error, member) for member, job in enumerate(jobs)], data
