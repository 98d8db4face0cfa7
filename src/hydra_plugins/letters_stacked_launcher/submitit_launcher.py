"""``hydra/launcher=stacked_submitit_local`` and ``stacked_submitit_slurm``: the stacks of
``hydra/launcher=stacked``, each run as one job of submitit's executor (one job array).

In the launcher's process, phase 1 and the grouping are ``StackedLauncher``'s: every job gets
its directory, ``.hydra/`` and its log, and is prepared and keyed. Then, instead of training
the stacks one after another, each stack is one submitit job (all of them one
``executor.map_array``): a ``StackJob`` that, in the job's process, makes each member's Hydra
config current again, appends to its log, prepares it again with ``stacking.prepare`` (on the
first run this gives what phase 1 gave; on a requeue it continues an interrupted member from
its last checkpoint), groups the members by ``stacking.key`` and trains them with
``stacking.train``. Each job's value goes back into its ``JobReturn``, so a sweeper (Optuna's)
reads the scores as with any launcher.

Preemption and time limits: ``StackJob.checkpoint`` makes submitit requeue the job with the
same members, which the app continues (letters writes every member's last.ckpt and its
interrupted record at the end of the epoch, then hands the signal to submitit).

A task function without ``stacking`` (any ordinary Hydra app) is launched by Hydra's own
``submitit_local`` or ``submitit_slurm`` launcher, one job per job, with the same keys.

Like the rest of the package this module imports only Hydra, OmegaConf and the standard
library when Hydra discovers it; submitit is imported when a launch needs it.
"""

import copy
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, env_override, setup_globals
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import TaskFunction
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from .stacked_launcher import (
    LogSetup,
    PreparedJob,
    StackedLauncher,
    Stacking,
    group_stacks,
    is_score,
    job_numbers,
    record_failures,
    settle,
    stack_logging,
    train_stack,
)

log = logging.getLogger(__name__)


class LauncherError(CompactHydraException):
    """What makes a launch impossible (a folder, a missing scheduler): Hydra prints the
    message alone, one line, and nothing is launched."""


class StackJobError(RuntimeError):
    """A stack's submitit job ended without its members' values (killed, out of memory, a
    node that died...), or could not be submitted."""


@dataclass
class MemberConfig:
    """What a stack job needs of one member: its number, the config ``prepare`` was given in
    phase 1, and its Hydra config (its directory, overrides, logging, launcher)."""

    num: int
    task_cfg: DictConfig
    hydra_cfg: DictConfig


@dataclass
class StackJob:
    """The callable that submitit pickles and runs for one stack, in the job's process."""

    hydra_logging: DictConfig | None
    verbose: Any
    task_function: TaskFunction

    def __call__(self, members: list[MemberConfig], singleton_state: dict[Any, Any]) -> list[Any]:
        """Each member's value, in order: its score or the exception it ends with."""
        Singleton.set_state(singleton_state)
        setup_globals()
        stacking: Stacking = self.task_function.stacking  # type: ignore[attr-defined]
        values: dict[int, Any] = {}
        prepared: list[PreparedJob] = []
        for member in members:
            value, job_return, logs = prepare_again(stacking, member)
            if isinstance(value, BaseException) or is_score(value):
                values[member.num] = value
            else:
                prepared.append(PreparedJob(member.num, job_return, value, logs))
        configure_log(self.hydra_logging, self.verbose)
        stacks, unkeyed = group_stacks(stacking, prepared, max_stack=len(members))
        for one, value in unkeyed:
            values[one.num] = value
        for stack in stacks:
            for one, value in zip(stack, train_stack(stacking, stack), strict=True):
                values[one.num] = value
        return [values[member.num] for member in members]

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """On submitit's preemption or time-out signal: requeue this job with the same members
        (preparing them again continues the interrupted ones)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def prepare_again(stacking: Stacking, member: MemberConfig) -> tuple[Any, JobReturn, LogSetup]:
    """``stacking.prepare`` for a member in the job's process, as run_job ran it in phase 1:
    its Hydra config current (linked to its task config, as Hydra links them), its job
    logging set up, appending to the log phase 1 began, and its ``env_set``."""
    config = copy.deepcopy(member.task_cfg)
    with open_dict(config):
        config.hydra = copy.deepcopy(member.hydra_cfg.hydra)
    HydraConfig.instance().set_config(config)
    configure_log(appending(config.hydra.job_logging), config.hydra.verbose)
    logs = LogSetup.capture()
    job_return = JobReturn(
        overrides=list(config.hydra.overrides.task),
        hydra_cfg=member.hydra_cfg,
        status=JobStatus.COMPLETED,
    )
    with env_override(member.hydra_cfg.hydra.job.env_set):
        try:
            value = stacking.prepare(copy.deepcopy(member.task_cfg))
        except Exception as error:  # the job fails with it, as run_job fails it
            log.exception(f"job {member.num}: prepare failed")
            value = error
    return value, job_return, logs


def appending(job_logging: DictConfig | None) -> DictConfig | None:
    """A job's logging config, resolved, with its log files opened for appending: phase 1
    wrote their first lines (and a requeued job's earlier lines are kept)."""
    if job_logging is None:
        return None
    conf = OmegaConf.to_container(job_logging, resolve=True)
    assert isinstance(conf, dict)
    for handler in (conf.get("handlers") or {}).values():
        if isinstance(handler, dict) and "filename" in handler:
            handler["mode"] = "a"
    return OmegaConf.create(conf)


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class StackedSubmititLauncher(StackedLauncher):
    cluster: ClassVar[str]  # submitit's executor
    launcher_name: ClassVar[str]  # its name in the hydra/launcher group
    twin: ClassVar[str]  # Hydra's launcher with the same keys, for apps without stacking

    def __init__(self, max_stack: int = 64, **params: Any) -> None:
        super().__init__(max_stack)
        self.params = {
            key: OmegaConf.to_container(value, resolve=True)
            if OmegaConf.is_config(value)
            else value
            for key, value in params.items()
        }
        self.executor: Any = None
        self.where = f"on submitit's {self.cluster} executor"

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        if getattr(self.task_function, "stacking", None) is None:
            assert self.config_loader is not None
            self.config_loader.forget()  # each job composes its config where it runs
            return self.hydra_twin().launch(job_overrides, initial_job_idx)
        return super().launch(job_overrides, initial_job_idx)

    def hydra_twin(self) -> Launcher:
        """Hydra's own submitit launcher, set up as this one, for a task function without
        ``stacking``: one submitit job per Hydra job."""
        assert self.hydra_context is not None
        assert self.task_function is not None
        assert self.config is not None
        launcher: Launcher = get_class(self.twin)(**self.params)
        launcher.setup(
            hydra_context=self.hydra_context, task_function=self.task_function, config=self.config
        )
        return launcher

    def launch_stacked(
        self, stacking: Stacking, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[JobReturn]:
        self.executor = self.make_executor()  # before any job: nothing is made if it fails
        try:
            return super().launch_stacked(stacking, job_overrides, initial_job_idx)
        finally:
            self.executor = None

    def make_executor(self) -> Any:
        """submitit's executor, as Hydra's submitit launchers make it: ``max_num_timeout``
        given to the executor, the keys every executor knows passed as they are, the others
        prefixed with the executor's name."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        folder = self.params["submitit_folder"]
        init = {"folder": folder}
        if "max_num_timeout" in self.params:
            init[f"{self.cluster}_max_num_timeout"] = self.params["max_num_timeout"]
        try:
            executor = submitit.AutoExecutor(cluster=self.cluster, **init)
        except OSError as error:
            reason = error.strerror or str(error)
            raise LauncherError(
                f"hydra.launcher.submitit_folder={folder}: cannot be written ({reason})"
            ) from error
        except RuntimeError as error:  # submitit found no scheduler here
            raise LauncherError(f"hydra/launcher={self.launcher_name}: {error}") from error
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                key if key in shared else f"{self.cluster}_{key}": value
                for key, value in self.params.items()
                if key not in ("submitit_folder", "max_num_timeout")
            }
        )
        return executor

    def cpus_per_stack(self, stacks: int) -> int | None:
        """The CPUs a stack job may use when ``cpus_per_task`` is not set, for the app's
        threads (None: the scheduler's allotment)."""
        return None

    def train_stacks(self, stacking: Stacking, stacks: list[list[PreparedJob]]) -> None:
        """Submit each stack as one submitit job (one job array), wait for them, and settle
        each job's value; a stack whose job brings back nothing keeps its own failure."""
        import submitit

        if not stacks:
            return
        cpus = None if self.params.get("cpus_per_task") else self.cpus_per_stack(len(stacks))
        job = StackJob(
            self.config.hydra.hydra_logging, self.config.hydra.verbose, self.task_function
        )
        members = [[member_config(member, cpus) for member in stack] for stack in stacks]
        state = Singleton.get_state()
        try:
            submitted = self.executor.map_array(job, members, [state] * len(stacks))
        except Exception as error:
            what = f"submitting {len(stacks)} stacks to submitit's {self.cluster} executor failed"
            cause = StackJobError(f"{what}: {what_happened(error)}")
            failed = fail_stacks(stacking, stacks, str(cause), cause)
            for stack, values in zip(stacks, failed, strict=True):
                for member, value in zip(stack, values, strict=True):
                    settle(member.job_return, value)
            return
        for stack, one in zip(stacks, submitted, strict=True):
            log.info(
                f"stack of {len(stack)}: jobs {job_numbers(stack)} -> submitit job {one.job_id}"
            )
        logs = submitit.core.utils.JobPaths.get_first_id_independent_folder(self.executor.folder)
        log.info(f"waiting for {len(submitted)} submitit jobs; their logs are in {logs}")
        for stack, one in zip(stacks, submitted, strict=True):
            try:
                values = one.results()[0]
                if not isinstance(values, list) or len(values) != len(stack):
                    raise StackJobError(f"it returned {values!r}, not {len(stack)} values")
            except Exception as error:
                cause = StackJobError(
                    f"submitit job {one.job_id} ended without its results "
                    f"({what_happened(error)}); its log: {one.paths.stderr}"
                )
                line = f"stack of {len(stack)}: {cause}"
                (values,) = fail_stacks(stacking, [stack], line, cause)
            for member, value in zip(stack, values, strict=True):
                settle(member.job_return, value)


def member_config(member: PreparedJob, cpus: int | None) -> MemberConfig:
    """A member for its stack job; ``cpus`` (when the launcher chose them) go into its Hydra
    config as ``hydra.launcher.cpus_per_task``, where the app reads them."""
    assert member.task_cfg is not None
    assert member.job_return.hydra_cfg is not None
    hydra_cfg = copy.deepcopy(member.job_return.hydra_cfg)
    if cpus is not None:
        launcher = hydra_cfg.hydra.launcher
        with read_write(launcher), open_dict(launcher):
            launcher.cpus_per_task = cpus
    return MemberConfig(member.num, member.task_cfg, hydra_cfg)


def fail_stacks(
    stacking: Stacking, stacks: list[list[PreparedJob]], line: str, error: BaseException
) -> list[list[Any]]:
    """One line for what happened to ``stacks``, on the console and in each member's log;
    each member's failure recorded by the app (in its log files only: the line says it)."""
    log.error(line)
    values = []
    for stack in stacks:
        with stack_logging(stack, console=False):
            log.error(line)
            values.append(record_failures(stacking, stack, error))
    return values


def what_happened(error: BaseException) -> str:
    """One line for an error that submitit raised: the exception a job's trace ends with, or
    that it produced no result (and its state), or what the scheduler's command said."""
    text = str(error)
    if "failed during processing with trace" in text:
        trace = text.split("-" * 22)
        lines = trace[1].strip().splitlines() if len(trace) > 2 else []
        if lines:
            return lines[-1]
    for line in text.splitlines():
        if "has not produced any output" in line:
            return line.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class StackedLocalLauncher(StackedSubmititLauncher):
    cluster = "local"
    launcher_name = "stacked_submitit_local"
    twin = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"

    def cpus_per_stack(self, stacks: int) -> int | None:
        """The local executor starts every stack at once: each gets its share of the cores."""
        return max(1, available_cores() // stacks)


class StackedSlurmLauncher(StackedSubmititLauncher):
    cluster = "slurm"
    launcher_name = "stacked_submitit_slurm"
    twin = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"

    def make_executor(self) -> Any:
        if shutil.which("sbatch") is None:
            raise LauncherError(
                f"hydra/launcher={self.launcher_name}: sbatch is not on PATH, so no SLURM job "
                "can be submitted from this machine (hydra/launcher=stacked_submitit_local runs "
                "the stacks here)"
            )
        return super().make_executor()
