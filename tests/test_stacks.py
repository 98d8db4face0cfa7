"""hydra/launcher=stacked as users run it: a sweep trained as one stack leaves each job exactly
what the basic launcher leaves, with the same numbers, and its checkpoints work everywhere."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import (
    MOMENTUM_BY_SEED,
    SMALL,
    Trained,
    job_records,
    run_cli,
    run_sweep,
    run_training,
    sweep_jobs,
)


def metrics(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def paired_jobs(sweeps: dict[str, Path]) -> list[tuple[Path, Path]]:
    """Each stacked job beside the basic launcher's job of the same number."""
    return list(zip(sweep_jobs(sweeps["stacked"]), sweep_jobs(sweeps["basic"]), strict=True))


def stacked_records(sweep_here: Callable[..., Trained], *overrides: str) -> list[dict]:
    """A tiny stacked multirun in the test's folder; each job's metrics.json."""
    return job_records(sweep_here(*SMALL, *overrides, "hydra/launcher=stacked").folder)


@pytest.fixture(scope="module")
def sweeps(
    list_dataset: Path, momentum_seed_sweep: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The same 2 momentum x 2 seed sweep with the stacked and with the basic launcher (the
    session's, shared with test_sweeps). The stacked one names no launcher: a multirun trains
    as stacks by default (conf/hydra/default.yaml)."""
    work = tmp_path_factory.mktemp("stacks")
    stacked = run_sweep(work, *MOMENTUM_BY_SEED, data=list_dataset)
    (stacked.folder / "stdout.txt").write_text(stacked.console)
    return {"stacked": stacked.folder, "basic": momentum_seed_sweep}


def test_a_stacked_job_leaves_what_the_basic_launcher_leaves(sweeps: dict[str, Path]) -> None:
    stacked, basic = sweep_jobs(sweeps["stacked"]), sweep_jobs(sweeps["basic"])
    assert len(stacked) == len(basic) == 4

    def files(job: Path) -> set[str]:
        names = {str(p.relative_to(job)) for p in job.rglob("*") if p.is_file()}
        return {name for name in names if "events.out.tfevents" not in name}

    for mine, theirs in zip(stacked, basic, strict=True):
        assert files(mine) == files(theirs)
        assert {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"} <= files(mine)
        assert {"checkpoints/best.ckpt", "checkpoints/last.ckpt", "train.log"} <= files(mine)
        assert list((mine / "tensorboard").rglob("events.out.tfevents.*"))
        assert (mine / ".hydra" / "overrides.yaml").read_text() == (
            theirs / ".hydra" / "overrides.yaml"
        ).read_text()
        assert "finished: val_acc" in (mine / "train.log").read_text()
        assert metrics(mine)["stack_size"] == 4 and metrics(theirs)["stack_size"] == 1


def test_stacked_and_basic_launchers_give_the_same_numbers(sweeps: dict[str, Path]) -> None:
    """Each member of the stack is the run the basic launcher trains alone (CPU, same seeds):
    the same accuracies, and the same weights up to float rounding (measured: at most 2.1e-6
    absolute after 2 epochs, from batched and single matrix products summing in another order)."""
    for mine, theirs in paired_jobs(sweeps):
        ours, reference = metrics(mine), metrics(theirs)
        assert ours["params"] == reference["params"]
        for key in ("val_acc", "best_val_acc", "test_acc"):
            assert ours[key] == reference[key], key
        assert ours["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-6)
        weights = torch.load(mine / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        alone = torch.load(theirs / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for name, tensor in alone.items():
            assert weights[name].shape == tensor.shape  # one member, as a single run saves
            torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=1e-5)


def test_letters_test_on_a_stacked_job_reproduces_its_test_accuracy(
    sweeps: dict[str, Path], tmp_path: Path
) -> None:
    job = sweep_jobs(sweeps["stacked"])[2]
    best = job / "checkpoints" / "best.ckpt"
    result = run_cli("test", f"ckpt={best}", "pictures=false", cwd=tmp_path)
    accuracy = metrics(job)["test_acc"]
    assert f"test accuracy {100 * accuracy:.2f}%" in result.stdout
    (written,) = (job / "test").glob("best-*-test/metrics.json")
    assert json.loads(written.read_text())["accuracy"] == accuracy


def test_each_jobs_log_holds_its_own_lines(sweeps: dict[str, Path]) -> None:
    logs = [(job / "train.log").read_text() for job in sweep_jobs(sweeps["stacked"])]
    for text in logs:
        assert "data: ListDataModule" in text  # shared by the stack
        assert text.count("finished: val_acc") == 1  # its own summary only
    printed = (sweeps["stacked"] / "stdout.txt").read_text()
    assert "stack of 4" in printed


def test_resume_continues_a_stacked_job_alone(sweeps: dict[str, Path], tmp_path: Path) -> None:
    """A member's last.ckpt continues as a run of its own, in its own (here: moved) folder."""
    import shutil

    original = sweep_jobs(sweeps["stacked"])[1]
    job = shutil.copytree(original, tmp_path / "moved")
    run_cli("train", f"resume={job}", "epochs=3", cwd=tmp_path)
    record = metrics(job)
    assert record["status"] == "finished" and record["epochs_completed"] == 3
    assert record["stack_size"] == 1
    events = len(list((original / "tensorboard").rglob("events.out.tfevents.*")))
    assert len(list((job / "tensorboard").rglob("events.out.tfevents.*"))) == events + 1
    assert metrics(original)["epochs_completed"] == 2  # the sweep's own copy is untouched


def test_bad_and_diverging_jobs_leave_their_stack_mates_alone(
    sweep_here: Callable[..., Trained], list_dataset: Path, tmp_path: Path
) -> None:
    """lr=-1 fails validation (recorded, not trained); lr=1e12 diverges inside the stack and
    stops there; the lr=1e-3 job finishes as it would alone."""
    good, bad, diverged = stacked_records(sweep_here, "lr=1e-3,-1,1e12")
    assert good["status"] == "finished" and good["stack_size"] == 2
    assert bad["status"] == "failed" and "lr=-1" in bad["error"]
    assert diverged["status"] == "diverged" and diverged["diverged_epoch"] == 1
    run = run_training(tmp_path / "alone", *SMALL, "lr=1e-3", data=list_dataset).folder
    assert metrics(run)["val_acc"] == good["val_acc"]
    assert metrics(run)["test_acc"] == good["test_acc"]


def test_max_stack_bounds_the_stack_size(sweep_here: Callable[..., Trained]) -> None:
    records = stacked_records(sweep_here, "seed=1,2,3", "hydra.launcher.max_stack=2")
    sizes = [record["stack_size"] for record in records]
    assert sizes == [2, 2, 1]


def test_jobs_that_differ_in_shared_settings_train_in_separate_stacks(
    sweep_here: Callable[..., Trained],
) -> None:
    records = stacked_records(sweep_here, "hidden_sizes=[8],[16]", "seed=1,2")
    assert [r["stack_size"] for r in records] == [2, 2, 2, 2]
    assert [(r["params"]["hidden_sizes"], r["params"]["seed"]) for r in records] == [
        ("8", 1),
        ("8", 2),
        ("16", 1),
        ("16", 2),
    ]


def test_optuna_trials_of_one_batch_train_as_one_stack(
    sweep_here: Callable[..., Trained],
) -> None:
    """hydra.sweeper.n_jobs trials at a time reach the launcher together; sharing everything
    but lr, they become one stack, and the sweeper gets each trial's own accuracy."""
    import yaml

    sweep = sweep_here(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=4",
        "lr=tag(log,interval(1e-4,1e-2))",
        "optimizer=sgd",
        "hidden_sizes=[16]",
        "activation=relu",
        "hydra/launcher=stacked",
        *SMALL,
    ).folder
    records = job_records(sweep)
    assert len(records) == 4 and all(r["stack_size"] == 4 for r in records)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(r["val_acc"] for r in records))


def test_a_checkpoint_of_letters_0_1_still_loads(tmp_path: Path) -> None:
    """Checkpoints written before stacks (2-D weights, seed/init/batch_size hyper-parameters)
    load as a stack of one that predicts exactly as the weights say."""
    from letters.engine.checkpoint import load_classifier
    from letters.engine.module import LetterClassifier

    member = {"seed": 3, "init": "kaiming", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0}
    model = LetterClassifier(norm_size=8, hidden_sizes=[16], members=[member]).eval()
    history = {"epoch": [1], "train_loss": [2.5], "val_epoch": [1], "val_acc": [0.5]}
    old = {
        "state_dict": {name: tensor[0] for name, tensor in model.state_dict().items()},
        "hyper_parameters": {
            "norm_size": 8,
            "classes": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            "hidden_sizes": [16],
            "activation": "relu",
            "init": "kaiming",
            "reduction": "sum",
            "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
            "data": {"_target_": "letters.data.SyntheticDataModule", "seed": 3},
            "batch_size": 8,
            "input_norm": "none",
            "augment": None,
            "scheduler": "none",
            "test_time_polarity": False,
            "seed": 3,
        },
        "history": history,
    }
    path = tmp_path / "old.ckpt"
    torch.save(old, path)
    loaded = load_classifier(path)
    images = torch.rand(5, 64) * 2 - 1
    torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    assert loaded.members[0]["seed"] == 3 and loaded.histories == [history]


def tensorboard_contents(job: Path) -> tuple[set[str], dict[str, float], dict[str, object]]:
    """(scalar tags, last value of each scalar, HParams) of a job's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    tags, last, hparams = set(), {}, {}
    for events in (job / "tensorboard").rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            tags.add(tag)
            last[tag] = accumulator.Scalars(tag)[-1].value
        try:
            content = accumulator.PluginTagToContent("hparams")
        except KeyError:
            content = {}
        if "_hparams_/session_start_info" in content:
            data = plugin_data_pb2.HParamsPluginData.FromString(
                content["_hparams_/session_start_info"]
            )
            hparams = dict(data.session_start_info.hparams)
    return tags, last, hparams


def test_each_stacked_job_logs_what_a_single_run_logs(sweeps: dict[str, Path]) -> None:
    """The same TensorBoard scalars and HParams in every job's own event files, with the
    job's real metrics: TensorBoard's HPARAMS tab lists every run of the stack."""
    for mine, theirs in paired_jobs(sweeps):
        tags, last, hparams = tensorboard_contents(mine)
        their_tags, _, their_hparams = tensorboard_contents(theirs)
        assert tags == their_tags and {"loss/train", "accuracy/val", "accuracy/test"} <= tags
        assert set(hparams) == set(their_hparams) and hparams
        record = metrics(mine)
        assert hparams["momentum"].number_value == pytest.approx(record["params"]["momentum"])
        tags_of = {
            "val_acc": "accuracy/val",
            "best_val_acc": "accuracy/best_val",
            "test_acc": "accuracy/test",
        }
        for key, tag in tags_of.items():  # accuracy in percent, as the console says it
            assert last[tag] == pytest.approx(100 * record[key], rel=1e-6)
        assert last["loss/train"] == pytest.approx(record["train_loss"], rel=1e-6)
