"""ensemble=K: one run of K members trained as one stack, one checkpoint holding them all, and
every evaluation (the run's, letters.test, letters.predict) averaging their probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli, run_training

FAST = ["epochs=3", "batch_size=16", "val_interval=1", "pictures=false"]


@pytest.fixture(scope="module")
def ensemble_run(list_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("ensemble")
    settings = [*FAST, "seed=4"]
    run_training(work, *settings, "ensemble=3", "hydra.run.dir=outputs/ensemble", data=list_dataset)
    run_training(work, *settings, "hydra.run.dir=outputs/alone", data=list_dataset)
    return work / "outputs"


def test_an_ensemble_run_records_itself_and_each_member(ensemble_run: Path) -> None:
    record = json.loads((ensemble_run / "ensemble" / "metrics.json").read_text())
    assert record["status"] == "finished" and record["ensemble"] == 3
    assert [m["seed"] for m in record["members"]] == [4, 4 + 10007, 4 + 20014]
    assert all(m["status"] == "finished" for m in record["members"])
    # Member 0 is the run with the same seed alone (trained in the same stack, same numbers).
    alone = json.loads((ensemble_run / "alone" / "metrics.json").read_text())
    for key in ("val_acc", "best_val_acc", "test_acc"):
        assert record["members"][0][key] == pytest.approx(alone[key], abs=1e-6), key


def test_the_ensemble_is_the_mean_of_its_members_probabilities(
    ensemble_run: Path, list_dataset: Path
) -> None:
    from letters.data import ListDataModule
    from letters.engine.checkpoint import load_classifier

    run = ensemble_run / "ensemble"
    record = json.loads((run / "metrics.json").read_text())
    joined = load_classifier(run / "checkpoints" / "best.ckpt")
    assert joined.stack_size == 3
    data = ListDataModule(root=str(list_dataset), cache_dir=str(ensemble_run / "c")).prepare()
    inputs, labels = data.splits["test"]
    with torch.no_grad():
        probabilities = torch.stack(
            [
                load_classifier(run / "members" / str(i) / "checkpoints" / "best.ckpt")(
                    inputs
                ).softmax(dim=-1)
                for i in range(3)
            ]
        ).mean(dim=0)
    by_hand = float((probabilities.argmax(dim=-1) == labels).float().mean())
    assert record["test_acc"] == pytest.approx(by_hand)
    # letters.test and letters.predict read the joined checkpoint as one model.
    result = run_cli("test", f"ckpt={run / 'checkpoints' / 'best.ckpt'}", "pictures=false", cwd=run)
    assert f"test accuracy {100 * by_hand:.2f}%" in result.stdout
    image = next((list_dataset / "images").iterdir())
    predicted = run_cli(
        "predict", f"ckpt={run / 'checkpoints' / 'best.ckpt'}", f"images=[{image}]", cwd=run
    )
    assert f"{image}: " in predicted.stdout


def test_ensembles_of_a_sweep_train_as_one_stack(sweep_here, tmp_path: Path) -> None:
    args = [*FAST, "seed=1,2", "ensemble=2"]
    result = sweep_here(*args, "hydra/launcher=stacked", "hydra.sweep.dir=s")
    assert "a stack of 4 runs" in result.stdout + result.stderr
    for job in ("0", "1"):
        record = json.loads((tmp_path / "s" / job / "metrics.json").read_text())
        assert record["ensemble"] == 2 and len(record["members"]) == 2
    report = run_cli("report", str(tmp_path / "s"), cwd=tmp_path)
    assert "2 of 2 runs in the table" in report.stdout  # each ensemble is one run of it
