"""The data path: the list layout decoded like the reference, cached, and bad data reported
in one line that names the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from letters.common.errors import LettersError
from letters.data import ListDataModule, MemberBatches, SyntheticDataModule, TensorBatches
from letters.data import list_layout as list_layout_module
from letters.data.images import label_index, load_grey


def copy_dataset(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_list_layout_decodes_like_the_reference(list_dataset: Path, tmp_path: Path) -> None:
    data = ListDataModule(root=str(list_dataset), cache_dir=str(tmp_path)).prepare()
    inputs, labels = data.splits["train"]
    assert inputs.shape == (26 * 4, 32 * 32) and inputs.dtype == torch.float32
    assert inputs.min() >= -1 and inputs.max() <= 1
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(26))
    # The first image by hand: grey, 32x32, (x/255 - 0.5) * 2.
    name = next(iter(json.loads((list_dataset / "train.json").read_text())))
    grey = np.asarray(
        Image.open(list_dataset / "images" / name)
        .convert("L")
        .resize((32, 32), Image.Resampling.BILINEAR)
    )
    expected = torch.from_numpy((grey / 255.0 - 0.5) * 2).float().flatten()
    torch.testing.assert_close(inputs[0], expected, atol=2 / 255, rtol=0)


def test_labels_are_case_insensitive() -> None:
    assert label_index("g", "x") == label_index("G", "x") == 6
    for bad in ("", "GG", "1", 5, None, "é"):
        with pytest.raises(LettersError, match="is not a single letter"):
            label_index(bad, "train.json: 1.png")


def test_second_load_decodes_nothing(list_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    ListDataModule(root=str(list_dataset), cache_dir=str(tmp_path)).prepare()

    def fail(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(list_layout_module, "load_grey", fail)
    again = ListDataModule(root=str(list_dataset), cache_dir=str(tmp_path)).prepare()
    assert len(again.splits["test"][1]) == 26 * 2


def test_changed_image_is_decoded_again(list_dataset: Path, tmp_path: Path) -> None:
    root = copy_dataset(list_dataset, tmp_path / "data")
    first = ListDataModule(root=str(root), cache_dir=str(tmp_path / "c")).prepare()
    name = next(iter(json.loads((root / "test.json").read_text())))
    Image.new("L", (40, 40), 255).save(root / "images" / name)
    second = ListDataModule(root=str(root), cache_dir=str(tmp_path / "c")).prepare()
    assert not torch.equal(first.splits["test"][0], second.splits["test"][0])
    assert torch.all(second.splits["test"][0][0] == 1.0)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda root: shutil.rmtree(root / "images"), "images folder not found"),
        (lambda root: (root / "validation.json").unlink(), "validation.json: split file not found"),
        (lambda root: (root / "test.json").write_text("{oops"), "test.json: not valid JSON"),
        (lambda root: (root / "test.json").write_text("{}"), "the test split is empty"),
        (lambda root: (root / "test.json").write_text('{"x.png": "AB"}'), "is not a single letter"),
        (
            lambda root: (root / "test.json").write_text('{"x.png": "A"}'),
            "x.png: image file not found",
        ),
    ],
)
def test_bad_data_is_named_in_one_line(list_dataset, tmp_path, breakage, message) -> None:
    root = copy_dataset(list_dataset, tmp_path / "data")
    breakage(root)
    with pytest.raises(LettersError, match=message) as caught:
        ListDataModule(root=str(root), cache_dir=str(tmp_path / "cache")).prepare()
    assert "\n" not in str(caught.value)
    assert not list((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True


def test_unreadable_image_is_named(list_dataset: Path, tmp_path: Path) -> None:
    root = copy_dataset(list_dataset, tmp_path / "data")
    name = next(iter(json.loads((root / "train.json").read_text())))
    (root / "images" / name).write_bytes(b"not an image at all")
    with pytest.raises(LettersError, match=f"{name}: not an image"):
        ListDataModule(root=str(root), cache_dir=str(tmp_path / "cache")).prepare()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA", "I;16", "CMYK", "1"])
def test_any_image_mode_becomes_grey(tmp_path: Path, mode: str) -> None:
    path = tmp_path / ("image.tif" if mode == "CMYK" else "image.png")
    Image.new("RGB", (50, 30), (200, 100, 50)).convert(mode).save(path)
    grey = load_grey(path, 32)
    assert grey.shape == (32, 32) and grey.dtype == np.uint8


def test_transparent_pixels_are_laid_on_white(tmp_path: Path) -> None:
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_grey(tmp_path / "clear.png", 8).min() == 255


@pytest.mark.parametrize("size", [(1, 1), (3000, 2000)])
def test_tiny_and_huge_images_work(tmp_path: Path, size: tuple[int, int]) -> None:
    Image.new("L", size, 90).save(tmp_path / "image.jpg")
    assert load_grey(tmp_path / "image.jpg", 32).shape == (32, 32)


def test_member_batches_cover_the_split_and_reshuffle_by_seed_and_epoch() -> None:
    """Each member sees the whole split once per epoch in an order of its own seed and the
    epoch alone: the same member seed gives the same order in any stack."""
    inputs, labels = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    epoch = [0]
    batches = MemberBatches(inputs, labels, 2, 2, seeds=[1, 2, 1], epoch=lambda: epoch[0])
    assert len(batches) == 3  # chunks of 2 mini-batches of 2 rows
    chunks = list(batches)
    assert all(chunk.batch_size == 2 for chunk in chunks)
    order = torch.cat([chunk.labels for chunk in chunks], dim=1)  # [members, 10]
    for member in range(3):
        assert sorted(order[member].tolist()) == list(range(10))
    assert torch.equal(order[0], order[2]) and not torch.equal(order[0], order[1])
    alone = torch.cat([c.labels for c in MemberBatches(inputs, labels, 2, 5, [2], lambda: 0)], 1)
    assert torch.equal(alone[0], order[1])
    epoch[0] = 1
    assert not torch.equal(order, torch.cat([chunk.labels for chunk in batches], dim=1))
    for chunk in batches:
        assert torch.equal(chunk.inputs.squeeze(2).long(), chunk.labels)  # images keep labels
        sizes = [len(labels[0]) for _, labels in chunk.mini_batches(chunk.inputs)]
        assert sizes in ([2, 2], [2])


def test_evaluation_batches_are_the_split_in_order() -> None:
    inputs, labels = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    batches = TensorBatches(inputs, labels, 4)
    assert len(batches) == 3
    assert torch.cat([y for _, y in batches]).tolist() == list(range(10))


def test_synthetic_data_is_cached_and_resized(tmp_path: Path) -> None:
    kwargs = dict(
        train_per_class=2, validation_per_class=1, test_per_class=1, cache_dir=str(tmp_path)
    )
    data = SyntheticDataModule(norm_size=16, **kwargs).prepare()
    assert data.splits["train"][0].shape == (52, 256)
    assert len(list(tmp_path.glob("synthetic-*.pt"))) == 1
    again = SyntheticDataModule(norm_size=16, **kwargs).prepare()
    assert torch.equal(data.splits["validation"][0], again.splits["validation"][0])
