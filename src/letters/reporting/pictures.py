"""Pictures of a model and its predictions: learning curves, confusion matrix, most confident
mistakes, the t-SNE map of the reference, annotated predictions, and TensorBoard's projector.

Drawing functions return matplotlib Figures; ``figure_files.save_figure`` writes them, and
``evaluation_pictures`` makes the whole set for one split, as train and test both need.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml
from matplotlib import patheffects
from matplotlib.figure import Figure
from PIL import Image

from letters.common.files import write_atomically
from letters.reporting.figure_files import figure_png
from letters.reporting.figure_files import save_figure as save_figure  # predict.py draws and saves

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
    figure, loss_axes = plt.subplots(figsize=(7.5, 4.2), dpi=120)
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
    figure, axes = plt.subplots(figsize=(9.5, 8.5), dpi=120)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    axes.set_xticks(ticks, list(classes))
    axes.set_yticks(
        ticks, [f"{letter} ({total})" for letter, total in zip(classes, totals[:, 0], strict=True)]
    )
    axes.tick_params(labelsize=7)
    axes.set_xlabel("predicted letter")
    axes.set_ylabel("true letter (images)")
    for true, guess in zip(*np.nonzero(counts), strict=True):
        colour = "white" if shares[true, guess] > 0.55 else "black"
        axes.text(
            guess,
            true,
            str(counts[true, guess]),
            ha="center",
            va="center",
            fontsize=6.5,
            color=colour,
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
    predicted letter and the predicted letter's margin over the true one."""
    chosen, wrong = confident_mistakes(labels, logits, count)
    columns = 8
    rows = max(1, math.ceil(len(chosen) / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(1.45 * columns, 1.75 * rows + 0.7), dpi=120)
    for axes in np.atleast_1d(grid).ravel():
        axes.axis("off")
    for axes, (index, guess, margin) in zip(np.atleast_1d(grid).ravel(), chosen, strict=False):
        axes.imshow(images[index], cmap="gray", vmin=0, vmax=1)
        truth = classes[int(labels[index])]
        axes.set_title(f"{truth} → {classes[guess]}  {margin:.1f}", fontsize=8.5, color="darkred")
    shown = f"the {len(chosen)} surest of {wrong} mistakes" if chosen else "no mistakes"
    figure.suptitle(
        f"{source}\ntrue → predicted, margin ln p(predicted)/p(true): {shown}", fontsize=10
    )
    figure.tight_layout()
    return figure


def tsne_map(
    features: torch.Tensor, labels: torch.Tensor, classes: str, source: str, seed: int = 0
) -> Figure:
    """The reference's picture: a 2-D t-SNE map, each point drawn as its letter in its class's
    colour (CLASS_COLOURS), and each class's letter again, large, on its densest cluster, so
    that the clusters read."""
    from sklearn.manifold import TSNE

    points = features.double().cpu().numpy()
    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
    embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    xy = embedded.fit_transform(points)
    label_list = labels.tolist()
    figure, axes = plt.subplots(figsize=(8, 8), dpi=120)
    for (x, y), label in zip(xy, label_list, strict=True):
        axes.text(
            x,
            y,
            classes[label],
            color=CLASS_COLOURS[label % len(CLASS_COLOURS)],
            fontsize=8,
            ha="center",
            va="center",
            fontweight="bold",
            alpha=0.8,
        )
    halo = [patheffects.withStroke(linewidth=3, foreground="white")]
    for label in sorted(set(label_list)):
        axes.text(
            *densest_point(xy[np.asarray(label_list) == label]),
            classes[label],
            color=CLASS_COLOURS[label % len(CLASS_COLOURS)],
            fontsize=18,
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
    shown = f"t-SNE of the logits of {len(points)} images (large: a letter's densest cluster)"
    axes.set_title(f"{source}\n{shown}", fontsize=10)
    figure.tight_layout()
    return figure


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
    figure, grid = plt.subplots(
        rows, columns, figsize=(2.6 * columns, 3.3 * rows), dpi=120, squeeze=False
    )
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
    TensorBoard shows as the same run. Workers start fresh ("spawn"):
    a forked copy of a process that has run torch's thread pool can hang. Returns each
    task's error (None when it drew everything): one run's full disk stops no other's.
    ``on_done(task's index, its error)`` is called here as each task ends, in the order they
    end, so that a caller can show the progress of a wait that takes a while.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = max(1, min(len(tasks), os.cpu_count() or 1))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        futures = [pool.submit(_draw_task, task) for task in tasks]
        if on_done is not None:
            index_of = {future: index for index, future in enumerate(futures)}
            for future in as_completed(futures):
                on_done(index_of[future], future.exception())
        return [future.exception() for future in futures]


def _one_thread() -> None:
    torch.set_num_threads(1)  # the workers share the cores between them


def _draw_task(task: tuple[str, dict[str, Any]]) -> None:
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
        png = figure_png(figure)  # rendered once, for the file and for TensorBoard
        paths[name] = out_dir / f"{name}.png"
        write_atomically(paths[name], lambda handle, png=png: handle.write(png))
        if writer is not None:
            with Image.open(io.BytesIO(png)) as image:
                pixels_rgb = np.asarray(image.convert("RGB"))
            writer.add_image(f"pictures/{name}", pixels_rgb, step, dataformats="HWC")
    if writer is not None:
        add_projector(writer, logits, labels, pixels, classes, step)
    return paths


def add_projector(
    writer: Any,
    features: torch.Tensor,
    labels: torch.Tensor,
    pixels: np.ndarray,
    classes: str,
    step: int = 0,
) -> None:
    """TensorBoard's projector: one point per image, its thumbnail as the sprite, its true and
    predicted letters as labels, so t-SNE and PCA can be explored interactively."""
    predicted = features.argmax(dim=1).tolist()
    metadata = [[classes[t], classes[p]] for t, p in zip(labels.tolist(), predicted, strict=True)]
    thumbnails = torch.from_numpy(pixels).unsqueeze(1)
    writer.add_embedding(
        features.float().cpu(),
        metadata=metadata,
        metadata_header=["letter", "predicted"],
        label_img=thumbnails,
        global_step=step,
        tag="logits",
    )
