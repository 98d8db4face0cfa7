"""Signals as a scheduler or a user sends them: SIGTERM and Ctrl-C stop a run, or a whole
stack, at the end of an epoch with last.ckpt saved, say how to continue, and exit non-zero."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import cli_command, cli_environment, list_data, run_cli, run_training

LONG = ["epochs=100000", "val_interval=1000", "batch_size=16", "pictures=false"]


def start_and_signal(
    args: list[str],
    cwd: Path,
    signum: int,
    log: Path | None = None,
    target: Callable[[], int] | None = None,
    pause: float = 1.0,
) -> subprocess.CompletedProcess:
    """``python -m letters.train args``; once ``log`` (the console by default) says training
    runs, send ``signum`` to ``target()`` (by default the command itself); wait for it."""
    console_log = cwd / "console.txt"
    log = log or console_log
    with open(console_log, "w") as console:
        process = subprocess.Popen(
            cli_command("train", *args),
            cwd=cwd,
            env=cli_environment(),
            stdout=console,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while not (log.is_file() and "training starts" in log.read_text()):
            assert process.poll() is None, console_log.read_text()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.2)
        time.sleep(pause)
        os.kill(target() if target else process.pid, signum)
        process.wait(timeout=300)
    return subprocess.CompletedProcess(
        process.args, process.returncode, console_log.read_text(), ""
    )


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"]
)
def test_a_signal_stops_a_run_with_last_ckpt_saved_and_says_how_to_continue(
    list_dataset: Path, tmp_path: Path, cache_dir: Path, signum: int, status: int
) -> None:
    result = start_and_signal([*list_data(list_dataset), *LONG], tmp_path, signum)
    assert result.returncode == status, result.stdout
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "interrupted"
    assert record["signal"] == signal.Signals(signum).name
    done = record["epochs_completed"]
    assert done >= 1 and (run / "checkpoints" / "last.ckpt").is_file()
    command = f"python -m letters.train resume={run.relative_to(tmp_path)}"
    assert record["resume"] == command and f"Continue with: {command}" in result.stdout
    # The command it gives continues the run in its own folder (here for two more epochs).
    run_cli("train", f"resume={run.relative_to(tmp_path)}", f"epochs={done + 2}", cwd=tmp_path)
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "finished" and record["epochs_completed"] == done + 2


def test_sigterm_stops_a_whole_stack_and_every_member_can_continue(
    list_dataset: Path, tmp_path: Path, cache_dir: Path
) -> None:
    args = ["-m", *list_data(list_dataset), *LONG, "seed=1,2", "hydra/launcher=stacked"]
    result = start_and_signal(args, tmp_path, signal.SIGTERM)
    assert result.returncode == 143, result.stdout
    (sweep,) = (tmp_path / "outputs" / "sweeps").iterdir()
    jobs = [sweep / "0", sweep / "1"]
    records = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    assert [r["status"] for r in records] == ["interrupted", "interrupted"]
    assert records[0]["epochs_completed"] == records[1]["epochs_completed"]
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert (job / "train.log").read_text().count("Continue with:") == 1
    done = records[0]["epochs_completed"]
    run_cli("train", f"resume={jobs[1]}", f"epochs={done + 1}", cwd=tmp_path)
    assert json.loads((jobs[1] / "metrics.json").read_text())["status"] == "finished"


SWEEP = ["epochs=6", "val_interval=2", "batch_size=16", "pictures=false", "momentum=0.9,0.95"]


def test_a_sweep_stopped_by_sigterm_continues_in_its_own_folder(
    list_dataset: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """Stopped half way, the same command plus hydra.sweep.dir=... resume=true finishes the
    sweep: the report equals an uninterrupted sweep's, and a second continue runs nothing.
    (The basic launcher: the second job has not started when the first is stopped.)"""
    data = [*list_data(list_dataset), "hydra/launcher=basic"]
    long = ["epochs=100000", "val_interval=1000", "batch_size=16", "pictures=false"]
    args = ["-m", *data, *long, "momentum=0.9,0.95", "hydra.sweep.dir=outputs/sweeps/cut"]
    assert start_and_signal(args, tmp_path, signal.SIGTERM).returncode == 143
    cut = tmp_path / "outputs" / "sweeps" / "cut"
    first = json.loads((cut / "0" / "metrics.json").read_text())
    assert first["status"] == "interrupted" and not (cut / "1").exists()
    done = first["epochs_completed"]
    # Continue with the epochs the interrupted job reached plus two: a finite sweep.
    finite = ["-m", *data, f"epochs={done + 2}", "val_interval=1000", "batch_size=16"]
    finite += ["pictures=false", "momentum=0.9,0.95"]
    run_cli("train", *finite, "hydra.sweep.dir=outputs/sweeps/cut", "resume=true", cwd=tmp_path)
    run_cli("train", *finite, "hydra.sweep.dir=outputs/sweeps/whole", cwd=tmp_path)
    whole = tmp_path / "outputs" / "sweeps" / "whole"
    for job in ("0", "1"):
        ours = json.loads((cut / job / "metrics.json").read_text())
        theirs = json.loads((whole / job / "metrics.json").read_text())
        assert ours["status"] == theirs["status"] == "finished"
        for key in ("val_acc", "best_val_acc", "test_acc", "train_loss"):
            assert ours[key] == theirs[key], (job, key)
    again = run_cli(
        "train", *finite, "hydra.sweep.dir=outputs/sweeps/cut", "resume=true", cwd=tmp_path
    )
    assert again.stdout.count("its recorded val_acc is reused") == 2


@pytest.mark.parametrize(
    "launcher",
    [["hydra/launcher=stacked"], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
    ids=["stacked", "joblib"],
)
def test_continuing_a_sweep_reruns_only_what_did_not_finish(
    list_dataset: Path, tmp_path: Path, cache_dir: Path, launcher: list[str]
) -> None:
    """A job whose metrics.json is missing (killed after its last checkpoint) continues from
    last.ckpt, a job never started runs, the finished ones are not run again."""
    args = ["-m", *list_data(list_dataset), *SWEEP, "seed=1,2", *launcher, "torch_threads=1"]
    run_cli("train", *args, "hydra.sweep.dir=outputs/sweeps/s", cwd=tmp_path)
    sweep = tmp_path / "outputs" / "sweeps" / "s"
    before = {job.name: (job / "metrics.json").read_text() for job in sweep.glob("[0-9]")}
    (sweep / "1" / "metrics.json").unlink()
    import shutil

    shutil.rmtree(sweep / "3")
    result = run_cli(
        "train", *args, "hydra.sweep.dir=outputs/sweeps/s", "resume=true", cwd=tmp_path
    )
    assert result.stdout.count("its recorded val_acc is reused") == 2
    for name, text in before.items():
        ours, theirs = json.loads((sweep / name / "metrics.json").read_text()), json.loads(text)
        for key in ("val_acc", "best_val_acc", "test_acc", "train_loss"):
            assert ours[key] == theirs[key], (name, key)


def submitit_task(sweep: Path) -> int:
    """The pid of the process that runs a submitit_local job of ``sweep`` (its task, not the
    controller that watches it): the one a cluster would signal."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in command and any(str(sweep).encode() in a for a in command):
            return int(entry.name)
    raise AssertionError(f"no submitit task for {sweep}")


# Two long jobs on one thread each: the same sums in the same order as a run never stopped
# (submitit jobs get their share of the cores by default, a run alone all of them).
REQUEUED_RUN = [
    "epochs=800",
    "val_interval=1000",
    "batch_size=16",
    "pictures=false",
    "torch_threads=1",
    "seed=1,2",
]


def preempt_submitit_sweep(list_dataset: Path, tmp_path: Path, launcher: str) -> Path:
    """Run REQUEUED_RUN through a submitit ``launcher`` and send SIGUSR2 to the process of its
    (first) job once it trains, as a scheduler does before a time limit or a preemption; the
    sweep must then end well. Its folder."""
    args = ["-m", *list_data(list_dataset), *REQUEUED_RUN, f"hydra/launcher={launcher}"]
    args += ["hydra.launcher.timeout_min=10", "hydra.sweep.dir=outputs/sweeps/requeued"]
    sweep = tmp_path / "outputs" / "sweeps" / "requeued"
    result = start_and_signal(
        args,
        tmp_path,
        signal.SIGUSR2,
        log=sweep / "0" / "train.log",
        target=lambda: submitit_task(sweep),
        pause=0.5,
    )
    assert result.returncode == 0, result.stdout
    return sweep


def test_a_preempted_submitit_job_is_requeued_and_continues_from_last_ckpt(
    list_dataset: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """SIGUSR2 is what submitit sends before a time limit or on preemption: the job stops at
    the end of an epoch, submitit requeues it, and the requeued job continues from its own
    last.ckpt by itself, ending exactly as a job never interrupted."""
    sweep = preempt_submitit_sweep(list_dataset, tmp_path, "submitit_local")
    text = (sweep / "0" / "train.log").read_text()
    assert "SIGUSR2 received" in text and "requeued after an interruption" in text
    requeued = json.loads((sweep / "0" / "metrics.json").read_text())
    assert requeued["status"] == "finished" and requeued["epochs_completed"] == 800
    # Uninterrupted, the same job ends with the same numbers.
    single = run_training(tmp_path, *REQUEUED_RUN[:-1], "seed=1", data=list_dataset).folder
    uninterrupted = json.loads((single / "metrics.json").read_text())
    for key in ("val_acc", "best_val_acc", "test_acc", "train_loss"):
        assert requeued[key] == uninterrupted[key], key


def test_sigterm_during_pretraining_says_nothing_can_be_continued_yet(
    list_dataset: Path, tmp_path: Path, cache_dir: Path
) -> None:
    pretraining = [
        "pretrain=synthetic",
        "pretrain.epochs=100000",
        "pretrain.data.train_per_class=4",
        "pretrain.data.validation_per_class=1",
        "pretrain.data.test_per_class=1",
        "pretrain.data.image_size=40",
    ]
    args = [*list_data(list_dataset), *LONG, *pretraining]
    result = start_and_signal(args, tmp_path, signal.SIGTERM)
    assert result.returncode == 143, result.stdout
    assert "during pre-training; no checkpoint yet: run the command again" in result.stdout
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["resume"] is None
    assert record["epochs_completed"] == 0
    assert not (run / "checkpoints" / "last.ckpt").exists()


def test_an_interrupted_ensemble_continues_as_a_whole_and_is_joined_again(
    list_dataset: Path, tmp_path: Path, cache_dir: Path
) -> None:
    result = start_and_signal(
        [*list_data(list_dataset), *LONG, "ensemble=2"], tmp_path, signal.SIGTERM
    )
    assert result.returncode == 143, result.stdout
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    command = f"python -m letters.train resume={run.relative_to(tmp_path)}"
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["resume"] == command
    done = record["epochs_completed"]
    for member in ("0", "1"):
        member_record = json.loads((run / "members" / member / "metrics.json").read_text())
        assert member_record["resume"] == command
    # The command it gives continues both members from their last.ckpt, then joins them.
    output = run_cli(
        "train", f"resume={run.relative_to(tmp_path)}", f"epochs={done + 2}", cwd=tmp_path
    )
    assert "2 members from their last.ckpt" in output.stdout + output.stderr
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "finished" and record["ensemble"] == 2
    assert [m["epochs_completed"] for m in record["members"]] == [done + 2] * 2
    assert (run / "checkpoints" / "best.ckpt").is_file()
    # Asked again, nothing is left to train: only the join is redone, with the same result.
    again = run_cli(
        "train", f"resume={run.relative_to(tmp_path)}", f"epochs={done + 2}", cwd=tmp_path
    )
    assert "0 members from their last.ckpt, 0 from the start, 2 finished before" in (
        again.stdout + again.stderr
    )
    assert json.loads((run / "metrics.json").read_text())["test_acc"] == record["test_acc"]
