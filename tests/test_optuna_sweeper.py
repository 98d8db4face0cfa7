"""The Optuna sweeper plugin (src/hydra_plugins/letters_optuna_sweeper) with a plain Hydra app
(tests/optuna_app/sphere.py: nothing of letters), checking what Hydra's own Optuna sweeper's
tests check (discovery, the search space syntax, the example sweep, custom search spaces, the
failure rate) and what it lacks: pruning, the study in the sweep folder, continuing a study,
several sweeps on one study, and one line for each bad setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.letters_optuna_sweeper import _impl
from hydra_plugins.letters_optuna_sweeper.optuna_sweeper import OptunaSweeper
from hydra_plugins.letters_optuna_sweeper.trial import JOB_NUM_ATTR, SWEEP_DIR_ATTR

APP = Path(__file__).parent / "optuna_app" / "sphere.py"


def sweep(sweep_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """The app's multirun, as a user types it."""
    command = [sys.executable, str(APP), "-m", f"hydra.sweep.dir={sweep_dir}", *overrides]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def study_in(sweep_dir: Path, name: str | None = None) -> optuna.Study:
    return optuna.load_study(
        study_name=name or sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}"
    )


def test_discovery() -> None:
    assert OptunaSweeper.__name__ in [cls.__name__ for cls in Plugins.instance().discover(Sweeper)]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("key=choice(1,2)", CategoricalDistribution([1, 2])),
        ("key=choice(true, false)", CategoricalDistribution([True, False])),
        ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
        ("key=shuffle(range(1,3))", CategoricalDistribution((1, 2))),
        ("key=range(1,3)", IntDistribution(1, 3)),
        ("key=interval(1, 5)", FloatDistribution(1, 5)),
        ("key=int(interval(1, 5))", IntDistribution(1, 5)),
        ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
        ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
        ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 5.5, step=1)),
    ],
)
def test_distribution_from_override(override: str, expected: object) -> None:
    parsed = OverridesParser.create().parse_overrides([override])[0]
    actual = _impl.create_optuna_distribution_from_override(parsed)
    if isinstance(expected, CategoricalDistribution):
        assert isinstance(actual, CategoricalDistribution)
        assert set(actual.choices) == set(expected.choices)
    else:
        assert actual == expected


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["key=choice(1,2)"], ({"key": CategoricalDistribution([1, 2])}, {}, [])),
        (["key=5"], ({}, {"key": "5"}, [])),
        (
            ["key1=choice(1,2)", "key2=5", "key3=range(1,3)"],
            (
                {"key1": CategoricalDistribution([1, 2]), "key3": IntDistribution(1, 3)},
                {"key2": "5"},
                [],
            ),
        ),
        (["~z"], ({}, {}, ["~z"])),
        (["~z=10"], ({}, {}, ["~z=10"])),
    ],
)
def test_params_from_overrides(arguments: list[str], expected: tuple) -> None:
    assert _impl.create_params_from_overrides(arguments) == expected


def test_sweep_keeps_its_study_in_the_sweep_folder(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep(sweep_dir, "hydra.sweeper.n_trials=6")
    study = study_in(sweep_dir)  # SWEEP/optuna.db, named after the folder
    trials = study.get_trials()
    assert len(trials) == 6
    assert all(t.state is TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs[JOB_NUM_ATTR] for t in trials) == list(range(6))
    assert {t.user_attrs[SWEEP_DIR_ATTR] for t in trials} == {str(sweep_dir)}
    for trial in trials:  # each job's value is the sphere of the parameters it was given
        assert trial.value == pytest.approx(trial.params["x"] ** 2 + trial.params["y"] ** 2)
        assert (sweep_dir / str(trial.user_attrs[JOB_NUM_ATTR]) / ".hydra").is_dir()
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.best_value == study.best_value
    assert dict(results.best_params) == study.best_params
    assert dict(results.trials) == {"complete": 6, "pruned": 0, "fail": 0}


def test_fixed_value_on_the_command_line_wins(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep(sweep_dir, "hydra.sweeper.n_trials=3", "y=0", "x=choice(0, 1, 2)")
    trials = study_in(sweep_dir).get_trials()
    assert all("y" not in t.params and t.user_attrs["y"] == "0" for t in trials)
    assert {t.params["x"] for t in trials} <= {0, 1, 2}


def test_grid_sampler_runs_each_point_once(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep(
        sweep_dir,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=10",
        "x=choice(-1.0, 0.0, 1.0)",
        "y=choice(0, 5)",
    )
    trials = study_in(sweep_dir).get_trials()
    assert sorted((t.params["x"], t.params["y"]) for t in trials) == [
        (x, y) for x in (-1.0, 0.0, 1.0) for y in (0, 5)
    ]
    assert OmegaConf.load(sweep_dir / "optimization_results.yaml").best_value == 0.0


def test_custom_search_space(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep(sweep_dir, "--config-name=custom_space")
    trials = study_in(sweep_dir).get_trials()
    assert len(trials) == 10
    assert all(abs(t.params["x"] - t.params["y"]) <= 0.3 for t in trials)


@pytest.mark.parametrize("max_failure_rate", [0.5, 1.0])
def test_failure_rate(tmp_path: Path, max_failure_rate: float) -> None:
    done = sweep(
        tmp_path / "sweep",
        "hydra.sweeper.n_trials=4",
        f"hydra.sweeper.max_failure_rate={max_failure_rate}",
        "error=true",
        check=False,
    )
    if max_failure_rate < 1.0:
        assert done.returncode != 0
        assert "RuntimeError: cfg.error is True" in done.stderr
    else:
        assert done.returncode == 0, done.stderr[-2000:]
        states = {t.state for t in study_in(tmp_path / "sweep").get_trials()}
        assert states == {TrialState.FAIL}


def test_pruned_trials_are_told_as_pruned(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep(
        sweep_dir,
        "hydra.sweeper.n_trials=10",
        "hydra.sweeper.n_jobs=1",
        "steps=4",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
    )
    trials = study_in(sweep_dir).get_trials()
    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    assert len(trials) == 10 and pruned and complete
    assert all(t.last_step is not None and t.last_step < 4 for t in pruned)
    assert all(t.last_step == 4 for t in complete)
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.trials.pruned == len(pruned)
    assert results.trials.fail == 0


def test_a_sweep_started_again_continues_its_study(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep(sweep_dir, "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1")
    first = {t.number: t.datetime_complete for t in study_in(sweep_dir).get_trials()}
    # A trial that a stopped sweep had launched and not finished: job 3, never told.
    study = study_in(sweep_dir)
    trial = study.ask(
        {"x": FloatDistribution(-5, 5, step=0.5), "y": CategoricalDistribution([-5, 0, 5])}
    )
    trial.set_user_attr(SWEEP_DIR_ATTR, str(sweep_dir))
    trial.set_user_attr(JOB_NUM_ATTR, 3)
    done = sweep(sweep_dir, "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=1")
    trials = {t.number: t for t in study_in(sweep_dir).get_trials()}
    assert len(trials) == 6
    assert all(t.state is TrialState.COMPLETE for t in trials.values())
    for number, completed in first.items():  # not run again
        assert trials[number].datetime_complete == completed
    assert trials[trial.number].user_attrs[JOB_NUM_ATTR] == 3  # continued as the same job
    assert sorted(t.user_attrs[JOB_NUM_ATTR] for t in trials.values()) == list(range(6))
    assert "#3 :" in done.stderr + done.stdout
    assert "#0 :" not in done.stderr + done.stdout


def test_two_sweeps_work_on_one_study(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    common = [
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=shared",
        "hydra.sweeper.n_trials=10",
        "hydra.sweeper.n_jobs=1",
        "steps=2",
        "step_seconds=0.2",
    ]
    processes = [
        subprocess.Popen(
            [sys.executable, str(APP), "-m", f"hydra.sweep.dir={tmp_path / name}", *common],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    # Each sweep asks while the study holds fewer than n_trials: together they run 10 (one
    # more where both asked at the same moment for the last one).
    assert 10 <= len(trials) <= 11
    assert all(t.state is TrialState.COMPLETE for t in trials)
    by_sweep = {t.user_attrs[SWEEP_DIR_ATTR] for t in trials}
    assert by_sweep == {str(tmp_path / "a"), str(tmp_path / "b")}


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["hydra.sweeper.pruner={_target_: optuna.pruners.NoSuchPruner}"],
            "hydra.sweeper.pruner: optuna.pruners.NoSuchPruner cannot be imported",
        ),
        (
            ["hydra.sweeper.sampler._target_=optuna.samplers.NoSuchSampler"],
            "hydra.sweeper.sampler: optuna.samplers.NoSuchSampler cannot be imported",
        ),
        (["x=interval(5.0, 1.0)"], "x=interval(5.0, 1.0):"),
        (["hydra.sweeper.storage=sqlite:////no/such/folder/x.db"], "cannot be opened"),
    ],
)
def test_bad_settings_say_so_in_one_line(
    tmp_path: Path, overrides: list[str], expected: str
) -> None:
    done = sweep(tmp_path / "sweep", *overrides, check=False)
    assert done.returncode != 0
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "sweep").glob("[0-9]*"))  # no job ran


def test_a_study_with_another_direction_is_refused(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    done = sweep(
        tmp_path / "sweep",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=s",
        check=False,
    )
    assert done.returncode != 0
    assert "exists with direction maximize, not minimize" in done.stderr


def test_a_job_of_another_sweeper_is_no_trial() -> None:
    from hydra_plugins.letters_optuna_sweeper.trial import TrialLink

    basic = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    assert TrialLink.of_hydra_config(OmegaConf.create({"sweeper": {"_target_": basic}})) is None


def test_plugin_discovery_does_not_import_optuna() -> None:
    """Hydra imports the plugin's public modules on every start of every app."""
    code = (
        "import sys\n"
        "from hydra.core.plugins import Plugins\n"
        "Plugins.instance()\n"
        "import hydra_plugins.letters_optuna_sweeper.trial\n"
        "print('optuna' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
