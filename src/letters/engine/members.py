"""Stacks: K runs of one configuration, differing only in per-member settings, trained at once.

A stack is the unit of training. Its members share the data, the architecture, the optimizer
kind, the batch size and the schedule; each has its own seed (initialisation, batch order,
augmentation), init, learning rate, momentum and weight decay. A single run is a stack of one.
This module holds what a member is, which jobs may share a stack, the per-epoch seeds, and how
a stack's checkpoint becomes one member's ordinary one-member checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from letters.optim import OPTIMIZER_MEMBER_KEYS, member_optimizer_state

# The settings that may differ between the members of one stack, with the reference's values
# (conf/train.yaml's defaults), which a member that names none of them gets.
DEFAULT_MEMBER: dict[str, Any] = {
    "seed": 0,
    "init": "normal",
    "lr": 5e-4,
    "momentum": 0.9,
    "weight_decay": 0.0,
}
MEMBER_KEYS: tuple[str, ...] = tuple(DEFAULT_MEMBER)
# OPTIMIZER_MEMBER_KEYS (letters.optim): those of them that are the optimizer's; the optimizer
# config repeats them (conf/optimizer/*.yaml: lr: ${lr}, ...).

# The keys of a checkpoint's own (not hyper-parameter) state that hold one entry per member of
# the stack as it was built (LetterClassifier.on_save_checkpoint writes them): each member's
# per-epoch values and the epoch it was pruned after.
MEMBER_RECORDS: tuple[str, ...] = ("history", "pruned_at")


def member_settings(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A job's per-member settings, as plain Python values (they go into checkpoints)."""
    return {key: _plain(cfg[key]) for key in MEMBER_KEYS}


def stack_key(cfg: DictConfig) -> str:
    """Jobs whose configs give the same key may train as one stack: everything but the member
    settings and where and under which name the job logs is equal."""
    shared = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(shared, dict)
    for key in MEMBER_KEYS:
        shared.pop(key, None)
    optimizer = shared.get("optimizer")
    if isinstance(optimizer, dict):
        for key in OPTIMIZER_MEMBER_KEYS:
            optimizer.pop(key, None)
    for tracker in (shared.get("logger") or {}).values():
        if isinstance(tracker, dict):  # where and under which name each member logs
            for key in ("save_dir", "version", "name", "run_name", "tags"):
                tracker.pop(key, None)
    return json.dumps(shared, sort_keys=True, default=str)


def member_checkpoint(
    checkpoint: Mapping[str, Any], index: int, callback_key: str | None = None
) -> dict[str, Any]:
    """A stack's checkpoint (what Lightning's Trainer dumps) cut down to member ``index``: an
    ordinary one-member checkpoint that letters.test, letters.predict and resume= read.

    Every tensor of the model and the optimizer has a row per member still in the stack first
    (``rows``: which member each row holds, all of them in order where the checkpoint does not
    say); the module's hyper-parameters, its MEMBER_RECORDS and ``callback_key``'s state hold
    one entry per member of the stack as it was built.
    """
    one = dict(checkpoint)
    rows = one.pop("rows", None)
    row = index if rows is None else list(rows).index(index)
    one["state_dict"] = {
        name: tensor[row : row + 1].clone() for name, tensor in checkpoint["state_dict"].items()
    }
    one["optimizer_states"] = [
        member_optimizer_state(state, row) for state in checkpoint.get("optimizer_states", [])
    ]
    hyper_parameters = dict(checkpoint["hyper_parameters"])
    hyper_parameters["members"] = [hyper_parameters["members"][index]]
    one["hyper_parameters"] = hyper_parameters
    for key in MEMBER_RECORDS:
        if key in checkpoint:
            one[key] = [checkpoint[key][index]]
    if callback_key is not None and callback_key in checkpoint.get("callbacks", {}):
        callbacks = dict(checkpoint["callbacks"])
        callbacks[callback_key] = {
            name: [values[index]] for name, values in callbacks[callback_key].items()
        }
        one["callbacks"] = callbacks
    return one


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
