"""Members that stop inside a stack (pruned by a search, or diverged): they are frozen, then
dropped from the stack's tensors, and their stack-mates end bit for bit where a stack without
them ends, with the same records and checkpoints."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from letters.data.modules import ListDataModule
from letters.engine.callbacks import MemberCheckpoints, MemberPruning, StepProgressBar
from letters.engine.checkpoint import load_classifier, read_checkpoint
from letters.engine.module import LetterClassifier

MEMBERS = [
    {"seed": 1, "init": "kaiming", "lr": 1e-2, "momentum": 0.9, "weight_decay": 0.0},
    {"seed": 2, "init": "xavier", "lr": 5e-3, "momentum": 0.95, "weight_decay": 0.01},
    {"seed": 3, "init": "kaiming", "lr": 2e-2, "momentum": 0.5, "weight_decay": 0.1},
]
EXPLODING = {**MEMBERS[1], "lr": 1e12, "init": "normal"}
# The members' own lr, momentum and weight decay; Adam with augmentation besides, so that the
# augmentation's per-member generators follow the rows too.
RECIPES: dict[str, dict[str, Any]] = {
    "sgd-momentum": {"optimizer": {"name": "sgd"}},
    "adam-augment": {"optimizer": {"name": "adam"}, "augment": {"rotation": 10.0}},
}
EPOCHS = 3


@pytest.fixture(scope="module")
def data_root(list_dataset: Path, session_cache: Path) -> dict[str, Any]:
    """The tiny list-layout letters (conftest), at 8x8: 13 steps of 8 images an epoch."""
    return {"root": str(list_dataset), "cache_dir": str(session_cache)}


def make_model(members: list[dict[str, Any]], recipe: str) -> LetterClassifier:
    return LetterClassifier(norm_size=8, hidden_sizes=[16], members=members, **RECIPES[recipe])


def fit(
    model: LetterClassifier, data: dict[str, Any], epochs: int, callbacks: list | None = None
) -> pl.Trainer:
    """Validated after every epoch, on a CPU, as letters.train's Trainer does."""
    datamodule = ListDataModule(norm_size=8, batch_size=8, steps_per_call=4, **data)
    trainer = pl.Trainer(
        max_epochs=epochs,
        check_val_every_n_epoch=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        callbacks=callbacks or [],
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer


@pytest.fixture(scope="module")
def without(data_root: dict[str, Any]) -> Callable[[str], LetterClassifier]:
    """Members 0 and 2 alone as a stack, trained EPOCHS epochs: once per recipe, for the
    tests below to compare with (and not to change)."""
    trained: dict[str, LetterClassifier] = {}

    def stack_without_member_1(recipe: str) -> LetterClassifier:
        if recipe not in trained:
            trained[recipe] = make_model([MEMBERS[0], MEMBERS[2]], recipe)
            fit(trained[recipe], data_root, EPOCHS)
        return trained[recipe]

    return stack_without_member_1


def prune_member_1(asked: list[tuple[int, int, float]]) -> MemberPruning:
    """Prunes member 1 at its first validation; notes every question asked."""

    def should_prune(member: int, epoch: int, accuracy: float) -> bool:
        asked.append((member, epoch, accuracy))
        return member == 1

    return MemberPruning(should_prune)


def assert_like_the_stack_without_member_1(stack: LetterClassifier, other: LetterClassifier):
    """Members 0 and 2 of ``stack`` are members 0 and 1 of ``other``, bit for bit: weights,
    optimizer state, per-epoch records and last validation."""
    rows = [stack.rows.index(0), stack.rows.index(2)]
    theirs = other.state_dict()
    for name, tensor in stack.state_dict().items():
        assert torch.equal(tensor[rows], theirs[name]), name
    optimizer, other_optimizer = stack.stacked_optimizer, other.stacked_optimizer
    params, other_params = optimizer.param_groups[0]["params"], list(other.parameters())
    for param, other_param in zip(params, other_params, strict=True):
        for name, value in optimizer.state[param].items():
            assert torch.equal(value[rows], other_optimizer.state[other_param][name]), name
    for member, alone in ((0, 0), (2, 1)):
        assert stack.histories[member] == other.histories[alone]
        assert stack.validation_acc[member] == other.validation_acc[alone]


@pytest.mark.parametrize("drop", [True, False], ids=["dropped", "kept-frozen"])
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_a_pruned_member_leaves_its_stack_mates_as_a_stack_without_it(
    recipe: str,
    drop: bool,
    data_root: dict[str, Any],
    without: Callable[[str], LetterClassifier],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Member 1 of 3 pruned at its first validation: members 0 and 2 end as the stack of the
    two ends, whether its row is dropped (one frozen row of 3 is at least an eighth) or kept
    frozen (drop_fraction above 1: never dropped)."""
    if not drop:
        monkeypatch.setattr(LetterClassifier, "drop_fraction", 2.0)
    stack = make_model(MEMBERS, recipe)
    asked: list[tuple[int, int, float]] = []
    fit(stack, data_root, EPOCHS, [prune_member_1(asked)])

    assert stack.pruned_at == [None, 1, None] and stack.diverged_at == [None] * 3
    assert stack.active == [True, False, True]
    assert stack.rows == ([0, 2] if drop else [0, 1, 2])
    rows = len(stack.rows)
    assert all(parameter.shape[0] == rows for parameter in stack.parameters())
    assert stack.stacked_optimizer.members == rows
    assert stack.stacked_optimizer.active.tolist() == (
        [True, True] if drop else [True, False, True]
    )
    # Asked once per member still training, after each validation, with its accuracy.
    expected = [(m, e, stack.histories[m]["val_acc"][e - 1]) for e in (1, 2, 3) for m in (0, 2)]
    assert sorted(asked) == sorted([*expected, (1, 1, stack.histories[1]["val_acc"][0])])
    assert stack.histories[1]["epoch"] == [1] and stack.histories[1]["val_epoch"] == [1]
    assert stack.validation_acc[1] is None
    assert_like_the_stack_without_member_1(stack, without(recipe))


class FileBytes(pl.Callback):
    """The bytes of some files after epoch ``epoch``'s callbacks (before the module's own
    epoch end, where the stack drops rows)."""

    def __init__(self, paths: list[Path], epoch: int) -> None:
        self.paths, self.epoch = paths, epoch
        self.seen: dict[Path, bytes] = {}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.current_epoch + 1 == self.epoch:
            self.seen = {path: path.read_bytes() for path in self.paths}


def test_the_dropped_members_files_stay_and_every_checkpoint_holds_its_own_member(
    data_root: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After the drop every member's best.ckpt and last.ckpt is what a stack without member 1
    writes for it (weights, optimizer state, history, settings, best score); member 1's files
    stay as the pruning epoch left them, and say that it was pruned."""
    recipe = "sgd-momentum"
    runs = [tmp_path / "with" / str(member) for member in range(3)]
    checkpoints = MemberCheckpoints(runs)
    pruned_files = [runs[1] / "checkpoints" / name for name in ("best.ckpt", "last.ckpt")]
    after_pruning = FileBytes(pruned_files, epoch=1)
    stack = make_model(MEMBERS, recipe)
    with caplog.at_level(logging.INFO, logger="letters.train"):
        fit(stack, data_root, EPOCHS, [checkpoints, prune_member_1([]), after_pruning])
    assert stack.rows == [0, 2] and stack.active == [True, False, True]

    runs_without = [tmp_path / "without" / str(member) for member in range(2)]
    other_checkpoints = MemberCheckpoints(runs_without)
    other = make_model([MEMBERS[0], MEMBERS[2]], recipe)
    fit(other, data_root, EPOCHS, [other_checkpoints])
    for member, alone in ((0, 0), (2, 1)):
        assert checkpoints.best_scores[member] == other_checkpoints.best_scores[alone]
        for name in ("best.ckpt", "last.ckpt"):
            mine = read_checkpoint(runs[member] / "checkpoints" / name)
            theirs = read_checkpoint(runs_without[alone] / "checkpoints" / name)
            assert_same_checkpoint(mine, theirs)
            loaded = load_classifier(runs[member] / "checkpoints" / name)
            assert loaded.members == [MEMBERS[member]] and loaded.pruned_at == [None]

    assert {path: path.read_bytes() for path in pruned_files} == after_pruning.seen
    best, last = (read_checkpoint(path) for path in pruned_files)
    assert best["pruned_at"] == last["pruned_at"] == [1]
    assert last["history"][0]["epoch"] == [1]
    assert last["optimizer_states"][0]["param_groups"][0]["active"] == [False]
    for name, tensor in best["state_dict"].items():  # nothing trained between the two saves
        assert torch.equal(last["state_dict"][name], tensor)
    assert load_classifier(pruned_files[1]).pruned_at == [1]

    pruned = [r for r in caplog.records if r.getMessage().startswith("pruned after epoch 1")]
    assert [r.member for r in pruned] == [1]
    accuracy = stack.histories[1]["val_acc"][0]
    assert pruned[0].getMessage() == f"pruned after epoch 1: val_acc {100 * accuracy:.1f}%"


def assert_same_checkpoint(mine: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Two one-member checkpoints hold the same member, bit for bit."""
    assert mine["hyper_parameters"] == theirs["hyper_parameters"]
    assert mine["history"] == theirs["history"] and mine["pruned_at"] == theirs["pruned_at"]
    assert "rows" not in mine
    assert mine.keys() == theirs.keys()
    for name, tensor in theirs["state_dict"].items():
        assert torch.equal(mine["state_dict"][name], tensor), name
    (state,), (their_state,) = mine["optimizer_states"], theirs["optimizer_states"]
    assert state["param_groups"] == their_state["param_groups"]
    for key, tensors in their_state["state"].items():
        for name, value in tensors.items():
            assert torch.equal(state["state"][key][name], value), name


def test_a_diverged_member_is_dropped_and_its_stack_mates_train_on_alike(
    data_root: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """lr 1e12 diverges in the first epoch; its row is dropped at that epoch's end, and a
    second fit (as after pre-training: a new optimizer from the members still in the stack)
    trains members 0 and 2 with their own settings, as it trains a stack of the two."""
    recipe = "sgd-momentum"
    stack = make_model([MEMBERS[0], EXPLODING, MEMBERS[2]], recipe)
    # A graph over the weights held through the drop (a look at them, say) keeps autograd's
    # record of their old shape alive: the stack goes on with new weights all the same.
    looked_at = [parameter[0] for parameter in stack.parameters()]
    with caplog.at_level(logging.INFO, logger="letters.train"):
        fit(stack, data_root, 2)
    assert all(view.grad_fn is not None for view in looked_at)
    assert stack.diverged_at[1] is not None and stack.diverged_at[1][0] == 1
    assert stack.rows == [0, 2] and stack.active == [True, False, True]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stack:")]
    assert lines == ["stack: 1 of 3 runs stopped; training the other 2 as a stack of 2"]

    other = make_model([MEMBERS[0], MEMBERS[2]], recipe)
    fit(other, data_root, 2)
    assert_like_the_stack_without_member_1(stack, other)
    for model in (stack, other):
        model.start_afresh()  # as letters.train does after pre-training
        fit(model, data_root, 2)
    assert stack.stacked_optimizer.param_groups[0]["lr"] == [MEMBERS[0]["lr"], MEMBERS[2]["lr"]]
    assert_like_the_stack_without_member_1(stack, other)


def test_the_progress_bar_says_how_many_runs_still_train() -> None:
    """'(16 runs)' while all train, '(13 of 16 runs training)' once three stopped."""

    def description(active: list[bool]) -> str:
        bar = StepProgressBar()
        bar.bar = SimpleNamespace(set_description=lambda text, refresh: said.append(text))
        said: list[str] = []
        trainer = SimpleNamespace(current_epoch=11, max_epochs=50)
        bar.on_train_epoch_start(trainer, SimpleNamespace(stack_size=len(active), active=active))
        return said[0]

    assert description([True] * 16) == "Epoch 12/50 (16 runs)"
    assert description([True] * 13 + [False] * 3) == "Epoch 12/50 (13 of 16 runs training)"
    assert description([True]) == "Epoch 12/50"
