"""Files that users already have still work: a checkpoint, a run folder and a sweep folder
written by letters 0.1 (commit e451125, tests/fixtures/release_0_1/, see its README.md) are
read by today's ``letters.test``, ``letters.report`` and ``resume=`` with the same numbers.

The fixture is copied to a scratch folder and every command runs there, as a user types it,
with the relative paths the files were made with. The files are never regenerated: they stand
for what the old release wrote.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "release_0_1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
# The old run's records (metrics.json) and the numbers letters.test printed and wrote for them.
OLD_RUN = EXPECTED["run"]


@pytest.fixture()
def user_folder(tmp_path: Path, cache_dir: Path) -> Path:
    """A copy of the old release's files, somewhere else than where they were made."""
    folder = tmp_path / "user"
    shutil.copytree(FIXTURE, folder)
    return folder


def written_record(stdout: str, cwd: Path) -> dict:
    """The JSON that ``letters.test`` says it wrote (``written: PATH``)."""
    lines = [line for line in stdout.splitlines() if line.startswith("written: ")]
    assert len(lines) == 1, stdout
    return json.loads((cwd / lines[0].removeprefix("written: ")).read_text())


# pictures=false: the pictures (t-SNE above all) take seconds and print nothing that is a
# number; the old code printed and wrote the same accuracy and loss with and without them
# (expected.json keeps both outputs). expected.json also holds split=validation's numbers,
# checked against the run's best_val_acc below without running it again (each command costs
# seconds of imports).
@pytest.mark.parametrize(
    ("case", "args"),
    [
        ("test", ["data=list", "data.root=data"]),
        ("test_checkpoint_data", []),  # no data=: the data the old checkpoint records
    ],
)
def test_an_old_checkpoint_scores_what_it_scored(
    user_folder: Path, case: str, args: list[str]
) -> None:
    expected = EXPECTED[case]
    result = run_cli(
        "test", "ckpt=run/checkpoints/best.ckpt", *args, "pictures=false", cwd=user_folder
    )
    # The printed line, exact to its digits: split, accuracy, image count and loss.
    assert result.stdout.splitlines()[0] == expected["stdout"].splitlines()[0]
    record = written_record(result.stdout, user_folder)
    old = expected["metrics"]
    assert record["split"] == old["split"]
    assert record["count"] == old["count"]
    assert record["accuracy"] == pytest.approx(old["accuracy"], abs=1e-7)  # k of 26 images
    assert record["loss"] == pytest.approx(old["loss"], rel=1e-6)


def test_the_old_numbers_agree_with_the_old_run() -> None:
    """The fixture's own consistency: best.ckpt is the checkpoint of best_val_acc, and the
    test split scored what the run recorded."""
    assert EXPECTED["test_validation"]["metrics"]["accuracy"] == OLD_RUN["best_val_acc"]
    assert EXPECTED["test"]["metrics"]["accuracy"] == OLD_RUN["test_acc"]
    assert EXPECTED["test"]["metrics"]["loss"] == OLD_RUN["test_loss"]


def test_an_old_sweep_reports_what_it_reported(user_folder: Path) -> None:
    result = run_cli("report", "sweep", cwd=user_folder)
    # Every line is independent of where the folder is and when it runs: the title is the
    # folder's name and the last line names the argument as typed (sweep/report.{...}).
    assert result.stdout == (user_folder / "sweep_report.txt").read_text()
    assert (user_folder / "sweep" / "report.png").is_file()  # deleted from the fixture


def test_an_old_run_continues_from_its_last_checkpoint(user_folder: Path) -> None:
    run = user_folder / "run"
    old = json.loads((run / "metrics.json").read_text())
    assert (old["status"], old["epochs_completed"]) == ("finished", 3)
    events = sorted((run / "tensorboard").glob("events.out.tfevents.*"))
    # The old config.yaml names the folder where the run was made (logger save_dir, an
    # absolute path of that machine, /tmp/letters-release-0.1-user/run).
    made_in = Path(
        yaml.safe_load((run / "config.yaml").read_text())["logger"]["tensorboard"]["save_dir"]
    )
    made_in_existed = made_in.exists()

    run_cli("train", "resume=run", "epochs=4", cwd=user_folder)

    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "finished"
    assert record["epochs_completed"] == 4
    assert record["best_val_acc"] >= old["best_val_acc"]
    # The same numbers as the old code gave when it continued the same files (expected.json).
    # The loss after one more epoch allows for float summation order (thread counts, CPUs).
    resumed = EXPECTED["resume_epochs_4"]
    for key in ("val_acc", "best_val_acc", "test_acc"):
        assert record[key] == pytest.approx(resumed[key], abs=1e-7), key
    assert record["train_loss"] == pytest.approx(resumed["train_loss"], rel=1e-4)
    assert record["test_loss"] == pytest.approx(resumed["test_loss"], rel=1e-6)
    # The continued run writes its TensorBoard file into the folder it continues, this copy,
    # not into the folder the run was made in.
    assert len(sorted((run / "tensorboard").glob("events.out.tfevents.*"))) == len(events) + 1
    assert made_in != run
    if not made_in_existed:
        assert not made_in.exists(), f"the continued run wrote into {made_in}"


SAVED_REFERENCES = re.compile(r"(?:_target_|custom_search_space): (letters\.[\w.]+)")


def test_what_saved_files_name_is_importable() -> None:
    """Every letters class or function that a file written by the release before the package
    layout names (a config's ``_target_``, a search space) can still be imported, including
    those only 0.1's searches name."""
    texts = [path.read_text() for path in FIXTURE.rglob("*.yaml")]
    named = {match for text in texts for match in SAVED_REFERENCES.findall(text)}
    named |= {"letters.search.momentum_where_used"}  # an Optuna search's hydra.yaml
    assert "letters.sweep_summary.SweepSummary" in named
    for reference in sorted(named):
        module, _, name = reference.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), reference
