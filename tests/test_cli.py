"""The command line as users type it: a run's files, test and predict on its checkpoint, a
multirun, and one clear line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import SMALL, list_data, run_cli, run_training


@pytest.fixture(scope="module")
def trained_run(list_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real training run on the tiny list data, shared by the tests that read its files."""
    result = run_training(tmp_path_factory.mktemp("run"), *SMALL, data=list_dataset)
    run_dir = result.folder
    assert f"outputs: outputs/runs/{run_dir.name}" in result.stdout
    assert f"tensorboard --logdir outputs/runs/{run_dir.name}" in result.stdout
    return run_dir


def test_a_run_leaves_config_logs_checkpoints_and_metrics(trained_run: Path) -> None:
    assert (trained_run / "config.yaml").is_file()
    assert (trained_run / "checkpoints" / "best.ckpt").is_file()
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert list((trained_run / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    for key in ("val_acc", "test_acc", "best_val_acc"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["train_loss"] > 0 and metrics["epochs_completed"] == 2
    assert metrics["params"]["optimizer"] == "sgd" and metrics["params"]["lr"] == 5e-4


def test_tensorboard_has_losses_accuracies_and_hparams(trained_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in (trained_run / "tensorboard").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"loss/train", "accuracy/val", "accuracy/best_val", "loss/val", "accuracy/test"} <= tags
    assert not [tag for tag in tags if tag.startswith("hparams/")]  # no copies of the metrics


def test_test_command_reproduces_the_runs_test_accuracy(trained_run: Path, list_dataset) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    result = run_cli("test", f"ckpt={ckpt}", "pictures=false", cwd=trained_run)
    out_dir = trained_run / "test" / f"best-{list_dataset.name}-test"
    written = json.loads((out_dir / "metrics.json").read_text())
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert written["accuracy"] == pytest.approx(metrics["test_acc"], abs=1e-6)
    assert f"test accuracy {100 * written['accuracy']:.2f}%" in result.stdout


def test_test_command_other_split(trained_run: Path, list_dataset: Path) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    run_cli("test", f"ckpt={ckpt}", "split=validation", "pictures=false", cwd=trained_run)
    out_dir = trained_run / "test" / f"best-{list_dataset.name}-validation"
    written = json.loads((out_dir / "metrics.json").read_text())
    assert written["count"] == 26 * 2 and written["split"] == "validation"


def test_predict_prints_a_letter_per_image_and_reports_bad_ones(
    trained_run: Path, list_dataset: Path, tmp_path: Path
) -> None:
    good = next((list_dataset / "images").iterdir())
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (60, 80), (10, 10, 10, 200)).save(rgba)
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    result = run_cli(
        "predict",
        f"ckpt={ckpt}",
        f"images=[{good},{tmp_path / 'missing.png'},{rgba}]",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, path in zip(lines, (good, rgba), strict=True):
        prefix, rest = line.rsplit(": ", 1)
        assert prefix == str(path)
        letter, confidence = rest.split(" ")
        assert letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" and 0 < float(confidence.strip("()")) <= 1
    assert result.stderr.strip() == f"error: {tmp_path / 'missing.png'}: image file not found"


def test_checkpoint_alone_rebuilds_model(trained_run: Path) -> None:
    from letters.engine.checkpoint import load_classifier

    model = load_classifier(trained_run / "checkpoints" / "best.ckpt")
    assert model.hparams.norm_size == 32 and model.hparams.classes == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert model(torch.zeros(3, 1024)).shape == (3, 26)


def test_default_main_job_on_synthetic_data(tmp_path: Path, cache_dir: Path) -> None:
    """`python -m letters.train` with no data argument trains on the embedded synthetic data."""
    small = ["data.train_per_class=3", "data.validation_per_class=1", "data.test_per_class=1"]
    run_dir = run_training(
        tmp_path, *small, *SMALL, "optimizer=adam", "hidden_sizes=[16,16]"
    ).folder
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["params"]["data"] == "SyntheticDataModule"
    assert metrics["params"]["optimizer"] == "adam" and metrics["params"]["hidden_sizes"] == "16,16"


def test_multirun_gives_each_job_its_directory(sweep_here) -> None:
    sweep = sweep_here("epochs=1", "val_interval=1", "momentum=0.9,0.95").folder
    momenta = sorted(
        json.loads((job / "metrics.json").read_text())["params"]["momentum"]
        for job in sweep.iterdir()
        if (job / "metrics.json").exists()
    )
    assert momenta == [0.9, 0.95]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("activation=swish", "activation='swish' is not one of: none, relu, sigmoid, tanh"),
        ("lr=0", "lr=0 must be > 0"),
        ("momentum=1.0", "momentum=1.0 must be >= 0 and < 1"),
        ("weight_decay=-1", "weight_decay=-1 must be >= 0"),
        (
            "hidden_sizes=[32,0]",
            "hidden_sizes=[32, 0] must be a list of whole numbers > 0, e.g. [64,32]",
        ),
        ("batch_size=0", "batch_size=0 must be >= 1"),
        ("data.root=/no/such/folder", "/no/such/folder: data folder not found"),
    ],
)
def test_bad_input_ends_in_one_line(tmp_path: Path, cache_dir: Path, override: str, message: str):
    result = run_cli("train", "data=list", "data.root=.", override, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert "Traceback" not in result.stderr
    assert not (cache_dir.exists() and any(cache_dir.iterdir()))


def test_foreign_checkpoint_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00garbage")
    result = run_cli("predict", f"ckpt={bad}", "images=[x.png]", cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"error: {bad}: not a readable checkpoint")
    assert len(result.stderr.strip().splitlines()) == 1


def test_test_command_on_data_given_on_the_command_line(
    trained_run: Path, list_dataset: Path
) -> None:
    """`letters.test ckpt=... data=list data.root=DIR`, as the README shows it."""
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    result = run_cli(
        "test",
        f"ckpt={ckpt}",
        "data=list",
        f"data.root={list_dataset}",
        "pictures=false",
        cwd=trained_run,
    )
    out_dir = trained_run / "test" / f"best-{list_dataset.name}-test"
    written = json.loads((out_dir / "metrics.json").read_text())
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert written["accuracy"] == pytest.approx(metrics["test_acc"], abs=1e-6)
    assert "test accuracy" in result.stdout


def test_the_progress_bar_counts_optimizer_steps_and_epochs_from_one(
    list_dataset: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """On a terminal (forced on here): epochs from 1, one bar over the whole fit in optimizer
    steps (104 images / 16 = 7 an epoch, 14 in all), the training loss and the validation
    accuracy on the bar."""
    data = [*list_data(list_dataset), "epochs=2", "batch_size=16"]
    result = run_cli(
        "train",
        *data,
        "val_interval=1",
        "pictures=false",
        "trainer.enable_progress_bar=true",
        cwd=tmp_path,
    )
    bar = result.stderr.replace("\r", "\n")
    assert "Epoch 1/2" in bar and "Epoch 2/2" in bar and "Epoch 0/" not in bar
    assert "7/14" in bar and "14/14" in bar and "step/s" in bar
    assert "loss=" in bar and "val_acc=" in bar
