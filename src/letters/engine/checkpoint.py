"""Checkpoints: written atomically, and read back with one clear line for anything foreign."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from letters.common.errors import LettersError, first_line
from letters.common.files import write_atomically
from letters.engine.members import DEFAULT_MEMBER

if TYPE_CHECKING:
    from letters.engine.module import LetterClassifier


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """A letters checkpoint's contents, or one clear line for a missing, damaged or foreign one.

    weights_only: a checkpoint is data, and loading one must not run code from it.
    """
    path = Path(path)
    if not path.is_file():
        raise LettersError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # its unpickler's own say about a foreign pickle
            warnings.filterwarnings("ignore", module="torch._weights_only_unpickler")
            checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # truncated, corrupt or not a torch file at all
        reason = unreadable_reason(error)
        raise LettersError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= set(
        checkpoint
    ):
        raise LettersError(f"{path}: not a letters checkpoint (no state_dict/hyper_parameters)")
    if "members" not in checkpoint["hyper_parameters"]:
        upgrade_single_run(checkpoint)
    return checkpoint


def unreadable_reason(error: Exception) -> str:
    """Why torch.load refused a file, for a user: torch's own first line advises loading it with
    weights_only=False (never done here: that would run what the file holds) or is a paragraph
    with terminal escapes; its first sentence where it is plain."""
    text = str(error)
    # "Unsupported global: GLOBAL x.Y was not an allowed global", or "unsupported GLOBAL
    # posix.system whose module posix is blocked"
    held = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", text, re.IGNORECASE)
    if held:
        return f"it holds a Python object, {held.group(1)}, not only weights and numbers"
    if isinstance(error, EOFError):
        return "it ends too soon: empty or cut short"
    if isinstance(error, RuntimeError):  # torch's reader: "... zip archive: not a ZIP archive"
        return first_line(error).split(". ")[0]
    return "not a torch checkpoint, or a damaged one"  # pickle's, torch's legacy reader's


@contextmanager
def checkpoint_file(checkpoint: dict[str, Any], folder: Path) -> Iterator[Path]:
    """``checkpoint``, made in memory, as a file while the block runs: Lightning's Trainer.fit
    continues from a checkpoint it reads by path. A hidden file in ``folder``, removed after."""
    path = folder / ".continued-stack.ckpt"
    write_atomically(path, lambda handle: torch.save(checkpoint, handle))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def upgrade_single_run(checkpoint: dict) -> None:
    """A checkpoint of letters 0.1, before stacks: its run becomes a stack of one (weights
    gain the member dimension; seed, init and the optimizer's numbers become its member)."""
    hyper_parameters = checkpoint["hyper_parameters"]
    optimizer = dict(hyper_parameters.get("optimizer") or {})
    hyper_parameters["members"] = [
        {
            "seed": hyper_parameters.pop("seed", DEFAULT_MEMBER["seed"]),
            "init": hyper_parameters.pop("init", DEFAULT_MEMBER["init"]),
            "lr": optimizer.get("lr", DEFAULT_MEMBER["lr"]),
            # 0.1 saved momentum only for the optimizers that use it: none there means none.
            "momentum": optimizer.get("momentum", 0.0),
            "weight_decay": optimizer.get("weight_decay", DEFAULT_MEMBER["weight_decay"]),
        }
    ]
    hyper_parameters.pop("batch_size", None)
    if isinstance(hyper_parameters.get("data"), dict):
        hyper_parameters["data"] = {
            k: v for k, v in hyper_parameters["data"].items() if k != "seed"
        }
    checkpoint["state_dict"] = {
        name: tensor.unsqueeze(0) for name, tensor in checkpoint["state_dict"].items()
    }
    if isinstance(checkpoint.get("history"), dict):
        checkpoint["history"] = [checkpoint["history"]]
    checkpoint.pop("optimizer_states", None)  # 0.1's torch.optim state: not resumable
    checkpoint["upgraded_from"] = "0.1"


def load_classifier(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> LetterClassifier:
    """Rebuild a LetterClassifier from a letters checkpoint alone (weights and preprocessing).
    Lightning (LetterClassifier's base: 3 to 4 s of start-up) is loaded only once the file
    reads as a checkpoint: a damaged one is refused in a command's first seconds."""
    path = Path(path)
    checkpoint = read_checkpoint(path, device)
    from letters.engine.module import LetterClassifier

    try:
        model = LetterClassifier(**checkpoint["hyper_parameters"])
        model.load_state_dict(checkpoint["state_dict"])
        model.on_load_checkpoint(checkpoint)
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        raise LettersError(f"{path}: not a letters checkpoint ({first_line(error)})") from None
    return model.to(device).eval()


def load_stacked_classifier(
    paths: Sequence[str | os.PathLike], device: str | torch.device = "cpu"
) -> LetterClassifier:
    """One LetterClassifier whose member k is the one-member checkpoint ``paths[k]`` (what
    MemberCheckpoints writes for each member of a stack): every weight holds the members' rows
    in that order, so that one pass over shared images evaluates them all, each as
    ``load_classifier`` would. The checkpoints must agree on everything but their member
    settings (architecture, preprocessing, test-time views), as those of one stack do."""
    if not paths:
        raise ValueError("no checkpoints to stack")
    checkpoints = [read_checkpoint(path, device) for path in paths]
    from letters.engine.module import LetterClassifier  # as load_classifier: once they read

    first = checkpoints[0]["hyper_parameters"]
    shared = {key: value for key, value in first.items() if key != "members"}
    for path, checkpoint in zip(paths, checkpoints, strict=True):
        hyper_parameters = checkpoint["hyper_parameters"]
        if len(hyper_parameters["members"]) != 1:
            raise LettersError(
                f"{path}: a stack of {len(hyper_parameters['members'])} members, not one "
                "member's checkpoint"
            )
        differing = sorted(
            key
            for key in set(hyper_parameters) | set(shared)
            if key != "members" and hyper_parameters.get(key) != shared.get(key)
        )
        if differing:
            raise LettersError(
                f"{path}: cannot share a pass with {paths[0]}: they differ in "
                f"{', '.join(differing)}"
            )
    state_dict = {
        name: torch.cat([checkpoint["state_dict"][name] for checkpoint in checkpoints])
        for name in checkpoints[0]["state_dict"]
    }
    members = [checkpoint["hyper_parameters"]["members"][0] for checkpoint in checkpoints]
    try:
        model = LetterClassifier(**shared, members=members)
        model.load_state_dict(state_dict)
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        raise LettersError(f"{paths[0]}: not a letters checkpoint ({first_line(error)})") from None
    return model.to(device).eval()
