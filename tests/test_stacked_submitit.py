"""hydra/launcher=stacked_submitit_local and stacked_submitit_slurm: each stack of a sweep is
one submitit job (src/hydra_plugins/letters_stacked_launcher/submitit_launcher.py).

Most tests drive the launcher with test_launcher_conformance's fake engine (tiny configs, no
torch); its jobs run in submitit_local processes, which import this module: they find it
through PYTHONPATH. SLURM is faked by an ``sbatch`` that keeps the script it is given.
Hydra's own suites for stacked_submitit_local are in test_launcher_conformance.py.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pytest
import submitit
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.test_utils.test_utils import TSweepRunner
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
from omegaconf import OmegaConf

from conftest import run_sweep
from hydra_plugins.letters_stacked_launcher.config import StackedLocalConf, StackedSlurmConf
from letters.common.records import FAILED_SCORE, Status, write_record
from test_launcher_conformance import FakeJob, FakeStacking, engine_log, stacked_sweep
from test_signals import REQUEUED_RUN, preempt_submitit_sweep

TESTS = Path(__file__).resolve().parent


class JobStacking(FakeStacking):
    """The fake engine in a stack's job: says what the job was given (its GPUs, its CPUs);
    a stack holding ``a == dies`` kills its own process, as the kernel's OOM killer would."""

    def __init__(self, dies: int = -1) -> None:
        super().__init__()
        self.dies = dies

    def train(self, jobs: list[FakeJob]) -> list[float]:
        engine_log.info(
            "the job's CUDA_VISIBLE_DEVICES=%s, cpus_per_task=%s",
            os.environ.get("CUDA_VISIBLE_DEVICES"),
            HydraConfig.get().launcher.cpus_per_task,
        )
        if any(job.cfg.a == self.dies for job in jobs):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().train(jobs)


@pytest.fixture()
def jobs_import_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit_local jobs unpickle the fake engine: they import it from here."""
    paths = [str(TESTS), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path for path in paths if path))
    # A job that died leaves no result: do not wait submitit's 15 s for one to appear.
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 1)


def test_the_configs_are_hydras_plus_max_stack() -> None:
    for ours, hydras in ((StackedLocalConf, LocalQueueConf), (StackedSlurmConf, SlurmQueueConf)):
        extra = {"max_stack"} | ({"srun_args"} if ours is StackedSlurmConf else set())
        assert set(ours.__dataclass_fields__) == set(hydras.__dataclass_fields__) | extra


@pytest.mark.usefixtures("hydra_restore_singletons", "jobs_import_tests")
def test_each_stack_is_one_submitit_job_and_a_dead_one_fails_its_jobs_only(
    hydra_sweep_runner: TSweepRunner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two stacks, two submitit jobs; the one whose process is killed gives its jobs their
    recorded failure, the other its scores. Each job's log is phase 1's, appended to by its
    stack's job; the job sees the GPU it was given and its share of the cores."""
    stacking = JobStacking(dies=3)
    sweep_dir = tmp_path / "sweep"
    overrides = ["+a=0,1,2,3", "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=2"]
    sweep = stacked_sweep(
        hydra_sweep_runner, stacking, sweep_dir, *overrides, launcher="stacked_submitit_local"
    )
    with sweep:
        returns = sweep.returns[0]
        assert [r.return_value for r in returns] == [1.0, 0.0, 21.0, 0.0]
        job_folders = [p for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit()]
        assert len(job_folders) == 2
        # Recorded in the launcher's process, with submitit's account of what happened.
        assert [a for a, _ in stacking.failures] == [1, 3]
        assert all("ended without its results" in why for _, why in stacking.failures)
        out = capsys.readouterr().out
        (line,) = [line for line in out.splitlines() if "ended without its results" in line]
        assert "stack of 2: submitit job" in line and "its log: " in line

        logs = {num: (sweep_dir / str(num) / "a_module.log").read_text() for num in range(4)}
        cores = max(1, len(os.sched_getaffinity(0)) // 2)
        for num in (0, 2):
            text = logs[num]
            assert text.count(f"prepared a={num}") == 2  # phase 1's line kept, then the job's
            assert text.index(f"prepared a={num}") < text.index("training a stack of 2")
            assert f"CUDA_VISIBLE_DEVICES=0, cpus_per_task={cores}" in text
            assert f"member a={num} at epoch 1" in text
        for num in (1, 3):
            assert "ended without its results" in logs[num]
            assert "training a stack" not in logs[num]


def fake_slurm(folder: Path, sbatch: bool = True) -> Path:
    """A bin folder with ``srun`` (which submitit looks for) and, with ``sbatch``, an sbatch
    that keeps the script it is given as ``folder/submitted.sh`` and refuses it."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    scripts = {"srun": "exit 0\n"}
    if sbatch:
        keep = f'cp "$1" {folder / "submitted.sh"}\n'
        scripts["sbatch"] = keep + 'echo "sbatch: error: no cluster here" >&2\nexit 1\n'
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_the_sbatch_script_of_a_stacked_slurm_sweep(
    hydra_sweep_runner: TSweepRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What submitit would submit: one array over the two stacks. The fake sbatch refuses
    it: one line says so and every job gets its recorded failure."""
    monkeypatch.setenv("PATH", f"{fake_slurm(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    stacking = FakeStacking()
    sweep_dir = tmp_path / "sweep"
    settings = [
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.cpus_per_task=4",
        "hydra.launcher.gpus_per_node=1",
        "hydra.launcher.array_parallelism=1",
        "hydra.launcher.signal_delay_s=90",
        "hydra.launcher.max_num_timeout=3",
        "hydra.launcher.setup=['module load python']",
        "hydra.launcher.srun_args=['--cpu-bind=none']",
    ]
    sweep = stacked_sweep(
        hydra_sweep_runner,
        stacking,
        sweep_dir,
        "+a=0,1,2,3",
        *settings,
        launcher="stacked_submitit_slurm",
    )
    with sweep:
        assert [r.return_value for r in sweep.returns[0]] == [0.0] * 4
    assert [a for a, _ in stacking.failures] == [0, 2, 1, 3]
    out = capsys.readouterr().out
    refused = "submitting 2 stacks to submitit's slurm executor failed: sbatch: error: no cluster"
    assert sum(refused in line for line in out.splitlines()) == 1

    script = (tmp_path / "submitted.sh").read_text()
    logs = sweep_dir / ".submitit" / "%A_%a"
    for line in (
        "#SBATCH --array=0-1%1",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=30",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --signal=USR2@90",
        "#SBATCH --job-name=a_module",
        f"#SBATCH --output={logs}/%A_%a_0_log.out",
        "# setup\nmodule load python",
        "export SUBMITIT_EXECUTOR=slurm",
    ):
        assert line in script, line
    (srun,) = [line for line in script.splitlines() if line.startswith("srun ")]
    assert srun.startswith(f"srun --unbuffered --output {logs}/%A_%a_%t_log.out")
    folder = sweep_dir / ".submitit" / "%j"
    assert "--cpu-bind=none" in srun and srun.endswith(f"-u -m submitit.core._submit {folder}")


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_what_cannot_work_stops_the_sweep_in_one_line_before_any_job(
    hydra_sweep_runner: TSweepRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{fake_slurm(tmp_path, sbatch=False)}{os.pathsep}/usr/bin:/bin")
    sweep_dir = tmp_path / "sweep"
    with (
        pytest.raises(CompactHydraException, match=r"sbatch is not on PATH, so no SLURM job"),
        stacked_sweep(
            hydra_sweep_runner,
            FakeStacking(),
            sweep_dir,
            "+a=0,1",
            launcher="stacked_submitit_slurm",
        ),
    ):
        pass
    blocker = tmp_path / "a file"
    blocker.write_text("")
    with (
        pytest.raises(CompactHydraException, match=r"folder=.*a file/x: cannot be written"),
        stacked_sweep(
            hydra_sweep_runner,
            FakeStacking(),
            sweep_dir,
            "+a=0,1",
            f"hydra.launcher.submitit_folder={blocker}/x",
            launcher="stacked_submitit_local",
        ),
    ):
        pass
    assert not (sweep_dir / "0").exists()


def test_a_signalled_stack_job_is_requeued_and_continues_as_one_stack(
    list_dataset: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """SIGUSR2, submitit's signal before a time limit or a preemption, to the stack's job:
    the stack stops at the end of an epoch, submitit requeues the job, and the requeued job
    continues both members as one stack, ending with the numbers of a stack never stopped."""
    sweep = preempt_submitit_sweep(list_dataset, tmp_path, "stacked_submitit_local")
    whole = run_sweep(
        tmp_path / "whole", *REQUEUED_RUN, "hydra/launcher=stacked", data=list_dataset
    )
    for job in ("0", "1"):
        text = (sweep / job / "train.log").read_text()
        assert "SIGUSR2 received" in text
        continued = text[text.index("requeued after an interruption") :]
        assert "a stack of 2 runs" in continued, "the members did not continue as one stack"
        requeued = json.loads((sweep / job / "metrics.json").read_text())
        assert requeued["status"] == "finished" and requeued["epochs_completed"] == 800
        uninterrupted = json.loads((whole.folder / job / "metrics.json").read_text())
        for key in ("val_acc", "best_val_acc", "test_acc", "train_loss"):
            assert requeued[key] == uninterrupted[key], (job, key)


@pytest.mark.parametrize("status", [Status.PRUNED, Status.DIVERGED, Status.FINISHED])
def test_a_requeued_stack_keeps_how_its_ended_runs_ended(
    status: Status, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member that was pruned or diverged before submitit's signal (or a run the job had
    finished) is recorded with the scheduler job's id: the requeue of that job keeps its end
    instead of training it again from the start; another scheduler job does not claim it."""
    from letters.runs import resume

    monkeypatch.setattr(resume, "scheduler_job_id", lambda: "41")
    monkeypatch.setattr(resume, "trial_of_current_job", lambda: None)
    write_record(tmp_path, {"status": status, "val_acc": 0.5, **resume.scheduler_stamp()})
    assert resume.requeued_job(tmp_path)
    outcome = resume.continue_sweep_job(OmegaConf.create({"resume": True}), tmp_path, [])
    assert outcome == (0.5 if status is Status.FINISHED else FAILED_SCORE)
    monkeypatch.setattr(resume, "scheduler_job_id", lambda: "42")
    assert not resume.requeued_job(tmp_path)
