"""``python -m letters.train [overrides]``: train a stack of runs, test each member's best
checkpoint, and leave everything a report or a person needs in each run's directory.

A single run is a stack of one. ``hydra/launcher=stacked`` hands a multirun's compatible jobs
to the same engine as one stack, through this task function's ``stacking`` attribute.

The modules that train are imported inside the functions below: ``--help`` and a bad
override answer before torch and Lightning load.
"""

from __future__ import annotations

from omegaconf import DictConfig

from letters.common.entry import hydra_command
from letters.common.resolvers import register_resolvers
from letters.runs.jobs import Job, failure_recorded, multirun, record_failure

register_resolvers()  # before Hydra composes the config that uses them


class JobStacking:
    """letters' side of the stacked launcher's contract
    (hydra_plugins.letters_stacked_launcher.Stacking)."""

    def prepare(self, cfg: DictConfig) -> Job | float | BaseException:
        from letters.runs.prepare import prepare_job  # start-up: loads torch

        return prepare_job(cfg)

    def key(self, job: Job) -> str:
        from letters.runs.stacking import job_stack_key  # start-up: loads Lightning

        return job_stack_key(job)

    def train(self, jobs: list[Job]) -> list[float | BaseException]:
        from letters.runs.stacking import train_jobs  # start-up: loads Lightning

        return train_jobs(jobs)

    def record_failure(self, job: Job, error: BaseException) -> float:
        return record_failure(job, error)


def train(cfg: DictConfig) -> float:
    """Fit, test and record one run; return the validation accuracy (what a sweeper maximises).

    In a multirun, a job that fails records why in its metrics.json and returns the failed
    score (letters.common.records.FAILED_SCORE) so that the other jobs go on; a single run
    records why the same way, then raises.
    """
    with failure_recorded():  # in the run's metrics.json and train.log, then raised on
        job = stacking.prepare(cfg)
        if not isinstance(job, Job):
            return ended(job)
        from letters.runs.stacking import train_jobs  # start-up: Lightning, after the checks

        return ended(train_jobs([job], strict=not multirun())[0])


def ended(outcome: float | BaseException) -> float:
    """A job's score, or the exception it ends with (a pruned trial's TrialPruned, which the
    Optuna sweeper reads from the failed job; its run is recorded already)."""
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


stacking = JobStacking()
train.stacking = stacking  # type: ignore[attr-defined]  (what hydra/launcher=stacked looks for)

main = hydra_command("train", train)


if __name__ == "__main__":
    main()
