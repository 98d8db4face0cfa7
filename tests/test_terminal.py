"""What the terminal and train.log say, as a user reads them: a stacked sweep names each run in
its lines and says whose times they are, says what it does after training and how far it is,
logs each validation in each run's train.log, ends a grid with the best runs' checkpoints and
the commands that use them, and leaves out lines no one acts on."""

from __future__ import annotations

import io
import json
import os
import re
import statistics
from pathlib import Path

import pytest
from tqdm import tqdm

from conftest import run_cli
from letters.engine.callbacks import StepProgressBar

MOMENTA, SEEDS = ("0.9", "0.95"), ("1", "2")
EPOCHS = 2


@pytest.fixture(scope="module")
def sweep(list_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One small stacked grid (2 momenta x 2 seeds, pictures drawn), as a user types it."""
    work = tmp_path_factory.mktemp("terminal")
    os.environ["LETTERS_CACHE_DIR"] = str(work / "cache")
    result = run_cli(
        "train",
        "-m",
        f"momentum={','.join(MOMENTA)}",
        f"seed={','.join(SEEDS)}",
        "hydra/launcher=stacked",
        "data=list",
        f"data.root={list_dataset}",
        f"epochs={EPOCHS}",
        "val_interval=1",
        "batch_size=16",
        cwd=work,
    )
    (folder,) = (work / "outputs" / "sweeps").iterdir()
    jobs = sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return {"stdout": result.stdout, "stderr": result.stderr, "folder": folder, "jobs": jobs}


def settings_of(job: Path) -> tuple[str, str]:
    params = json.loads((job / "metrics.json").read_text())["params"]
    return str(params["momentum"]), str(params["seed"])


def test_each_finished_line_names_its_run_and_says_the_time_is_the_stacks(sweep: dict) -> None:
    console = sweep["stdout"]
    for job in sweep["jobs"]:
        momentum, seed = settings_of(job)
        label = rf"momentum={re.escape(momentum)}\s+seed={seed}: "
        line = label + r"finished: val_acc [\d.]+% .*, stack of 4: [\d.]+ s$"
        assert re.search(line, console, re.MULTILINE), console
        assert re.search(line, (job / "train.log").read_text(), re.MULTILINE)


def test_the_end_of_a_stack_says_what_it_does_and_how_far_it_is(sweep: dict) -> None:
    console = sweep["stdout"]
    announced = console.index(
        "testing 4 runs, each its best checkpoint on the test split and drawing their pictures"
    )
    assert announced < console.index("finished: val_acc")
    assert (
        len(re.findall(r": tested best\.ckpt \(epoch \d\): test_acc [\d.]+%$", console, re.M)) == 4
    )
    drawn = re.findall(r"seed=\d: pictures drawn \((\d) of 4\)$", console, re.MULTILINE)
    assert sorted(drawn) == ["1", "2", "3", "4"]
    assert console.rindex("pictures drawn") < console.index("finished: val_acc")


def test_each_validation_is_a_line_in_each_runs_train_log(sweep: dict) -> None:
    for job in sweep["jobs"]:
        log = (job / "train.log").read_text()
        for epoch in range(1, EPOCHS + 1):  # its own line, not its stack-mates'
            own = re.findall(
                rf"epoch {epoch}/{EPOCHS}: val_acc [\d.]+%, train_loss [\d.]+$", log, re.M
            )
            assert len(own) == 1, log
    console = sweep["stdout"]
    assert not re.search(r"epoch \d/\d: val_acc", console)  # the console gets one line a validation
    means = re.findall(rf"epoch (\d)/{EPOCHS}, mean of 4 runs: val_acc [\d.]+% \(", console)
    assert means == [str(epoch) for epoch in range(1, EPOCHS + 1)]


def test_a_grids_summary_ends_with_the_best_runs_checkpoint_and_how_to_use_it(
    sweep: dict,
) -> None:
    records = {job: json.loads((job / "metrics.json").read_text()) for job in sweep["jobs"]}
    by_momentum = {
        momentum: [job for job in records if settings_of(job)[0] == momentum]
        for momentum in MOMENTA
    }
    means = {
        m: statistics.fmean(records[j]["val_acc"] for j in jobs) for m, jobs in by_momentum.items()
    }
    best_momentum = max(MOMENTA, key=lambda momentum: means[momentum])  # the first of equals
    best_job = min(by_momentum[best_momentum], key=lambda job: -records[job]["val_acc"])
    checkpoint = f"outputs/sweeps/{sweep['folder'].name}/{best_job.name}/checkpoints/best.ckpt"
    summary = sweep["stdout"][sweep["stdout"].index("\n== ") :]
    assert f"Best setting momentum={best_momentum}: its runs, best first" in summary
    assert f"\n  python -m letters.test ckpt={checkpoint}\n" in summary
    assert f"\n  python -m letters.predict ckpt={checkpoint} images=[" in summary
    assert (sweep["folder"].parent.parent.parent / checkpoint).is_file()
    for job in by_momentum[best_momentum]:  # each run of the best setting, with its checkpoint
        assert f"  {job.name} (seed={settings_of(job)[1]}): val acc " in summary
    # The summary's line of each job is the logged one, "stack of 4" included.
    assert len(re.findall(r"^  \d \(momentum=.*stack of 4: [\d.]+ s$", summary, re.M)) == 4


def test_lines_no_one_acts_on_are_left_out(sweep: dict) -> None:
    printed = sweep["stdout"] + sweep["stderr"]
    logs = "".join((job / "train.log").read_text() for job in sweep["jobs"])
    assert "GPU available" not in printed + logs and "TPU available" not in printed + logs
    assert "training starts on cpu: 2 epochs of " in printed
    # Hydra's line of each job names what sets it apart; what every job shares, once.
    assert sweep["stdout"].count("data.root=") == 1
    for job in sweep["jobs"]:
        momentum, seed = settings_of(job)
        assert re.search(rf"#{job.name} : momentum={momentum} seed={seed}$", printed, re.M)
    # The console's lines start with the time of day; train.log keeps the full format.
    assert re.search(r"^\[\d\d:\d\d:\d\d\] testing 4 runs", sweep["stdout"], re.MULTILINE)
    assert "[letters.train][INFO] - testing 4 runs" in logs


def test_a_pre_training_bar_says_the_whole_runs_time_left() -> None:
    """25 of 50 pre-training steps in 10 s: 25 more, then the 100 steps of the real data's
    fit, at 2.5 steps a second, leave 50 s."""
    progress = StepProgressBar("Pre-training epoch", then_steps=100)
    progress.bar = tqdm(total=50, file=io.StringIO())
    progress.bar.update(25)
    progress.bar.start_t -= 10
    assert progress.whole_run_left() == "00:50"
    progress.show_postfix(refresh=False)
    assert progress.bar.postfix == "whole run ~00:50 left"
    fit = StepProgressBar()  # the real data's fit: its own time left is the whole run's
    fit.bar = tqdm(total=50, file=io.StringIO())
    fit.bar.update(25)
    assert fit.whole_run_left() is None
