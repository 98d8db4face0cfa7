"""Tests of the embedded synthetic letter data set: shape, balance, reproducibility, realism."""

import pytest
import torch

import letters.data.synthetic as synthetic
from letters.data.synthetic import render_letters

COUNT_PER_CLASS = 4
IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def rendered() -> tuple[torch.Tensor, torch.Tensor]:
    """Render once per module: every test below inspects the same small set."""
    return render_letters(COUNT_PER_CLASS, IMAGE_SIZE, seed=0)


def test_shapes_and_dtypes(rendered: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = rendered
    assert images.shape == (26 * COUNT_PER_CLASS, IMAGE_SIZE, IMAGE_SIZE)
    assert images.dtype == torch.uint8
    assert labels.shape == (26 * COUNT_PER_CLASS,)
    assert labels.dtype == torch.int64


def test_exactly_count_per_class_in_shuffled_order(
    rendered: tuple[torch.Tensor, torch.Tensor],
) -> None:
    _, labels = rendered
    assert int(labels.min()) >= 0 and int(labels.max()) <= 25
    assert torch.bincount(labels, minlength=26).tolist() == [COUNT_PER_CLASS] * 26
    assert not torch.equal(labels, labels.sort().values)


def test_same_seed_is_bit_identical_and_other_seed_differs(
    rendered: tuple[torch.Tensor, torch.Tensor],
) -> None:
    images, labels = rendered
    again_images, again_labels = render_letters(COUNT_PER_CLASS, IMAGE_SIZE, seed=0)
    assert torch.equal(images, again_images)
    assert torch.equal(labels, again_labels)
    other_images, other_labels = render_letters(COUNT_PER_CLASS, IMAGE_SIZE, seed=1)
    assert not torch.equal(images, other_images)
    assert not torch.equal(labels, other_labels)


def test_worker_processes_give_the_same_result(
    rendered: tuple[torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synthetic, "_IN_PROCESS_LIMIT", 0)
    monkeypatch.setattr(synthetic, "_MAX_WORKERS", 2)
    pooled_images, pooled_labels = render_letters(COUNT_PER_CLASS, IMAGE_SIZE, seed=0)
    assert torch.equal(pooled_images, rendered[0])
    assert torch.equal(pooled_labels, rendered[1])


def test_both_polarities_present(rendered: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, _ = rendered
    pixels = images.float()
    border = torch.cat(
        [pixels[:, 0, :], pixels[:, -1, :], pixels[:, 1:-1, 0], pixels[:, 1:-1, -1]], dim=1
    ).mean(dim=1)
    quarter = IMAGE_SIZE // 4
    centre = pixels[:, quarter:-quarter, quarter:-quarter].mean(dim=(1, 2))
    light_background = (border > centre).float().mean().item()
    assert 0.25 < light_background < 0.75


def test_pixel_values_are_sensible(rendered: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, _ = rendered
    pixels = images.float()
    spread = pixels.amax(dim=(1, 2)) - pixels.amin(dim=(1, 2))
    assert bool((spread >= 30).all()), "every crop shows a letter with some contrast"
    assert int(images.min()) <= 20 and int(images.max()) >= 235
    assert 60 < pixels.mean().item() < 196


def test_other_sizes_and_empty_request() -> None:
    images, labels = render_letters(1, 20, seed=3)
    assert images.shape == (26, 20, 20) and labels.tolist() != list(range(26))
    empty_images, empty_labels = render_letters(0, 20, seed=3)
    assert empty_images.shape == (0, 20, 20) and empty_labels.shape == (0,)
