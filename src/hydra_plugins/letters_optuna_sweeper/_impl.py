"""The Optuna sweeper's work: the search space from Hydra's override syntax, the study (in the
sweep folder unless a storage is given), and the ask-launch-tell loop, which continues a
study where it stands instead of starting it again."""

import functools
import importlib
import inspect
import logging
import math
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException, HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from .config import Direction
from .trial import (
    JOB_NUM_ATTR,
    SWEEP_DIR_ATTR,
    open_storage,
    storage_url,
    study_name_of,
    sweep_dir_of,
)

log = logging.getLogger(__name__)

SearchSpace = dict[str, BaseDistribution]


class SweeperConfigError(CompactHydraException):
    """A sweeper setting that cannot work, said in one line that names the key (Hydra prints
    a CompactHydraException's message alone, without a traceback)."""


def create_optuna_distribution_from_override(override: Override) -> Any:
    """The distribution an override samples from, or the fixed value (a string) it sets."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        assert isinstance(value, (ChoiceSweep, RangeSweep))
        choices: list[CategoricalChoiceType] = []
        for choice in override.sweep_iterator(transformer=Transformer.encode):
            if not isinstance(choice, (str, int, float, bool, type(None))):
                raise SweeperConfigError(
                    f"{override.input_line}: a choice must be a str, int, float, bool or null"
                )
            choices.append(choice)
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            return FloatDistribution(
                float(value.start),
                float(value.stop),
                step=float(value.step) if value.step else None,
            )
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise SweeperConfigError(f"{override.input_line}: not a search space the Optuna sweeper knows")


def create_params_from_overrides(
    arguments: list[str],
) -> tuple[SearchSpace, dict[str, Any], list[str]]:
    """The search space, the fixed parameters, and the overrides passed on as they are
    (deletions, ``~key``)."""
    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
    except HydraException as error:
        raise SweeperConfigError(f"hydra.sweeper.params: {first_line(error)}") from None
    distributions: SearchSpace = {}
    fixed: dict[str, Any] = {}
    passed_on: list[str] = []
    for override in parsed:
        if override.is_delete():
            assert override.input_line is not None
            passed_on.append(override.input_line)
            continue
        name = override.get_key_element()
        try:
            value = create_optuna_distribution_from_override(override)
        except (ValueError, TypeError) as error:  # e.g. interval(5, 1): low > high
            raise SweeperConfigError(f"{override.input_line}: {first_line(error)}") from None
        if isinstance(value, BaseDistribution):
            distributions[name] = value
        else:
            fixed[name] = value
    return distributions, fixed, passed_on


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def set_keys(node: Any, made_by: Any) -> Any:
    """``node`` without the arguments left null that ``made_by`` has a default for."""
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    try:
        parameters = inspect.signature(made_by).parameters
    except (TypeError, ValueError):  # no signature to read: pass everything on
        return values
    return {
        name: value
        for name, value in values.items()
        if value is not None
        or name not in parameters
        or parameters[name].default is inspect.Parameter.empty
    }


def directions_of(direction: Any) -> list[str]:
    if isinstance(direction, MutableSequence):
        return [d.name if isinstance(d, Direction) else str(d) for d in direction]
    return [direction.name if isinstance(direction, Direction) else str(direction)]


def grid_choices(name: str, distribution: BaseDistribution) -> list[Any]:
    """The grid sampler's values of one parameter."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, (IntDistribution, FloatDistribution)) and distribution.step:
        count = round((distribution.high - distribution.low) / distribution.step) + 1
        return [distribution.low + i * distribution.step for i in range(count)]
    raise SweeperConfigError(
        f"hydra.sweeper.params.{name}: the grid sampler needs a choice or a range with a step"
    )


@dataclass
class Launched:
    """A trial given to the launcher: its number, parameters and job number."""

    number: int
    params: dict[str, Any]
    job_num: int

    @classmethod
    def again(cls, trial: FrozenTrial) -> "Launched":
        """A trial this sweep folder began before, to launch as the same job again."""
        return cls(trial.number, dict(trial.params), trial.user_attrs[JOB_NUM_ATTR])


class OptunaSweeperImpl(Sweeper):
    def __init__(
        self,
        sampler: Any,
        pruner: Any | None,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        custom_search_space: str | None,
    ) -> None:
        self.sampler = instantiate_optuna("sampler", sampler)
        self.pruner = None if pruner is None else instantiate_optuna("pruner", pruner)
        self.directions = directions_of(direction)
        for one in self.directions:
            if one not in ("minimize", "maximize"):
                raise SweeperConfigError(
                    f"hydra.sweeper.direction={one}: must be minimize or maximize"
                )
        self.storage = storage
        self.study_name = study_name
        for key, value, least in (("n_trials", n_trials, 1), ("n_jobs", n_jobs, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise SweeperConfigError(f"hydra.sweeper.{key}={value}: must be an integer >= 1")
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        if not 0.0 <= max_failure_rate <= 1.0:
            raise SweeperConfigError(
                f"hydra.sweeper.max_failure_rate={max_failure_rate}: must be within [0, 1]"
            )
        self.max_failure_rate = max_failure_rate
        self.params = params
        self.extend_search_space: Callable[[DictConfig, Any], None] | None = None
        if custom_search_space:
            try:
                self.extend_search_space = get_method(custom_search_space)
            except Exception as error:
                raise SweeperConfigError(
                    f"hydra.sweeper.custom_search_space={custom_search_space}: {first_line(error)}"
                ) from None
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    # -- the study -------------------------------------------------------------------------

    def open_study(self, sweep_dir: Path) -> optuna.Study:
        """The study, made or continued (load_if_exists): one line if its storage cannot be
        opened or it exists with other directions."""
        url = storage_url(self.storage, sweep_dir)
        name = study_name_of(self.study_name, sweep_dir)
        if self.storage is None:
            sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            storage = open_storage(url)
        except Exception as error:
            raise SweeperConfigError(
                f"hydra.sweeper.storage={url}: cannot be opened ({first_line(error)})"
            ) from None
        try:
            existing = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            existing = None
        if existing is not None:
            had = [d.name.lower() for d in existing.directions]
            if had != self.directions:
                raise SweeperConfigError(
                    f"hydra.sweeper.study_name={name}: the study in {url} exists with direction "
                    f"{', '.join(had)}, not {', '.join(self.directions)}; give another study_name"
                )
        return optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=self.sampler,
            pruner=self.pruner,
            directions=self.directions,
            load_if_exists=True,
        )

    # -- the sweep -------------------------------------------------------------------------

    def prepare_space(self, arguments: list[str]) -> None:
        """The search space and the fixed values: ``params``, then the command line's."""
        params_conf = [f"{key!s}={value}" for key, value in (self.params or {}).items()]
        params_conf.extend(arguments)
        distributions, fixed, passed_on = create_params_from_overrides(params_conf)
        for name in fixed:  # a value typed on the command line wins over the search space
            distributions.pop(name, None)
        self.distributions, self.fixed, self.passed_on = distributions, fixed, passed_on

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        self.prepare_space(arguments)
        if isinstance(self.sampler, functools.partial):  # the grid sampler: its search space
            grid = {name: grid_choices(name, d) for name, d in self.distributions.items()}
            self.sampler = self.sampler(grid)
            size = math.prod(len(values) for values in grid.values())
            if size < self.n_trials:
                log.info(f"n_trials={self.n_trials} is more than the grid's {size} points")
                self.n_trials = size

        sweep_dir = sweep_dir_of(self.config.hydra)
        study = self.open_study(sweep_dir)
        log.info(f"Study: {study.study_name} in {storage_url(self.storage, sweep_dir)}")
        log.info(
            f"Sampler: {type(self.sampler).__name__}, pruner: "
            f"{type(self.pruner).__name__ if self.pruner else 'none'}, "
            f"direction: {', '.join(self.directions)}"
        )

        mine = self.trials_of(study, sweep_dir)
        next_num = 1 + max((t.user_attrs[JOB_NUM_ATTR] for t in mine), default=-1)
        unfinished = [t for t in mine if not t.state.is_finished()]
        if mine:
            done = len(mine) - len(unfinished)
            log.info(
                f"Continuing: {done} trials of this sweep finished before"
                + (f", {len(unfinished)} are continued" if unfinished else "")
            )
        for batch in contiguous_batches(unfinished, self.n_jobs):
            self.run_batch(study, [Launched.again(trial) for trial in batch])

        while True:
            # The study's own count: several sweeps on one study share its n_trials.
            held = len(study.get_trials(deepcopy=False))
            if held >= self.n_trials:
                break
            count = min(self.n_jobs, self.n_trials - held)
            batch = [self.ask(study, sweep_dir, next_num + i) for i in range(count)]
            next_num += count
            self.run_batch(study, batch)

        self.save_results(study, sweep_dir)

    @staticmethod
    def trials_of(study: optuna.Study, sweep_dir: Path) -> list[FrozenTrial]:
        """The trials this sweep folder ran (or began), by job number."""
        trials = [
            t
            for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(SWEEP_DIR_ATTR) == str(sweep_dir)
        ]
        return sorted(trials, key=lambda t: t.user_attrs[JOB_NUM_ATTR])

    def ask(self, study: optuna.Study, sweep_dir: Path, job_num: int) -> Launched:
        trial = study.ask(fixed_distributions=self.distributions)
        for name, value in self.fixed.items():
            trial.set_user_attr(name, value)
        if self.extend_search_space is not None:
            self.extend_search_space(self.config, trial)
        overlap = trial.params.keys() & self.fixed.keys()
        if overlap:
            raise SweeperConfigError(
                f"{', '.join(sorted(overlap))}: both fixed and searched (custom_search_space)"
            )
        trial.set_user_attr(SWEEP_DIR_ATTR, str(sweep_dir))
        trial.set_user_attr(JOB_NUM_ATTR, job_num)
        return Launched(trial.number, dict(trial.params), job_num)

    def overrides_of(self, trial: Launched) -> list[str]:
        params = {**trial.params, **self.fixed}
        return [
            *(f"{name}={value}" for name, value in params.items()),
            *self.passed_on,
            f"hydra.sweeper.trial={trial.number}",
        ]

    def run_batch(self, study: optuna.Study, batch: Sequence[Launched]) -> None:
        """Launch the batch's trials as consecutive jobs and tell the study how each ended."""
        if not batch:
            return
        overrides = [self.overrides_of(one) for one in batch]
        returns = self.launcher.launch(overrides, initial_job_idx=batch[0].job_num)
        told = [
            (ret, self.tell(study, one.number, ret))
            for one, ret in zip(batch, returns, strict=True)
        ]
        failed = [(ret, error) for ret, error in told if error is not None]
        if failed and len(failed) / len(returns) > self.max_failure_rate:
            log.error(
                f"{len(failed)} of {len(returns)} jobs failed "
                f"(max_failure_rate={self.max_failure_rate})"
            )
            ret, error = failed[0]
            if ret.status == JobStatus.FAILED:
                _ = ret.return_value  # raises the job's own error, with its traceback
            raise error

    def tell(self, study: optuna.Study, number: int, ret: JobReturn) -> BaseException | None:
        """Tell the study how trial ``number``'s job ended; the error of a job that failed."""
        if ret.status == JobStatus.FAILED:
            error = ret._return_value  # reading it through return_value would raise it
            if isinstance(error, optuna.TrialPruned):
                told(study, number, state=TrialState.PRUNED)
                return None
            told(study, number, state=TrialState.FAIL)
            log.warning(f"Trial {number} failed: {first_line(error)}")
            return error
        try:
            values = values_of(ret.return_value, len(self.directions))
        except ValueError as error:
            told(study, number, state=TrialState.FAIL)
            log.warning(f"Trial {number} failed: {error}")
            return error
        told(study, number, values=values)
        return None

    def save_results(self, study: optuna.Study, sweep_dir: Path) -> None:
        """optimization_results.yaml in the sweep folder, as Hydra's Optuna sweeper writes it."""
        counts = {
            state.name.lower(): 0
            for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        }
        for trial in study.get_trials(deepcopy=False):
            key = trial.state.name.lower()
            if key in counts:
                counts[key] += 1
        results: dict[str, Any] = {"name": "optuna", "trials": counts}
        try:
            if len(self.directions) == 1:
                best = study.best_trial
                results.update(best_params=best.params, best_value=best.value)
                log.info(f"Best parameters: {best.params}")
                log.info(f"Best value: {best.value}")
            else:
                front = [{"params": t.params, "values": t.values} for t in study.best_trials]
                results["solutions"] = front
                log.info(f"Number of Pareto solutions: {len(front)}")
        except ValueError:  # no trial completed
            log.warning("No trial completed: there is no best trial")
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")


def told(study: optuna.Study, number: int, **outcome: Any) -> None:
    """``study.tell``. The grid sampler stops the study once its last point is told, which
    Optuna allows only inside ``study.optimize``; the trial is recorded all the same, and the
    sweep stops by itself (its n_trials is the grid's size)."""
    try:
        study.tell(number, **outcome)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise


def values_of(value: Any, objectives: int) -> list[float]:
    """A job's return value as the study's values, or ValueError saying what is wrong."""
    if objectives == 1:
        try:
            return [float(value)]
        except (ValueError, TypeError):
            raise ValueError(f"return value must be float-castable, got {value!r}") from None
    try:
        values = [float(v) for v in value]
    except (ValueError, TypeError):
        raise ValueError(f"return value must be {objectives} floats, got {value!r}") from None
    if len(values) != objectives:
        raise ValueError(f"return value must be {objectives} floats, got {len(values)}")
    return values


def contiguous_batches(trials: Sequence[FrozenTrial], size: int) -> list[list[FrozenTrial]]:
    """Trials to launch again, in batches of consecutive job numbers (a launch numbers its
    jobs from one index on), each at most ``size`` long."""
    batches: list[list[FrozenTrial]] = []
    for trial in trials:
        num = trial.user_attrs[JOB_NUM_ATTR]
        last = batches[-1] if batches else None
        if last and len(last) < size and last[-1].user_attrs[JOB_NUM_ATTR] == num - 1:
            last.append(trial)
        else:
            batches.append([trial])
    return batches


def instantiate_optuna(key: str, node: Any) -> Any:
    """The sampler or pruner of the config; one line naming the key when it cannot be made.
    A key left null keeps Optuna's own default, whichever Optuna is installed."""
    kind = {"sampler": optuna.samplers.BaseSampler, "pruner": optuna.pruners.BasePruner}[key]
    target = node.get("_target_") if isinstance(node, (dict, DictConfig)) else None
    if target is None:
        raise SweeperConfigError(f"hydra.sweeper.{key}: needs a _target_ (an Optuna {key} class)")
    try:
        made_by = locate(str(target))
    except (ImportError, AttributeError, ValueError) as error:
        raise SweeperConfigError(
            f"hydra.sweeper.{key}: {target} cannot be imported ({first_line(error)})"
        ) from None
    try:
        made = instantiate(set_keys(node, made_by))
    except Exception as error:
        cause = error.__cause__ or error
        raise SweeperConfigError(
            f"hydra.sweeper.{key}: {target} cannot be made ({first_line(cause)})"
        ) from None
    product = made.func if isinstance(made, functools.partial) else made
    if not (isinstance(product, kind) or (isinstance(product, type) and issubclass(product, kind))):
        raise SweeperConfigError(f"hydra.sweeper.{key}: {target} is not an Optuna {key}")
    return made


def locate(path: str) -> Any:
    """The class or function a dotted path names."""
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError("not a dotted path")
    return getattr(importlib.import_module(module), name)
