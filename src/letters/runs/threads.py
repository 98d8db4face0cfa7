"""How many CPU threads torch uses in a job: ``torch_threads``, or automatic when it is null.

A run alone (a single run, the basic launcher's jobs one after another, the stacked launcher's
stacks one at a time) keeps torch's default: every core. Jobs that a launcher runs side by side
share the cores instead; each taking all of them makes them fight (OpenMP threads spinning on
cores another job holds): on two cores, 3-epoch jobs of 1.5 s took 12 to 17 s each:

- ``hydra/launcher=joblib``: ``cores // n_jobs`` (n_jobs=-1: every core, so one thread a job;
  -2: all cores but one, as joblib counts them), fewer jobs when the sweep's batch is smaller;
- ``hydra/launcher=submitit_local`` or ``submitit_slurm``: ``hydra.launcher.cpus_per_task``
  when set (under SLURM also ``$SLURM_CPUS_PER_TASK``), else ``cores // jobs`` where the number
  of jobs started together can be read from the sweep (basic and Optuna sweepers), else 1;
- ``hydra/launcher=stacked_submitit_local`` or ``stacked_submitit_slurm`` (a stack per job):
  the same, a stack's job being one job; ``stacked_submitit_local`` sets ``cpus_per_task`` of
  the stacks it starts together to their share of the cores when it is not set.

The launcher's config is the job's own Hydra config (``HydraConfig.get().launcher``): every
launcher composes it into each job.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import joblib
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from letters.common.errors import ConfigError
from letters.common.multirun import read_sweep, sweep_overrides

log = logging.getLogger("letters.train")

HOW_TO_SET = "torch_threads=N sets it"


def set_torch_threads(cfg: DictConfig) -> None:
    """Apply ``threads_for_job``; say how many threads and why when it chose."""
    count, why = threads_and_reason(cfg)
    if count is not None:
        torch.set_num_threads(count)
    if why:
        log.info("torch threads: %d (automatic: %s; %s)", torch.get_num_threads(), why, HOW_TO_SET)


def threads_for_job(cfg: DictConfig, hydra: Any = None, cores: int | None = None) -> int | None:
    """CPU threads for torch in this job; None keeps torch's default (all cores).

    ``hydra``: the job's Hydra config (default: ``HydraConfig.get()``, none outside Hydra);
    ``cores``: the cores this process may use (default: as joblib counts them).
    """
    return threads_and_reason(cfg, hydra, cores)[0]


def threads_and_reason(
    cfg: DictConfig, hydra: Any = None, cores: int | None = None
) -> tuple[int | None, str]:
    """(threads or None for torch's default, why: empty when ``torch_threads`` is set)."""
    chosen = cfg.get("torch_threads")
    if chosen is not None:
        if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen < 1:
            raise ConfigError(
                f"torch_threads={chosen}: a number of CPU threads (1 or more), or null to "
                "choose by launcher"
            )
        return chosen, ""
    if hydra is None:
        hydra = current_hydra()
    if hydra is None or not is_multirun(hydra):
        return None, "a run alone gets torch's default"
    launcher = hydra.get("launcher") or {}
    target = launcher_target(hydra)
    kind = target.rsplit(".", 1)[-1]
    if "hydra_joblib_launcher" in target:
        cores = cores or available_cores()
        at_once = joblib_workers(launcher.get("n_jobs"), cores)
        batch = sweep_batch_size(hydra)
        if batch is not None:
            at_once = min(at_once, batch)
        if at_once <= 1:
            return None, "joblib runs one job at a time: torch's default"
        return share(cores, at_once), f"joblib runs {at_once} jobs at once on {cores} cores"
    stacked_submitit = STACKED_SUBMITIT in target
    if "hydra_submitit_launcher" in target or stacked_submitit:
        name = "submitit_slurm" if kind.endswith("SlurmLauncher") else "submitit_local"
        name = f"stacked_{name}" if stacked_submitit else name
        per_task = launcher.get("cpus_per_task")
        if per_task:
            return int(per_task), f"hydra.launcher.cpus_per_task={per_task}"
        slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
        if name.endswith("submitit_slurm") and slurm.isdigit() and int(slurm) > 0:
            return int(slurm), f"SLURM_CPUS_PER_TASK={slurm}"
        if name == "submitit_local":
            batch = sweep_batch_size(hydra)
            if batch is not None:
                cores = cores or available_cores()
                if batch <= 1:
                    return None, "submitit_local runs one job: torch's default"
                why = f"submitit_local runs {batch} jobs at once on {cores} cores"
                return share(cores, batch), why
        return 1, f"{name} runs jobs side by side, hydra.launcher.cpus_per_task is not set"
    if kind == "BasicLauncher":
        return None, "the basic launcher runs one job at a time: torch's default"
    if kind == "StackedLauncher":
        return None, "the stacked launcher trains one stack at a time: torch's default"
    return None, f"launcher {target or '?'} is not known to run jobs side by side: torch's default"


# The stacked launcher's submitit twins (hydra/launcher=stacked_submitit_local, _slurm).
STACKED_SUBMITIT = "letters_stacked_launcher.submitit_launcher"
# Launchers that run a sweep's jobs (or stacks) side by side, each in its own process.
PARALLEL_LAUNCHERS = ("hydra_joblib_launcher", "hydra_submitit_launcher", STACKED_SUBMITIT)


def runs_beside_others(hydra: Any = None) -> bool:
    """Whether a launcher runs this job beside others (joblib, submitit): they share the
    cores, and their progress bars would overwrite each other on one terminal."""
    hydra = hydra if hydra is not None else current_hydra()
    if hydra is None or not is_multirun(hydra):
        return False
    return any(name in launcher_target(hydra) for name in PARALLEL_LAUNCHERS)


def trains_stacks_here(hydra: Any = None) -> bool:
    """Whether this job's stack trains in the sweep's own process, one stack after another
    (hydra/launcher=stacked): its pictures may then be drawn while the next stack trains."""
    hydra = hydra if hydra is not None else current_hydra()
    if hydra is None or not is_multirun(hydra):
        return False
    return launcher_target(hydra).rsplit(".", 1)[-1] == "StackedLauncher"


def cores_left_by_training(device_type: str, cores: int | None = None) -> int:
    """The cores a stack's training leaves idle: beside a GPU, all but the one that drives
    it; on the CPU, all but torch's threads (none, by default)."""
    cores = cores or available_cores()
    busy = torch.get_num_threads() if device_type == "cpu" else 1
    return max(0, cores - busy)


def launcher_target(hydra: Any) -> str:
    """The class path of the job's launcher (hydra.launcher._target_), "" where none is set."""
    return str((hydra.get("launcher") or {}).get("_target_") or "")


def share(cores: int, jobs: int) -> int:
    return max(1, cores // jobs)


def current_hydra() -> Any:
    return HydraConfig.get() if HydraConfig.initialized() else None


def is_multirun(hydra: Any) -> bool:
    mode = hydra.get("mode")
    return str(getattr(mode, "name", mode)).upper() == "MULTIRUN"


def available_cores() -> int:
    """The cores this process may use, as joblib counts them (affinity, cgroup quotas)."""
    try:
        return max(1, int(joblib.cpu_count()))
    except Exception:  # no joblib: the affinity mask, else every core
        if hasattr(os, "sched_getaffinity"):
            return max(1, len(os.sched_getaffinity(0)))
        return os.cpu_count() or 1


def joblib_workers(n_jobs: Any, cores: int) -> int:
    """How many jobs joblib runs at once for ``n_jobs``, as ``joblib.Parallel`` reads it."""
    if n_jobs is None:
        return 1
    n_jobs = int(n_jobs)
    if n_jobs < 0:
        return max(cores + 1 + n_jobs, 1)
    return max(n_jobs, 1)


def sweep_batch_size(hydra: Any) -> int | None:
    """How many jobs the sweeper hands the launcher at once, or None when it cannot be told.

    The Optuna sweeper's batch is ``n_jobs`` trials; the basic sweeper's is every combination
    of the swept values (capped by ``max_batch_size``), read from the sweep's multirun.yaml,
    which it writes before launching anything.
    """
    sweeper = hydra.get("sweeper") or {}
    target = str(sweeper.get("_target_") or "")
    try:
        if "optuna" in target.lower():
            n_jobs, n_trials = sweeper.get("n_jobs"), sweeper.get("n_trials")
            if n_jobs is None:
                return None
            return max(1, min(int(n_jobs), int(n_trials or n_jobs)))
        if target.endswith("BasicSweeper"):
            count = basic_sweep_size(Path(str(hydra.sweep.dir)) / "multirun.yaml")
            if count is None:
                return None
            most = sweeper.get("max_batch_size")
            return min(count, int(most)) if most else count
    except Exception:  # an unexpected config: unknown, not an error
        return None
    return None


def basic_sweep_size(multirun_yaml: Path) -> int | None:
    """The number of jobs a basic sweeper launches together: the product of the sizes of its
    swept values (from the sweep config's ``hydra.sweeper.params`` and the command line's
    overrides), at most its ``max_batch_size``."""
    config = read_sweep(multirun_yaml)
    parsed = sweep_overrides(config) if config is not None else None
    if parsed is None:
        return None
    sizes: dict[str, int] = {}
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            sizes[key] = 1
        elif override.is_discrete_sweep():
            sizes[key] = len(list(override.sweep_string_iterator()))
        else:
            return None
    count = 1
    for size in sizes.values():
        count *= size
    most = OmegaConf.select(config, "hydra.sweeper.max_batch_size")
    return min(count, int(most)) if most else count
