"""Speed of letters against a plain PyTorch loop, on the same data, model and recipe.

    python scripts/benchmark.py [--data DIR] [--device cpu|cuda] [--repetitions 5] [--epochs 3]

Alternates repetitions of (a) a minimal PyTorch loop with nn.Linear and F.cross_entropy,
(b) the same loop on letters.nn.autograd's Functions (a stack of one), (c) letters' engine as
letters.train builds it; prints per-step and per-epoch times (median and spread over
repetitions) and the ratios b/a and c/a, at batch sizes 8 and 256. Then the per-step time of a
stack of K members against K (--stack-sizes), and whole processes, alternated: `python -m
letters.train --help`, start-up to the first training step, the plain PyTorch script of the
reference's recipe (scripts/plain_reference.py), one run of that recipe, the momentum table
over three seeds (one stack), and the accuracy recipes shortened (--recipes). Ends with the
three ratios docs/performance.md reports (one run / plain script, table / one run, stack of 15
/ stack of 1), each with its median and spread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPOSITORY.parent / "shared" / "data" / "scene-letters"


def load_data(root: Path | None, cache_dir: str):
    """The training split as one tensor, decoded as letters.train decodes it."""
    from letters.data import ListDataModule, SyntheticDataModule

    if root is not None and root.is_dir():
        data = ListDataModule(root=str(root), cache_dir=cache_dir)
    else:
        data = SyntheticDataModule(cache_dir=cache_dir)
    return data.prepare()


def plain_model(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(1024, hidden), nn.ReLU(), nn.Linear(hidden, 26))


def letters_model(hidden: int) -> nn.Module:
    from letters.nn.model import MLP

    return MLP(1024, 26, [hidden], "relu", "normal")


def loop_epochs(
    model, loss_fn, inputs, labels, batch_size, epochs, device, members: bool = False
) -> list[float]:
    """A minimal training loop: the whole split on the device, one permutation per epoch.
    ``members``: batches get a leading member dimension of 1, as a stack of one sees them."""
    model = model.to(device)
    inputs, labels = inputs.to(device), labels.to(device)
    if members:
        inputs, labels = inputs.unsqueeze(0), labels.unsqueeze(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=5e-4, momentum=0.9)
    times = []
    for epoch in range(epochs):
        synchronize(device)
        start = time.perf_counter()
        rows = inputs.shape[-2] if members else len(inputs)
        dim = 1 if members else 0
        generator = torch.Generator().manual_seed(epoch)
        order = torch.randperm(rows, generator=generator).to(device)
        shuffled_inputs = inputs.index_select(dim, order)
        shuffled_labels = labels.index_select(dim, order)
        for first in range(0, rows, batch_size):
            x = shuffled_inputs.narrow(dim, first, min(batch_size, rows - first))
            y = shuffled_labels.narrow(dim, first, min(batch_size, rows - first))
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.sum().backward()
            optimizer.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def lightning_epochs(
    data, batch_size, epochs, device, members: int = 1, hidden: int = 64
) -> list[float]:
    """letters' engine as letters.train builds it (letters.runs.stack_run.build_stack_run): a
    stack of ``members`` runs of the 1024-``hidden``-26 recipe that differ in their seeds."""
    import logging

    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from letters.common.resolvers import register_resolvers
    from letters.runs.jobs import Job
    from letters.runs.stack_run import build_stack_run

    register_resolvers()  # what the train command registers before Hydra composes its config

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("letters").setLevel(logging.WARNING)
    jobs = []
    for seed in range(members):
        run_dir = Path(tempfile.mkdtemp(prefix="letters-benchmark-"))
        overrides = [
            f"batch_size={batch_size}",
            f"epochs={epochs}",
            f"val_interval={epochs + 1}",
            f"hidden_sizes=[{hidden}]",
            f"seed={seed}",
            f"trainer.accelerator={'gpu' if device.startswith('cuda') else 'cpu'}",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}",
        ]
        with initialize_config_dir(str(REPOSITORY / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        jobs.append(Job(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)), run_dir))
    stack = build_stack_run(jobs)
    stack.data = data
    data.batch_size, data.steps_per_call = batch_size, jobs[0].cfg.steps_per_call
    timer = EpochTimer(device)
    stack.trainer.callbacks.append(timer)
    stack.trainer.fit(stack.model, datamodule=data)
    return timer.times


def make_epoch_timer():
    import pytorch_lightning as pl

    class EpochTimer(pl.Callback):
        """Wall time of each training epoch, from its start to its end (validation excluded)."""

        def __init__(self, device: str) -> None:
            self.device, self.times, self.start = device, [], 0.0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            synchronize(self.device)
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            synchronize(self.device)
            self.times.append(time.perf_counter() - self.start)

    return EpochTimer


def process_seconds(arguments: list[str], cwd: Path, marker: str | None = None) -> float:
    """Wall time of a whole process, or up to the first line containing ``marker``."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *arguments],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    elapsed = None
    for line in process.stdout:
        if marker and elapsed is None and marker in line:
            elapsed = time.perf_counter() - start
    process.wait()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(arguments)} failed with exit status {process.returncode}")
    return elapsed if elapsed is not None else time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repetitions", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-sizes", default="8,256")
    parser.add_argument("--stack-sizes", default="1,5,15,50")
    parser.add_argument("--stack-hidden", type=int, default=32)
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--skip-processes", action="store_true")
    parser.add_argument("--table-repetitions", type=int, default=3)
    parser.add_argument(
        "--recipes", default="best,best_ensemble", help="experiments timed shortened ('' none)"
    )
    args = parser.parse_args()

    global EpochTimer
    EpochTimer = make_epoch_timer()
    cache_dir = os.environ.get("LETTERS_CACHE_DIR", "~/.cache/letters")
    data = load_data(args.data, cache_dir)
    inputs, labels = data.splits["train"]
    print(
        f"data: {data.describe()}; device {args.device}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; model 1024-64-26, SGD lr 5e-4 momentum 0.9"
    )
    from letters.nn.autograd import cross_entropy

    def plain_loss(logits, targets):
        return F.cross_entropy(logits, targets, reduction="sum")

    def letters_loss(logits, targets):
        return cross_entropy(logits, targets, "sum")

    names = {
        "a": "plain PyTorch loop",
        "b": "loop on letters.nn.autograd",
        "c": "letters Lightning",
    }
    batch_sizes = (
        [] if args.skip_steps else [int(size) for size in args.batch_sizes.split(",") if size]
    )
    for batch_size in batch_sizes:
        steps = -(-len(labels) // batch_size)
        # Per repetition, the median epoch of each variant; a, b and c of one repetition run
        # back to back, so their ratios are paired and insensitive to slow drifts of the host.
        per_repetition: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        for repetition in range(args.repetitions):
            torch.manual_seed(repetition)
            times = {
                "a": loop_epochs(
                    plain_model(64),
                    plain_loss,
                    inputs,
                    labels,
                    batch_size,
                    args.epochs,
                    args.device,
                ),
                "b": loop_epochs(
                    letters_model(64),
                    letters_loss,
                    inputs,
                    labels,
                    batch_size,
                    args.epochs,
                    args.device,
                    members=True,
                ),
                "c": lightning_epochs(data, batch_size, args.epochs, args.device),
            }
            for key, epoch_times in times.items():
                per_repetition[key].append(statistics.median(epoch_times))
        print(
            f"\nbatch size {batch_size}: {steps} steps per epoch, {args.repetitions} repetitions"
            f" x {args.epochs} epochs; median over repetitions (min-max)"
        )
        for key, times in per_repetition.items():
            median = statistics.median(times)
            print(
                f"  ({key}) {names[key]:<26} {1000 * median / steps:7.3f} ms/step "
                f"({1000 * min(times) / steps:.3f}-{1000 * max(times) / steps:.3f}), "
                f"{median:7.3f} s/epoch"
            )
        for top in ("b", "c"):
            ratios = [t / a for t, a in zip(per_repetition[top], per_repetition["a"], strict=True)]
            print(
                f"  {top}/a = {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
            )

    ratios: dict[str, list[float]] = {}
    stack_sizes = [int(size) for size in args.stack_sizes.split(",") if size]
    if stack_sizes:
        per_size = stack_steps(data, stack_sizes, args)
        if 1 in per_size and 15 in per_size:
            ratios["stack of 15 / stack of 1, per step"] = paired_ratios(per_size[15], per_size[1])
    if not args.skip_processes and args.data.is_dir():
        ratios = {**whole_processes(args), **ratios}
    if ratios:
        print_ratios(ratios)


def stack_steps(data, sizes: list[int], args) -> dict[int, list[float]]:
    """Per-step time of a stack of K members (seeds 0..K-1) against K, at batch 8: the engine
    as letters.train builds it, medians over repetitions, ratios to K = 1 paired per
    repetition."""
    steps = -(-len(data.splits["train"][1]) // 8)
    per_size: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(args.repetitions):
        for size in sizes:
            epochs = lightning_epochs(
                data, 8, args.epochs, args.device, members=size, hidden=args.stack_hidden
            )
            per_size[size].append(statistics.median(epochs) / steps)
    print(
        f"\nstacks at batch 8, 1024-{args.stack_hidden}-26, SGD: per optimizer step of the whole "
        f"stack, median of {args.repetitions} repetitions x {args.epochs} epochs"
    )
    print("| K | ms per step | per member | x K=1 |\n|---|---|---|---|")
    base = per_size[sizes[0]]
    for size, times in per_size.items():
        ratios = [t / b for t, b in zip(times, base, strict=True)]
        median = statistics.median(times)
        print(
            f"| {size} | {1000 * median:.3f} | {1000 * median / size:.3f} | "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
    return per_size


def spread(values: list[float], digits: int = 2) -> str:
    """``median (min-max)`` of repeated measurements."""
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def whole_processes(args) -> dict[str, list[float]]:
    """Whole commands as users type them, alternated within each repetition so that their
    ratios are paired: the plain PyTorch script of the reference's recipe
    (scripts/plain_reference.py), one run of that recipe with letters (pictures on), and the
    momentum table over three seeds as a multirun (stacked by default). Also `--help` and the
    start-up to the first training step. Returns the per-repetition ratios."""
    root = args.data.resolve()
    data = ["data=list", f"data.root={root}", "trainer.enable_progress_bar=false"]
    plain_script = str(REPOSITORY / "scripts" / "plain_reference.py")
    times: dict[str, list[float]] = {"plain": [], "single": [], "table": []}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        help_seconds = [process_seconds(["-m", "letters.train", "--help"], work) for _ in range(3)]
        first_step = [
            process_seconds(
                ["-m", "letters.train", *data, "epochs=1", "pictures=false"],
                work,
                marker="training starts",
            )
            for _ in range(3)
        ]
        table = ["-m", "letters.train", "-m", *data, "experiment=momentum_table", "seed=1,2,3"]
        for _ in range(args.table_repetitions):
            times["plain"].append(process_seconds([plain_script, "--data", str(root)], work))
            times["single"].append(process_seconds(["-m", "letters.train", *data], work))
            times["table"].append(process_seconds(table, work))
        recipes = {
            recipe: [
                process_seconds(
                    ["-m", "letters.train", *data, f"experiment={recipe}", *extra], work
                )
                for _ in range(args.table_repetitions)
            ]
            for recipe, extra in RECIPES.items()
            if recipe in args.recipes.split(",")
        }
    print(f"\n`python -m letters.train --help`: {spread(help_seconds)} s (median of 3)")
    print(
        f"start of `python -m letters.train` to its first training step: {spread(first_step)} s"
        " (median of 3, data cached)"
    )
    print(
        f"whole processes, median (min-max) of {args.table_repetitions} alternating repetitions:\n"
        f"  plain PyTorch script of the reference's recipe:    {spread(times['plain'], 1)} s\n"
        f"  one run of that recipe with letters, pictures on: {spread(times['single'], 1)} s\n"
        f"  the momentum table over 3 seeds (15 runs):        {spread(times['table'], 1)} s"
    )
    for recipe, seconds in recipes.items():
        print(f"  experiment={recipe} {' '.join(RECIPES[recipe])}: {spread(seconds, 1)} s")
    return {
        "one run / plain script": paired_ratios(times["single"], times["plain"]),
        "table of 15 runs / one run": paired_ratios(times["table"], times["single"]),
    }


# The accuracy recipes, shortened to a few epochs: checks that nothing got slower for them.
RECIPES = {
    "best": ["epochs=5", "pictures=false"],
    "best_ensemble": ["epochs=5", "pretrain.epochs=2", "pictures=false"],
}

TARGETS = {
    "one run / plain script": 1.5,
    "table of 15 runs / one run": 2.0,
    "stack of 15 / stack of 1, per step": 2.0,
}


def paired_ratios(tops: list[float], bottoms: list[float]) -> list[float]:
    return [top / bottom for top, bottom in zip(tops, bottoms, strict=True)]


def print_ratios(ratios: dict[str, list[float]]) -> None:
    """The issue's three ratios, each with its median, spread and target."""
    print("\n| ratio | median (min-max) | target |\n|---|---|---|")
    for name, values in ratios.items():
        verdict = "met" if statistics.median(values) <= TARGETS[name] else "missed"
        print(f"| {name} | {spread(values)} | <= {TARGETS[name]} ({verdict}) |")


if __name__ == "__main__":
    main()
