"""Shared fixtures and helpers: a tiny letter data set in the reference's list layout, the
command-line entry points run exactly as a user types them, and the sweeps that several test
files read without changing, trained once per session instead of once per file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from letters.data.list_layout import export_list_layout
from letters.data.synthetic import render_letters

# The suite's usual small training: two epochs, validated after each, no pictures.
SMALL = ["epochs=2", "val_interval=1", "batch_size=16", "pictures=false"]


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def cli_command(module: str, *args: str) -> list[str]:
    """``python -m letters.<module> args...``, with this interpreter."""
    return [sys.executable, "-m", f"letters.{module}", *args]


def cli_environment() -> dict[str, str]:
    """This process's environment without HYDRA_FULL_ERROR, so that errors end in one line
    as a user sees them."""
    return {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}


def run_cli(
    module: str,
    *args: str,
    cwd: Path,
    check: bool = True,
    before_exec: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """``python -m letters.<module> args...`` in ``cwd``, as a user would type it;
    ``before_exec`` runs in the child before the command (a resource limit, say)."""
    result = subprocess.run(
        cli_command(module, *args),
        cwd=cwd,
        env=cli_environment(),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=before_exec,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"letters.{module} {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def list_data(root: Path) -> list[str]:
    """The overrides that train on the list-layout data set in ``root``."""
    return ["data=list", f"data.root={root}"]


@dataclass(frozen=True)
class Trained:
    """What a training command left: its run or sweep folder, and what it printed."""

    folder: Path
    stdout: str
    stderr: str

    @property
    def console(self) -> str:
        return self.stdout + self.stderr


def given_folder(overrides: tuple[str, ...], key: str) -> str | None:
    """The folder an override such as ``hydra.run.dir=...`` names, if one does."""
    prefix = f"{key}="
    return next((o.removeprefix(prefix) for o in overrides if o.startswith(prefix)), None)


def only_folder(parent: Path) -> Path:
    (folder,) = parent.iterdir()
    return folder


def run_training(work: Path, *overrides: str, data: Path | None = None) -> Trained:
    """``python -m letters.train [list data in DATA] overrides...`` in ``work`` (made if
    missing); the run's folder is the one ``hydra.run.dir`` names, or else the only one below
    outputs/runs."""
    work.mkdir(parents=True, exist_ok=True)
    args = [*(list_data(data) if data else []), *overrides]
    result = run_cli("train", *args, cwd=work)
    named = given_folder(overrides, "hydra.run.dir")
    folder = work / named if named else only_folder(work / "outputs" / "runs")
    return Trained(folder, result.stdout, result.stderr)


def run_sweep(work: Path, *overrides: str, data: Path | None = None) -> Trained:
    """``python -m letters.train -m [list data in DATA] overrides...`` in ``work`` (made if
    missing); the sweep's folder is the one ``hydra.sweep.dir`` names, or else the only one
    below outputs/sweeps."""
    work.mkdir(parents=True, exist_ok=True)
    args = ["-m", *(list_data(data) if data else []), *overrides]
    result = run_cli("train", *args, cwd=work)
    named = given_folder(overrides, "hydra.sweep.dir")
    folder = work / named if named else only_folder(work / "outputs" / "sweeps")
    return Trained(folder, result.stdout, result.stderr)


def sweep_jobs(sweep: Path) -> list[Path]:
    """The jobs of a sweep that left a metrics.json, in the order of their numbers."""
    found = (path.parent for path in sweep.glob("*/metrics.json") if path.parent.name.isdigit())
    return sorted(found, key=lambda job: int(job.name))


def job_records(sweep: Path) -> list[dict]:
    """Each job's metrics.json, in the order of the jobs' numbers."""
    return [json.loads((job / "metrics.json").read_text()) for job in sweep_jobs(sweep)]


# ---------------------------------------------------------------------------------------------
# Built once a session: shared by the xdist workers too
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every process of this session sees: with pytest-xdist each worker has a base
    folder of its own below a common one, so what is built there serves them all."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"


def built_once(folder: Path, build: Callable[[Path], object]) -> Path:
    """``build(folder)`` unless a process of this session has built it already: the first to
    ask builds while the others wait, and a build that failed half way is started again."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    done = folder.with_name(f"{folder.name}.built")  # beside it: a data folder stays as made
    with FileLock(f"{folder}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("LETTERS_CACHE_DIR", str(folder / "cache"))
                build(folder)
            done.touch()
    return folder


def shared_sweep(folder: Path, *overrides: str, data: Path) -> Trained:
    """``run_sweep`` in ``folder`` once a session (see ``built_once``); what it printed is kept
    beside the sweep, so that every process gets the same answer."""

    def build(work: Path) -> None:
        sweep = run_sweep(work, *overrides, data=data)
        (work / "stdout.txt").write_text(sweep.stdout)
        (work / "stderr.txt").write_text(sweep.stderr)

    work = built_once(folder, build)
    stdout, stderr = ((work / name).read_text() for name in ("stdout.txt", "stderr.txt"))
    return Trained(only_folder(work / "outputs" / "sweeps"), stdout, stderr)


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A decode cache for the session, so that no test reads or fills the user's (``cache_dir``
    gives a test one of its own)."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LETTERS_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def list_dataset(shared_folder: Path) -> Path:
    """26 x (4 train, 2 validation, 2 test) rendered letters, with some lower-case labels; one
    folder for every worker, so that the shared sweeps name the same data."""

    def build(root: Path) -> None:
        splits = {
            split: render_letters(count, 40, seed)
            for seed, (split, count) in enumerate((("train", 4), ("validation", 2), ("test", 2)))
        }
        export_list_layout(splits, root)
        train = json.loads((root / "train.json").read_text())
        lowered = {
            name: label.lower() if i % 3 == 0 else label
            for i, (name, label) in enumerate(train.items())
        }
        (root / "train.json").write_text(json.dumps(lowered))

    return built_once(shared_folder / "letters-data", build)


# The basic launcher's 2 momentum values x 2 seeds, pictures on; test_stacks trains the same
# with the stacked launcher and compares the two.
MOMENTUM_BY_SEED = ["epochs=2", "val_interval=1", "batch_size=16", "momentum=0.9,0.95", "seed=1,2"]


@pytest.fixture(scope="session")
def momentum_seed_sweep(list_dataset: Path, shared_folder: Path) -> Path:
    """MOMENTUM_BY_SEED through the basic launcher: test_sweeps reports it, test_stacks holds
    the stacked launcher's jobs up against its jobs."""
    overrides = [*MOMENTUM_BY_SEED, "hydra/launcher=basic"]
    return shared_sweep(shared_folder / "momentum-seed", *overrides, data=list_dataset).folder


@pytest.fixture(scope="session")
def submitit_sweep(list_dataset: Path, shared_folder: Path) -> Trained:
    """momentum=0.9,0.95 through hydra/launcher=submitit_local, whose jobs run in processes of
    their own: test_sweeps checks that every job ran, test_report what reached the console."""
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]
    overrides = [*SMALL, "momentum=0.9,0.95", *launcher]
    return shared_sweep(shared_folder / "submitit", *overrides, data=list_dataset)


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private decode cache, so tests neither read nor fill the user's."""
    path = tmp_path / "cache"
    monkeypatch.setenv("LETTERS_CACHE_DIR", str(path))
    return path


@pytest.fixture()
def sweep_here(tmp_path: Path, cache_dir: Path, list_dataset: Path) -> Callable[..., Trained]:
    """``run_sweep`` in the test's own folder on the tiny list data, with a private cache."""
    return lambda *overrides: run_sweep(tmp_path, *overrides, data=list_dataset)
