"""Pictures a run and a test leave: valid PNGs, a confusion matrix that adds up, and the
TensorBoard projector's files where TensorBoard looks for them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import run_cli
from letters.reporting.pictures import confusion_counts

TINY = ["epochs=2", "val_interval=1", "batch_size=16"]


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} missing"
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and min(image.size) >= 200


@pytest.fixture(scope="module")
def pictured_run(list_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    work = tmp_path_factory.mktemp("pictures")
    os.environ["LETTERS_CACHE_DIR"] = str(work / "cache")
    run_cli("train", "data=list", f"data.root={list_dataset}", *TINY, cwd=work)
    (run_dir,) = (work / "outputs" / "runs").iterdir()
    return run_dir


def test_a_run_saves_every_picture(pictured_run: Path) -> None:
    for name in ("learning_curves", "confusion_matrix", "mistakes", "tsne"):
        assert_png(pictured_run / "pictures" / f"{name}.png")


def test_pictures_and_projector_are_in_tensorboard(pictured_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = pictured_run / "tensorboard"
    images: set[str] = set()
    for events in logs.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        images |= set(accumulator.Tags()["images"])
    assert {"pictures/confusion_matrix", "pictures/mistakes", "pictures/tsne"} <= images
    config = (logs / "projector_config.pbtxt").read_text()
    (embedding_dir,) = {path.parent for path in logs.rglob("tensors.tsv")}
    relative = embedding_dir.relative_to(logs).as_posix()
    assert f'metadata_path: "{relative}/metadata.tsv"' in config
    assert f'image_path: "{relative}/sprite.png"' in config
    metadata = (embedding_dir / "metadata.tsv").read_text().splitlines()
    assert metadata[0] == "letter\tpredicted" and len(metadata) == 1 + 26 * 2
    assert len((embedding_dir / "tensors.tsv").read_text().splitlines()) == 26 * 2
    with Image.open(embedding_dir / "sprite.png") as sprite:
        assert sprite.size[0] == sprite.size[1] >= 32 * 8


def test_test_command_draws_the_same_pictures(pictured_run: Path, list_dataset: Path) -> None:
    ckpt = pictured_run / "checkpoints" / "last.ckpt"
    result = run_cli("test", f"ckpt={ckpt}", "split=validation", cwd=pictured_run)
    out_dir = pictured_run / "test" / f"last-{list_dataset.name}-validation"
    for name in ("learning_curves", "confusion_matrix", "mistakes", "tsne"):
        assert_png(out_dir / f"{name}.png")
    assert (out_dir / "tensorboard" / "projector_config.pbtxt").is_file()
    assert f"pictures: {out_dir}" in result.stdout


def test_predict_can_annotate(pictured_run: Path, list_dataset: Path, tmp_path: Path) -> None:
    images = sorted((list_dataset / "images").iterdir())[:3]
    out = tmp_path / "annotated.png"
    ckpt = pictured_run / "checkpoints" / "best.ckpt"
    paths = ",".join(str(path) for path in images)
    result = run_cli(
        "predict", f"ckpt={ckpt}", f"images=[{paths}]", f"annotate={out}", cwd=tmp_path
    )
    assert_png(out)
    assert f"annotated: {out}" in result.stdout


def test_confusion_matrix_counts_every_image_once() -> None:
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 25])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2, 25])
    counts = confusion_counts(labels, predicted, 26)
    assert counts.shape == (26, 26) and counts.sum() == len(labels)
    assert counts[0, 0] == 1 and counts[0, 1] == 1 and counts[2, 2] == 2 and counts[2, 0] == 1
    assert list(counts.sum(axis=1)[:3]) == [2, 1, 3] and counts.trace() == 5
