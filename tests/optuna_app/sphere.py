"""A plain Hydra app (nothing of letters) for the Optuna sweeper's tests: the sphere function,
like the example of Hydra's own Optuna sweeper, plus a "training" that reports a value per
step to its trial and stops when the pruner says so."""

import time

import hydra
import optuna
from omegaconf import DictConfig

from hydra_plugins.letters_optuna_sweeper.trial import TrialLink


@hydra.main(version_base="1.3", config_path="conf", config_name="sphere")
def sphere(cfg: DictConfig) -> float:
    if cfg.error:
        raise RuntimeError("cfg.error is True")
    value = float(cfg.x**2 + cfg.y**2)
    link = TrialLink.of_current_job()
    trial = link.open() if link is not None else None
    # A "training" whose loss falls towards the sphere's value: what a pruner judges.
    for step in range(1, cfg.steps + 1):
        if trial is not None:
            trial.report(value + 10.0 / step, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")
        time.sleep(cfg.step_seconds)
    return value


if __name__ == "__main__":
    sphere()
