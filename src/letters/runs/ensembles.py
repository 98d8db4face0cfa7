"""``ensemble=K``: one run of K differently seeded members whose probabilities are averaged.

The members are ordinary runs (``RUN/members/<i>/``, each with its own checkpoints, metrics
and trackers) trained by the same engine as one stack, beside any other job of the sweep.
Afterwards their best checkpoints are joined into one K-member checkpoint,
``RUN/checkpoints/best.ckpt``, whose forward pass averages the members' probabilities: the
run's validation and test accuracy, ``letters.test`` and ``letters.predict`` all read it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("letters.train")

# Member i of a run with seed s has seed s + i * SEED_STEP: member 0 is the run alone, and the
# members of runs with nearby seeds (a seed=1,2,3 sweep) never share a seed.
SEED_STEP = 10007


def member_seeds(seed: int, size: int) -> list[int]:
    return [seed + SEED_STEP * index for index in range(size)]


def member_config(cfg: DictConfig, run_dir: Path, index: int, member_dir: Path) -> DictConfig:
    """Member ``index``'s config: the run's, with its own seed, folder and trackers' folders,
    one member, and no pictures (the ensemble draws its own)."""
    member = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    member.seed = member_seeds(int(cfg.seed), int(cfg.ensemble))[index]
    member.ensemble = 1
    member.pictures = False
    for tracker in (member.get("logger") or {}).values():
        if isinstance(tracker, DictConfig) and tracker.get("save_dir") == str(run_dir):
            tracker.save_dir = str(member_dir)
        if isinstance(tracker, DictConfig) and OmegaConf.select(tracker, "tags.run_dir"):
            tracker.tags.run_dir = str(member_dir)
    return member


def joined_checkpoint(paths: list[Path]) -> dict[str, Any]:
    """One checkpoint holding every member of ``paths`` (one-member checkpoints of the same
    model): weights stacked along the member dimension, members and histories listed. It is
    for evaluation only: optimizer and loop states are left out."""
    import torch

    from letters.engine.checkpoint import read_checkpoint

    parts = [read_checkpoint(path) for path in paths]
    first = parts[0]
    joined = {
        "state_dict": {
            name: torch.cat([part["state_dict"][name] for part in parts])
            for name in first["state_dict"]
        },
        "hyper_parameters": {
            **first["hyper_parameters"],
            "members": [m for part in parts for m in part["hyper_parameters"]["members"]],
        },
        "history": [h for part in parts for h in part.get("history", [])],
        "ensemble_of": [str(path) for path in paths],
    }
    for key in ("pytorch-lightning_version", "epoch", "global_step"):
        if key in first:
            joined[key] = first[key]
    return joined


def member_summary(member_dir: Path) -> dict[str, Any]:
    """What the ensemble's metrics.json says of one member: its seed and accuracies."""
    try:
        record = json.loads((member_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {"run_dir": str(member_dir), "status": "missing"}
    keys = ("status", "val_acc", "best_val_acc", "test_acc", "train_loss", "epochs_completed")
    summary = {key: record.get(key) for key in keys}
    summary.update(seed=record.get("params", {}).get("seed"), run_dir=str(member_dir))
    return summary
