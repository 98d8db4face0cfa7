"""What a user typed wrongly ends in one line that says what was meant, before anything slow,
and leaves the folders in one state: none for a misspelt key or choice (refused before Hydra
makes one), else a run folder whose metrics.json says ``failed`` with the line that also ends
its train.log (the rule of letters.runs.jobs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli
from letters.common.entry import CONF_DIR
from letters.common.errors import ConfigError
from letters.common.overrides import check_group_choices, check_keys
from letters.common.records import Status, read_record

NEEDED = "the list layout needs train.json, validation.json, test.json and images/ in data.root"


def last_error(result) -> str:
    """The last line of stderr, after checking that the command failed in one line."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def folders(cwd: Path) -> list[Path]:
    """Every run or sweep-job folder a command left in outputs/."""
    outputs = cwd / "outputs"
    return sorted(p.parent for p in outputs.rglob(".hydra")) if outputs.exists() else []


@pytest.mark.parametrize(
    ("command", "arguments", "line"),
    [
        (
            "train",
            ["momentun=0.9"],
            "error: momentun is not a key of letters.train; did you mean momentum?",
        ),
        (
            "train",
            ["-m", "momentun=0.9,0.95"],
            "error: momentun is not a key of letters.train; did you mean momentum?",
        ),
        (
            "train",
            ["data=list", "data.roott=DIR"],
            "error: data.roott is not a key of letters.train; did you mean data.root?",
        ),
        (
            "train",
            ["-m", "optimizer=sgd,adam", "optimizer.momentun=0.5"],
            "error: optimizer.momentun is not a key of letters.train; "
            "did you mean optimizer.momentum?",
        ),
        (
            "train",
            ["data.root=DIR"],
            "error: data.root is not a key of data=synthetic, only of data=emnist, data=list",
        ),
        (
            "train",
            ["+momentun=0.9"],
            "error: momentun is not a key of letters.train (+ adds it, but nothing reads it); "
            "did you mean momentum?",
        ),
        (
            "train",
            ["trainer.precision=16"],
            "error: trainer.precision is not a key of letters.train; to pass it to "
            "pytorch_lightning.Trainer, add it: +trainer.precision=16",
        ),
        (
            "test",
            ["ckpt=x.ckpt", "splitt=test"],
            "error: splitt is not a key of letters.test; did you mean split?",
        ),
        (
            "predict",
            ["ckpt=x.ckpt", "image=a.png"],
            "error: image is not a key of letters.predict; did you mean images?",
        ),
    ],
)
def test_an_unknown_key_names_the_closest_and_makes_no_folder(
    tmp_path: Path, command: str, arguments: list[str], line: str
) -> None:
    result = run_cli(command, *arguments, cwd=tmp_path, check=False)
    assert last_error(result) == line
    assert len(result.stderr.strip().splitlines()) == 1
    assert "+momentun=" not in result.stderr  # no advice to add the typo
    assert not (tmp_path / "outputs").exists()


def test_keys_passed_on_to_a_constructor_may_be_added_with_plus() -> None:
    """``+`` adds the arguments letters hands on: Trainer's, and a _target_ class's."""
    check_keys(["+trainer.precision=16"], "train", CONF_DIR)
    check_keys(["data=list", "+data.eval_batch_size=64"], "train", CONF_DIR)
    check_keys(
        ["-m", "experiment=momentum_table", "hydra/launcher=stacked", "seed=1,2"], "train", CONF_DIR
    )
    with pytest.raises(
        ConfigError, match=r"takes no argument precisoin; did you mean trainer\.precision\?"
    ):
        check_keys(["+trainer.precisoin=16"], "train", CONF_DIR)
    with pytest.raises(ConfigError, match=r"did you mean data\.eval_batch_size"):
        check_keys(["data=list", "+data.eval_batch_sise=64"], "train", CONF_DIR)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["lr=abc"], "lr='abc' must be a number"),
        (["hidden_sizes=64"], "hidden_sizes=64 must be a list of whole numbers > 0, e.g. [64,32]"),
        (["data=list", "data.root=EMPTY"], f"EMPTY: not a data folder ({NEEDED})"),
    ],
)
def test_a_run_that_cannot_train_leaves_a_failed_record(
    tmp_path: Path, cache_dir: Path, arguments: list[str], message: str
) -> None:
    (tmp_path / "EMPTY").mkdir()
    arguments = [a.replace("EMPTY", str(tmp_path / "EMPTY")) for a in arguments]
    message = message.replace("EMPTY", str(tmp_path / "EMPTY"))
    result = run_cli("train", *arguments, cwd=tmp_path, check=False)
    assert last_error(result) == f"error: {message}"
    assert len(result.stderr.strip().splitlines()) == 1  # once in the terminal
    (run_dir,) = folders(tmp_path)
    assert read_record(run_dir) == {"status": str(Status.FAILED), "error": message}
    log = (run_dir / "train.log").read_text().strip().splitlines()
    assert log[-1].endswith(f"error: {message}")
    assert "torch threads" not in result.stdout  # said before anything slow


def test_a_misspelt_choice_makes_no_folder(tmp_path: Path) -> None:
    result = run_cli("train", "optimizer=adm", cwd=tmp_path, check=False)
    assert last_error(result).startswith("error: optimizer='adm' is not one of: ")
    assert not (tmp_path / "outputs").exists()


def test_each_failed_job_of_a_sweep_is_recorded(tmp_path: Path, cache_dir: Path) -> None:
    run_cli("train", "-m", "lr=abc,-1", cwd=tmp_path, check=False)
    jobs = folders(tmp_path)
    assert len(jobs) == 2
    for job in jobs:
        record = read_record(job)
        assert record is not None and record["status"] == str(Status.FAILED)
        lines = (job / "train.log").read_text().strip().splitlines()
        assert lines[-1].endswith(f"error: {record['error']}")
    errors = sorted(read_record(job)["error"] for job in jobs)  # type: ignore[index]
    assert errors == ["lr='abc' must be a number", "lr=-1 must be > 0"]


def test_an_empty_data_folder_says_what_it_must_hold(tmp_path: Path, cache_dir: Path) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    result = run_cli("train", "data=list", f"data.root={empty}", cwd=tmp_path, check=False)
    assert last_error(result) == f"error: {empty}: not a data folder ({NEEDED})"


def test_the_images_folder_given_as_data_root_points_at_its_parent(
    tmp_path: Path, cache_dir: Path, list_dataset: Path
) -> None:
    images = list_dataset / "images"
    result = run_cli("train", "data=list", f"data.root={images}", cwd=tmp_path, check=False)
    assert last_error(result) == (
        f"error: {images}: an images folder, not the data folder ({NEEDED}); "
        f"did you mean data.root={list_dataset}?"
    )
    assert not (cache_dir.exists() and any(cache_dir.iterdir()))


def test_a_folder_holding_the_data_points_at_it(
    tmp_path: Path, cache_dir: Path, list_dataset: Path
) -> None:
    above = tmp_path / "datasets"
    above.mkdir()
    (above / "letters").symlink_to(list_dataset)
    result = run_cli("train", "data=list", f"data.root={above}", cwd=tmp_path, check=False)
    assert last_error(result) == (
        f"error: {above}: not a data folder ({NEEDED}); did you mean data.root={above}/letters?"
    )


def test_letters_test_checks_the_data_folder_before_the_checkpoint(tmp_path: Path) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    result = run_cli(
        "test", "ckpt=missing.ckpt", "data=list", f"data.root={empty}", cwd=tmp_path, check=False
    )
    assert last_error(result) == f"error: {empty}: not a data folder ({NEEDED})"


def test_data_list_without_a_root_says_what_it_needs(tmp_path: Path, cache_dir: Path) -> None:
    result = run_cli("train", "data=list", cwd=tmp_path, check=False)
    assert last_error(result) == (
        "error: data.root=DIR is needed: a folder holding train.json, validation.json, "
        "test.json and images/"
    )
    (run_dir,) = folders(tmp_path)
    assert read_record(run_dir)["status"] == str(Status.FAILED)  # type: ignore[index]


def test_the_list_layout_reader_applies_the_same_check(tmp_path: Path) -> None:
    """The data module's own reading refuses the folder with the same line."""
    from letters.common.errors import LettersError
    from letters.data.list_layout import load_list_layout

    with pytest.raises(LettersError) as caught:
        load_list_layout(tmp_path, 32, tmp_path / "cache")
    assert str(caught.value) == f"{tmp_path}: not a data folder ({NEEDED})"


def test_hydras_own_logging_options_stay_choosable() -> None:
    """conf/hydra/job_logging/ adds letters' option beside Hydra's own, not instead of them."""
    check_group_choices(["hydra/job_logging=stdout", "hydra/hydra_logging=disabled"], CONF_DIR)
    with pytest.raises(ConfigError, match="stdot"):
        check_group_choices(["hydra/job_logging=stdot"], CONF_DIR)
