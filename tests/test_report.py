"""What a user sees of a sweep: letters.report in the form that fits it (a grid of settings
over seeds, the reference's tables beside ours, an Optuna search trial by trial, collapsed
runs flagged), the summary every multirun prints when it ends, and Optuna's momentum only
where the optimizer uses one."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import run_cli
from letters.reporting.sweep_report import build_report, report
from letters.reporting.sweep_summary import SweepSummary, plain_optuna_logs

CONF = Path(__file__).resolve().parents[1] / "conf"


ONE_EPOCH = ["epochs=1", "val_interval=1", "batch_size=16", "pictures=false"]


def table_rows(text: str) -> list[list[str]]:
    """The Markdown table's body rows, as lists of cells."""
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def make_job(
    sweep: Path, number: int, overrides: list[str], metrics: dict | None, sweeper: str = "basic"
) -> None:
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    hydra = {"hydra": {"job": {"num": number}, "runtime": {"choices": {"hydra/sweeper": sweeper}}}}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


def finished(val: float, test: float, **extra) -> dict:
    return {"status": "finished", "val_acc": val, "best_val_acc": val, "test_acc": test, **extra}


# ---------------------------------------------------------------------------------------------
# The report's forms, from sweeps built by hand
# ---------------------------------------------------------------------------------------------


def test_one_seed_a_setting_shows_plain_numbers_and_marks_the_best(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["lr=0.001", "seed=1"], finished(0.5, 0.4))
    make_job(sweep, 1, ["lr=0.01", "seed=1"], finished(0.625, 0.5))
    text = report(sweep)
    assert "| lr | val acc (last epoch) % | test acc % | runs | note |" in text
    assert table_rows(text) == [
        ["0.001", "50.0", "40.0", "1", ""],
        ["0.01", "62.5", "50.0", "1", "best"],
    ]
    assert "±" not in text and "one run per setting" in text
    assert "Best by validation accuracy: lr=0.01 (marked best)." in text
    assert json.loads((sweep / "report.json").read_text())["groups"][1]["best"] is True


def test_several_seeds_show_mean_and_spread(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["lr=0.001", "seed=1"], finished(0.5, 0.25))
    make_job(sweep, 1, ["lr=0.001", "seed=2"], finished(0.7, 0.35))
    make_job(sweep, 2, ["lr=0.01", "seed=1"], finished(0.4, 0.3))
    make_job(sweep, 3, ["lr=0.01", "seed=2"], finished(0.4, 0.3))
    text = report(sweep)
    assert table_rows(text) == [
        ["0.001", "60.0 ± 14.1", "30.0 ± 7.1", "2", "best"],
        ["0.01", "40.0 ± 0.0", "30.0 ± 0.0", "2", ""],
    ]
    assert "mean ± standard deviation over seeds; 4 of 4 runs in the table." in text


def figure_texts(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The text of every report plot saved from now on (its titles, legend, notes), one list a
    figure: what the plot says, read without looking at pixels."""
    from letters.reporting import figures

    saved: list[list[str]] = []
    save_figure = figures.save_figure

    def recording(figure, *args, **kwargs):
        texts = []
        for axes in figure.axes:
            texts.append(axes.get_title())
            legend = axes.get_legend()
            texts += [text.get_text() for text in legend.get_texts()] if legend else []
            texts += [text.get_text() for text in axes.texts]
        saved.append(texts)
        return save_figure(figure, *args, **kwargs)

    monkeypatch.setattr(figures, "save_figure", recording)
    return saved


def test_plot_title_says_what_was_swept_and_how_many_runs_each_point_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = figure_texts(monkeypatch)
    for seeds in ((1,), (1, 2)):
        sweep = tmp_path / f"seeds{len(seeds)}"
        for number, (lr, seed) in enumerate((lr, seed) for lr in ("0.1", "0.2") for seed in seeds):
            make_job(sweep, number, [f"lr={lr}", f"seed={seed}"], finished(0.5 + seed / 10, 0.5))
        report(sweep)
    # Not the folder's name: what was swept (no config.yaml here says on which data).
    assert [texts[0] for texts in saved] == [
        "lr\none run per setting",
        "lr\nmean ± 1 std over seeds, n = 2 runs each",
    ]
    # Settings with different numbers of runs: n under each point.
    sweep = tmp_path / "uneven"
    for number, (lr, seed) in enumerate((("0.1", 1), ("0.1", 2), ("0.2", 1))):
        make_job(sweep, number, [f"lr={lr}", f"seed={seed}"], finished(0.5, 0.5))
    report(sweep)
    assert saved[-1][0] == "lr\nmean ± 1 std over seeds, n (runs per setting) under each point"
    assert [text for text in saved[-1] if text.startswith("n=")] == ["n=2", "n=1"]


def test_the_plot_says_where_its_numbers_come_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The title in words (optimizer, swept key, data), which checkpoint each curve's numbers
    come from, the reference's caveat in the figure itself; a 200 dpi PNG and an SVG."""
    from PIL import Image

    saved = figure_texts(monkeypatch)
    sweep = tmp_path / "momentum"
    config = {"data": {"_target_": "letters.data.ListDataModule", "root": "/data/scene-letters"}}
    for number, value in enumerate(("0.9", "0.95")):
        overrides = [f"momentum={value}", "experiment=momentum_table", "seed=1"]
        make_job(sweep, number, overrides, finished(0.5, 0.6, params={"optimizer": "sgd"}))
        (sweep / str(number) / "config.yaml").write_text(yaml.safe_dump(config))
    report(sweep)
    (texts,) = saved
    assert texts[0] == "SGD momentum on scene-letters (list)\none run per setting"
    assert {"validation, last epoch", "test, best checkpoint"} <= set(texts)
    assert {"reference: validation, epoch 50", "reference: test"} <= set(texts)
    (caveat,) = [text for text in map(" ".join, map(str.split, texts)) if "as published" in text]
    assert "the reference's Table 1" in caveat and "its own 2,000 photographs" in caveat
    with Image.open(sweep / "report.png") as png:
        assert [round(value) for value in png.info["dpi"]] == [200, 200]
    svg = (sweep / "report.svg").read_text()
    assert svg.startswith("<?xml") and "<svg" in svg


def test_reference_tables_stand_beside_ours(tmp_path: Path) -> None:
    momentum = tmp_path / "momentum"
    for number, value in enumerate(("0.88", "0.95", "0.97")):
        overrides = [f"momentum={value}", "experiment=momentum_table", "seed=1"]
        make_job(momentum, number, overrides, finished(0.5 + number / 10, 0.5))
    text = report(momentum)
    assert (
        "| momentum | val acc (last epoch) % | test acc % | runs | reference val / test % |" in text
    )
    assert [row[4] for row in table_rows(text)] == ["65.0 / 69.5", "74.8 / 78.0", "-"]
    assert "the reference's Table 1 (SGD, lr 5e-4, hidden 32" in text

    # Table 2 recognised without the experiment: Adam, weight decay swept.
    decay = tmp_path / "decay"
    for number, value in enumerate(("0.1", "0.15")):
        params = {"optimizer": "adam", "weight_decay": float(value)}
        make_job(decay, number, [f"weight_decay={value}"], finished(0.6, 0.6, params=params))
    assert [row[4] for row in table_rows(report(decay))] == ["80.5 / 80.2", "80.8 / 84.2"]

    # The same key with another optimizer is not the reference's table.
    sgd = tmp_path / "sgd"
    for number, value in enumerate(("0.1", "0.15")):
        params = {"optimizer": "sgd", "weight_decay": float(value)}
        make_job(sgd, number, [f"weight_decay={value}"], finished(0.6, 0.6, params=params))
    assert "reference" not in report(sgd)


def test_a_search_is_a_table_of_trials_best_first(tmp_path: Path) -> None:
    sweep = tmp_path / "study"
    adam = {"optimizer": "adam", "momentum": None}
    diverged = {"status": "diverged", "diverged_epoch": 1, "diverged_step": 3, "val_acc": None}
    trials = [
        (
            ["optimizer=adam", "lr=0.0012296071107", "hidden_sizes=[64]"],
            finished(0.3, 0.25, params=adam),
        ),
        (["optimizer=sgd", "lr=0.0035", "momentum=0.9", "hidden_sizes=[32]"], finished(0.5, 0.45)),
        (["optimizer=sgd", "lr=1e9", "momentum=0.85", "hidden_sizes=[64]"], diverged),
        (["optimizer=adam", "lr=0.002", "hidden_sizes=[32]"], finished(0.4, 0.5, params=adam)),
    ]
    for number, (overrides, metrics) in enumerate(trials):
        make_job(
            sweep, number, [*overrides, "hparams_search=optuna", "epochs=1"], metrics, "optuna"
        )
    text = report(sweep)
    keys = "optimizer | lr | hidden_sizes | momentum"
    assert f"| trial | folder | {keys} | val acc (last epoch) % | test acc % | note |" in text
    assert table_rows(text) == [
        ["1", "1", "sgd", "0.0035", "[32]", "0.9", "50.0", "45.0", "best"],
        ["3", "3", "adam", "0.002", "[32]", "-", "40.0", "50.0", ""],
        ["0", "0", "adam", "0.00123", "[64]", "-", "30.0", "25.0", ""],
    ]
    assert "Best: trial 1 (folder 1), val 50.0%, test 45.0%" in text
    assert (
        "- 2 (optimizer=sgd lr=1e9 momentum=0.85 hidden_sizes=[64] hparams_search=optuna " in text
    )
    assert "seeds" not in text
    written = json.loads((sweep / "report.json").read_text())
    assert written["kind"] == "search" and [t["trial"] for t in written["trials"]] == [1, 3, 0, 2]
    assert (sweep / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_trials_that_form_no_grid_are_a_search_too(tmp_path: Path) -> None:
    sweep = tmp_path / "random"
    for number, (lr, wd) in enumerate((("0.001", "0.1"), ("0.002", "0.05"), ("0.003", "0.2"))):
        make_job(sweep, number, [f"lr={lr}", f"weight_decay={wd}"], finished(0.1 * number, 0.1))
    made = build_report(sweep)
    assert made.search and [row[0] for row in table_rows(made.text)] == ["2", "1", "0"]
    grid = tmp_path / "grid"
    pairs = (("0.001", "0.1"), ("0.001", "0.2"), ("0.01", "0.1"), ("0.01", "0.2"))
    for number, (lr, wd) in enumerate(pairs):
        make_job(grid, number, [f"lr={lr}", f"weight_decay={wd}"], finished(0.5, 0.5))
    assert not build_report(grid).search


def test_collapsed_runs_are_flagged(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["lr=0.001", "seed=1"], finished(0.6, 0.6, predicted_classes=24))
    make_job(sweep, 1, ["lr=0.001", "seed=2"], finished(0.12, 0.1, predicted_classes=1))
    make_job(sweep, 2, ["lr=10", "seed=1"], finished(0.03, 0.03846153989434242))  # 2 of 52, float32
    make_job(sweep, 3, ["lr=10", "seed=2"], finished(0.03, 0.02, predicted_classes=9))
    text = report(sweep)
    assert [row[-1] for row in table_rows(text)] == ["best, 1 of 2 collapsed", "1 of 2 collapsed"]
    assert (
        "- 1 (lr=0.001 seed=2): val 12.0%, test 10.0%, predicts 1 class for every test image"
        in text
    )
    assert (
        "- 2 (lr=10 seed=1): val 3.0%, test 3.8%, val and test accuracy at or below chance" in text
    )
    assert "- 0 (" not in text and "- 3 (" not in text


def test_unreadable_and_unfinished_runs_are_listed_not_fatal(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["lr=0.001"], finished(0.5, 0.5))
    make_job(sweep, 1, ["lr=0.01"], None)
    (sweep / "1" / "metrics.json").write_text('{"status": "fini')
    interrupted = {
        "status": "interrupted",
        "val_acc": 0.2,
        "resume": "python -m letters.train resume=x",
    }
    make_job(sweep, 2, ["lr=0.1"], interrupted)
    make_job(sweep, 3, ["lr=1"], {"status": "failed", "error": "x.png: not an image"})
    text = report(sweep)
    assert "- 1 (lr=0.01): unreadable metrics.json (" in text
    assert "- 2 (lr=0.1): interrupted" in text
    assert "- 3 (lr=1): failed: x.png: not an image" in text


# ---------------------------------------------------------------------------------------------
# Ensembles: one job each, their members' accuracies beside theirs
# ---------------------------------------------------------------------------------------------


def make_ensemble_job(
    sweep: Path,
    number: int,
    overrides: list[str],
    ensemble: tuple[float, float],
    members: list[tuple[float, float]],
    continued_member: int | None = None,
) -> None:
    """A job of ``ensemble=K`` as letters.train leaves it: the ensemble's metrics.json (val and
    test of ``ensemble``, a summary of each member) and each member's own folder
    RUN/members/<i>/ with its metrics.json; member ``continued_member`` was continued with
    resume=, so it has a .hydra/ of its own."""
    job = sweep / str(number)
    seed = int(dict(o.split("=", 1) for o in overrides).get("seed", 1))
    summaries = []
    for index, (best_val, test) in enumerate(members):
        member_dir = job / "members" / str(index)
        member_dir.mkdir(parents=True)
        record = finished(best_val - 0.01, test, params={"seed": seed + 10007 * index})
        record.update(best_val_acc=best_val, train_loss=0.5, epochs_completed=3)
        (member_dir / "metrics.json").write_text(json.dumps(record))
        (member_dir / "config.yaml").write_text(f"seed: {seed + 10007 * index}\nensemble: 1\n")
        if index == continued_member:
            (member_dir / ".hydra").mkdir()
            (member_dir / ".hydra" / "overrides.yaml").write_text(
                yaml.safe_dump([f"resume={member_dir}"])
            )
        summaries.append(
            {
                "status": "finished",
                "val_acc": best_val - 0.01,
                "best_val_acc": best_val,
                "test_acc": test,
                "train_loss": 0.5,
                "epochs_completed": 3,
                "seed": seed + 10007 * index,
                "run_dir": str(member_dir),
            }
        )
    metrics = finished(*ensemble, ensemble=len(members), members=summaries)
    make_job(sweep, number, [*overrides, f"ensemble={len(members)}"], metrics)


# seed=1,2,3 ensemble=3: each ensemble's (val, test), and its members' (best val, test).
ENSEMBLES = {
    1: ((0.90, 0.94), [(0.88, 0.92), (0.89, 0.93), (0.87, 0.91)]),
    2: ((0.91, 0.95), [(0.89, 0.93), (0.90, 0.94), (0.88, 0.92)]),
    3: ((0.92, 0.96), [(0.90, 0.94), (0.91, 0.95), (0.89, 0.93)]),
}


def ensemble_sweep(sweep: Path) -> None:
    for number, (seed, (ensemble, members)) in enumerate(ENSEMBLES.items()):
        continued = 0 if seed == 3 else None
        make_ensemble_job(sweep, number, [f"seed={seed}"], ensemble, members, continued)


def test_an_ensemble_sweep_shows_the_members_beside_each_ensemble(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    ensemble_sweep(sweep)
    made = build_report(sweep)
    # Three jobs, not twelve: the members' folders (one with a .hydra/ of its own) are not jobs.
    assert [run.directory.name for run in made.runs] == ["0", "1", "2"]
    text = report(sweep)
    assert (
        "| setting | val acc (last epoch) % | members best val % | test acc % | members test % "
        "| runs |" in text
    )
    # Ensembles: val 91.0 ± 1.0, test 95.0 ± 1.0 over the seeds. Members: the nine pooled,
    # best val 89.0 and test 93.0 on average, std sqrt(12e-4 / 8) = 1.2, and their range.
    assert table_rows(text) == [
        ["all", "91.0 ± 1.0", "89.0 ± 1.2 (87.0–91.0)", "95.0 ± 1.0", "93.0 ± 1.2 (91.0–95.0)", "3"]
    ]
    assert "mean ± standard deviation over seeds; 3 of 3 runs in the table." in text
    assert "members best val / test %: mean ± standard deviation over every member" in text
    assert "Ensemble members (test %, each member's best checkpoint):\n" in text
    assert "- 0 (seed=1): ensemble of 3, test 94.0% | members 92.0, 93.0, 91.0 (mean 92.0)" in text
    assert "- 1 (seed=2): ensemble of 3, test 95.0% | members 93.0, 94.0, 92.0 (mean 93.0)" in text
    assert "- 2 (seed=3): ensemble of 3, test 96.0% | members 94.0, 95.0, 93.0 (mean 94.0)" in text
    assert "members/" not in text and "Not in the table" not in text

    written = json.loads((sweep / "report.json").read_text())
    assert written["runs"] == 3
    (group,) = written["groups"]
    assert group["test_acc_mean"] == pytest.approx(0.95)
    assert group["members_test_acc_mean"] == pytest.approx(0.93)
    assert group["members_test_acc_std"] == pytest.approx((12e-4 / 8) ** 0.5)
    assert (group["members_test_acc_min"], group["members_test_acc_max"]) == pytest.approx(
        (0.91, 0.95)
    )
    assert group["members_best_val_acc_mean"] == pytest.approx(0.89)
    assert group["members"] == 9 and group["runs"] == 3
    first = written["ensemble_members"][0]
    assert (first["folder"], first["seed"], first["test_acc"]) == ("0", "1", 0.94)
    assert [m["test_acc"] for m in first["members"]] == [0.92, 0.93, 0.91]
    assert [m["seed"] for m in first["members"]] == [1, 10008, 20015]
    with (sweep / "report.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["members_test_acc_mean"]) == pytest.approx(0.93)
    assert row["members"] == "9"


def test_one_ensemble_run_and_plain_runs_beside_ensembles(tmp_path: Path) -> None:
    # A single ensemble run, reported from its own folder: its members are still not jobs.
    single = tmp_path / "single"
    (ensemble, members) = ENSEMBLES[1]
    make_ensemble_job(single, 0, ["seed=1"], ensemble, members, continued_member=1)
    text = report(single / "0")
    assert table_rows(text) == [
        ["all", "90.0", "88.0 ± 1.0 (87.0–89.0)", "94.0", "92.0 ± 1.0 (91.0–93.0)", "1"]
    ]
    assert "- . (the only setting): ensemble of 3, test 94.0% | members 92.0, 93.0, 91.0" in text

    # ensemble=1,3: the plain run's group has no members to show.
    mixed = tmp_path / "mixed"
    make_job(mixed, 0, ["ensemble=1", "seed=1"], finished(0.88, 0.92))
    make_ensemble_job(mixed, 1, ["seed=1"], ensemble, members)
    rows = table_rows(report(mixed))
    assert [row[:5] for row in rows] == [
        ["1", "88.0", "-", "92.0", "-"],
        ["3", "90.0", "88.0 ± 1.0 (87.0–89.0)", "94.0", "92.0 ± 1.0 (91.0–93.0)"],
    ]


def test_plain_sweeps_print_no_ensemble_columns(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["lr=0.001", "seed=1"], finished(0.5, 0.4))
    make_job(sweep, 1, ["lr=0.01", "seed=1"], finished(0.625, 0.5))
    text = report(sweep)
    assert "members" not in text and "nsemble" not in text
    written = json.loads((sweep / "report.json").read_text())
    assert written["ensemble_members"] == [] and "members" not in written["groups"][0]


# ---------------------------------------------------------------------------------------------
# The sweep-end summary
# ---------------------------------------------------------------------------------------------


def end_of_sweep(sweep_dir: Path | str, capsys: pytest.CaptureFixture) -> str:
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    SweepSummary().on_multirun_end(config=config, config_name="train")
    return capsys.readouterr().out


def test_summary_survives_what_it_cannot_read(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["lr=0.001"], finished(0.5, 0.5))
    make_job(sweep, 1, ["lr=0.01"], None)
    (sweep / "1" / "metrics.json").write_text("not json")
    printed = end_of_sweep(sweep, capsys)
    assert "  0 (lr=0.001): finished: val_acc 50.0% (best 50.0%), test_acc 50.0%" in printed
    assert "  1 (lr=0.01): unreadable metrics.json (" in printed
    assert f"tensorboard --logdir {sweep}" in printed
    assert end_of_sweep(tmp_path / "nothing", capsys).strip() == (
        f"sweep summary: {tmp_path / 'nothing'}: not a folder"
    )
    SweepSummary().on_multirun_end(config=OmegaConf.create({}), config_name="train")
    assert capsys.readouterr().out.startswith("sweep summary: not made (")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream", [io.StringIO, Terminal], ids=["file", "terminal"])
def test_optuna_logs_carry_colour_codes_only_to_a_terminal(stream: type) -> None:
    import optuna  # noqa: F401

    handlers = logging.getLogger("optuna").handlers  # its own, and any a test added
    handler = next(h for h in handlers if hasattr(h.formatter, "log_colors"))
    before = handler.setStream(stream())
    try:
        plain_optuna_logs()
        record = logging.LogRecord("optuna", logging.INFO, __file__, 1, "a study", None, None)
        assert ("\x1b" in handler.format(record)) == (stream is Terminal)
    finally:
        handler.setStream(before)
        plain_optuna_logs()


# ---------------------------------------------------------------------------------------------
# Optuna's search space: momentum only where the optimizer uses one
# ---------------------------------------------------------------------------------------------


def configured_trials(typed: list[str], n: int = 24) -> list[dict[str, str]]:
    """The overrides the Optuna sweeper gives n trials of hparams_search=optuna."""
    import optuna

    from hydra_plugins.letters_optuna_sweeper._impl import OptunaSweeperImpl

    search = yaml.safe_load((CONF / "hparams_search" / "optuna.yaml").read_text())
    sweeper_conf = search["hydra"]["sweeper"]
    sweeper = OptunaSweeperImpl(
        sampler={"_target_": "optuna.samplers.RandomSampler", "seed": 0},
        pruner=None,
        direction="maximize",
        storage=None,
        study_name=None,
        n_trials=n,
        n_jobs=1,
        max_failure_rate=0.0,
        params=OmegaConf.create(sweeper_conf["params"]),
        custom_search_space=sweeper_conf["custom_search_space"],
    )
    sweeper.config = OmegaConf.create({"optimizer": {"name": "sgd"}})
    sweeper.prepare_space(typed)
    study = optuna.create_study(sampler=sweeper.sampler)
    trials = [sweeper.ask(study, Path("sweep"), num) for num in range(n)]
    overrides = [sweeper.overrides_of(trial) for trial in trials]
    return [
        dict(override.split("=", 1) for override in trial if not override.startswith("hydra."))
        for trial in overrides
    ]


def test_optuna_samples_momentum_only_for_optimizers_that_use_it() -> None:
    trials = configured_trials([])
    assert {trial["optimizer"] for trial in trials} == {"sgd", "adam", "adamw"}
    for trial in trials:
        assert ("momentum" in trial) == (trial["optimizer"] == "sgd"), trial
        if "momentum" in trial:
            assert 0.8 <= float(trial["momentum"]) <= 0.98
    rmsprop = configured_trials(["optimizer=choice(rmsprop,adagrad)"], n=8)
    assert all(("momentum" in t) == (t["optimizer"] == "rmsprop") for t in rmsprop)
    assert all("momentum" not in t for t in configured_trials(["optimizer=adam"], n=3))
    assert all(t["momentum"] == "0.9" for t in configured_trials(["momentum=0.9"], n=3))


# ---------------------------------------------------------------------------------------------
# Real sweeps through the command line
# ---------------------------------------------------------------------------------------------


def summary_part(stdout: str) -> str:
    assert "\n== " in stdout, stdout
    return stdout[stdout.index("\n== ") :]


def test_momentum_table_sweep_ends_with_its_summary_and_report(sweep_here, tmp_path) -> None:
    result = sweep_here(
        "experiment=momentum_table", "seed=1,2", "hydra/launcher=stacked", *ONE_EPOCH
    )
    sweep = result.folder
    summary = summary_part(result.stdout)
    assert "== 10 jobs of the sweep, as each ended (from metrics.json)" in summary
    for number, metrics_file in enumerate(sorted(sweep.glob("*/metrics.json"))):
        metrics = json.loads(metrics_file.read_text())
        params = metrics["params"]
        line = f"  {number} (momentum={params['momentum']} seed={params['seed']}): "
        line += f"finished: val_acc {100 * metrics['val_acc']:.1f}%"
        assert line in summary
    rows = table_rows(summary)
    assert [row[0] for row in rows] == ["0.88", "0.9", "0.92", "0.95", "0.98"]
    assert all("±" in row[1] and row[3] == "2" for row in rows)
    published = ["65.0 / 69.5", "67.2 / 71.0", "67.5 / 70.8", "74.8 / 78.0", "62.0 / 61.8"]
    assert [row[4] for row in rows] == published
    assert sum("best" in row[5] for row in rows) == 1
    shown = f"outputs/sweeps/{sweep.name}"
    assert summary.rstrip().endswith(f"sweep: {shown}\ntensorboard --logdir {shown}")
    printed = run_cli("report", shown, cwd=tmp_path).stdout
    assert printed.split("\n\nwritten: ")[0].strip() in summary


def test_optuna_search_ends_with_its_best_trial(sweep_here) -> None:
    result = sweep_here("hparams_search=optuna", "hydra.sweeper.n_trials=3", *ONE_EPOCH)
    assert "\x1b" not in result.stdout + result.stderr
    assert "is ignored" not in result.stdout + result.stderr
    sweep = result.folder
    for job in sweep.glob("*/.hydra/overrides.yaml"):
        overrides = dict(line.split("=", 1) for line in yaml.safe_load(job.read_text()))
        assert ("momentum" in overrides) == (overrides["optimizer"] == "sgd"), overrides
    summary = summary_part(result.stdout)
    assert "== 3 trials of the sweep" in summary and "seed" not in summary
    rows = table_rows(summary)
    values = [float(row[-3]) for row in rows]
    assert values == sorted(values, reverse=True) and len(rows) == 3
    best = rows[0][0]
    metrics = json.loads((sweep / best / "metrics.json").read_text())
    shown = f"outputs/sweeps/{sweep.name}/{best}"
    assert (
        f"Best trial: {best}, val acc {100 * metrics['val_acc']:.1f}%\n  folder: {shown}\n"
        in summary
    )
    assert f"  best checkpoint: {shown}/checkpoints/best.ckpt" in summary
    assert (sweep / best / "checkpoints" / "best.ckpt").is_file()
    found = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert found["best_value"] == pytest.approx(metrics["val_acc"])


def test_submitit_jobs_results_reach_the_console(submitit_sweep) -> None:
    summary = summary_part(submitit_sweep.stdout)  # the session's sweep, shared with test_sweeps
    for job, momentum in (("0", "0.9"), ("1", "0.95")):
        assert re.search(rf"\n  {job} \(momentum={momentum}\): finished: val_acc [\d.]+%", summary)
    assert re.search(r"\| 0\.9 \| [\d.]+ \| [\d.]+ \| 1 \| 67\.2 / 71\.0 \|", summary)
