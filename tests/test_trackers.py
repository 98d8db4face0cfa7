"""Other trackers users already have, through Lightning's own loggers: each receives the same
scalars, hyper-parameters and final metrics, alone or several at once, one run per member."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from conftest import SMALL, run_sweep, run_training, sweep_jobs


@pytest.fixture(scope="module")
def tracked_sweep(list_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stack of two (seed=1,2) logging to all four trackers at once."""
    work = tmp_path_factory.mktemp("trackers")
    run_sweep(
        work,
        *SMALL,
        "seed=1,2",
        "hydra/launcher=stacked",
        "logger=[tensorboard,csv,mlflow,wandb]",
        "hydra.sweep.dir=outputs/sweeps/tracked",
        data=list_dataset,
    )
    return work


def test_csv_gets_the_scalars_hyperparameters_and_final_metrics(tracked_sweep: Path) -> None:
    for job in sweep_jobs(tracked_sweep / "outputs" / "sweeps" / "tracked"):
        record = json.loads((job / "metrics.json").read_text())
        with open(job / "csv" / "metrics.csv") as handle:
            rows = list(csv.DictReader(handle))
        last = {}
        for row in rows:
            last.update({key: float(value) for key, value in row.items() if value})
        # Accuracy in percent, as the console says it; metrics.json keeps the fraction.
        assert last["accuracy/test"] == pytest.approx(100 * record["test_acc"], rel=1e-6)
        assert last["accuracy/val"] == pytest.approx(100 * record["val_acc"], rel=1e-6)
        assert last["loss/train"] == pytest.approx(record["train_loss"], rel=1e-6)
        assert {"accuracy/best_val", "loss/val", "loss/test"} <= set(last)
        hparams = yaml.safe_load((job / "csv" / "hparams.yaml").read_text())
        assert hparams["seed"] == record["params"]["seed"] and hparams["optimizer"] == "sgd"


def test_mlflow_gets_one_run_per_job_named_by_what_the_sweep_varies(tracked_sweep: Path) -> None:
    """The local store under outputs/mlruns: a run per job, its params and metrics."""
    store = tracked_sweep / "outputs" / "mlruns"
    runs = {}
    for run in store.glob("*/*/"):
        if (run / "tags" / "mlflow.runName").is_file():
            runs[(run / "tags" / "mlflow.runName").read_text()] = run
    assert set(runs) == {"seed=1", "seed=2"}
    for job in sweep_jobs(tracked_sweep / "outputs" / "sweeps" / "tracked"):
        record = json.loads((job / "metrics.json").read_text())
        run = runs[f"seed={record['params']['seed']}"]
        assert (run / "tags" / "run_dir").read_text() == str(job)
        test_acc = float((run / "metrics" / "accuracy" / "test").read_text().split()[1])
        assert test_acc == pytest.approx(100 * record["test_acc"], rel=1e-6)
        assert (run / "params" / "momentum").read_text() == "0.9"
        assert {"train", "val", "test"} <= {p.name for p in (run / "metrics" / "loss").iterdir()}
        assert "status: 3\n" in (run / "meta.yaml").read_text()  # RunStatus.FINISHED


def test_wandb_runs_offline_one_run_per_member(tracked_sweep: Path) -> None:
    for job in sweep_jobs(tracked_sweep / "outputs" / "sweeps" / "tracked"):
        (run,) = (job / "wandb").glob("offline-run-*")
        (data,) = run.glob("run-*.wandb")
        content = data.read_bytes()
        for key in (b"loss/train", b"accuracy/val", b"accuracy/test", b"momentum"):
            assert key in content, key


def test_tensorboard_names_runs_by_what_the_sweep_varies(tracked_sweep: Path) -> None:
    names = {
        str(events.parent.relative_to(tracked_sweep / "outputs" / "sweeps" / "tracked"))
        for events in (tracked_sweep / "outputs" / "sweeps" / "tracked").rglob("events.out.*")
    }
    assert names == {"0/tensorboard/seed=1", "1/tensorboard/seed=2"}


def test_csv_alone_still_draws_pictures(list_dataset: Path, tmp_path: Path, cache_dir) -> None:
    """Without TensorBoard, pictures are PNG files only; no tensorboard/ folder appears."""
    run = run_training(
        tmp_path, "epochs=1", "batch_size=16", "logger=csv", data=list_dataset
    ).folder
    assert (run / "csv" / "metrics.csv").is_file() and not (run / "tensorboard").exists()
    assert {p.name for p in (run / "pictures").glob("*.png")} >= {"confusion_matrix.png"}
