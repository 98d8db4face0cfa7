"""Shared fixtures: a tiny letter data set in the reference's list layout, and a way to run the
command-line entry points exactly as a user types them, in a scratch folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from letters.data.list_layout import export_list_layout
from letters.data.synthetic import render_letters


@pytest.fixture(scope="session")
def list_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """26 x (4 train, 2 validation, 2 test) rendered letters, with some lower-case labels."""
    root = tmp_path_factory.mktemp("letters-data")
    splits = {
        split: render_letters(count, 40, seed)
        for seed, (split, count) in enumerate((("train", 4), ("validation", 2), ("test", 2)))
    }
    export_list_layout(splits, root)
    train = json.loads((root / "train.json").read_text())
    lowered = {
        name: label.lower() if i % 3 == 0 else label
        for i, (name, label) in enumerate(train.items())
    }
    (root / "train.json").write_text(json.dumps(lowered))
    return root


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private decode cache, so tests neither read nor fill the user's."""
    path = tmp_path / "cache"
    monkeypatch.setenv("LETTERS_CACHE_DIR", str(path))
    return path


def run_cli(module: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m letters.<module> args...`` in ``cwd``, as a user would type it."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("HYDRA_FULL_ERROR")
    result = subprocess.run(
        [sys.executable, "-m", f"letters.{module}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"letters.{module} {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result
