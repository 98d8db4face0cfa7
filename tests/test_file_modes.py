"""Result files get the mode the user's umask gives any new file (0644 under umask 022, 0600
under 077), as a plain open() would: metrics, checkpoints, pictures, reports are written
through a temporary file (mkstemp, private 0600) that is renamed into place."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from letters.common import files
from letters.common.files import umask, write_atomically, write_json


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def set_umask(mask: int) -> int:
    return os.umask(mask)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_write_atomically_follows_the_umask(tmp_path: Path, mask: int) -> None:
    previous = set_umask(mask)
    try:
        assert umask() == mask
        write_json(tmp_path / "new.json", {"a": 1})
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        assert mode(tmp_path / "new.json") == 0o666 & ~mask == mode(plain)

        # Replacing a file (say, one an older letters wrote 0600): the umask's mode too.
        old = tmp_path / "old.ckpt"
        old.write_bytes(b"old")
        old.chmod(0o600)
        write_atomically(old, lambda handle: handle.write(b"new"))
        assert old.read_bytes() == b"new" and mode(old) == 0o666 & ~mask
    finally:
        set_umask(previous)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_umask_is_read_without_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without /proc/self/status (not Linux): os.umask, once per process, and put back."""
    monkeypatch.setattr(files, "PROC_STATUS", str(tmp_path / "no-such-file"))
    monkeypatch.setattr(files, "_umask_of_process", {})
    previous = set_umask(0o027)
    try:
        assert umask() == 0o027
        assert os.umask(0o027) == 0o027  # left as it was
        write_json(tmp_path / "m.json", {})
        assert mode(tmp_path / "m.json") == 0o640
    finally:
        set_umask(previous)


def test_writes_from_threads_leave_the_umask_alone(tmp_path: Path) -> None:
    """Worker threads write results too: reading the umask never changes it under them."""
    previous = set_umask(0o022)
    try:

        def write(index: int) -> None:
            for round_ in range(20):
                write_json(tmp_path / f"{index}-{round_}.json", {"i": index})
                (tmp_path / f"plain-{index}-{round_}").write_text("x")

        threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert {mode(path) for path in tmp_path.iterdir()} == {0o644}
        assert os.umask(0o022) == 0o022
    finally:
        set_umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_a_run_leaves_files_readable_as_the_umask_says(
    list_dataset: Path, tmp_path: Path, cache_dir: Path, mask: int
) -> None:
    """A training run under umask 022 (or 077): every file it leaves, results, Hydra's and
    TensorBoard's alike, and the decoded-data cache, has mode 0644 (or 0600)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "letters.train",
            "data=list",
            f"data.root={list_dataset}",
            "epochs=2",
            "batch_size=16",
        ],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: os.umask(mask),
    )
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    expected = 0o666 & ~mask
    for name in ("metrics.json", "config.yaml", "train.log"):
        assert mode(run / name) == expected, name
    checkpoints = sorted((run / "checkpoints").glob("*.ckpt"))
    pictures = sorted((run / "pictures").glob("*.png"))
    assert {p.name for p in checkpoints} == {"best.ckpt", "last.ckpt"}
    assert len(pictures) >= 3
    wrong = {
        str(path.relative_to(tmp_path)): oct(mode(path))
        for path in [*tmp_path.rglob("*"), *cache_dir.rglob("*")]
        if mode(path) != (0o777 & ~mask if path.is_dir() else expected)
    }
    assert not wrong
