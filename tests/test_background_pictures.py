"""Where training leaves cores idle, a stacked sweep draws a stack's pictures while its next
stack trains (letters.reporting.background_pictures): every run still gets every picture and
its train.log line, a picture that cannot be written is said and recorded in that run's own
files, and the sweep waits for the last pictures before its summary."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli
from letters.runs.threads import available_cores

PICTURES = {"confusion_matrix.png", "learning_curves.png", "mistakes.png", "tsne.png"}
BLOCKED_JOB = 1  # its pictures/ cannot be made: a file is in the way

pytestmark = pytest.mark.skipif(
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
