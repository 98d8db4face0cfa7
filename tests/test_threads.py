"""torch_threads=null is automatic: a run alone keeps torch's default, jobs that a launcher runs
side by side share the cores (letters.runs.threads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from conftest import run_cli
from letters.common.entry import CONF_DIR
from letters.common.errors import ConfigError
from letters.runs.threads import (
    available_cores,
    basic_sweep_size,
    cores_left_by_training,
    threads_for_job,
    trains_stacks_here,
)

AUTOMATIC = OmegaConf.create({"torch_threads": None})


def job_hydra(*overrides: str, sweep_dir: Path | None = None, mode: str = "MULTIRUN"):
    """The hydra node a job of ``python -m letters.train -m <overrides>`` sees, as composed
    from the real configs and launcher plugins."""
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    hydra = cfg.hydra
    with open_dict(hydra):
        hydra.mode = mode
        if sweep_dir is not None:
            hydra.sweep.dir = str(sweep_dir)
    return hydra


def write_sweep(sweep_dir: Path, task: list[str], params: dict | None = None, batch=None) -> Path:
    """A sweep's multirun.yaml as the basic sweeper writes it before launching."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "hydra": {
            "overrides": {"task": task},
            "sweeper": {
                "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                "max_batch_size": batch,
                "params": params,
            },
        }
    }
    OmegaConf.save(OmegaConf.create(config), sweep_dir / "multirun.yaml")
    return sweep_dir


def threads(hydra: DictConfig, cores: int, torch_threads: int | None = None) -> int | None:
    return threads_for_job(OmegaConf.create({"torch_threads": torch_threads}), hydra, cores)


def test_a_run_alone_keeps_torchs_default() -> None:
    assert threads_for_job(AUTOMATIC, hydra=None) is None  # outside Hydra
    assert threads(job_hydra(mode="RUN"), cores=8) is None
    # A single run with a parallel launcher chosen still runs alone.
    assert threads(job_hydra("hydra/launcher=joblib", mode="RUN"), cores=8) is None
    assert threads(job_hydra(), cores=8) is None  # -m with the basic launcher: one at a time
    assert threads(job_hydra("hydra/launcher=stacked"), cores=8) is None


def test_an_explicit_value_wins_everywhere() -> None:
    for launcher in ("basic", "joblib", "submitit_local", "stacked"):
        hydra = job_hydra(f"hydra/launcher={launcher}")
        assert threads(hydra, cores=8, torch_threads=3) == 3
    for bad in (0, -1, "two", True):
        with pytest.raises(ConfigError, match="torch_threads"):
            threads_for_job(OmegaConf.create({"torch_threads": bad}), job_hydra(), 8)


@pytest.mark.parametrize(
    ("n_jobs", "cores", "expected"),
    [
        (2, 2, 1),
        (2, 8, 4),
        (3, 8, 2),
        (16, 8, 1),
        (-1, 8, 1),  # -1: as many jobs as cores
        (-2, 8, 1),  # all cores but one: 7 jobs
        (-7, 8, 4),  # 2 jobs
        (1, 8, None),  # one at a time (joblib runs it in the main process)
    ],
)
def test_joblib_jobs_share_the_cores(n_jobs: int, cores: int, expected: int | None) -> None:
    hydra = job_hydra("hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}")
    assert threads(hydra, cores) == expected


def test_joblib_with_fewer_jobs_than_workers(tmp_path: Path) -> None:
    """n_jobs=-1 on 8 cores, but the sweep has 2 jobs: 4 threads each."""
    sweep = write_sweep(tmp_path / "sweep", ["seed=1,2", "epochs=3"])
    hydra = job_hydra("hydra/launcher=joblib", sweep_dir=sweep)
    assert hydra.launcher.n_jobs == -1
    assert threads(hydra, cores=8) == 4


def test_submitit_local(tmp_path: Path) -> None:
    # cpus_per_task, when set, is the job's share.
    hydra = job_hydra("hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=3")
    assert threads(hydra, cores=8) == 3
    # Else every job of the batch starts at once: cores // jobs.
    sweep = write_sweep(tmp_path / "a", ["seed=1,2", "momentum=0.9"])
    assert threads(job_hydra("hydra/launcher=submitit_local", sweep_dir=sweep), cores=8) == 4
    sweep = write_sweep(tmp_path / "b", ["seed=1,2,3,4,5"])
    assert threads(job_hydra("hydra/launcher=submitit_local", sweep_dir=sweep), cores=2) == 1
    # The basic sweeper's max_batch_size caps the jobs started together.
    sweep = write_sweep(tmp_path / "c", ["seed=range(8)"], batch=2)
    assert threads(job_hydra("hydra/launcher=submitit_local", sweep_dir=sweep), cores=8) == 4
    # An unknown number of jobs (no multirun.yaml): one thread.
    hydra = job_hydra("hydra/launcher=submitit_local", sweep_dir=tmp_path / "none")
    assert threads(hydra, cores=8) == 1
    # The Optuna sweeper starts n_jobs trials at once.
    hydra = job_hydra(
        "hydra/launcher=submitit_local", "hparams_search=optuna", "hydra.sweeper.n_jobs=2"
    )
    assert threads(hydra, cores=8) == 4


def test_submitit_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    hydra = job_hydra("hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=4")
    assert threads(hydra, cores=64) == 4
    hydra = job_hydra("hydra/launcher=submitit_slurm")
    assert threads(hydra, cores=64) == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert threads(hydra, cores=64) == 6


def test_an_unknown_launcher_keeps_torchs_default() -> None:
    hydra = job_hydra()
    with open_dict(hydra):
        hydra.launcher = {"_target_": "somewhere.RayLauncher"}
    assert threads(hydra, cores=8) is None


def test_basic_sweep_size(tmp_path: Path) -> None:
    path = write_sweep(tmp_path / "s", ["seed=1,2,3", "lr=0.1", "momentum=0.5,0.9"])
    assert basic_sweep_size(path / "multirun.yaml") == 6
    # hydra.sweeper.params (experiment configs) count too; the command line wins per key.
    path = write_sweep(tmp_path / "p", ["seed=1,2"], params={"momentum": "0,0.5,0.9", "seed": 0})
    assert basic_sweep_size(path / "multirun.yaml") == 6
    assert basic_sweep_size(tmp_path / "missing.yaml") is None


def test_a_joblib_job_logs_and_uses_its_share(
    list_dataset: Path, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the command line: each job of a joblib sweep with n_jobs=2 says in its
    train.log that it uses cores // 2 threads, and why. OMP_NUM_THREADS in the environment
    (which joblib passes on to its workers as it is) does not change that."""
    monkeypatch.setenv("OMP_NUM_THREADS", str(available_cores()))
    run_cli(
        "train",
        "-m",
        "data=list",
        f"data.root={list_dataset}",
        "epochs=1",
        "pictures=false",
        "seed=1,2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        cwd=tmp_path,
    )
    cores = available_cores()
    jobs = sorted(p for p in next((tmp_path / "outputs" / "sweeps").iterdir()).iterdir())
    jobs = [job for job in jobs if job.is_dir() and not job.name.startswith(".")]
    assert len(jobs) == 2
    for job in jobs:
        lines = [
            line
            for line in (job / "train.log").read_text().splitlines()
            if "torch threads:" in line
        ]
        assert len(lines) == 1, lines
        assert (
            f"torch threads: {max(1, cores // 2)} (automatic: joblib runs 2 jobs at once "
            in (lines[0])
        )
        assert (job / "metrics.json").is_file()
    assert os.environ["OMP_NUM_THREADS"] == str(cores)


def test_a_stack_job_uses_cpus_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """hydra/launcher=stacked_submitit_*: a stack's job is one submitit job. Its cpus_per_task
    is the user's, or under stacked_submitit_local the share of the cores that the launcher
    gave each of the stacks it started together."""
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    for launcher in ("stacked_submitit_local", "stacked_submitit_slurm"):
        hydra = job_hydra(f"hydra/launcher={launcher}", "hydra.launcher.cpus_per_task=4")
        assert threads(hydra, cores=64) == 4
        assert threads(hydra, cores=64, torch_threads=2) == 2
    hydra = job_hydra("hydra/launcher=stacked_submitit_slurm")
    assert threads(hydra, cores=64) == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert threads(hydra, cores=64) == 6


def test_pictures_are_drawn_beside_training_only_where_stacks_train_in_this_process() -> None:
    """hydra/launcher=stacked trains one stack after another here: an earlier stack's
    pictures can be drawn while the next trains. Elsewhere (a single run, the basic launcher,
    submitit's processes) the pictures are drawn when the run ends."""
    assert trains_stacks_here(job_hydra())  # -m: stacked by default
    assert not trains_stacks_here(job_hydra(mode="RUN"))
    assert not trains_stacks_here(job_hydra("hydra/launcher=basic"))
    assert not trains_stacks_here(job_hydra("hydra/launcher=stacked_submitit_local"))


def test_the_cores_training_leaves_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU, training takes torch's threads (by default every core: none left);
    beside a GPU, the one core that drives it."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert cores_left_by_training("cpu", cores=8) == 0
    assert cores_left_by_training("cuda", cores=8) == 7
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert cores_left_by_training("cpu", cores=8) == 7
    assert cores_left_by_training("cpu", cores=1) == 0
