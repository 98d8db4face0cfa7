"""debug=fast | overfit | profiler (conf/debug/), as users of the Lightning-Hydra template
know them: each is one override on top of any other (data=..., lr=...)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from conftest import run_cli


def debug_run(tmp_path: Path, name: str) -> Path:
    """The run's directory: debug runs are kept apart, in outputs/debug/runs/."""
    assert not (tmp_path / "outputs" / "runs").exists()
    (run,) = (tmp_path / "outputs" / "debug" / "runs").iterdir()
    assert run.name.endswith(f"_{name}")
    return run


def test_fast_is_a_smoke_test(list_dataset: Path, tmp_path: Path, cache_dir: Path) -> None:
    """One epoch of two training chunks (here 2 x 1 step) and one validation batch, no
    pictures; the run is still tested and recorded."""
    run_cli(
        "train",
        "debug=fast",
        "data=list",
        f"data.root={list_dataset}",
        "steps_per_call=1",
        cwd=tmp_path,
    )
    run = debug_run(tmp_path, "fast")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert metrics["epochs_completed"] == 1
    assert metrics["test_acc"] is not None and metrics["val_acc"] is not None
    assert not (run / "pictures").exists()
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2  # limit_train_batches: 2 of the 13 chunks


def test_fast_on_the_synthetic_data(tmp_path: Path, cache_dir: Path) -> None:
    """The default data (here rendered small, to stay fast)."""
    small = [f"data.{split}_per_class=1" for split in ("train", "validation", "test")]
    run_cli("train", "debug=fast", *small, cwd=tmp_path)
    metrics = json.loads((debug_run(tmp_path, "fast") / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_completed"] == 1


def test_overfit_learns_its_few_images(list_dataset: Path, tmp_path: Path, cache_dir: Path) -> None:
    """64 fixed training images, 100 epochs: the training loss falls to near 0 and the
    model classifies those images (letters.test split=train, on the same 64) correctly."""
    result = run_cli(
        "train",
        "debug=overfit",
        "data=list",
        f"data.root={list_dataset}",
        "pictures=false",
        cwd=tmp_path,
    )
    assert "ListDataModule (train 64, validation 52, test 52 images" in result.stdout
    run = debug_run(tmp_path, "overfit")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_completed"] == 100
    history = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["history"][0]
    first, last = history["train_loss"][0], history["train_loss"][-1]
    assert last < 0.05 * first and last < 0.1, (first, last)
    out = tmp_path / "on-train"
    tested = run_cli(
        "test",
        f"ckpt={run}/checkpoints/last.ckpt",
        "split=train",
        f"out={out}",
        "pictures=false",
        cwd=tmp_path,
    )
    accuracy = json.loads((out / "metrics.json").read_text())
    assert accuracy["count"] == 64 and accuracy["accuracy"] >= 0.95, tested.stdout


def test_profiler_prints_where_the_time_goes(
    list_dataset: Path, tmp_path: Path, cache_dir: Path
) -> None:
    result = run_cli(
        "train", "debug=profiler", "data=list", f"data.root={list_dataset}", cwd=tmp_path
    )
    output = result.stdout + result.stderr
    assert "FIT Profiler Report" in output
    table = output[output.index("FIT Profiler Report") :]
    assert re.search(r"\|\s*Action\s*\|\s*Mean duration \(s\)", table)
    assert re.search(r"\|\s*run_training_epoch\s*\|", table)
    assert "Total" in table
    metrics = json.loads((debug_run(tmp_path, "profiler") / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_completed"] == 3


@pytest.mark.parametrize("name", ["fast", "overfit", "profiler", "default"])
def test_each_debug_config_composes_over_any_data(name: str, tmp_path: Path) -> None:
    """--cfg job: the debug keys win over train.yaml's and an experiment's."""
    result = run_cli(
        "train",
        f"debug={name}",
        "experiment=best",
        "data=list",
        "data.root=x",
        "--cfg",
        "job",
        cwd=tmp_path,
    )
    epochs = re.search(r"^epochs: (\d+)$", result.stdout, re.MULTILINE)
    assert epochs and int(epochs.group(1)) == {"overfit": 100, "profiler": 3}.get(name, 1)


def test_a_bad_train_limit_is_one_line(list_dataset: Path, tmp_path: Path, cache_dir: Path) -> None:
    result = run_cli(
        "train",
        "debug=overfit",
        "data=list",
        f"data.root={list_dataset}",
        "data.train_limit=0",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: data.train_limit=0: a number of training images (1 or more), or null for all "
        "of them"
    )
