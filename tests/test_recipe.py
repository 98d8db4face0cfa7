"""The pieces of the accuracy recipe: standardized inputs, augmentation on the device, the
learning-rate schedule and both polarities at test time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli, run_training
from letters.engine.module import LetterClassifier
from letters.nn.augment import PhotoAugment, shifted_views
from letters.nn.autograd import Standardize
from letters.nn.model import MLP
from letters.optim import schedule_factors


@pytest.mark.parametrize("batch", [1, 6])
def test_standardize_gradcheck(batch: int) -> None:
    x = torch.randn(9, batch, dtype=torch.float64).t().requires_grad_()  # non-contiguous
    assert torch.autograd.gradcheck(Standardize.apply, (x,))


def test_standardize_gives_zero_mean_unit_spread_and_survives_flat_images() -> None:
    x = torch.randn(4, 50) * 3 + 1
    y = Standardize.apply(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.pow(2).mean(1), torch.ones(4), atol=1e-3, rtol=0)
    flat = Standardize.apply(torch.full((2, 10), 0.7))
    torch.testing.assert_close(flat, torch.zeros(2, 10), atol=1e-4, rtol=0)


def test_standardized_mlp_ignores_contrast_and_brightness() -> None:
    torch.manual_seed(0)
    model = MLP(64, 26, [16], "relu", "kaiming", input_norm="standardize")
    x = torch.rand(5, 64) * 2 - 1
    # Up to the epsilon that keeps flat images finite.
    torch.testing.assert_close(model(x), model(0.5 * x - 0.2), atol=2e-2, rtol=2e-2)


def test_augmentation_is_per_image_and_reproducible() -> None:
    augment = PhotoAugment()
    x = torch.rand(16, 32 * 32) * 2 - 1
    first = augment(x, 32, torch.Generator().manual_seed(1))
    again = augment(x, 32, torch.Generator().manual_seed(1))
    other = augment(x, 32, torch.Generator().manual_seed(2))
    assert first.shape == x.shape and torch.equal(first, again) and not torch.equal(first, other)
    same = x[:1].expand(16, -1).contiguous()  # one image 16 times: 16 different results
    variants = augment(same, 32, torch.Generator().manual_seed(3))
    assert len({tuple(row[:50].tolist()) for row in variants}) == 16


def test_augmentation_with_zero_ranges_changes_nothing() -> None:
    still = PhotoAugment(0, 0, 0, 0, 0, 0, 0, 0)
    x = torch.rand(3, 16 * 16) * 2 - 1
    torch.testing.assert_close(still(x, 16, torch.Generator().manual_seed(0)), x, atol=1e-5, rtol=0)
    inverted = PhotoAugment(0, 0, 0, 0, 0, 0, 1.0, 0)(x, 16, torch.Generator().manual_seed(0))
    torch.testing.assert_close(inverted, -x, atol=1e-5, rtol=0)


def test_test_time_polarity_sees_both_polarities_alike() -> None:
    torch.manual_seed(0)
    model = LetterClassifier(
        norm_size=8, hidden_sizes=[16], members=[{"init": "kaiming"}], test_time_polarity=True
    ).eval()
    x = torch.rand(4, 64) * 2 - 1
    torch.testing.assert_close(model(x), model(-x))
    assert torch.allclose(model(x).exp().sum(1), torch.ones(4))


def test_shifted_views_move_each_image_by_every_offset() -> None:
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 16)  # two 4x4 images
    views = shifted_views(x, 4, 1).view(9, 2, 4, 4)
    images = x.view(2, 4, 4)
    torch.testing.assert_close(views[4], images)  # the middle offset is the image itself
    # Offset (dy=0, dx=2) of the padded image: content moved one pixel left, last column kept.
    torch.testing.assert_close(views[5][:, :, :3], images[:, :, 1:])
    torch.testing.assert_close(views[5][:, :, 3], images[:, :, 3])


def test_test_time_shift_averages_the_probabilities_of_the_shifted_images() -> None:
    torch.manual_seed(0)
    settings = {"norm_size": 8, "hidden_sizes": [16], "members": [{"init": "kaiming"}] * 2}
    plain = LetterClassifier(**settings).eval()
    shifted = LetterClassifier(**settings, test_time_shift=1, test_time_polarity=True).eval()
    shifted.load_state_dict(plain.state_dict())
    x = torch.rand(5, 64) * 2 - 1
    views = shifted_views(x, 8, 1).view(9, 5, 64)
    with torch.no_grad():
        by_hand = torch.stack(
            [plain.member_logits(sign * view).softmax(-1) for view in views for sign in (1, -1)]
        ).mean(dim=0)
        torch.testing.assert_close(shifted.member_logits(x).exp(), by_hand)
        torch.testing.assert_close(shifted(x).exp(), by_hand.mean(dim=0))


@pytest.mark.parametrize("name", ["onecycle", "cosine"])
def test_schedules_peak_at_lr_and_anneal(name: str) -> None:
    factors = [schedule_factors(name, step, 100)[0] for step in range(100)]
    assert max(factors) == pytest.approx(1.0, rel=1e-3) and factors[-1] < 0.1


def test_best_experiment_runs_end_to_end(list_dataset: Path, tmp_path: Path, cache_dir) -> None:
    run_dir = run_training(
        tmp_path, "experiment=best", "epochs=2", "pictures=false", data=list_dataset
    ).folder
    assert run_dir.name.endswith("_best")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    params = metrics["params"]
    assert metrics["status"] == "finished" and params["optimizer"] == "adamw"
    assert params["augment"] == "photo" and params["scheduler"] == "onecycle"
    assert params["hidden_sizes"] == "1024,512" and params["test_time_polarity"] is True


def test_best_ensemble_experiment_runs_end_to_end(
    list_dataset: Path, tmp_path: Path, cache_dir
) -> None:
    """The recipe's every part on tiny data: pre-training, members, test-time views."""
    tiny_pretraining = [
        "pretrain.epochs=1",
        "pretrain.data.train_per_class=2",
        "pretrain.data.validation_per_class=1",
        "pretrain.data.test_per_class=1",
        "pretrain.data.image_size=40",
    ]
    run = run_training(
        tmp_path,
        "experiment=best_ensemble",
        "epochs=1",
        "ensemble=2",
        *tiny_pretraining,
        "pictures=false",
        "hydra.run.dir=run",
        data=list_dataset,
    )
    metrics = json.loads((run.folder / "metrics.json").read_text())
    params = metrics["params"]
    assert metrics["status"] == "finished" and metrics["ensemble"] == 2
    assert params["pretrain"] == "synthetic x1" and params["test_time_shift"] == 2
    assert [member["status"] for member in metrics["members"]] == ["finished", "finished"]
    result = run_cli("test", f"ckpt={tmp_path}/run/checkpoints/best.ckpt", cwd=tmp_path)
    assert f"test accuracy {100 * metrics['test_acc']:.2f}%" in result.stdout
