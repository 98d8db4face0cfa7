"""Trials of a search that stop early: each job that the Optuna sweeper launched
(``hydra/sweeper=optuna``) reports its validation accuracy to its own trial at every
validation (step = epoch), and the study's pruner may stop it there. In a stack every member
is its own trial; a pruned member is frozen where it stands (letters.engine.callbacks.
MemberPruning) and its run ends recorded as ``pruned``.

The link from a job to its trial is the sweeper's (hydra_plugins.letters_optuna_sweeper.trial);
Optuna is imported only when a job is a trial.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hydra_plugins.letters_optuna_sweeper.trial import TrialLink
from letters.common.records import RunRecord, Status, status_of

# What the engine asks after each validation: (member, epoch, validation accuracy) -> prune?
ShouldPrune = Callable[[int, int, float], bool]


def trial_of_current_job() -> TrialLink | None:
    """The Optuna trial of the job whose Hydra config is current, if it is one."""
    return TrialLink.of_current_job()


def trial_judge(links: list[TrialLink | None]) -> ShouldPrune | None:
    """Report each member's validation accuracy to its trial and answer whether the pruner
    stops it; None when no member is a trial (nothing to report, nothing pruned)."""
    if not any(links):
        return None
    trials: dict[int, Any] = {
        member: link.open() for member, link in enumerate(links) if link is not None
    }

    def should_prune(member: int, epoch: int, accuracy: float) -> bool:
        trial = trials.get(member)
        if trial is None:
            return False
        trial.report(accuracy, epoch)
        return bool(trial.should_prune())

    return should_prune


def pruned_outcome(record: RunRecord) -> BaseException:
    """What a pruned trial's job ends with: Optuna's TrialPruned, which the sweeper tells the
    study as PRUNED (the trial's last reported value stands)."""
    import optuna

    return optuna.TrialPruned(f"pruned after epoch {record.get('pruned_epoch')}")


def is_pruned(record: RunRecord | None) -> bool:
    return status_of(record) is Status.PRUNED
