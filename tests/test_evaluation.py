"""A stack's test in one pass: its members' best checkpoints stacked into one model predict the
test split as each checkpoint alone does (letters.test's way).

Each member is computed on its own rows of every weight (``member_logits(each_alone=True)``),
the very products its checkpoint alone computes: bit for bit the same logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from letters.common.errors import LettersError
from letters.engine.checkpoint import load_classifier, load_stacked_classifier
from letters.engine.evaluate import predict_members, predict_split
from letters.engine.members import member_checkpoint
from letters.engine.module import LetterClassifier

MEMBERS = [
    {"seed": 1, "init": "kaiming", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0},
    {"seed": 2, "init": "xavier", "lr": 5e-4, "momentum": 0.95, "weight_decay": 0.01},
    {"seed": 3, "init": "normal", "lr": 2e-3, "momentum": 0.5, "weight_decay": 0.1},
    {"seed": 4, "init": "kaiming", "lr": 1e-2, "momentum": 0.0, "weight_decay": 0.0},
]


def member_files(folder: Path, **settings: Any) -> list[Path]:
    """Each member's own one-member checkpoint of a stack, as MemberCheckpoints writes them
    (member_checkpoint of the stack's), its biases made non-zero as training leaves them."""
    model = LetterClassifier(norm_size=32, hidden_sizes=[32, 16], members=MEMBERS, **settings)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if name.endswith("bias"):
                tensor.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    stack = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    paths = []
    for member in range(len(MEMBERS)):
        path = folder / f"member-{member}.ckpt"
        torch.save(member_checkpoint(stack, member), path)
        paths.append(path)
    return paths


def images(count: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(count, 1, 32, 32, generator=generator) * 2 - 1
    return inputs, torch.randint(0, 26, (count,), generator=generator)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"input_norm": "standardize", "activation": "tanh"},
        {"test_time_polarity": True, "test_time_shift": 1},
    ],
    ids=["plain", "standardize", "test-time-views"],
)
def test_one_pass_gives_each_member_what_its_checkpoint_alone_gives(
    settings: dict[str, Any], tmp_path: Path
) -> None:
    paths = member_files(tmp_path, **settings)
    inputs, labels = images()
    chosen = [paths[2], paths[0], paths[3]]  # any members, in any order
    stacked = load_stacked_classifier(chosen)
    assert stacked.members == [MEMBERS[2], MEMBERS[0], MEMBERS[3]]
    together = predict_members(stacked, inputs, labels, batch_size=128)
    assert len(together) == len(chosen)
    for path, predictions in zip(chosen, together, strict=True):
        alone = predict_split(load_classifier(path), inputs, labels, batch_size=128)
        assert torch.equal(predictions.logits, alone.logits)
        assert torch.equal(predictions.predicted, alone.predicted)
        assert torch.equal(predictions.labels, alone.labels)
        assert predictions.accuracy == alone.accuracy
        assert predictions.loss == alone.loss


def test_checkpoints_that_cannot_share_a_pass_are_refused(tmp_path: Path) -> None:
    """Members of different stacks (other preprocessing), or a whole stack's checkpoint."""
    plain, polarity = tmp_path / "plain", tmp_path / "polarity"
    plain.mkdir()
    polarity.mkdir()
    paths = member_files(plain)
    other = member_files(polarity, test_time_polarity=True)[0]
    with pytest.raises(LettersError, match="differ in test_time_polarity"):
        load_stacked_classifier([paths[0], other])
    whole = tmp_path / "stack.ckpt"
    model = LetterClassifier(norm_size=8, hidden_sizes=[16], members=MEMBERS[:2])
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, whole)
    with pytest.raises(LettersError, match="a stack of 2 members, not one member's checkpoint"):
        load_stacked_classifier([paths[0], whole])
