"""Stacks: K runs of one configuration, differing only in per-member settings, trained at once.

A stack is the unit of training. Its members share the data, the architecture, the optimizer
kind, the batch size and the schedule; each has its own seed (initialisation, batch order,
augmentation), init, learning rate, momentum and weight decay. A single run is a stack of one.
This module holds what a member is, which jobs may share a stack, the per-epoch seeds, and how
a stack's checkpoint becomes one member's ordinary one-member checkpoint, and back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from letters.optim import OPTIMIZER_MEMBER_KEYS, PER_MEMBER_KEYS, member_optimizer_state

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


# What ``stack_key`` puts for ``resume`` in the key of a job that continues from a checkpoint of
# its own: each names its own file, yet such jobs may continue together as one stack.
OWN_CHECKPOINT = "own checkpoint"


def stack_key(cfg: DictConfig) -> str:
    """Jobs whose configs give the same key may train as one stack: everything but the member
    settings and where and under which name the job logs is equal.

    Jobs that continue from a checkpoint each (``resume=...ckpt``, a one-member one: what
    resume=true and a requeue give every interrupted job) get one key, as the jobs they were:
    whether their checkpoints are at the same point is read from the checkpoints themselves
    (letters.runs.stacking). An ensemble's ``resume=RUN`` keeps its folder in the key: it
    continues on its own path (letters.runs.ensembles.continue_ensemble).
    """
    shared = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(shared, dict)
    if continues_from_checkpoint(cfg):
        shared["resume"] = OWN_CHECKPOINT
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


def continues_from_checkpoint(cfg: DictConfig | Mapping[str, Any]) -> bool:
    """Whether the job continues from a checkpoint of its own (``resume`` names a .ckpt file)."""
    resume = cfg.get("resume")
    return isinstance(resume, str) and Path(resume).suffix == ".ckpt"


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


class CheckpointsDiffer(ValueError):
    """Checkpoints that cannot be one stack's: the message names what differs."""


def stacked_checkpoint(
    checkpoints: Sequence[Mapping[str, Any]], callback_key: str | None = None
) -> dict[str, Any]:
    """The checkpoint of a stack whose member k is ``checkpoints[k]``, each a one-member
    checkpoint (what member_checkpoint cuts): its inverse, for Lightning's Trainer to continue
    the members as one stack from where each stopped.

    Per member, stacked in order: every weight and optimizer state tensor (their one row each),
    the optimizer's per-member lists and active mask (PER_MEMBER_KEYS), the hyper-parameters'
    ``members``, the MEMBER_RECORDS and ``callback_key``'s lists. Everything else (the epoch and
    step, the loops' progress, the architecture and recipe, the optimizer's schedule step and
    shared settings, the other callbacks' state) must be equal in all of them, or
    CheckpointsDiffer names the first that is not. The hyper-parameters' optimizer settings
    are the first member's, as in a stack's own checkpoint (each member's are in ``members``).
    """
    if not checkpoints:
        raise ValueError("no checkpoints to stack")
    for checkpoint in checkpoints:
        if len(checkpoint["hyper_parameters"]["members"]) != 1:
            raise CheckpointsDiffer("a checkpoint holds a stack, not one member")
    stacked: dict[str, Any] = {}
    per_member = {"state_dict", "optimizer_states", "hyper_parameters", "callbacks"}
    for key in dict.fromkeys(key for checkpoint in checkpoints for key in checkpoint):
        values = [checkpoint.get(key) for checkpoint in checkpoints]
        if key in MEMBER_RECORDS:
            if any(value is None for value in values):
                raise CheckpointsDiffer(f"{key} (only some have it)")
            stacked[key] = [entry for value in values for entry in value]
        elif key not in per_member:
            stacked[key] = shared_value(values, key)
    stacked["hyper_parameters"] = stacked_hyper_parameters(  # first: it names a cause
        [checkpoint["hyper_parameters"] for checkpoint in checkpoints]
    )
    stacked["state_dict"] = stacked_tensors([c["state_dict"] for c in checkpoints], "weights")
    optimizer_states = [checkpoint.get("optimizer_states") or [] for checkpoint in checkpoints]
    shared_value([len(states) for states in optimizer_states], "optimizer_states")
    stacked["optimizer_states"] = [
        stacked_optimizer_state(states) for states in zip(*optimizer_states, strict=True)
    ]
    callbacks = [checkpoint.get("callbacks") or {} for checkpoint in checkpoints]
    stacked["callbacks"] = {}
    for name in dict.fromkeys(name for states in callbacks for name in states):
        states = [one.get(name) for one in callbacks]
        if name != callback_key:
            stacked["callbacks"][name] = shared_value(states, f"callbacks.{name}")
        elif any(state is None for state in states):
            raise CheckpointsDiffer(f"callbacks.{name} (only some have it)")
        else:
            stacked["callbacks"][name] = {
                field: [entry for value in values for entry in value]
                for field, values in zip_keys(states, f"callbacks.{name}")
            }
    return stacked


def stacked_hyper_parameters(each: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One stack's hyper-parameters from its members' own: ``members`` listed, the rest equal
    but the optimizer's per-member settings (the first member's stand, as in a stack's)."""

    def shared_part(hyper_parameters: Mapping[str, Any]) -> dict[str, Any]:
        part = {key: value for key, value in hyper_parameters.items() if key != "members"}
        if isinstance(part.get("optimizer"), Mapping):
            part["optimizer"] = {
                key: value
                for key, value in part["optimizer"].items()
                if key not in OPTIMIZER_MEMBER_KEYS
            }
        return part

    for key, values in zip_keys([shared_part(one) for one in each], "hyper_parameters"):
        shared_value(values, f"hyper_parameters.{key}")
    return {
        **each[0],
        "members": [member for one in each for member in one["members"]],
    }


def stacked_optimizer_state(states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The inverse of member_optimizer_state: one StackedOptimizer state dict from its
    members' own. Each member's state tensors hold its one row; its param group's per-member
    lists (PER_MEMBER_KEYS) its one value; the rest (the schedule step, shared settings) must
    be equal."""
    shared_value([len(state["param_groups"]) for state in states], "optimizer param groups")
    groups = []
    each_group = zip(*(state["param_groups"] for state in states), strict=True)
    for index, group_each in enumerate(each_group):
        group = {}
        for key, values in zip_keys(group_each, f"optimizer param group {index}"):
            if key in PER_MEMBER_KEYS and all(isinstance(v, list | tuple) for v in values):
                group[key] = [entry for value in values for entry in value]
            else:
                group[key] = shared_value(values, f"optimizer param group {index}: {key}")
        groups.append(group)
    return {
        "state": {
            parameter: stacked_tensors(each, f"optimizer state {parameter}")
            for parameter, each in zip_keys([state["state"] for state in states], "optimizer state")
        },
        "param_groups": groups,
    }


def stacked_tensors(each: Sequence[Mapping[str, Any]], what: str) -> dict[str, Any]:
    """Named tensors of one member each, stacked along the member dimension (their one row);
    anything else (a number, a scalar tensor) must be equal in all."""
    stacked = {}
    for name, values in zip_keys(each, what):
        if all(isinstance(v, torch.Tensor) and v.dim() >= 1 and len(v) == 1 for v in values):
            if len({(v.shape[1:], v.dtype) for v in values}) > 1:
                raise CheckpointsDiffer(f"{what}: {name} (shapes or types)")
            stacked[name] = torch.cat(values)
        else:
            stacked[name] = shared_value(values, f"{what}: {name}")
    return stacked


def zip_keys(each: Sequence[Mapping[str, Any]], what: str = "keys") -> list[tuple[Any, list[Any]]]:
    """Each key of mappings that must have the same keys, with its value in each of them."""
    keys = list(each[0])
    if any(set(one) != set(keys) for one in each[1:]):
        raise CheckpointsDiffer(what)
    return [(key, [one[key] for one in each]) for key in keys]


def shared_value(values: Sequence[Any], what: str) -> Any:
    """The one value that ``values`` all are, or CheckpointsDiffer naming ``what``."""
    if any(not same(values[0], value) for value in values[1:]):
        raise CheckpointsDiffer(what)
    return values[0]


def same(one: Any, other: Any) -> bool:
    """Equality through dicts, lists and tensors (equal shapes, types and values)."""
    if isinstance(one, torch.Tensor) or isinstance(other, torch.Tensor):
        return (
            isinstance(one, torch.Tensor)
            and isinstance(other, torch.Tensor)
            and one.shape == other.shape
            and one.dtype == other.dtype
            and torch.equal(one, other)
        )
    if isinstance(one, Mapping) and isinstance(other, Mapping):
        return one.keys() == other.keys() and all(same(one[key], other[key]) for key in one)
    if isinstance(one, list | tuple) and isinstance(other, list | tuple):
        return len(one) == len(other) and all(map(same, one, other))
    return bool(one == other)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
