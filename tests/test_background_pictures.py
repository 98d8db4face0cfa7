"""Where training leaves cores idle, a stacked sweep draws a stack's pictures while its next
stack trains (letters.reporting.background_pictures): every run still gets every picture and
its train.log line, a picture that cannot be written is said and recorded in that run's own
files, and the sweep waits for the last pictures before its summary."""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import Future
from pathlib import Path

import pytest

from conftest import run_cli
from letters.common.records import write_record
from letters.reporting.background_pictures import PendingRun, settle
from letters.runs.threads import available_cores

PICTURES = {"confusion_matrix.png", "learning_curves.png", "mistakes.png", "tsne.png"}
BLOCKED_JOB = 1  # its pictures/ cannot be made: a file is in the way

needs_an_idle_core = pytest.mark.skipif(
    available_cores() < 2, reason="needs a core that training (torch_threads=1) leaves idle"
)


@pytest.fixture(scope="module")
def sweep(list_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four jobs in two stacks of two, one torch thread (a core left for the pictures), as a
    user types it; job 1's pictures/ folder is blocked by a file."""
    work = tmp_path_factory.mktemp("background")
    os.environ["LETTERS_CACHE_DIR"] = str(work / "cache")
    folder = work / "sweep"
    (folder / str(BLOCKED_JOB)).mkdir(parents=True)
    (folder / str(BLOCKED_JOB) / "pictures").write_text("in the way")
    result = run_cli(
        "train",
        "-m",
        "momentum=0.9,0.95",
        "seed=1,2",
        "hydra.launcher.max_stack=2",
        "torch_threads=1",
        "data=list",
        f"data.root={list_dataset}",
        "epochs=2",
        "batch_size=16",
        f"hydra.sweep.dir={folder}",
        cwd=work,
    )
    jobs = [folder / str(number) for number in range(4)]
    return {"stdout": result.stdout, "jobs": jobs, "folder": folder}


@needs_an_idle_core
def test_the_pictures_of_a_stack_are_drawn_while_the_sweep_goes_on(sweep: dict) -> None:
    console = sweep["stdout"]
    said = "each its best checkpoint on the test split (their pictures are drawn while the sweep"
    assert console.count(said) == 2, console
    # The second stack trained before anyone waited for the first one's pictures.
    assert console.index("waiting for the pictures of") > console.rindex("training starts")
    assert console.index("pictures: 3 drawn, 1 not, after ") < console.index("== 4 jobs of")
    for number, job in enumerate(sweep["jobs"]):
        if number == BLOCKED_JOB:
            continue
        assert {path.name for path in (job / "pictures").iterdir()} == PICTURES
        record = json.loads((job / "metrics.json").read_text())
        assert record["status"] == "finished" and "pictures_error" not in record
        log = (job / "train.log").read_text().splitlines()
        assert log[-1].endswith(": pictures drawn"), log[-1]
        tensorboard = next((job / "tensorboard").iterdir())
        assert (tensorboard / "projector_config.pbtxt").is_file()


@needs_an_idle_core
def test_a_picture_that_cannot_be_written_is_said_and_recorded_in_its_runs_files(
    sweep: dict,
) -> None:
    """The run is tested and recorded; its pictures' failure is added to its metrics.json
    and said once, on the console and in its own train.log, in no other run's."""
    blocked = sweep["jobs"][BLOCKED_JOB]
    record = json.loads((blocked / "metrics.json").read_text())
    assert record["status"] == "finished" and record["test_acc"] is not None
    reason = record["pictures_error"]
    assert str(blocked / "pictures") in reason and "cannot be written" in reason, reason
    line = f"momentum=0.9,seed=2: pictures not drawn: {reason}"  # as TensorBoard names it
    assert sweep["stdout"].count(line) == 1, sweep["stdout"]
    assert line in (blocked / "train.log").read_text()
    for job in sweep["jobs"]:
        if job != blocked:
            assert "pictures not drawn" not in (job / "train.log").read_text()


def ended(run_dir: Path, error: BaseException | None) -> PendingRun:
    """A run whose pictures' worker has ended, with ``error`` or without."""
    future: Future[None] = Future()
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
    formatter = logging.Formatter("%(levelname)s %(message)s")
    return PendingRun(
        run_dir, "seed=3: ", [(str(run_dir / "train.log"), formatter)], (None, {}), future
    )


def test_a_drawing_bug_is_recorded_in_one_line_with_its_kind(tmp_path: Path) -> None:
    """A bug in a worker (not a file that cannot be written) ends the run's pictures only: its
    kind and first line go into its metrics.json and its train.log, nothing is raised."""
    write_record(tmp_path, {"status": "finished", "test_acc": 0.5})
    assert settle(ended(tmp_path, TypeError("bad operand\nsecond line"))) is False
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record == {
        "status": "finished",
        "test_acc": 0.5,
        "pictures_error": "TypeError: bad operand",
    }
    log = (tmp_path / "train.log").read_text()
    assert log == "ERROR seed=3: pictures not drawn: TypeError: bad operand\n"


def test_pictures_drawn_leave_the_record_alone_and_say_so_in_the_log(tmp_path: Path) -> None:
    write_record(tmp_path, {"status": "finished", "test_acc": 0.5})
    before = (tmp_path / "metrics.json").read_bytes()
    assert settle(ended(tmp_path, None)) is True
    assert (tmp_path / "metrics.json").read_bytes() == before
    assert (tmp_path / "train.log").read_text() == "INFO seed=3: pictures drawn\n"
