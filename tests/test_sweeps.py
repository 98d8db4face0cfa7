"""Sweeps as users run them: a multirun and its report, the HParams dashboard's data, the
parallel and cluster launchers, and an Optuna study that survives a diverged trial."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from conftest import SMALL, Trained, job_records, run_cli, run_sweep
from letters.reporting.sweep_report import report

# The synthetic data, small, and the suite's small training.
SMALL_SYNTHETIC = [
    "data.train_per_class=3",
    "data.validation_per_class=1",
    "data.test_per_class=1",
    *SMALL,
]


@pytest.fixture(scope="module")
def seeded_sweep(momentum_seed_sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 momentum values x 2 seeds through the real CLI (shared with test_stacks), then the
    report through its CLI."""
    result = run_cli("report", str(momentum_seed_sweep), cwd=tmp_path_factory.mktemp("report"))
    (momentum_seed_sweep / "stdout.md").write_text(result.stdout)
    return momentum_seed_sweep


def test_report_numbers_are_the_runs_numbers(seeded_sweep: Path) -> None:
    runs = job_records(seeded_sweep)
    assert len(runs) == 4 and all(run["status"] == "finished" for run in runs)
    written = json.loads((seeded_sweep / "report.json").read_text())
    assert written["swept"] == ["momentum"]
    assert [group["momentum"] for group in written["groups"]] == ["0.9", "0.95"]
    for group in written["groups"]:
        mine = [run for run in runs if str(run["params"]["momentum"]) == group["momentum"]]
        assert group["runs"] == 2 and sorted(r["params"]["seed"] for r in mine) == [1, 2]
        for key in ("val_acc", "test_acc"):
            values = [run[key] for run in mine]
            assert group[f"{key}_mean"] == pytest.approx(statistics.fmean(values))
            assert group[f"{key}_std"] == pytest.approx(statistics.stdev(values))


def test_report_prints_a_markdown_table_and_writes_its_files(seeded_sweep: Path) -> None:
    printed = (seeded_sweep / "stdout.md").read_text()
    header = "| momentum | val acc (last epoch) % | test acc % | runs |"
    assert header in printed
    written = json.loads((seeded_sweep / "report.json").read_text())
    first = written["groups"][0]
    row = (
        f"| 0.9 | {100 * first['val_acc_mean']:.1f} ± {100 * first['val_acc_std']:.1f} "
        f"| {100 * first['test_acc_mean']:.1f} ± {100 * first['test_acc_std']:.1f} | 2 |"
    )
    assert row in printed
    assert (seeded_sweep / "report.md").read_text() in printed
    csv_lines = (seeded_sweep / "report.csv").read_text().splitlines()
    assert csv_lines[0].startswith("momentum,val_acc_mean,val_acc_std") and len(csv_lines) == 3
    assert (seeded_sweep / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hparams_dashboard_gets_each_runs_real_metrics(seeded_sweep: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    for job in sorted(p for p in seeded_sweep.iterdir() if (p / "metrics.json").exists()):
        metrics = json.loads((job / "metrics.json").read_text())
        hparams, scalars = None, {}
        for events in (job / "tensorboard").rglob("events.out.tfevents.*"):
            accumulator = EventAccumulator(str(events))
            accumulator.Reload()
            try:
                content = accumulator.PluginTagToContent("hparams")
            except KeyError:  # this event file holds no hyper-parameters
                content = {}
            if "_hparams_/session_start_info" in content:
                data = plugin_data_pb2.HParamsPluginData.FromString(
                    content["_hparams_/session_start_info"]
                )
                hparams = data.session_start_info.hparams
            for tag in accumulator.Tags()["scalars"]:
                scalars[tag] = accumulator.Scalars(tag)[-1].value
        assert hparams is not None, f"{job}: no HParams session"
        assert hparams["momentum"].number_value == pytest.approx(metrics["params"]["momentum"])
        # The dashboard opens on what the sweep varies: momentum and seed (a whole number,
        # shown as such), and how each run ended; what every run shares is in config.yaml
        # and metrics.json.
        assert set(hparams) == {"momentum", "seed", "status"}
        assert hparams["seed"].string_value == str(metrics["params"]["seed"])
        assert hparams["status"].string_value == metrics["status"]
        # HParams takes each run's metrics from its own scalars: their last values.
        tags = {
            "val_acc": "accuracy/val",
            "best_val_acc": "accuracy/best_val",
            "test_acc": "accuracy/test",
        }
        for key, tag in tags.items():  # accuracy in percent, as the console says it
            assert scalars[tag] == pytest.approx(100 * metrics[key], rel=1e-6)
        assert scalars["loss/train"] == pytest.approx(metrics["train_loss"], rel=1e-6)
        # Named by what the sweep varies, not by its job number.
        (run,) = {path.parent.name for path in (job / "tensorboard").rglob("events.*")}
        assert run == f"momentum={metrics['params']['momentum']},seed={metrics['params']['seed']}"


def make_job(sweep: Path, number: int, overrides: list[str], metrics: dict | None) -> None:
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


def test_report_lists_failed_and_diverged_runs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    finished = {"status": "finished", "val_acc": 0.5, "test_acc": 0.25}
    make_job(sweep, 0, ["lr=0.001", "seed=1"], finished)
    make_job(sweep, 1, ["lr=0.001", "seed=2"], {**finished, "val_acc": 0.7, "test_acc": 0.35})
    make_job(
        sweep,
        2,
        ["lr=100", "seed=1"],
        {"status": "diverged", "diverged_epoch": 3, "diverged_step": 17, "val_acc": None},
    )
    make_job(sweep, 3, ["lr=100", "seed=2"], None)
    make_job(sweep, 4, ["lr=0.01", "seed=1"], {"status": "failed", "error": "x.png: not an image"})
    text = report(sweep)
    assert "| 0.001 | 60.0 ± 14.1 | 30.0 ± 7.1 | 2 |" in text
    assert "| 100 | - | - | 0 of 2 |" in text
    assert "- 2 (lr=100 seed=1): diverged at epoch 3, step 17" in text
    assert "- 3 (lr=100 seed=2): missing metrics.json" in text
    assert "- 4 (lr=0.01 seed=1): failed: x.png: not an image" in text


def test_report_of_a_folder_without_runs_is_one_line(tmp_path: Path) -> None:
    result = run_cli("report", str(tmp_path), cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"error: {tmp_path}: no runs found (no */.hydra/overrides.yaml below it)"
    )


@pytest.fixture()
def joblib_sweep(tmp_path: Path, cache_dir: Path) -> Path:
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "torch_threads=1"]
    return run_sweep(tmp_path, *joblib, *SMALL_SYNTHETIC, "momentum=0.9,0.95").folder


@pytest.fixture(params=["joblib", "submitit_local"])
def launched_sweep(request: pytest.FixtureRequest) -> Path:
    """The same sweep through each launcher; submitit's is the session's shared one."""
    if request.param == "joblib":
        return request.getfixturevalue("joblib_sweep")
    submitit: Trained = request.getfixturevalue("submitit_sweep")
    return submitit.folder


def test_launchers_run_every_job(launched_sweep: Path) -> None:
    runs = job_records(launched_sweep)
    assert sorted(run["params"]["momentum"] for run in runs) == [0.9, 0.95]
    assert all(run["status"] == "finished" for run in runs)


def test_optuna_study_survives_a_diverged_trial(tmp_path: Path, cache_dir: Path) -> None:
    study = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=4",
        "lr=choice(1e-3,1e9)",
        "optimizer=sgd",
        "hydra.sweeper.sampler.seed=3",
    ]
    sweep = run_sweep(tmp_path, *study, *SMALL_SYNTHETIC).folder
    statuses = [run["status"] for run in job_records(sweep)]
    assert len(statuses) == 4 and "diverged" in statuses and "finished" in statuses
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    finished = [run for run in job_records(sweep) if run["status"] == "finished"]
    assert best["best_value"] == pytest.approx(max(run["val_acc"] for run in finished))
    assert best["best_params"]["lr"] == pytest.approx(1e-3)
