"""Pictures a run and a test leave: valid PNGs whose titles name their run, a confusion matrix
that adds up, mistakes whose confidences differ, and the TensorBoard projector's files where
TensorBoard looks for them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

from conftest import run_cli
from letters.reporting import pictures
from letters.reporting.pictures import confusion_counts, mistakes, run_name

TINY = ["epochs=2", "val_interval=1", "batch_size=16"]
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} missing"
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and min(image.size) >= 200


@pytest.fixture(scope="module")
def pictured_run(list_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    work = tmp_path_factory.mktemp("pictures")
    os.environ["LETTERS_CACHE_DIR"] = str(work / "cache")
    result = run_cli("train", "data=list", f"data.root={list_dataset}", *TINY, cwd=work)
    (run_dir,) = (work / "outputs" / "runs").iterdir()
    (run_dir / "console.txt").write_text(result.stdout + result.stderr)
    return run_dir


def test_a_run_saves_every_picture(pictured_run: Path) -> None:
    for name in ("learning_curves", "confusion_matrix", "mistakes", "tsne"):
        assert_png(pictured_run / "pictures" / f"{name}.png")
    # Drawing says nothing of its own: the t-SNE library's notes stay off the console.
    assert "initialization" not in (pictured_run / "console.txt").read_text()
    assert run_name(pictured_run) == pictured_run.name  # a single run: its folder's name


def test_every_picture_title_names_its_run(tmp_path: Path, monkeypatch) -> None:
    """A copied picture still says where it came from: the run, the split, the checkpoint."""
    titles: list[str] = []
    figure_pixels = pictures.figure_pixels

    def recording(figure):
        titles.append(" | ".join([figure.get_suptitle(), *(a.get_title() for a in figure.axes)]))
        return figure_pixels(figure)

    monkeypatch.setattr(pictures, "figure_pixels", recording)
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(26).repeat(2)
    history = {"epoch": [1, 2], "train_loss": [2.0, 1.0], "val_epoch": [2], "val_acc": [0.5]}
    paths = pictures.evaluation_pictures(
        tmp_path,
        torch.rand(52, 64, generator=generator) * 2 - 1,
        labels,
        torch.randn(52, 26, generator=generator),
        ALPHABET,
        8,
        title="test split, best checkpoint",
        run="momentum=0.9,seed=2",
        history=history,
    )
    assert set(paths) == {"learning_curves", "confusion_matrix", "mistakes", "tsne"}
    assert len(titles) == 4 and all("momentum=0.9,seed=2" in title for title in titles)
    evaluated = [title for title in titles if "test split, best checkpoint" in title]
    assert len(evaluated) == 3  # all but the learning curves, which are the training's


def test_a_run_is_named_by_its_label_else_its_folder(tmp_path: Path) -> None:
    labelled = {"logger": {"tensorboard": {"version": "momentum=0.9,seed=2"}}}
    assert run_name(tmp_path / "sweep" / "4", labelled) == "momentum=0.9,seed=2"
    assert run_name(tmp_path / "sweep" / "4", OmegaConf.create(labelled)) == "momentum=0.9,seed=2"
    assert run_name(tmp_path / "sweep" / "4", {"logger": None}) == "sweep/4"
    single = tmp_path / "2026-12-02_01-22-08"
    single.mkdir()
    config = single / "config.yaml"
    config.write_text(yaml.safe_dump({"logger": {"mlflow": {"run_name": "x"}}}))
    assert run_name(single) == "x"  # read from the run's config.yaml
    config.write_text(yaml.safe_dump({"logger": {"tensorboard": {"version": ""}}}))
    assert run_name(single) == single.name


def test_mistakes_show_margins_that_differ_where_probabilities_read_1_00() -> None:
    """An overconfident model's mistakes all have p = 1.00; their margins over the true letter
    (log-odds) still differ, and rank them."""
    labels = torch.zeros(5, dtype=torch.long)  # every image is an A
    logits = torch.zeros(5, 26)
    logits[torch.arange(5), torch.tensor([1, 2, 3, 4, 0])] = torch.tensor([40.0, 55, 30, 70, 90])
    assert {f"{p:.2f}" for p in logits.softmax(dim=1).max(dim=1).values} == {"1.00"}
    figure = mistakes(np.zeros((5, 8, 8)), labels, logits, ALPHABET, "run — test split")
    panels = [text.get_text() for axes in figure.axes for text in axes.texts]
    assert panels == ["A → E  70.0", "A → C  55.0", "A → B  40.0", "A → D  30.0"]
    assert figure.get_suptitle().startswith("run — test split\n")
    assert "the 4 surest of 4 mistakes" in figure.get_suptitle()


def test_pictures_and_projector_are_in_tensorboard(pictured_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = pictured_run / "tensorboard"
    images: dict[str, bytes] = {}
    for events in logs.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["images"]:
            (event,) = accumulator.Images(tag)
            images[tag] = event.encoded_image_string
            with Image.open(io.BytesIO(event.encoded_image_string)) as image:
                assert image.size == (event.width, event.height)
    assert {"pictures/confusion_matrix", "pictures/mistakes", "pictures/tsne"} <= set(images)
    # TensorBoard shows the very file the run's folder holds: one drawing for both
    assert images["pictures/tsne"] == (pictured_run / "pictures" / "tsne.png").read_bytes()
    config = (logs / "projector_config.pbtxt").read_text()
    (embedding_dir,) = {path.parent for path in logs.rglob("tensors.tsv")}
    relative = embedding_dir.relative_to(logs).as_posix()
    assert f'metadata_path: "{relative}/metadata.tsv"' in config
    assert f'image_path: "{relative}/sprite.png"' in config
    metadata = (embedding_dir / "metadata.tsv").read_text().splitlines()
    assert metadata[0] == "letter\tpredicted" and len(metadata) == 1 + 26 * 2
    assert len((embedding_dir / "tensors.tsv").read_text().splitlines()) == 26 * 2
    with Image.open(embedding_dir / "sprite.png") as sprite:
        assert sprite.size[0] == sprite.size[1] >= 32 * 8


def test_test_command_draws_the_same_pictures(pictured_run: Path, list_dataset: Path) -> None:
    ckpt = pictured_run / "checkpoints" / "last.ckpt"
    result = run_cli("test", f"ckpt={ckpt}", "split=validation", cwd=pictured_run)
    out_dir = pictured_run / "test" / f"last-{list_dataset.name}-validation"
    for name in ("learning_curves", "confusion_matrix", "mistakes", "tsne"):
        assert_png(out_dir / f"{name}.png")
    assert (out_dir / "tensorboard" / "projector_config.pbtxt").is_file()
    assert f"pictures: {out_dir}" in result.stdout


def test_predict_can_annotate(pictured_run: Path, list_dataset: Path, tmp_path: Path) -> None:
    images = sorted((list_dataset / "images").iterdir())[:3]
    out = tmp_path / "annotated.png"
    ckpt = pictured_run / "checkpoints" / "best.ckpt"
    paths = ",".join(str(path) for path in images)
    result = run_cli(
        "predict", f"ckpt={ckpt}", f"images=[{paths}]", f"annotate={out}", cwd=tmp_path
    )
    assert_png(out)
    assert f"annotated: {out}" in result.stdout


def test_confusion_matrix_counts_every_image_once() -> None:
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 25])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2, 25])
    counts = confusion_counts(labels, predicted, 26)
    assert counts.shape == (26, 26) and counts.sum() == len(labels)
    assert counts[0, 0] == 1 and counts[0, 1] == 1 and counts[2, 2] == 2 and counts[2, 0] == 1
    assert list(counts.sum(axis=1)[:3]) == [2, 1, 3] and counts.trace() == 5


def test_every_non_zero_count_is_written_in_its_cell() -> None:
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 25])
    counts = confusion_counts(labels, torch.tensor([0, 1, 1, 2, 0, 2, 25]), 26)
    figure = pictures.confusion_matrix(counts, ALPHABET, "run — test split")
    (numbers,) = [c for c in figure.axes[0].collections if len(c.get_paths()) > 1]
    cells = list(zip(*np.nonzero(counts), strict=True))  # (true, predicted)
    assert numbers.get_offsets().tolist() == [[predicted, true] for true, predicted in cells]
    outline = pictures.string_outline
    expected = [outline(str(counts[cell]), 6.5, "normal").vertices.tolist() for cell in cells]
    assert [path.vertices.tolist() for path in numbers.get_paths()] == expected


def test_the_map_is_the_same_for_a_seed() -> None:
    features = torch.randn(60, 26, generator=torch.Generator().manual_seed(3))
    first = pictures.tsne_points(features, seed=4)
    assert first.shape == (60, 2) and np.isfinite(first).all()
    assert np.array_equal(first, pictures.tsne_points(features, seed=4))


def test_the_sprite_holds_each_thumbnail_row_by_row() -> None:
    thumbnails = np.stack([np.full((4, 3), (number + 1) / 8) for number in range(5)])
    sheet = pictures.sprite_sheet(thumbnails)
    assert sheet.shape == (3 * 4, 3 * 3) and sheet.dtype == np.uint8  # 5 images: a 3 x 3 grid
    cells = sheet.reshape(3, 4, 3, 3).swapaxes(1, 2).reshape(9, 4, 3)
    for number in range(5):
        assert (cells[number] == int(255 * (number + 1) / 8)).all()
    assert not cells[5:].any()  # black where the grid has no image


def test_picture_workers_start_with_what_drawing_imports_loaded() -> None:
    """A stack's picture workers come from a server started once (a sweep starts it while it
    prepares its jobs): they begin drawing with torch, matplotlib, openTSNE and TensorBoard
    imported, instead of spending seconds importing them."""
    from concurrent.futures import ProcessPoolExecutor

    from letters.reporting.picture_workers import (
        DRAWING_MODULES,
        picture_context,
        start_picture_server,
    )

    start_picture_server()
    start_picture_server()  # once is enough; again changes nothing
    with ProcessPoolExecutor(1, mp_context=picture_context()) as pool:
        loaded = pool.submit(eval, "sorted(__import__('sys').modules)").result()
    assert set(DRAWING_MODULES) <= set(loaded)


def test_a_picture_server_that_cannot_start_early_fails_no_job(monkeypatch) -> None:
    """Starting the server early is an optimisation: where no process can be spared, the job
    it was started for goes on (drawing tries again when the pictures are wanted)."""
    from multiprocessing import forkserver

    from letters.reporting.picture_workers import start_picture_server

    def no_process() -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(forkserver, "ensure_running", no_process)
    start_picture_server()  # no exception


@pytest.mark.parametrize(
    ("launcher", "job", "early"),
    [
        ("hydra_plugins.letters_stacked_launcher.stacked_launcher.StackedLauncher", None, False),
        ("hydra_plugins.letters_stacked_launcher.stacked_launcher.StackedLauncher", 1, True),
        ("hydra_plugins.letters_stacked_launcher.stacked_launcher.StackedLauncher", 0, False),
        ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", 3, False),
        (
            "hydra_plugins.letters_stacked_launcher.submitit_launcher.StackedLocalLauncher",
            3,
            False,
        ),
    ],
)
def test_only_a_stacked_sweep_starts_its_picture_server_early(
    launcher: str, job: int | None, early: bool
) -> None:
    """The stacked launcher trains its stacks in this process: from its second job on, the
    server that forks picture workers starts while jobs are prepared. A single run (job None),
    the basic launcher's runs and submitit's stacks (drawn in their jobs' processes) do not
    start it."""
    from hydra.types import RunMode

    from letters.runs.prepare import draws_in_workers

    mode = RunMode.RUN if job is None else RunMode.MULTIRUN
    hydra = OmegaConf.create(
        {
            "launcher": {"_target_": launcher},
            "mode": mode,
            "job": {"num": "???" if job is None else job},
        }
    )
    assert draws_in_workers(hydra) is early
