"""pretrain=synthetic|emnist: every member first trains on other letters, then on the real data
with a fresh optimizer; the run's records, curves and checkpoints are the real data's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import SMALL, list_data, run_cli, run_training

FAST = [*SMALL, "seed=3"]
# A tiny synthetic set to pre-train on (26 x 4 rendered letters), in the test's own cache.
PRETRAIN = [
    "pretrain=synthetic",
    "pretrain.epochs=2",
    "pretrain.data.train_per_class=4",
    "pretrain.data.validation_per_class=1",
    "pretrain.data.test_per_class=1",
    "pretrain.data.image_size=40",
]


@pytest.fixture(scope="module")
def runs(list_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same seed trained with and without pre-training, and as member 0 of an ensemble
    of two pre-trained members (one stack)."""
    work = tmp_path_factory.mktemp("pretrain")
    for name, overrides in (
        ("pretrained", PRETRAIN),
        ("plain", []),
        ("ensemble", [*PRETRAIN, "ensemble=2"]),
    ):
        run_training(work, *FAST, *overrides, f"hydra.run.dir=outputs/{name}", data=list_dataset)
    return work


def test_pretraining_comes_first_and_the_records_are_the_real_datas(runs: Path) -> None:
    run = runs / "outputs" / "pretrained"
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "finished"
    assert record["pretrained"]["data"] == "synthetic"
    assert record["pretrained"]["epochs"] == 2
    assert record["epochs_completed"] == 2  # the real data's epochs, counted from 1
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["history"][0]["epoch"] == [1, 2]
    assert last["history"][0]["val_epoch"] == [1, 2]
    log = (run / "train.log").read_text()
    assert log.index("pre-trained: 2 epochs of synthetic") < log.index("finished:")


def test_pretraining_changes_what_the_real_data_starts_from(runs: Path) -> None:
    def weights(name: str) -> torch.Tensor:
        path = runs / "outputs" / name / "checkpoints" / "last.ckpt"
        state = torch.load(path, weights_only=True)["state_dict"]
        return torch.cat([tensor.flatten() for tensor in state.values()])

    assert not torch.allclose(weights("pretrained"), weights("plain"))
    plain = json.loads((runs / "outputs" / "plain" / "metrics.json").read_text())
    assert "pretrained" not in plain


def test_a_pretrained_member_of_a_stack_is_the_run_alone(runs: Path) -> None:
    """Each member pre-trains with its own seed's batches and augmentation, in a stack as alone."""
    alone = json.loads((runs / "outputs" / "pretrained" / "metrics.json").read_text())
    ensemble = json.loads((runs / "outputs" / "ensemble" / "metrics.json").read_text())
    member = ensemble["members"][0]
    for key in ("val_acc", "best_val_acc", "test_acc"):
        assert member[key] == pytest.approx(alone[key], abs=1e-6), key
    member_record = json.loads(
        (runs / "outputs" / "ensemble" / "members" / "0" / "metrics.json").read_text()
    )
    assert member_record["pretrained"]["epochs"] == 2


def test_a_resumed_run_does_not_pretrain_again(runs: Path, list_dataset: Path) -> None:
    run = runs / "outputs" / "pretrained"
    result = run_cli("train", f"resume={run}", "epochs=3", cwd=runs)
    assert "pre-train" not in result.stdout + result.stderr
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "finished" and record["epochs_completed"] == 3


def write_fake_emnist(root: Path) -> None:
    """EMNIST letters' raw files (idx format, images stored transposed, labels 1..26), made of
    rendered letters: 26 x 3 for training, 26 x 1 for its test split."""
    import struct

    from letters.data.synthetic import render_letters

    raw = root / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    for split, count in (("train", 3), ("test", 1)):
        images, labels = render_letters(count, 28, seed=7)
        prefix = raw / f"emnist-letters-{split}"
        header = struct.pack(">IIII", 0x803, len(images), 28, 28)
        prefix.with_name(prefix.name + "-images-idx3-ubyte").write_bytes(
            header + images.transpose(1, 2).contiguous().numpy().tobytes()
        )
        prefix.with_name(prefix.name + "-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x801, len(labels)) + (labels + 1).to(torch.uint8).numpy().tobytes()
        )


def test_pretraining_on_emnist_when_it_is_there(
    list_dataset: Path, tmp_path: Path, cache_dir: Path
) -> None:
    emnist = tmp_path / "emnist"
    write_fake_emnist(emnist)
    emnist_args = [
        "pretrain=emnist",
        f"pretrain.data.root={emnist}",
        "pretrain.data.download=false",
    ]
    run = run_training(tmp_path, *FAST, "hydra.run.dir=run", *emnist_args, data=list_dataset)
    record = json.loads((run.folder / "metrics.json").read_text())
    assert record["status"] == "finished" and record["pretrained"]["data"] == "emnist"
    assert record["params"]["pretrain"] == "emnist x1"


def test_pretraining_on_emnist_that_is_not_there_says_where_to_put_it(
    list_dataset: Path, tmp_path: Path, cache_dir: Path
) -> None:
    data = [*list_data(list_dataset), *FAST]
    missing = [
        "pretrain=emnist",
        f"pretrain.data.root={tmp_path}/none",
        "pretrain.data.download=false",
    ]
    result = run_cli("train", *data, *missing, cwd=tmp_path, check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {tmp_path}/none/EMNIST/raw: EMNIST letters not found")


def test_pretraining_epochs_must_be_a_whole_number_above_zero(
    list_dataset: Path, tmp_path: Path, cache_dir: Path
) -> None:
    data = [*list_data(list_dataset), *FAST]
    result = run_cli("train", *data, *PRETRAIN, "pretrain.epochs=0", cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: pretrain.epochs=0 must be >= 1"
