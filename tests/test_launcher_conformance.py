"""The ``stacked`` Hydra launcher (src/hydra_plugins/letters_stacked_launcher).

Hydra's own launcher suites, parametrised as Hydra's launcher plugins run them in their
repositories (plugins/hydra_joblib_launcher/tests/test_joblib_launcher.py), exercise it with
ordinary task functions (no ``stacking``: it must behave as the basic launcher). The tests after
them drive the stacked path with a fake engine: tiny configs, no torch.

The fixtures ``hydra_sweep_runner`` and ``hydra_restore_singletons`` come from Hydra's pytest
plugin (``hydra.extra.pytest_plugin``), which hydra-core registers through the ``pytest11``
entry point: nothing to import.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from hydra.test_utils.test_utils import TSweepRunner
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.letters_stacked_launcher.remembered_configs import RememberingConfigLoader
from hydra_plugins.letters_stacked_launcher.stacked_launcher import (
    LogSetup,
    PreparedJob,
    StackedLauncher,
    stack_logging,
)
from hydra_plugins.letters_stacked_launcher.submitit_launcher import (
    StackedLocalLauncher,
    StackedSlurmLauncher,
)


def test_discovery() -> None:
    discovered = [plugin.__name__ for plugin in Plugins.instance().discover(Launcher)]
    for launcher in (StackedLauncher, StackedLocalLauncher, StackedSlurmLauncher):
        assert launcher.__name__ in discovered


@pytest.mark.parametrize("launcher_name, overrides", [("stacked", [])])
class TestStackedLauncher(LauncherTestSuite):
    """Hydra's launcher suite (in-process sweeps of hydra.test_utils' configs)."""


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        (
            {},
            [
                "-m",
                "hydra/job_logging=hydra_debug",
                "hydra/job_logging=disabled",
                "hydra/launcher=stacked",
            ],
        )
    ],
)
class TestStackedLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration suite (small apps run as subprocesses, the plugin discovered as
    installed)."""


# The same suites for stacked_submitit_local: each job a submitit job, as with Hydra's own
# submitit_local (plugins/hydra_submitit_launcher/tests/test_submitit_launcher.py).
SUBMITIT_LOCAL = ["hydra/launcher=stacked_submitit_local", "hydra.launcher.timeout_min=2"]


@pytest.mark.parametrize(
    "launcher_name, overrides", [("stacked_submitit_local", SUBMITIT_LOCAL[1:])]
)
class TestStackedSubmititLocalLauncher(LauncherTestSuite):
    """Hydra's launcher suite for hydra/launcher=stacked_submitit_local."""


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({}, ["-m", "hydra/job_logging=hydra_debug", "hydra/job_logging=disabled", *SUBMITIT_LOCAL])],
)
class TestStackedSubmititLocalLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration suite for hydra/launcher=stacked_submitit_local."""


def test_plugin_imports_nothing_heavy() -> None:
    """Hydra imports every plugin whenever any Hydra app starts."""
    code = (
        "import sys\n"
        "import hydra_plugins.letters_stacked_launcher.config\n"
        "import hydra_plugins.letters_stacked_launcher.stacked_launcher\n"
        "import hydra_plugins.letters_stacked_launcher.submitit_launcher\n"
        "heavy = ('torch', 'pytorch_lightning', 'letters', 'submitit')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_project_config_composes_with_it() -> None:
    from hydra import compose, initialize_config_dir

    from letters.common.entry import CONF_DIR

    overrides = ["hydra/launcher=stacked", "hydra.launcher.max_stack=4"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("stacked_launcher.StackedLauncher")
    assert cfg.hydra.launcher.max_stack == 4


@pytest.mark.parametrize("max_stack", [0, -1, True, 1.5])
def test_max_stack_is_validated(max_stack: Any) -> None:
    with pytest.raises(ValueError, match="max_stack"):
        StackedLauncher(max_stack=max_stack)


# --- the stacked path, with a fake engine -------------------------------------------------

engine_log = logging.getLogger("fake.engine")


@dataclass
class FakeJob:
    cfg: DictConfig
    run_dir: Path
    overrides: list[str]


class FakeStacking:
    """The engine's contract on tiny configs ``{foo, bar, a}``: jobs are keyed by the parity
    of ``a``; ``a == bad`` is a user error that prepare records and scores 0.5; ``a == broken``
    makes prepare raise; a stack holding ``a == bug`` makes train raise."""

    def __init__(self, bad: int = -1, broken: int = -1, bug: int = -1) -> None:
        self.bad, self.broken, self.bug = bad, broken, bug
        self.stacks: list[list[int]] = []
        self.failures: list[tuple[int, str]] = []
        self.hydra_job_nums: list[int] = []

    def prepare(self, cfg: DictConfig) -> FakeJob | float:
        hydra = HydraConfig.get()
        run_dir = Path(hydra.runtime.output_dir)
        if cfg.a == self.broken:
            raise RuntimeError(f"a bug in prepare for a={cfg.a}")
        if cfg.a == self.bad:
            (run_dir / "metrics.json").write_text(json.dumps({"status": "failed"}))
            engine_log.error("error: a=%d is not allowed", cfg.a)
            return 0.5
        engine_log.info("prepared a=%d", cfg.a)
        return FakeJob(cfg, run_dir, list(hydra.overrides.task))

    def key(self, job: FakeJob) -> str:
        return "even" if job.cfg.a % 2 == 0 else "odd"

    def train(self, jobs: list[FakeJob]) -> list[float]:
        values = [job.cfg.a for job in jobs]
        self.stacks.append(values)
        self.hydra_job_nums.append(HydraConfig.get().job.num)
        engine_log.info("training a stack of %d", len(jobs))
        for member, job in enumerate(jobs):
            engine_log.info("member a=%d at epoch 1", job.cfg.a, extra={"member": member})
        if self.bug in values:
            raise RuntimeError(f"a bug in train for a={self.bug}")
        return [10.0 * value + 1 for value in values]

    def record_failure(self, job: FakeJob, error: BaseException) -> float:
        """The score of a job that could not train is the app's: 0.0 here."""
        self.failures.append((job.cfg.a, str(error)))
        return 0.0


def stacked_sweep(
    hydra_sweep_runner: TSweepRunner,
    stacking: FakeStacking,
    sweep_dir: Path,
    *overrides: str,
    launcher: str = "stacked",
) -> Any:
    sweep = hydra_sweep_runner(
        calling_file=None,
        calling_module="hydra.test_utils.a_module",
        task_function=None,
        config_path="configs",
        config_name="compose",
        overrides=[f"hydra/launcher={launcher}", *overrides],
        temp_dir=sweep_dir,
    )
    # hydra_sweep_runner hands Hydra this object as the task function.
    sweep.stacking = stacking  # type: ignore[attr-defined]
    return sweep


LINE = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]\[fake\.engine\]\[INFO\] - "


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_stacks_by_key_and_max_stack(
    hydra_sweep_runner: TSweepRunner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stacking = FakeStacking(bad=3)
    sweep_dir = tmp_path / "sweep"
    sweep = stacked_sweep(
        hydra_sweep_runner, stacking, sweep_dir, "+a=0,1,2,3,4,5,6", "hydra.launcher.max_stack=2"
    )
    with sweep:
        returns = sweep.returns[0]
        # Equal keys trained together, in order of first appearance, cut at max_stack; the
        # job whose prepare recorded a failure (3) is not trained and keeps its score.
        assert stacking.stacks == [[0, 2], [4, 6], [1, 5]]
        assert stacking.hydra_job_nums == [0, 4, 1]  # HydraConfig: the stack's first job's
        assert [r.status for r in returns] == [JobStatus.COMPLETED] * 7
        assert [r.return_value for r in returns] == [1.0, 11.0, 21.0, 0.5, 41.0, 51.0, 61.0]
        assert stacking.failures == []

        for num, job_return in enumerate(returns):
            job_dir = sweep_dir / str(num)
            assert job_return.overrides == [f"+a={num}"]
            assert job_return.hydra_cfg.hydra.job.num == num
            for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
                assert (job_dir / ".hydra" / name).is_file(), (num, name)
        assert json.loads((sweep_dir / "3" / "metrics.json").read_text())["status"] == "failed"

        # Each job's log: phase 1's records, then the stack's records and its own only.
        logs = {num: (sweep_dir / str(num) / "a_module.log").read_text() for num in range(7)}
        for num, other in {0: 2, 2: 0, 4: 6, 6: 4, 1: 5, 5: 1}.items():
            text = logs[num]
            assert re.search(rf"^{LINE}prepared a={num}$", text, re.M), text
            assert re.search(rf"^{LINE}training a stack of 2$", text, re.M), text
            assert re.search(rf"^{LINE}member a={num} at epoch 1$", text, re.M), text
            assert text.index(f"prepared a={num}") < text.index("training a stack")
            assert f"member a={other} " not in text
        assert "error: a=3 is not allowed" in logs[3]
        assert "training a stack" not in logs[3]

    out = capsys.readouterr().out
    for stack in ("stack of 2: jobs 0,2", "stack of 2: jobs 4,6", "stack of 2: jobs 1,5"):
        assert stack in out
    for num in (0, 1, 2, 4, 5, 6):  # the console shows every member's records
        assert f"member a={num} at epoch 1" in out


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_a_raising_prepare_is_returned_as_run_job_returned_it(
    hydra_sweep_runner: TSweepRunner, tmp_path: Path
) -> None:
    """The launcher returns run_job's FAILED JobReturn; Hydra's basic sweeper then stops the
    multirun with its exception (as with the basic launcher), after the other jobs trained."""
    stacking = FakeStacking(broken=1)
    sweep_dir = tmp_path / "sweep"
    with (
        pytest.raises(RuntimeError, match="a bug in prepare for a=1"),
        stacked_sweep(hydra_sweep_runner, stacking, sweep_dir, "+a=0,1,2"),
    ):
        pass
    assert stacking.stacks == [[0, 2]]
    for num in range(3):
        assert (sweep_dir / str(num) / ".hydra" / "config.yaml").is_file()


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_a_failing_stack_fails_its_jobs_only(
    hydra_sweep_runner: TSweepRunner, tmp_path: Path
) -> None:
    stacking = FakeStacking(bug=2)
    sweep_dir = tmp_path / "sweep"
    with stacked_sweep(hydra_sweep_runner, stacking, sweep_dir, "+a=0,1,2") as sweep:
        returns = sweep.returns[0]
        assert stacking.stacks == [[0, 2], [1]]
        assert [r.status for r in returns] == [JobStatus.COMPLETED] * 3
        assert [r.return_value for r in returns] == [0.0, 11.0, 0.0]
        assert stacking.failures == [(0, "a bug in train for a=2"), (2, "a bug in train for a=2")]
        for num in (0, 2):
            text = (sweep_dir / str(num) / "a_module.log").read_text()
            assert "stack of 2 (jobs 0,2) failed" in text
            assert "RuntimeError: a bug in train for a=2" in text
        assert "failed" not in (sweep_dir / "1" / "a_module.log").read_text()


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_initial_job_idx_numbers_the_jobs(hydra_sweep_runner: TSweepRunner, tmp_path: Path) -> None:
    """A sweeper that launches in batches: the second batch's jobs are numbered on."""
    stacking = FakeStacking()
    sweep_dir = tmp_path / "sweep"
    with stacked_sweep(
        hydra_sweep_runner, stacking, sweep_dir, "+a=0,1,2,3", "hydra.sweeper.max_batch_size=2"
    ) as sweep:
        assert [len(batch) for batch in sweep.returns] == [2, 2]
        assert stacking.stacks == [[0], [1], [2], [3]]
        assert stacking.hydra_job_nums == [0, 1, 2, 3]
        values = [r.return_value for batch in sweep.returns for r in batch]
        assert values == [1.0, 11.0, 21.0, 31.0]
        for num in range(4):
            assert (sweep_dir / str(num) / ".hydra" / "config.yaml").is_file()


def test_stack_logging_routes_members_and_restores_the_root_logger(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    formatter = logging.Formatter("%(levelname)s %(message)s")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    setups = []
    for name in ("a.log", "b.log"):
        handler = logging.FileHandler(tmp_path / name, delay=True)
        handler.setFormatter(formatter)
        setups.append(LogSetup(logging.DEBUG, [console, handler]))
        handler.close()
    members = [PreparedJob(i, None, None, setup) for i, setup in enumerate(setups)]  # type: ignore[arg-type]
    try:
        with stack_logging(members):
            assert root.level == logging.DEBUG
            assert console not in root.handlers  # a fresh copy of it
            engine_log.debug("to both")
            engine_log.info("to a", extra={"member": 0})
            engine_log.warning("to b", extra={"member": 1})
        assert root.handlers == saved_handlers
        assert root.level == saved_level
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert (tmp_path / "a.log").read_text() == "DEBUG to both\nINFO to a\n"
    assert (tmp_path / "b.log").read_text() == "DEBUG to both\nWARNING to b\n"


class EndingStacking(FakeStacking):
    """Jobs ``a == ended`` end with an exception instead of a score: from ``train`` when
    trained, from ``prepare`` when ``before`` (a job that ended in an earlier run)."""

    def __init__(self, ended: int, before: bool) -> None:
        super().__init__()
        self.ended, self.before = ended, before

    def prepare(self, cfg: DictConfig) -> Any:
        if self.before and cfg.a == self.ended:
            return LookupError(f"a={cfg.a} ended before")
        return super().prepare(cfg)

    def train(self, jobs: list[FakeJob]) -> list[Any]:
        values = super().train(jobs)
        return [
            LookupError(f"a={job.cfg.a} ended") if job.cfg.a == self.ended else value
            for job, value in zip(jobs, values, strict=True)
        ]


@pytest.mark.parametrize("before", [False, True])
@pytest.mark.usefixtures("hydra_restore_singletons")
def test_a_job_may_end_with_an_exception(
    hydra_sweep_runner: TSweepRunner, tmp_path: Path, before: bool
) -> None:
    """A job that ends with an exception (Optuna's TrialPruned, say) fails with it, as when
    a task function raises it, which a sweeper reads from its JobReturn (the basic sweeper
    raises it); its stack-mates train on."""
    stacking = EndingStacking(ended=1, before=before)
    sweep = stacked_sweep(hydra_sweep_runner, stacking, tmp_path / "sweep", "+a=0,1,2")
    with pytest.raises(LookupError, match="a=1 ended"), sweep:
        pass
    assert stacking.stacks == ([[0, 2]] if before else [[0, 2], [1]])


# --- each job's config composed once ------------------------------------------------------


@pytest.mark.usefixtures("hydra_restore_singletons")
@pytest.mark.parametrize("stacked", [True, False], ids=["stacking app", "any Hydra app"])
def test_a_sweep_composes_each_job_once(
    hydra_sweep_runner: TSweepRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stacked: bool,
) -> None:
    """Hydra's basic sweeper composes each job to check it, then the launcher used to compose
    it again; now the launcher gets the checked job's config, and each job still its own."""
    composed: list[list[str]] = []
    compose = ConfigLoaderImpl.load_sweep_config

    def counting(self: ConfigLoaderImpl, master_config: DictConfig, sweep_overrides: list[str]):
        composed.append(list(sweep_overrides))
        return compose(self, master_config, sweep_overrides)

    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", counting)
    sweep_dir = tmp_path / "sweep"
    sweep = (
        stacked_sweep(hydra_sweep_runner, FakeStacking(), sweep_dir, "+a=0,1,2")
        if stacked
        else hydra_sweep_runner(
            calling_file=None,
            calling_module="hydra.test_utils.a_module",
            task_function=None,
            config_path="configs",
            config_name="compose",
            overrides=["hydra/launcher=stacked", "+a=0,1,2"],
            temp_dir=sweep_dir,
        )
    )
    with sweep:
        returns = sweep.returns[0]
        assert composed == [["+a=0"], ["+a=1"], ["+a=2"]]
        assert [r.cfg.a for r in returns] == [0, 1, 2]
        assert [r.hydra_cfg.hydra.job.num for r in returns] == [0, 1, 2]
        for num in range(3):
            saved = (sweep_dir / str(num) / ".hydra" / "config.yaml").read_text()
            assert f"a: {num}" in saved


def test_a_remembered_config_is_handed_out_once_and_as_a_copy() -> None:
    class Loader:
        calls = 0

        def load_sweep_config(self, master: DictConfig, overrides: list[str]) -> DictConfig:
            Loader.calls += 1
            return OmegaConf.create({"a": int(overrides[0].split("=")[1]), "calls": self.calls})

    loader = RememberingConfigLoader(Loader())  # type: ignore[arg-type]
    master = OmegaConf.create()
    checked = loader.load_sweep_config(master, ["a=1"])
    checked.a = 99  # what the first caller does with its own does not reach the second
    launched = loader.load_sweep_config(master, ["a=1"])
    assert (launched.a, launched.calls, Loader.calls) == (1, 1, 1)
    with loader.launch():
        again = loader.load_sweep_config(master, ["a=1"])  # handed out once: composed again
        assert (again.calls, Loader.calls) == (2, 2)
        assert loader.remembered == {}  # a launch's own compositions are not kept
    loader.load_sweep_config(master, ["a=2"])  # a check whose job is not launched here
    with loader.launch():
        pass
    assert loader.remembered == {}  # dropped at the launch's end
    assert loader.load_sweep_config(OmegaConf.create(), ["a=1"]).calls == 4  # another sweep's
