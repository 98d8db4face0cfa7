"""Pictures of a model and its predictions: learning curves, confusion matrix, most confident
mistakes, the t-SNE map of the reference, annotated predictions, and TensorBoard's projector.

Drawing functions return matplotlib Figures; ``figure_files.save_figure`` writes them, and
``evaluation_pictures`` makes the whole set for one split, as train and test both need.
"""

from __future__ import annotations

import functools
import gc
import io
import logging
import math
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path as Outline
from matplotlib.textpath import TextPath
from matplotlib.transforms import Affine2D

from letters.common.files import write_atomically
from letters.reporting.figure_files import figure_pixels, new_figure, png_bytes
from letters.reporting.figure_files import save_figure as save_figure  # predict.py draws and saves
from letters.reporting.picture_workers import picture_context

# 26 colours as far apart as a Glasbey palette gets them, and dark enough to read as letters
# on white. Computed once with the `glasbey` package (0.4.0):
# glasbey.create_palette(palette_size=26, lightness_bounds=(15, 55), chroma_bounds=(40, 100)).
CLASS_COLOURS = (
    "#d20800", "#8a3dff", "#008a00", "#00aeca", "#6d0051", "#ff00ce", "#ca8e00",
    "#003d6d", "#714500", "#00410c", "#d7797d", "#ba86d2", "#0475d7", "#550492",
    "#55b282", "#7d0008", "#aa00ba", "#b60069", "#4100f7", "#8aaa00", "#8696ff",
    "#fb6508", "#007d5d", "#797518", "#9e4d45", "#ff1869",
)  # fmt: skip

# The logger settings that hold a run's label, ${letters_run_label:...} (conf/logger/*.yaml).
LABELLED_LOGGERS = (("tensorboard", "version"), ("mlflow", "run_name"), ("wandb", "name"))


def run_name(run_dir: Path, cfg: Mapping[str, Any] | None = None) -> str:
    """What a run's pictures call it, so that a copied picture still says where it came from:
    the label its trackers know it by (in a multirun, what the sweep varies, e.g.
    ``momentum=0.9,seed=2``), else its folder's name (with the sweep's, for a numbered job).
    ``cfg`` is the run's resolved config; without it, the run's config.yaml is read."""
    if cfg is None:
        try:
            cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            cfg = None
    loggers = cfg.get("logger") if isinstance(cfg, Mapping) else None
    for logger, key in LABELLED_LOGGERS:
        settings = loggers.get(logger) if isinstance(loggers, Mapping) else None
        label = settings.get(key) if isinstance(settings, Mapping) else None
        if label:
            return str(label)
    if run_dir.name.isdigit():
        return f"{run_dir.parent.name}/{run_dir.name}"
    return run_dir.name


def learning_curves(history: dict[str, list[float]], run: str) -> Figure:
    """Training loss per epoch (left axis) with validation accuracy (right axis)."""
    figure = new_figure(figsize=(7.5, 4.2), dpi=120)
    loss_axes = figure.subplots()
    epochs = history.get("epoch", [])
    loss_axes.plot(epochs, history.get("train_loss", []), color="tab:blue", label="train loss")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("training loss (per image)", color="tab:blue")
    if history.get("train_loss") and min(history["train_loss"]) > 0:
        loss_axes.set_yscale("log")
    loss_axes.grid(alpha=0.3)
    accuracy_axes = loss_axes.twinx()
    accuracy = [100 * value for value in history.get("val_acc", [])]
    accuracy_axes.plot(
        history.get("val_epoch", []), accuracy, "o-", color="tab:orange", label="validation acc"
    )
    accuracy_axes.set_ylabel("validation accuracy (%)", color="tab:orange")
    accuracy_axes.set_ylim(0, 100)
    handles = (
        loss_axes.get_legend_handles_labels()[0] + accuracy_axes.get_legend_handles_labels()[0]
    )
    loss_axes.legend(  # under the plot: inside, it hides one curve or the other
        handles,
        [h.get_label() for h in handles],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=2,
        fontsize=9,
    )
    loss_axes.set_title(f"{run}: learning curves", fontsize=10)
    figure.tight_layout()
    return figure


def confusion_counts(labels: torch.Tensor, predicted: torch.Tensor, classes: int) -> np.ndarray:
    """counts[true, predicted], an integer matrix that sums to the number of images."""
    flat = labels.long() * classes + predicted.long()
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes).numpy()


def confusion_matrix(counts: np.ndarray, classes: str, source: str) -> Figure:
    """Rows normalised to the share of each true letter; every non-zero count written in.
    ``source`` names the run, the split and the checkpoint (``picture_source``)."""
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure = new_figure(figsize=(9.5, 8.5), dpi=120)
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    axes.set_xticks(ticks, list(classes))
    axes.set_yticks(
        ticks, [f"{letter} ({total})" for letter, total in zip(classes, totals[:, 0], strict=True)]
    )
    axes.tick_params(labelsize=7)
    axes.set_xlabel("predicted letter")
    axes.set_ylabel("true letter (images)")
    true, guess = np.nonzero(counts)
    draw_strings(
        axes,
        np.column_stack([guess, true]),
        [str(count) for count in counts[true, guess]],
        np.where(shares[true, guess] > 0.55, "white", "black"),
        size=6.5,
    )
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    axes.set_title(
        f"{source}\naccuracy {100 * accuracy:.1f}% of {counts.sum()} images", fontsize=10
    )
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02, label="share of the true letter")
    figure.subplots_adjust(left=0.1, right=0.92, bottom=0.07, top=0.93)
    return figure


def to_pixels(inputs: torch.Tensor, size: int) -> np.ndarray:
    """Model inputs in [-1, 1] back to grey images in [0, 1], [N, size, size]."""
    return ((inputs.reshape(-1, size, size).float().cpu() + 1) / 2).clamp(0, 1).numpy()


def confident_mistakes(
    labels: torch.Tensor, logits: torch.Tensor, count: int
) -> tuple[list[tuple[int, int, float]], int]:
    """The wrong predictions the model was surest of, as (image, predicted class, margin), and
    how many mistakes there are. The margin is ln p(predicted) / p(true), the predicted
    letter's lead over the true one in log-odds: unlike a probability, which reads 1.00 for
    every mistake of an overconfident model, it does not saturate."""
    log_probabilities = logits.double().log_softmax(dim=1)
    predicted = log_probabilities.argmax(dim=1)
    truth = log_probabilities.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    margins = log_probabilities.max(dim=1).values - truth
    wrong = torch.nonzero(predicted != labels).squeeze(1)
    chosen = wrong[margins[wrong].argsort(descending=True)][:count].tolist()
    return [(index, int(predicted[index]), float(margins[index])) for index in chosen], len(wrong)


def mistakes(
    images: np.ndarray,
    labels: torch.Tensor,
    logits: torch.Tensor,
    classes: str,
    source: str,
    count: int = 24,
) -> Figure:
    """The mistakes the model was surest of (``confident_mistakes``), each with its true and
    predicted letter and the predicted letter's margin over the true one. The images are one
    mosaic in one axes (``mosaic``): two dozen axes of one image each took six times as long
    to make and draw."""
    chosen, wrong = confident_mistakes(labels, logits, count)
    columns = 8
    tiles, tops = mosaic(images[[index for index, _, _ in chosen]], columns)
    width = 1.45 * columns  # inches; the height follows from the mosaic's shape
    title_band = 0.6
    height = title_band + width * tiles.shape[0] / tiles.shape[1]
    figure = new_figure(figsize=(width, height), dpi=120)
    axes = figure.add_axes((0, 0, 1, 1 - title_band / figure.get_figheight()))
    axes.axis("off")
    if chosen:
        axes.imshow(tiles, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for (x, y), (index, guess, margin) in zip(tops, chosen, strict=False):
        axes.annotate(
            f"{classes[int(labels[index])]} → {classes[guess]}  {margin:.1f}",
            (x, y),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8.5,
            color="darkred",
        )
    shown = f"the {len(chosen)} surest of {wrong} mistakes" if chosen else "no mistakes"
    figure.suptitle(
        f"{source}\ntrue → predicted, margin ln p(predicted)/p(true): {shown}", fontsize=10
    )
    return figure


def mosaic(images: np.ndarray, columns: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Square grey images [N, size, size] as one white image, ``columns`` a row, each with a
    band above it for its caption; and where each caption goes (the middle of its image's top
    edge, in the mosaic's pixels)."""
    size = images.shape[-1]
    gap, band = max(1, round(0.2 * size)), max(2, round(0.3 * size))
    cell_width, cell_height = size + gap, size + band
    rows = max(1, math.ceil(len(images) / columns))
    tiles = np.ones((rows * cell_height, columns * cell_width))
    tops = []
    for number, image in enumerate(images):
        top = (number // columns) * cell_height + band
        left = (number % columns) * cell_width + gap // 2
        tiles[top : top + size, left : left + size] = image
        tops.append((left + size / 2 - 0.5, top - 0.5))
    return tiles, tops


# The t-SNE map's letters, one per image, and its large letters, one per class (points).
MAP_LETTER_SIZE, CLUSTER_LETTER_SIZE = 8, 18


def tsne_map(
    features: torch.Tensor, labels: torch.Tensor, classes: str, source: str, seed: int = 0
) -> Figure:
    """The reference's picture: a 2-D t-SNE map (``tsne_points``), each point drawn as its
    letter in its class's colour (CLASS_COLOURS), and each class's letter again, large, on its
    densest cluster, so that the clusters read."""
    xy = tsne_points(features, seed)
    label_list = labels.tolist()
    figure = new_figure(figsize=(8, 8), dpi=120)
    axes = figure.subplots()
    draw_strings(
        axes,
        xy,
        [classes[label] for label in label_list],
        [CLASS_COLOURS[label % len(CLASS_COLOURS)] for label in label_list],
        size=MAP_LETTER_SIZE,
        weight="bold",
        alpha=0.8,
    )
    halo = [patheffects.withStroke(linewidth=3, foreground="white")]
    for label in sorted(set(label_list)):
        axes.text(
            *densest_point(xy[np.asarray(label_list) == label]),
            classes[label],
            color=CLASS_COLOURS[label % len(CLASS_COLOURS)],
            fontsize=CLUSTER_LETTER_SIZE,
            ha="center",
            va="center",
            fontweight="bold",
            path_effects=halo,
            zorder=3,
        )
    margin = 0.05 * (xy.max(axis=0) - xy.min(axis=0) + 1e-9)
    axes.set_xlim(xy[:, 0].min() - margin[0], xy[:, 0].max() + margin[0])
    axes.set_ylim(xy[:, 1].min() - margin[1], xy[:, 1].max() + margin[1])
    axes.set_xticks([])
    axes.set_yticks([])
    shown = f"t-SNE of the logits of {len(xy)} images (large: a letter's densest cluster)"
    axes.set_title(f"{source}\n{shown}", fontsize=10)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.93)  # what tight_layout
    return figure  # makes of a title and no ticks, without its cost


# openTSNE's optimisation, shortened from its 250 + 500 iterations: its learning rate
# (N / exaggeration) settles a map of a few thousand points long before, and a looser
# Barnes-Hut approximation (theta 0.5 by default) does not show at this size. Measured on
# scene-letters' 779 test images: a map as good as the 1,000 iterations of scikit-learn's
# (KL divergence 0.95 against 0.92) in a ninth of the time (docs/performance.md).
TSNE_SETTINGS = {"early_exaggeration_iter": 75, "n_iter": 125, "theta": 0.8}


def tsne_points(features: torch.Tensor, seed: int) -> np.ndarray:
    """The 2-D t-SNE map of ``features`` [N, D], as [N, 2]: openTSNE's Barnes-Hut t-SNE (at
    this size faster than its FFT one, whose grid costs the same for any N). One thread, its
    linear algebra's included: a seed then gives the same map on any machine, and pictures
    drawn side by side share the cores."""
    from openTSNE import TSNE  # loads scikit-learn: only when a map is drawn
    from threadpoolctl import threadpool_limits

    # openTSNE says at INFO what it does with its arguments; a run's console is no place for it.
    logging.getLogger("openTSNE").setLevel(logging.WARNING)
    points = features.double().cpu().numpy()
    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
    with threadpool_limits(1):
        embedding = TSNE(
            perplexity=perplexity,
            initialization="pca",
            negative_gradient_method="bh",
            n_jobs=1,
            random_state=seed,
            **TSNE_SETTINGS,
        ).fit(points)
    return np.asarray(embedding)


def draw_strings(
    axes: Axes,
    xy: np.ndarray,
    strings: Sequence[str],
    colours: Sequence[str],
    size: float,
    weight: str = "normal",
    alpha: float | None = None,
) -> None:
    """Short strings centred on points ``xy`` (data coordinates), ``size`` points high and
    each in its colour, as one collection of outlines: what as many text artists would show,
    at a fraction of their cost to make and to draw when there are hundreds."""
    points_to_pixels = Affine2D().scale(1 / 72) + axes.figure.dpi_scale_trans
    collection = PathCollection(
        [string_outline(string, size, weight) for string in strings],
        offsets=xy,
        offset_transform=axes.transData,
        transform=points_to_pixels,
        facecolors=colours,
        edgecolors="none",
        alpha=alpha,
    )
    axes.add_collection(collection, autolim=False)


@functools.cache
def string_outline(string: str, size: float, weight: str) -> Outline:
    """The string's outline in matplotlib's font, ``size`` points high, in points, its ink
    centred on (0, 0). Cached: a process drawing several runs' pictures outlines the same
    letters and counts each time."""
    outline = TextPath((0, 0), string, size=size, prop=FontProperties(weight=weight))
    middle = (outline.vertices.min(axis=0) + outline.vertices.max(axis=0)) / 2
    return outline.transformed(Affine2D().translate(*-middle))


def densest_point(points: np.ndarray, neighbours: int = 5) -> np.ndarray:
    """The point closest to its nearest neighbours: the heart of the class's densest cluster.
    Unlike the mean or median, it never falls between two clusters of one class."""
    if len(points) <= 2:
        return points.mean(axis=0)
    distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    nearest = np.sort(distances, axis=1)[:, 1 : min(neighbours, len(points) - 1) + 1]
    return points[nearest.mean(axis=1).argmin()]


def annotated_predictions(
    images: Sequence[np.ndarray], names: Sequence[str], probabilities: torch.Tensor, classes: str
) -> Figure:
    """Each input as the model saw it, with its predicted letter and top-3 probabilities."""
    columns = min(4, len(images))
    rows = math.ceil(len(images) / columns)
    figure = new_figure(figsize=(2.6 * columns, 3.3 * rows), dpi=120)
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes in grid.ravel():
        axes.axis("off")
    for axes, image, name, row in zip(grid.ravel(), images, names, probabilities, strict=False):
        axes.imshow(image, cmap="gray", vmin=0, vmax=255)
        top = row.topk(min(3, len(classes)))
        lines = [
            f"{classes[i]} {p:.2f}"
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]
        axes.set_title(f"{Path(name).name}\n{classes[int(top.indices[0])]}", fontsize=10)
        axes.text(
            0.5,
            -0.04,
            "   ".join(lines),
            transform=axes.transAxes,
            ha="center",
            va="top",
            fontsize=8.5,
        )
    figure.tight_layout()
    return figure


def draw_in_parallel(
    tasks: list[tuple[str, dict[str, Any]]],
    on_done: Callable[[int, BaseException | None], None] | None = None,
) -> list[BaseException | None]:
    """evaluation_pictures for several runs at once, one worker process per core.

    Each task is (the run's TensorBoard folder, evaluation_pictures' other arguments): a
    worker writes its images and projector there through its own SummaryWriter, which
    TensorBoard shows as the same run. Returns each task's error (None when it drew
    everything): one run's full disk stops no other's. ``on_done(task's index, its error)``
    is called here as each task ends, in the order they end, so that a caller can show the
    progress of a wait that takes a while.

    Workers are forked from a server process that has imported what drawing needs once, for
    the whole sweep (letters.reporting.picture_workers): a spawned worker spent 3 s of CPU
    importing them, more than drawing two runs.
    """
    from concurrent.futures import as_completed

    workers = max(1, min(len(tasks), os.cpu_count() or 1))
    with picture_pool(workers) as pool:
        futures = [pool.submit(draw_run_pictures, task) for task in tasks]
        try:
            if on_done is not None:
                index_of = {future: index for index, future in enumerate(futures)}
                for future in as_completed(futures):
                    on_done(index_of[future], future.exception())
            return [future.exception() for future in futures]
        except BaseException:  # Ctrl-C: the runs being drawn finish, the others are not begun
            pool.shutdown(cancel_futures=True)
            raise


def picture_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` picture worker processes (picture_context's, set up by
    picture_worker_start) that draw_run_pictures runs in."""
    return ProcessPoolExecutor(
        workers, mp_context=picture_context(), initializer=picture_worker_start
    )


def picture_worker_start() -> None:
    """Set up a picture worker process (ProcessPoolExecutor's initializer)."""
    torch.set_num_threads(1)  # the workers share the cores between them
    # Ctrl-C reaches every process of the terminal's group: a worker finishes the run it
    # draws (a few seconds), while the sweep stops its training and records every run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # What the server imported (torch, matplotlib, openTSNE: about 400,000 objects) lives as
    # long as the worker: out of the garbage collector's sight, its full passes (0.15 s each,
    # every few runs) look at the drawing's objects only. Python's advice for forked workers.
    gc.freeze()


def draw_run_pictures(task: tuple[str | None, dict[str, Any]]) -> None:
    """One run's evaluation_pictures in a worker: ``task`` is (its TensorBoard folder or None,
    evaluation_pictures' other arguments)."""
    from torch.utils.tensorboard import SummaryWriter

    log_dir, arguments = task
    if log_dir is None:  # a run without TensorBoard: the PNG files only
        evaluation_pictures(**arguments)
        return
    with SummaryWriter(log_dir) as writer:
        evaluation_pictures(**arguments, writer=writer)


def evaluation_pictures(
    out_dir: Path,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    logits: torch.Tensor,
    classes: str,
    norm_size: int,
    title: str,
    run: str,
    history: dict[str, list[float]] | None = None,
    writer: Any | None = None,
    step: int = 0,
    seed: int = 0,
) -> dict[str, Path]:
    """Learning curves (given a history), confusion matrix, mistakes and t-SNE map as PNGs in
    ``out_dir`` and, given a TensorBoard SummaryWriter, as its images plus the projector's
    embedding with sprites. ``title`` says what was evaluated (split, checkpoint) and ``run``
    which run it is (``run_name``): every picture's title names both."""
    predicted = logits.argmax(dim=1)
    pixels = to_pixels(inputs, norm_size)
    source = f"{run} — {title}"
    figures = (
        {}
        if not history or not history.get("epoch")
        else {"learning_curves": learning_curves(history, run)}
    )
    figures |= {
        "confusion_matrix": confusion_matrix(
            confusion_counts(labels, predicted, len(classes)), classes, source
        ),
        "mistakes": mistakes(pixels, labels, logits, classes, source),
        "tsne": tsne_map(logits, labels, classes, source, seed),
    }
    paths = {}
    for name, figure in figures.items():
        drawn = figure_pixels(figure)  # drawn once, for the file and for TensorBoard
        png = png_bytes(drawn)
        paths[name] = out_dir / f"{name}.png"
        write_atomically(paths[name], lambda handle, png=png: handle.write(png))
        if writer is not None:
            add_png(writer, f"pictures/{name}", png, drawn.shape, step)
    if writer is not None:
        add_projector(writer, logits, labels, pixels, classes, step)
    return paths


def add_png(writer: Any, tag: str, png: bytes, shape: tuple[int, ...], step: int = 0) -> None:
    """A PNG file's bytes (of RGB pixels of ``shape``) as a TensorBoard image: what
    ``add_image`` shows, without converting and encoding the pixels again."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    height, width, channels = shape
    image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def add_projector(
    writer: Any,
    features: torch.Tensor,
    labels: torch.Tensor,
    pixels: np.ndarray,
    classes: str,
    step: int = 0,
) -> None:
    """TensorBoard's projector: one point per image, its thumbnail as the sprite, its true and
    predicted letters as labels, so t-SNE and PCA can be explored interactively.

    The files are those SummaryWriter.add_embedding writes, where it writes them, but each
    atomically and the sprite grey and quickly compressed: add_embedding's RGB sprite took a
    quarter of a run's pictures' time."""
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    log_dir = Path(writer.get_logdir())
    folder = f"{step:05d}/logits"
    predicted = features.argmax(dim=1).tolist()
    metadata = "".join(
        f"{classes[true]}\t{classes[guess]}\n"
        for true, guess in zip(labels.tolist(), predicted, strict=True)
    )
    write_text(log_dir / folder / "metadata.tsv", "letter\tpredicted\n" + metadata)
    tensors = io.StringIO()
    np.savetxt(tensors, features.float().cpu().numpy(), fmt="%.9g", delimiter="\t")
    write_text(log_dir / folder / "tensors.tsv", tensors.getvalue())
    sprite = png_bytes(sprite_sheet(pixels), compress_level=1)
    write_atomically(log_dir / folder / "sprite.png", lambda handle: handle.write(sprite))
    config = ProjectorConfig()
    embedding = config.embeddings.add(
        tensor_name=f"logits:{step:05d}",
        tensor_path=f"{folder}/tensors.tsv",
        metadata_path=f"{folder}/metadata.tsv",
    )
    embedding.sprite.image_path = f"{folder}/sprite.png"
    embedding.sprite.single_image_dim.extend([pixels.shape[2], pixels.shape[1]])
    write_text(log_dir / "projector_config.pbtxt", text_format.MessageToString(config))


def sprite_sheet(pixels: np.ndarray) -> np.ndarray:
    """Grey images [N, height, width] in [0, 1] as the projector's sprite: a square grid of
    them, row by row, black where the grid has no image (uint8)."""
    count, height, width = pixels.shape
    side = math.ceil(count**0.5)
    grid = np.zeros((side * side, height, width), dtype=np.uint8)
    grid[:count] = (pixels * 255).clip(0, 255)
    return grid.reshape(side, side, height, width).swapaxes(1, 2).reshape(side * height, -1)


def write_text(path: Path, text: str) -> None:
    """``text`` as a UTF-8 file, atomically."""
    data = text.encode()
    write_atomically(path, lambda handle: handle.write(data))
