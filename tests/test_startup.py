"""What a command loads before it has work to do: ``--help`` and a mistyped key answer without
torch (about 1.5 s of start-up), whichever command the user typed; a damaged checkpoint
without Lightning (3 to 4 s more)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_environment

COMMANDS = ["train", "test", "predict"]


def imported_modules(arguments: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, set]:
    """Run ``python -X importtime ARGUMENTS``; the result and the names of the modules it
    imported (importtime's lines on stderr)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *arguments],
        cwd=cwd,
        env=cli_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", result.stderr, re.M))
    return result, names


@pytest.mark.parametrize("command", COMMANDS)
def test_help_answers_without_torch(command: str, tmp_path: Path) -> None:
    result, modules = imported_modules(["-m", f"letters.{command}", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "letters.common.entry" in modules  # importtime saw the command itself
    assert "torch" not in modules


@pytest.mark.parametrize("command", COMMANDS)
def test_a_mistyped_key_answers_without_torch(command: str, tmp_path: Path) -> None:
    result, modules = imported_modules(["-m", f"letters.{command}", "no_such_key=1"], tmp_path)
    assert result.returncode == 1
    assert "no_such_key is not a key" in result.stderr
    assert "torch" not in modules


@pytest.mark.parametrize("command", ["test", "predict"])
def test_a_damaged_checkpoint_answers_without_lightning(command: str, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(b"not a checkpoint")
    arguments = (
        [f"ckpt={damaged}", "images=[a.png]"] if command == "predict" else [f"ckpt={damaged}"]
    )
    result, modules = imported_modules(["-m", f"letters.{command}", *arguments], tmp_path)
    assert result.returncode == 1
    assert f"{damaged}: not a readable checkpoint" in result.stderr
    assert "torch" in modules  # the checkpoint was read
    assert "pytorch_lightning" not in modules
