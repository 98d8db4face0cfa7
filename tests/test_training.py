"""The training engine: Lightning takes exactly the optimizer steps a plain loop takes, however
many mini-batches it hands over at once, and a member trained in a stack is the run it would be
alone, also when a stack-mate diverges."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from letters.data import LetterDataModule, MemberBatches
from letters.engine.module import LetterClassifier
from letters.nn.autograd import cross_entropy

ROWS, BATCH, SEED = 90, 8, 3
SGD = {"name": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.01}

# Largest difference measured between a member trained in a stack and the same run alone
# (float32 on this CPU, 3 epochs): 0 so far, every weight bit-identical; the tolerance below
# leaves room for BLAS libraries whose batched kernels sum in another order.
STACK_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


class FixedData(LetterDataModule):
    """Random 8x8 'images' held in memory, so the tests need no files."""

    def load_grey_splits(self):
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (ROWS, 8, 8), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 26, (ROWS,), generator=generator)
        return {split: (images, labels) for split in ("train", "validation", "test")}


def make_model(
    members: list[dict[str, Any]], reduction: str = "sum", optimizer: dict | None = None, **extra
) -> LetterClassifier:
    return LetterClassifier(
        norm_size=8,
        hidden_sizes=[16],
        reduction=reduction,
        optimizer=optimizer or SGD,
        members=members,
        **extra,
    )


def fit(model: LetterClassifier, epochs: int, steps_per_call: int = 64) -> pl.Trainer:
    data = FixedData(norm_size=8, batch_size=BATCH, steps_per_call=steps_per_call)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=data)
    return trainer


def plain_loop(reduction: str, epochs: int) -> LetterClassifier:
    """The same run with torch.optim.SGD stepping by hand through each epoch's batches."""
    member = {"seed": SEED, "init": "kaiming", **{k: SGD[k] for k in ("lr", "momentum")}}
    model = make_model([{**member, "weight_decay": SGD["weight_decay"]}], reduction)
    data = FixedData(norm_size=8, batch_size=BATCH).prepare()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=0.01)
    for epoch in range(epochs):
        batches = MemberBatches(*data.splits["train"], BATCH, 1, [SEED], lambda e=epoch: e)
        for chunk in batches:
            optimizer.zero_grad()
            cross_entropy(model.model(chunk.inputs), chunk.labels, reduction).sum().backward()
            optimizer.step()
    return model


@pytest.mark.parametrize("steps_per_call", [1, 5, 64])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_lightning_steps_equal_a_plain_loop(steps_per_call: int, reduction: str) -> None:
    """A stack of one through Lightning, chunked or not, is torch.optim's run step for step."""
    epochs = 2
    member = {"seed": SEED, "init": "kaiming", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.01}
    model = make_model([member], reduction)
    trainer = fit(model, epochs, steps_per_call)
    expected = plain_loop(reduction, epochs)
    for name, parameter in expected.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], parameter, rtol=0, atol=1e-6)
    assert trainer.global_step == epochs * -(-ROWS // BATCH)
    per_image = model.histories[0]["train_loss"]
    assert len(per_image) == epochs and all(value > 0 for value in per_image)


MEMBERS = [
    {"seed": 1, "init": "kaiming", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0},
    {"seed": 2, "init": "xavier", "lr": 5e-4, "momentum": 0.95, "weight_decay": 0.01},
    {"seed": 3, "init": "normal", "lr": 2e-3, "momentum": 0.5, "weight_decay": 0.1},
]
ADAM = {"name": "adam", "lr": 2e-3, "weight_decay": 0.1}


@pytest.fixture()
def keep_frozen_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frozen members stay in the stack's tensors (LetterClassifier.drop_fraction above 1), to
    look at their rows; tests/test_pruning_engine.py drops them."""
    monkeypatch.setattr(LetterClassifier, "drop_fraction", 2.0)


def assert_same_weights(stack: LetterClassifier, member: int, alone: LetterClassifier) -> float:
    """Member ``member`` of ``stack`` equals the stack of one ``alone``; returns the largest
    difference seen."""
    largest = 0.0
    for name, tensor in alone.state_dict().items():
        mine = stack.state_dict()[name][member : member + 1]
        torch.testing.assert_close(mine, tensor, **STACK_TOLERANCE)
        largest = max(largest, float((mine - tensor).abs().max()))
    return largest


@pytest.mark.parametrize(
    ("optimizer", "extra"),
    [
        (SGD, {}),
        (ADAM, {}),
        (
            {"name": "adamw", "lr": 2e-3, "weight_decay": 0.05},
            {"scheduler": "onecycle", "augment": {"rotation": 10.0}, "input_norm": "standardize"},
        ),
    ],
    ids=["sgd-momentum", "adam-weight-decay", "adamw-onecycle-augment"],
)
def test_member_in_a_stack_trains_as_alone(optimizer: dict, extra: dict) -> None:
    """Three members with different seeds, inits, lr, momentum and weight decay, trained as one
    stack, end where each ends trained alone, and record the same losses."""
    epochs = 3
    stack = make_model(MEMBERS, "mean", optimizer, **extra)
    fit(stack, epochs)
    for member, settings in enumerate(MEMBERS):
        alone = make_model([settings], "mean", optimizer, **extra)
        fit(alone, epochs)
        assert_same_weights(stack, member, alone)
        torch.testing.assert_close(
            torch.tensor(stack.histories[member]["train_loss"]),
            torch.tensor(alone.histories[0]["train_loss"]),
            **STACK_TOLERANCE,
        )


def test_a_diverging_member_stops_and_leaves_its_stack_mates_unchanged(
    keep_frozen_rows: None,
) -> None:
    """A member whose loss becomes non-finite is frozen and marked diverged; the others end
    exactly where they end without it."""
    exploding = {**MEMBERS[1], "lr": 1e12, "init": "normal"}
    stack = make_model([MEMBERS[0], exploding, MEMBERS[2]])
    fit(stack, 3)
    assert stack.active == [True, False, True]
    assert stack.diverged_at[1] is not None and stack.diverged_at[1][0] == 1
    assert stack.diverged_at[0] is None and stack.diverged_at[2] is None
    assert stack.histories[1]["train_loss"] == []  # the diverged epoch is not recorded
    for parameter in stack.parameters():  # frozen at its last finite weights
        assert torch.isfinite(parameter[1]).all()
    without = make_model([MEMBERS[0], MEMBERS[2]])
    fit(without, 3)
    assert_same_weights(stack, 0, make_sliced(without, 0))
    assert_same_weights(stack, 2, make_sliced(without, 1))


def make_sliced(model: LetterClassifier, member: int) -> LetterClassifier:
    """A stack of one holding member ``member`` of ``model``'s weights."""
    one = make_model([model.members[member]])
    one.load_state_dict(
        {name: tensor[member : member + 1] for name, tensor in model.state_dict().items()}
    )
    return one


def test_training_stops_when_every_member_diverged() -> None:
    model = make_model([{**MEMBERS[0], "lr": 1e12, "init": "normal"}])
    trainer = fit(model, 5)
    assert model.active == [False]
    assert trainer.current_epoch < 5


def test_the_optimizers_mask_freezes_a_member_through_the_next_fit(keep_frozen_rows: None) -> None:
    """The module's ``active`` is the optimizer's mask, and the next fit's optimizer (after
    pre-training) takes it over: a member frozen there neither trains nor records anything,
    and its stack-mate trains on."""
    stack = make_model(MEMBERS[:2])
    fit(stack, 1)
    assert stack.active == [True, True]
    stack.stacked_optimizer.active[1] = False  # as a diverged member, or a loaded checkpoint
    frozen = [parameter[1].clone() for parameter in stack.parameters()]
    stack.start_afresh()  # as letters.train does after pre-training
    fit(stack, 2)
    assert stack.active == [True, False]
    assert stack.histories[0]["epoch"] == [1, 2]
    assert stack.histories[1]["train_loss"] == []
    assert stack.diverged_at == [None, None]
    for parameter, before in zip(stack.parameters(), frozen, strict=True):
        assert torch.equal(parameter[1], before)
