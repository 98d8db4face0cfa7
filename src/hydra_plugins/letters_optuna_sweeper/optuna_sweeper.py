"""``hydra/sweeper=optuna``: Hydra's sweeper interface over Optuna's ask-and-tell. The work is
in ``_impl`` (which imports Optuna), loaded only when a sweep starts: plugin discovery imports
this module on every start of every Hydra app."""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Samples trials with Optuna, launches them with the configured launcher (``n_jobs`` at a
    time), tells the study each job's value; a job that raises ``optuna.TrialPruned`` is told
    as pruned. See the package's README."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        custom_search_space: str | None,
        pruner: Any | None = None,
        trial: int | None = None,
    ) -> None:
        # Checked and made in setup: an error there reaches the user as Hydra's one-line
        # CompactHydraException, where one raised while Hydra instantiates this is wrapped.
        self.settings = dict(
            sampler=sampler,
            pruner=pruner,
            direction=direction,
            storage=storage,
            study_name=study_name,
            n_trials=n_trials,
            n_jobs=n_jobs,
            max_failure_rate=max_failure_rate,
            params=params,
            custom_search_space=custom_search_space,
        )
        self.sweeper: Any = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        from ._impl import OptunaSweeperImpl

        self.sweeper = OptunaSweeperImpl(**self.settings)
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
