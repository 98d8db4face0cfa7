"""A run's record (metrics.json): what is written is what is read, a damaged one is one clear
line, and the line printed for a run says how it ended."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from letters.common.records import (
    FAILED_SCORE,
    RecordError,
    Status,
    read_record,
    record_line,
    score,
    write_record,
)


def test_a_written_record_reads_back(tmp_path: Path) -> None:
    write_record(tmp_path, {"status": Status.FINISHED, "val_acc": 0.5, "params": {"lr": 0.1}})
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "finished"
    assert read_record(tmp_path) == {"status": "finished", "val_acc": 0.5, "params": {"lr": 0.1}}
    assert read_record(tmp_path / "elsewhere") is None


@pytest.mark.parametrize("text, reason", [("{not json", "Expecting"), ("[1, 2]", "not a JSON")])
def test_a_damaged_record_is_one_line_naming_the_file(
    tmp_path: Path, text: str, reason: str
) -> None:
    (tmp_path / "metrics.json").write_text(text)
    with pytest.raises(RecordError) as raised:
        read_record(tmp_path)
    assert str(raised.value).startswith(f"{tmp_path / 'metrics.json'}: unreadable (")
    assert reason in raised.value.reason and "\n" not in str(raised.value)


def test_only_a_finished_run_scores_its_accuracy() -> None:
    assert score({"status": "finished", "val_acc": 0.75}) == 0.75
    assert score({"status": "finished", "val_acc": 0.0}) == 0.0
    for record in ({"status": "diverged", "val_acc": 0.5}, {"status": "failed"}, None):
        assert score(record) == FAILED_SCORE  # type: ignore[arg-type]


def test_the_line_of_each_ending() -> None:
    finished = {
        "status": "finished",
        "val_acc": 0.637,
        "best_val_acc": 0.65,
        "test_acc": 0.66,
        "train_loss": 1.23456,
        "wall_seconds": 12.34,
    }
    assert record_line(finished) == (
        "finished: val_acc 63.7% (best 65.0%), test_acc 66.0%, train_loss 1.2346, 12.3 s"
    )
    assert record_line(finished, collapsed=True).endswith("12.3 s; collapsed")
    # A stack's times are the whole stack's: the line says whose they are.
    assert record_line({**finished, "stack_size": 1}).endswith("train_loss 1.2346, 12.3 s")
    assert record_line({**finished, "stack_size": 10}).endswith(
        "train_loss 1.2346, stack of 10: 12.3 s"
    )
    assert record_line({"status": "failed", "error": "x.png: not an image"}) == (
        "failed: x.png: not an image"
    )
    diverged = {"status": "diverged", "val_acc": None, "diverged_epoch": 3, "diverged_step": 7}
    assert record_line(diverged) == ("diverged: val_acc - (best -), test_acc -; at epoch 3, step 7")
    interrupted = {"status": "interrupted", "resume": "python -m letters.train resume=RUN"}
    assert record_line(interrupted).endswith("; continue with python -m letters.train resume=RUN")
