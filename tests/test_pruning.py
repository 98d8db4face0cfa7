"""Searches whose bad trials stop early (hparams_search with a pruner), as users type them, on
the tiny list data set: pruning under the basic and the stacked launcher, what a pruned trial
leaves, the study in the sweep folder, and a stopped study continued with resume=true.

The pruner here is Optuna's ThresholdPruner, so that which trials stop is certain: a learning
rate of 1e-9 leaves a trial at chance (3.8%), below the threshold of 9%, at its second
validation, where one of 0.01 has reached 11.5%."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import cli_command, cli_environment, job_records, list_data, run_sweep, sweep_jobs

SEARCH = [
    "hparams_search=pruned",
    "epochs=4",
    "val_interval=1",
    "batch_size=16",
    # a recipe that learns something in 4 epochs of the tiny data set
    "optimizer=adam",
    "input_norm=standardize",
    "reduction=mean",
    "hidden_sizes=[64]",
    "hydra.sweeper.n_trials=4",
    "hydra/sweeper/pruner=threshold",
    "hydra.sweeper.pruner.lower=0.09",
    "hydra.sweeper.pruner.n_warmup_steps=2",
    "lr=choice(1e-9, 0.01)",  # the search space narrowed on the command line
    "momentum=0.9",  # and fixed
    "weight_decay=0.0",
]


def study_of(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name="letters_pruned", storage=f"sqlite:///{sweep}/optuna.db")


def check_pruned_search(sweep: Path, console: str) -> dict[int, dict]:
    """What every pruned search must leave; returns each job's record by job number."""
    jobs, records = sweep_jobs(sweep), job_records(sweep)
    records = {int(job.name): record for job, record in zip(jobs, records, strict=True)}
    assert len(records) == 4
    trials = {t.user_attrs["hydra_job_num"]: t for t in study_of(sweep).get_trials()}
    for num, record in records.items():
        trial = trials[num]
        lr = record["params"]["lr"]
        if lr < 1e-6:  # at chance: stopped at its second validation
            assert record["status"] == "pruned", record
            assert record["pruned_epoch"] == 2
            assert record["epochs_completed"] == 2
            assert trial.state is TrialState.PRUNED
            assert trial.last_step == 2
            assert trial.intermediate_values[2] == pytest.approx(record["val_acc"])
        else:
            assert record["status"] == "finished", record
            assert trial.state is TrialState.COMPLETE
            assert trial.value == pytest.approx(record["val_acc"])
            assert sorted(trial.intermediate_values) == [1, 2, 3, 4]
        run = sweep / str(num)
        assert (run / "checkpoints" / "best.ckpt").is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert (run / "train.log").is_file()
        assert list(run.glob("tensorboard/**/events.out.tfevents.*"))
    assert any(r["status"] == "pruned" for r in records.values())
    assert any(r["status"] == "finished" for r in records.values())
    assert "pruned after epoch 2" in console  # the table's note
    assert " pruned" in console and "finished" in console  # the summary's counts
    return records


def test_pruned_search_basic_and_stacked(
    tmp_path: Path, list_dataset: Path, cache_dir: Path
) -> None:
    """The same trials (same sampler seed) trained one by one under the basic launcher and as
    one stack with pruned members in it: both prune the same trials at the same epoch, leave
    the same files, and every trial ends with the same numbers."""
    results = {}
    for launcher, n_jobs in (("basic", 1), ("stacked", 4)):
        sweep = tmp_path / launcher
        done = run_sweep(
            tmp_path,
            *SEARCH,
            f"hydra/launcher={launcher}",
            f"hydra.sweeper.n_jobs={n_jobs}",
            f"hydra.sweep.dir={sweep}",
            data=list_dataset,
        )
        records = check_pruned_search(sweep, done.console)
        assert {record["stack_size"] for record in records.values()} == {n_jobs}
        report = json.loads((sweep / "report.json").read_text())
        pruned_rows = [row for row in report["trials"] if row["status"] == "pruned"]
        assert pruned_rows and all(row["pruned_epoch"] == 2 for row in pruned_rows)
        results[launcher] = {
            num: (r["status"], r["params"]["lr"], r["val_acc"], r["test_acc"], r["train_loss"])
            for num, r in records.items()
        }
    assert results["basic"].keys() == results["stacked"].keys()
    for num, (*exact, train_loss) in results["basic"].items():
        # Accuracies exactly; the loss as summed in another order (a batched matmul)
        assert list(results["stacked"][num][:4]) == exact
        assert results["stacked"][num][4] == pytest.approx(train_loss, rel=1e-5)


def test_a_stopped_search_continues_with_resume(
    tmp_path: Path, list_dataset: Path, cache_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    common = [
        *SEARCH,
        "hydra/launcher=stacked",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
    ]
    run_sweep(tmp_path, *common, "hydra.sweeper.n_trials=2", data=list_dataset)
    before = {job.name: (job / "metrics.json").stat().st_mtime_ns for job in sweep_jobs(sweep)}
    assert len(before) == 2
    done = run_sweep(
        tmp_path, *common, "hydra.sweeper.n_trials=4", "resume=true", data=list_dataset
    )
    after = {job.name: (job / "metrics.json").stat().st_mtime_ns for job in sweep_jobs(sweep)}
    assert sorted(after) == ["0", "1", "2", "3"]
    assert all(after[name] == mtime for name, mtime in before.items())  # not run again
    trials = study_of(sweep).get_trials()
    assert len(trials) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert "#0 :" not in done.console and "#2 :" in done.console


def test_old_optuna_search_command(tmp_path: Path, list_dataset: Path, cache_dir: Path) -> None:
    """``hparams_search=optuna`` as typed before: a search over the optimizer and more."""
    sweep = tmp_path / "sweep"
    done = run_sweep(
        tmp_path,
        "hparams_search=optuna",
        "epochs=2",
        "val_interval=1",
        "batch_size=16",
        "pictures=false",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={sweep}",
        data=list_dataset,
    )
    records = job_records(sweep)
    assert len(records) == 3
    assert all(r["status"] in ("finished", "pruned") for r in records)
    study = optuna.load_study(study_name="letters", storage=f"sqlite:///{sweep}/optuna.db")
    assert len(study.get_trials()) == 3
    assert "Best trial:" in done.console


def test_a_signal_after_pruning_keeps_the_pruned_trial_pruned(
    tmp_path: Path, list_dataset: Path, cache_dir: Path
) -> None:
    """Ctrl-C in a stack with a member pruned already: that member is recorded as it ended
    (pruned, tested), the other as interrupted; resume=true then leaves the pruned trial alone
    and continues the other from its last.ckpt."""
    sweep = tmp_path / "sweep"
    search = [
        *list_data(list_dataset),
        *[o for o in SEARCH if not o.startswith(("epochs=", "hydra.sweeper.n_trials="))],
        "hydra/sweeper/sampler=grid",  # both learning rates, one trial each
        "hydra.sweeper.n_trials=2",
        "hydra/launcher=stacked",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
    ]
    console = tmp_path / "console.txt"
    with open(console, "w") as out:
        process = subprocess.Popen(
            cli_command("train", "-m", *search, "epochs=100000"),
            cwd=tmp_path,
            env=cli_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while "pruned after epoch 2" not in console.read_text():
            assert process.poll() is None, console.read_text()
            assert time.monotonic() < deadline, console.read_text()
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130, console.read_text()
    by_lr = {r["params"]["lr"]: r for r in job_records(sweep)}
    pruned, interrupted = by_lr[1e-9], by_lr[0.01]
    assert pruned["status"] == "pruned" and pruned["pruned_epoch"] == 2
    assert pruned["test_acc"] is not None and "resume" not in pruned
    assert interrupted["status"] == "interrupted" and interrupted["resume"]

    # Continue with the epochs the interrupted trial reached plus two: a finite sweep.
    epochs = interrupted["epochs_completed"] + 2
    run_sweep(tmp_path, *search[2:], f"epochs={epochs}", "resume=true", data=list_dataset)
    by_lr = {r["params"]["lr"]: r for r in job_records(sweep)}
    assert by_lr[1e-9] == pruned  # not run again
    assert by_lr[0.01]["status"] == "finished" and by_lr[0.01]["epochs_completed"] == epochs
    states = {t.params["lr"]: t.state for t in study_of(sweep).get_trials()}
    assert states == {1e-9: TrialState.PRUNED, 0.01: TrialState.COMPLETE}
