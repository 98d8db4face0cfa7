"""Interrupted members continue as one stack again: their one-member last.ckpt are stacked back
into their stack's checkpoint (letters.engine.members.stacked_checkpoint), which Lightning's
own restore reads; members at different points, or whose checkpoints differ otherwise,
continue as separate stacks."""

from __future__ import annotations

import io
import json
import logging
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from conftest import list_data, run_cli
from letters.engine.callbacks import MemberCheckpoints
from letters.engine.members import (
    CheckpointsDiffer,
    member_checkpoint,
    stack_key,
    stacked_checkpoint,
)
from letters.engine.module import LetterClassifier
from letters.optim import StackedOptimizer
from letters.runs.jobs import Job
from letters.runs.stacking import stacks_to_train
from test_signals import LONG, start_and_signal

KEY = MemberCheckpoints.STATE_KEY
MEMBERS = [
    {"seed": 1, "init": "kaiming", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0},
    {"seed": 2, "init": "xavier", "lr": 5e-4, "momentum": 0.95, "weight_decay": 0.01},
    {"seed": 3, "init": "normal", "lr": 2e-3, "momentum": 0.5, "weight_decay": 0.1},
]


def stack_checkpoint(hidden_sizes: list[int] | None = None, epoch: int = 4) -> dict[str, Any]:
    """What Lightning dumps for a stack of MEMBERS after ``epoch + 1`` epochs: weights, an
    optimizer that has stepped (momentum buffers, step counts, a frozen member), loops,
    callbacks' state and the module's per-member records."""
    model = LetterClassifier(norm_size=8, hidden_sizes=hidden_sizes or [16], members=MEMBERS)
    parameters = list(model.parameters())
    optimizer = StackedOptimizer(
        parameters,
        "sgd",
        lr=[m["lr"] for m in MEMBERS],
        momentum=[m["momentum"] for m in MEMBERS],
        weight_decay=[m["weight_decay"] for m in MEMBERS],
    )
    generator = torch.Generator().manual_seed(epoch)
    for _ in range(3):
        for parameter in parameters:
            parameter.grad = torch.randn(parameter.shape, generator=generator)
        optimizer.step()
    optimizer.active[1] = False
    progress = {"total": {"ready": epoch + 1, "completed": epoch}}
    return {
        "epoch": epoch,
        "global_step": 7 * (epoch + 1),
        "pytorch-lightning_version": "2.6.6",
        "state_dict": model.state_dict(),
        "loops": {"fit_loop": {"epoch_progress": progress}},
        "callbacks": {KEY: {"best_scores": [0.1, 0.25, None]}, "Other": {"seen": 3}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": dict(model.hparams),
        "history": [{"epoch": [1, 2], "train_loss": [float(m), 0.5]} for m in range(3)],
        "pruned_at": [None, None, None],
        "rows": [0, 1, 2],
    }


def members_of(stack: dict[str, Any], members: list[int]) -> list[dict[str, Any]]:
    """Each member's own checkpoint, as MemberCheckpoints writes it, through a file."""
    return [
        torch.load(saved(member_checkpoint(stack, member, KEY)), weights_only=True)
        for member in members
    ]


def saved(checkpoint: dict[str, Any]) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 0]], ids=["all", "some-reordered"])
def test_members_checkpoints_stack_back_into_their_stacks(order: list[int]) -> None:
    stack = stack_checkpoint()
    joined = stacked_checkpoint(members_of(stack, order), KEY)
    rows = torch.tensor(order)
    for name, tensor in stack["state_dict"].items():
        assert torch.equal(joined["state_dict"][name], tensor[rows]), name
    (state,), (original,) = joined["optimizer_states"], stack["optimizer_states"]
    for parameter, tensors in original["state"].items():
        for name, tensor in tensors.items():
            assert torch.equal(state["state"][parameter][name], tensor[rows]), (parameter, name)
    group, first = state["param_groups"][0], original["param_groups"][0]
    for key in ("lr", "momentum", "weight_decay", "active"):
        assert group[key] == [first[key][k] for k in order], key
    assert group["schedule_step"] == first["schedule_step"] == 3
    assert joined["hyper_parameters"]["members"] == [MEMBERS[k] for k in order]
    for key in ("history", "pruned_at"):
        assert joined[key] == [stack[key][k] for k in order], key
    best = stack["callbacks"][KEY]["best_scores"]
    assert joined["callbacks"][KEY]["best_scores"] == [best[k] for k in order]
    assert joined["callbacks"]["Other"] == {"seen": 3}
    for key in ("epoch", "global_step", "loops", "lr_schedulers", "hparams_name"):
        assert joined[key] == stack[key], key
    assert "rows" not in joined  # every row in order: what a new stack's model holds
    # A stack of them loads the stacked optimizer state (Lightning's restore calls this).
    model = LetterClassifier(norm_size=8, hidden_sizes=[16], members=[{}] * len(order))
    model.load_state_dict(joined["state_dict"])
    ones, zeros = [1.0] * len(order), [0.0] * len(order)
    optimizer = StackedOptimizer(list(model.parameters()), "sgd", ones, zeros, zeros)
    optimizer.load_state_dict(state)
    assert optimizer.active.tolist() == [k != 1 for k in order]


@pytest.mark.parametrize(
    ("other", "differ"),
    [
        (lambda: stack_checkpoint(epoch=6), "epoch"),
        (lambda: stack_checkpoint(hidden_sizes=[8]), "hyper_parameters.hidden_sizes"),
    ],
    ids=["another-point", "another-architecture"],
)
def test_checkpoints_of_different_stacks_say_what_differs(other: Any, differ: str) -> None:
    ours, theirs = members_of(stack_checkpoint(), [0]), members_of(other(), [1])
    with pytest.raises(CheckpointsDiffer, match=f"^{differ}$"):
        stacked_checkpoint(ours + theirs, KEY)


def test_jobs_continuing_from_checkpoints_share_a_stack_key() -> None:
    """What the stacked launcher groups by: each job's own last.ckpt does not set them apart,
    continuing or not does, and so does an ensemble's run folder (its own path)."""

    def key(seed: int, resume: str | None, ensemble: int = 1) -> str:
        return stack_key(OmegaConf.create({"seed": seed, "resume": resume, "ensemble": ensemble}))

    assert key(1, "s/0/checkpoints/last.ckpt") == key(2, "s/1/checkpoints/last.ckpt")
    assert key(1, "s/0/checkpoints/last.ckpt") != key(2, None)
    assert key(1, "s/0", ensemble=2) != key(1, "s/1", ensemble=2)


def test_continuing_jobs_stack_by_the_point_their_checkpoints_are_at(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    at_five, at_seven = stack_checkpoint(epoch=4), stack_checkpoint(epoch=6)
    files = [*members_of(at_five, [0, 1]), *members_of(at_seven, [2]), None]
    files += members_of(stack_checkpoint(hidden_sizes=[8]), [0])  # same point, not the same net
    jobs = []
    for number, checkpoint in enumerate(files):
        run_dir = tmp_path / str(number)
        resume = None
        if checkpoint is not None:
            resume = run_dir / "checkpoints" / "last.ckpt"
            resume.parent.mkdir(parents=True)
            torch.save(checkpoint, resume)
        jobs.append(Job(OmegaConf.create({"resume": resume and str(resume)}), run_dir))
    with caplog.at_level(logging.INFO, logger="letters.train"):
        stacks = stacks_to_train(jobs, [0, 1, 2, 3])
    assert [stack.positions for stack in stacks] == [[3], [0, 1], [2]]
    assert stacks[0].continue_from is None and stacks[2].continue_from is None
    assert stacks[1].continue_from["hyper_parameters"]["members"] == MEMBERS[:2]
    assert "jobs 0, 1 after epoch 5 (step 35); job 2 after epoch 7 (step 49)" in caplog.text
    assert "continuing 2 runs as one stack from their last.ckpt, after epoch 5" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="letters.train"):
        stacks = stacks_to_train(jobs, [0, 4])
    assert [stack.positions for stack in stacks] == [[0], [4]]
    assert "jobs 0, 4 cannot continue as one stack: their checkpoints differ in " in caplog.text


def test_an_interrupted_stack_continues_as_one_stack_and_ends_as_if_never_stopped(
    list_dataset: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """SIGTERM stops a stack of four; resume=true continues the four as one stack again from
    their last.ckpt, and each ends bit for bit as the same sweep never stopped (one thread in
    both: the same sums in the same order)."""
    grid = ["seed=1,2", "momentum=0.5,0.9", "torch_threads=1", "hydra/launcher=stacked"]
    sweep = ["-m", *list_data(list_dataset), *grid]
    stopped = start_and_signal([*sweep, *LONG, "hydra.sweep.dir=cut"], tmp_path, signal.SIGTERM)
    assert stopped.returncode == 143, stopped.stdout
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    jobs = sorted(path.name for path in cut.glob("[0-9]"))
    assert jobs == ["0", "1", "2", "3"]
    done = json.loads((cut / "0" / "metrics.json").read_text())["epochs_completed"]
    finite = [*sweep, f"epochs={done + 2}", *LONG[1:]]
    result = run_cli("train", *finite, "hydra.sweep.dir=cut", "resume=true", cwd=tmp_path)
    console = result.stdout + result.stderr
    assert "stack of 4: jobs 0,1,2,3" in console
    assert f"continuing 4 runs as one stack from their last.ckpt, after epoch {done}" in console
    assert not list((cut / "0" / "checkpoints").glob(".*.ckpt"))  # the stacked one is gone
    run_cli("train", *finite, "hydra.sweep.dir=whole", cwd=tmp_path)
    for job in jobs:
        ours = json.loads((cut / job / "metrics.json").read_text())
        theirs = json.loads((whole / job / "metrics.json").read_text())
        assert ours["status"] == theirs["status"] == "finished"
        assert ours["epochs_completed"] == theirs["epochs_completed"] == done + 2
        for key in ("val_acc", "best_val_acc", "test_acc", "train_loss"):
            assert ours[key] == theirs[key], (job, key)
        last = [
            torch.load(run / job / "checkpoints" / "last.ckpt", weights_only=True)
            for run in (cut, whole)
        ]
        for name, tensor in last[0]["state_dict"].items():
            assert torch.equal(tensor, last[1]["state_dict"][name]), (job, name)
        assert last[0]["history"] == last[1]["history"]
