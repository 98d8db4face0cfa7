"""``hydra/launcher=stacked``: train the compatible jobs of a multirun together, as one stack.

A task function that supports stacking carries an attribute ``stacking`` that follows the
``Stacking`` protocol below (letters.train's does). The launcher then works in three phases:

1. Each job in turn goes through Hydra's ``run_job``, exactly as with the basic launcher, but
   with a task function that only calls ``stacking.prepare``: every job gets its directory,
   ``.hydra/`` and its job log, and its config is validated and resolved. A job whose config
   is bad comes back as a float (its score, the failure already recorded by ``prepare``).
   Its ``#N :`` line names only the overrides that set it apart; those every job shares are
   said once, on a line of their own when the launch starts.
2. The prepared jobs are grouped by ``stacking.key`` (in order of first appearance), each group
   is cut into stacks of at most ``max_stack`` jobs, and ``stacking.train`` trains each stack
   (``train_stacks``: here, one after another; submitit_launcher.py's launchers override it to
   run each stack as a submitit job).
   Meanwhile each job's log file (``train.log``) receives the records about it: those without
   a ``member`` attribute (about the whole stack) and those whose ``member`` is its index in
   the stack; the console shows every record, as the job's logging config would, but those
   whose ``console`` attribute is False (details for the log files only).
3. Each job's ``JobReturn`` gets its value from ``train`` (a job whose value is an exception
   fails with it, as a job whose task function raised it would).

A task function without ``stacking`` (any ordinary Hydra app) is run job after job exactly as
Hydra's basic launcher runs it.

Limitations:

* Hydra's callbacks ``on_job_start`` and ``on_job_end`` fire inside ``run_job`` in phase 1,
  around ``prepare``: ``on_job_end`` sees the prepared ``Job`` as the return value, before any
  training, not the job's final score. Sweepers get the final scores (they read ``launch``'s
  return value).
* During training, ``HydraConfig``, the environment (``hydra.job.env_set``) and the console's
  logging config are those of the first job of the stack; the working directory is the
  launcher's even with ``hydra.job.chdir=true`` (the engine uses each ``Job.run_dir``).

This module is imported whenever any Hydra app starts (plugin discovery): it must import
nothing but Hydra, OmegaConf and the standard library. Hydra's plugin scanner executes it
before registering it in ``sys.modules``, so its dataclasses must not use string annotations
(no ``from __future__ import annotations``).
"""

import copy
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    env_override,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from hydra_plugins.letters_stacked_launcher.remembered_configs import RememberingConfigLoader

log = logging.getLogger(__name__)


class Stacking(Protocol):
    """What a task function's ``stacking`` attribute offers the launcher. A prepared job is
    whatever the app makes of one job's config; the launcher only passes it back."""

    def prepare(self, cfg: DictConfig) -> Any:
        """Check and resolve one job's config (Hydra's config for that job is current): a
        prepared job; or a float, the job's score when it cannot run or has run already
        (recorded); or the exception the job ends with (the job fails with it)."""

    def key(self, job: Any) -> str:
        """Jobs with equal keys may train together as one stack."""

    def train(self, jobs: list[Any]) -> list[Any]:
        """Train ``jobs`` as one stack and return each job's score, in order; or, for a job,
        the exception it ended with: the job then fails with it, as Hydra's ``run_job`` fails
        a job whose task function raised (so a sweeper sees, e.g., ``optuna.TrialPruned``)."""

    def record_failure(self, job: Any, error: BaseException) -> float:
        """Record that ``job`` could not train because of ``error``; return its score."""


class MemberFilter(logging.Filter):
    """Lets through the records about every member of a stack (no ``member`` attribute) and
    those about one member (``record.member == member``)."""

    def __init__(self, member: int) -> None:
        super().__init__()
        self.member = member

    def filter(self, record: logging.LogRecord) -> bool:
        member = getattr(record, "member", None)
        return member is None or member == self.member


class ConsoleFilter(logging.Filter):
    """Keeps off the console the records meant for log files only (``record.console`` is
    False): a member's own detail, which the app sums up for the whole stack in a line of its
    own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True) is not False


@dataclass
class LogSetup:
    """The root logger as Hydra's job logging set it up while a job's task function ran."""

    level: int
    handlers: list[logging.Handler]

    @classmethod
    def capture(cls) -> "LogSetup":
        root = logging.getLogger()
        return cls(root.level, list(root.handlers))

    def console(self) -> tuple[list[logging.Handler], list[logging.Handler]]:
        """Handlers that show every record as the job's console did, and those of them made
        here (to close afterwards). Plain stream handlers are made anew (Hydra closed the
        job's when it reconfigured logging); other kinds of handler are reused as they are."""
        handlers: list[logging.Handler] = []
        made: list[logging.Handler] = []
        for handler in self.handlers:
            if isinstance(handler, logging.FileHandler):
                continue
            if type(handler) is logging.StreamHandler:
                copy = logging.StreamHandler(handler.stream)
                copy.terminator = handler.terminator
                _copy_settings(handler, copy)
                made.append(copy)
                handler = copy
            handlers.append(handler)
        return handlers, made

    def files(self, member: int) -> list[logging.Handler]:
        """The job's log files, appended to in their format, for the records of ``member``."""
        handlers: list[logging.Handler] = []
        for handler in self.handlers:
            if not isinstance(handler, logging.FileHandler):
                continue
            copy = logging.FileHandler(
                handler.baseFilename,
                mode="a",
                encoding=handler.encoding,
                delay=True,
                errors=getattr(handler, "errors", None),
            )
            _copy_settings(handler, copy)
            copy.addFilter(MemberFilter(member))
            handlers.append(copy)
        return handlers


def _copy_settings(source: logging.Handler, target: logging.Handler) -> None:
    target.setLevel(source.level)
    target.setFormatter(source.formatter)
    for one in source.filters:
        target.addFilter(one)


@dataclass
class PreparedJob:
    """A job after phase 1: its number in the sweep, what run_job returned, what
    ``Stacking.prepare`` made of it, the logging its task function ran under, and the config
    ``prepare`` was given (before it changed anything), for a launcher that prepares the job
    again in another process."""

    num: int
    job_return: JobReturn
    job: Any
    logs: LogSetup
    task_cfg: DictConfig | None = None


@contextmanager
def stack_logging(stack: Sequence[PreparedJob], console: bool = True) -> Iterator[None]:
    """Route the records emitted while ``stack`` trains: all to the console (unless
    ``console`` is False: details that a line of the launcher's own sums up), each job's to
    its log files; put the root logger back as it was afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    console_handlers, made = stack[0].logs.console() if console else ([], [])
    files = [handler for i, member in enumerate(stack) for handler in member.logs.files(i)]
    made += files
    for handler in saved_handlers:
        root.removeHandler(handler)
    console_only = ConsoleFilter()
    for handler in console_handlers:
        handler.addFilter(console_only)
    for handler in console_handlers + files:
        root.addHandler(handler)
    root.setLevel(stack[0].logs.level)
    try:
        yield
    finally:
        for handler in console_handlers:  # one reused as it was, e.g. a rich one, is left so
            handler.removeFilter(console_only)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in made:
            handler.flush()
            handler.close()
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


def shared_overrides(job_overrides: Sequence[Sequence[str]]) -> list[str]:
    """The overrides every job of a launch has (Hydra's internal ones left out), in the
    first job's order: said once when the launch starts, so that each job's line shows only
    what sets it apart. None for a launch of one job, whose line shows them all."""
    if len(job_overrides) < 2:
        return []
    first, *others = (filter_overrides(overrides) for overrides in job_overrides)
    return [override for override in first if all(override in other for other in others)]


def is_score(value: Any) -> bool:
    """Whether what ``prepare`` returned is a (failed) score rather than a Job."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def group_stacks(
    stacking: Stacking, members: list[PreparedJob], max_stack: int
) -> tuple[list[list[PreparedJob]], list[tuple[PreparedJob, Any]]]:
    """The stacks: members with equal ``stacking.key`` (groups in order of first appearance)
    cut into stacks of at most ``max_stack``; and the members whose key failed, each with its
    value (its recorded failure)."""
    groups: dict[str, list[PreparedJob]] = {}
    unkeyed: list[tuple[PreparedJob, Any]] = []
    for member in members:
        try:
            key = stacking.key(member.job)
        except Exception as error:
            log.exception(f"job {member.num}: stacking.key failed")
            unkeyed.append((member, record_failures(stacking, [member], error)[0]))
            continue
        groups.setdefault(key, []).append(member)
    stacks = [
        group[start : start + max_stack]
        for group in groups.values()
        for start in range(0, len(group), max_stack)
    ]
    return stacks, unkeyed


def job_numbers(stack: Sequence[PreparedJob]) -> str:
    return ",".join(str(member.num) for member in stack)


def train_stack(stacking: Stacking, stack: list[PreparedJob]) -> list[Any]:
    """Train ``stack`` in this process: each member's value, its score or the exception it
    ends with; a stack that fails as a whole (a bug) gets each member's recorded failure."""
    log.info(f"stack of {len(stack)}: jobs {job_numbers(stack)}")
    first = stack[0].job_return.hydra_cfg
    assert first is not None
    HydraConfig.instance().cfg = first  # type: ignore[assignment]
    with stack_logging(stack), env_override(first.hydra.job.env_set):
        try:
            values = list(stacking.train([member.job for member in stack]))
            if len(values) != len(stack):
                raise RuntimeError(
                    f"stacking.train returned {len(values)} values for {len(stack)} jobs"
                )
        except Exception as error:
            log.exception(f"stack of {len(stack)} (jobs {job_numbers(stack)}) failed")
            return record_failures(stacking, stack, error)
    return values


def record_failures(
    stacking: Stacking, members: Sequence[PreparedJob], error: BaseException
) -> list[Any]:
    """Each job's value is the score the app records for its failure; a job whose failure
    cannot even be recorded fails with that error, as Hydra's basic launcher fails a job that
    raised."""
    values: list[Any] = []
    for member in members:
        try:
            values.append(stacking.record_failure(member.job, error))
        except Exception as unrecorded:
            log.exception(f"job {member.num}: stacking.record_failure failed")
            values.append(unrecorded)
    return values


def settle(job_return: JobReturn, value: Any) -> None:
    """Put a job's value into its JobReturn: an exception fails the job with it, as a task
    function that raised it would (a sweeper reads it from there, e.g. optuna.TrialPruned)."""
    job_return.return_value = value
    failed = isinstance(value, BaseException)
    job_return.status = JobStatus.FAILED if failed else JobStatus.COMPLETED


class StackedLauncher(Launcher):
    where = "locally"  # how the launch line says where the jobs run

    def __init__(self, max_stack: int = 64) -> None:
        if isinstance(max_stack, bool) or not isinstance(max_stack, int) or max_stack < 1:
            raise ValueError(f"hydra.launcher.max_stack={max_stack!r}: must be an integer >= 1")
        self.max_stack = max_stack
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.config_loader: RememberingConfigLoader | None = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        # The sweeper composes each job to check it, then launch would compose it again.
        self.config_loader = RememberingConfigLoader.install(hydra_context)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None
        assert self.hydra_context is not None
        assert self.task_function is not None

        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        stacking = getattr(self.task_function, "stacking", None)
        original_hydra_cfg = HydraConfig.instance().cfg
        assert self.config_loader is not None
        try:
            with self.config_loader.launch():
                if stacking is None:
                    log.info(f"Launching {len(job_overrides)} jobs locally")
                    self.log_shared_overrides(job_overrides)
                    task_function = self.task_function
                    return self.run_jobs(job_overrides, initial_job_idx, lambda _: task_function)
                log.info(
                    f"Launching {len(job_overrides)} jobs {self.where}, stacked "
                    f"(max_stack={self.max_stack})"
                )
                self.log_shared_overrides(job_overrides)
                return self.launch_stacked(stacking, job_overrides, initial_job_idx)
        finally:
            HydraConfig.instance().cfg = original_hydra_cfg

    @staticmethod
    def log_shared_overrides(job_overrides: Sequence[Sequence[str]]) -> None:
        """Once, on a line of its own: the overrides every job has, left out of the jobs' lines."""
        shared = shared_overrides(job_overrides)
        if shared:
            log.info(f"every job: {' '.join(shared)}")

    def run_jobs(
        self,
        job_overrides: Sequence[Sequence[str]],
        initial_job_idx: int,
        task_for: Callable[[int], TaskFunction],
    ) -> list[JobReturn]:
        """Run each job in turn through Hydra's run_job, with ``task_for(position)``."""
        assert self.config is not None
        assert self.hydra_context is not None
        runs: list[JobReturn] = []
        shared = set(shared_overrides(job_overrides))
        for position, overrides in enumerate(job_overrides):
            idx = initial_job_idx + position
            own = [override for override in filter_overrides(overrides) if override not in shared]
            log.info(f"\t#{idx} : {' '.join(own)}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            HydraConfig.instance().set_config(sweep_config)
            runs.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=task_for(position),
                    config=sweep_config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return runs

    def launch_stacked(
        self, stacking: Stacking, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[JobReturn]:
        assert self.task_function is not None
        logs: dict[int, LogSetup] = {}
        configs: dict[int, DictConfig] = {}

        def task_for(position: int) -> TaskFunction:
            @functools.wraps(self.task_function)  # type: ignore[arg-type]
            def prepare(task_cfg: DictConfig) -> Any:
                logs[position] = LogSetup.capture()
                configs[position] = copy.deepcopy(task_cfg)
                return stacking.prepare(task_cfg)

            return prepare

        # Phase 1: directories, .hydra/, job logs; validate and resolve each job's config.
        runs = self.run_jobs(job_overrides, initial_job_idx, task_for)

        # Phase 2: group the prepared jobs and train each stack.
        members: list[PreparedJob] = []
        for position, job_return in enumerate(runs):
            if job_return.status != JobStatus.COMPLETED:
                continue  # prepare raised
            if isinstance(job_return.return_value, BaseException):
                job_return.status = JobStatus.FAILED  # what it ends with: as if it raised it
                continue
            if is_score(job_return.return_value):
                continue  # its score: a failure prepare recorded, or a job that ran before
            members.append(
                PreparedJob(
                    initial_job_idx + position,
                    job_return,
                    job_return.return_value,
                    logs[position],
                    configs[position],
                )
            )
        stacks, unkeyed = group_stacks(stacking, members, self.max_stack)
        for member, value in unkeyed:
            settle(member.job_return, value)
        self.train_stacks(stacking, stacks)
        # Phase 3: train_stacks has put each job's value into its JobReturn.
        return runs

    def train_stacks(self, stacking: Stacking, stacks: list[list[PreparedJob]]) -> None:
        """Train the stacks here, one after another, and settle each job's value."""
        for stack in stacks:
            for member, value in zip(stack, train_stack(stacking, stack), strict=True):
                settle(member.job_return, value)
