"""Lightning DataModules: each source decodes its splits into tensors once, then serves batches
by slicing those tensors (no per-item __getitem__, no collate), on whatever device the model is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pytorch_lightning as pl
import torch

from letters.common.errors import ConfigError, LettersError
from letters.common.seeds import ORDER, epoch_seed
from letters.data.cache import Splits, cache_key, cached_splits
from letters.data.images import CLASSES, resize_grey, to_model_input
from letters.data.list_layout import SPLITS, load_list_layout


class TensorBatches:
    """Batches of a split held as two tensors, in order: what evaluation reads. Every member of
    a stack classifies the same images, so one batch serves them all."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        self.inputs, self.labels = inputs, labels
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.labels), self.batch_size):
            yield (
                self.inputs[start : start + self.batch_size],
                self.labels[start : start + self.batch_size],
            )


class Chunk(NamedTuple):
    """``steps`` consecutive mini-batches of every member: the split's inputs ``source``
    [N, features], the rows each member takes ``rows`` [K, rows] and their labels [K, rows].
    The training step cuts it into mini-batches of ``batch_size`` rows (the last one of an
    epoch may be shorter).

    A mini-batch's images are gathered when its step comes (``mini_batches``), not the whole
    chunk's at once: a stack of 15 then reads a step's 480 KB while they are in the cache
    instead of copying every chunk's megabytes out to memory and back (``inputs`` gathers
    the chunk at once, for what changes the images first: augmentation)."""

    source: torch.Tensor
    rows: torch.Tensor
    labels: torch.Tensor
    batch_size: int

    @property
    def inputs(self) -> torch.Tensor:
        """The chunk's images [K, rows, features], gathered in one copy."""
        return gather(self.source, self.rows)

    def mini_batches(
        self, inputs: torch.Tensor | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, labels) of each mini-batch: gathered step by step from ``source``, or cut
        from ``inputs``, this chunk's images as the caller changed them (augmented)."""
        for start in range(0, self.labels.shape[1], self.batch_size):
            end = start + self.batch_size
            if inputs is None:
                yield gather(self.source, self.rows[:, start:end]), self.labels[:, start:end]
            else:
                yield inputs[:, start:end], self.labels[:, start:end]


def gather(source: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``source``'s rows at ``rows`` [K, n], as [K, n, ...] (images or labels); index_select is
    several times faster here than advanced indexing (source[rows])."""
    return source.index_select(0, rows.reshape(-1)).view(*rows.shape, *source.shape[1:])


class MemberBatches:
    """Training chunks for a stack: member k sees the split in its own order each epoch.

    The order of epoch e for a member with seed s is a function of (s, e) alone
    (letters.common.seeds.epoch_seed), so a resumed run, or a member trained in a stack, sees
    exactly the batches it would have seen trained alone from the start.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        steps_per_chunk: int,
        seeds: Sequence[int],
        epoch: Callable[[], int] | None = None,
    ) -> None:
        self.inputs, self.labels = inputs, labels
        self.batch_size = batch_size
        self.rows_per_chunk = batch_size * steps_per_chunk
        self.seeds = list(seeds)
        self.epoch = epoch or (lambda: 0)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.rows_per_chunk)

    def orders(self, epoch: int) -> torch.Tensor:
        """[K, N]: each member's permutation of the split for ``epoch``."""
        permutations = [
            torch.randperm(
                len(self.labels),
                generator=torch.Generator().manual_seed(epoch_seed(seed, epoch, ORDER)),
            )
            for seed in self.seeds
        ]
        return torch.stack(permutations).to(self.labels.device)

    def __iter__(self) -> Iterator[Chunk]:
        orders = self.orders(self.epoch())
        for start in range(0, len(self.labels), self.rows_per_chunk):
            rows = orders[:, start : start + self.rows_per_chunk]
            yield Chunk(self.inputs, rows, gather(self.labels, rows), self.batch_size)


class LetterDataModule(pl.LightningDataModule):
    """Common part of every source: splits as tensors, and batching, which only it decides.

    Subclasses implement ``load_grey_splits`` returning grey uint8 images at ``norm_size`` and
    class indices; everything after that is shared. ``seeds`` holds one seed per member of the
    stack being trained (each member's batch order); the training engine sets it.
    """

    classes = CLASSES

    def __init__(
        self,
        norm_size: int = 32,
        batch_size: int = 8,
        eval_batch_size: int = 1024,
        seeds: Sequence[int] = (0,),
        cache_dir: str = "~/.cache/letters",
        steps_per_call: int = 1,
        train_limit: int | None = None,
    ) -> None:
        super().__init__()
        # Train on this many images of the training split only, always the same ones
        # (debug=overfit); validation and test keep their whole splits.
        self.train_limit = train_limit
        self.norm_size = norm_size
        self.batch_size = batch_size
        # Training chunks hold this many mini-batches; LetterClassifier steps through them.
        self.steps_per_call = steps_per_call
        self.eval_batch_size = eval_batch_size
        self.seeds = list(seeds)
        self.cache_dir = os.path.expanduser(cache_dir)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        # The training batches handed to the Trainer (it asks once a fit): keep_members cuts them.
        self.train_batches: MemberBatches | None = None

    def load_grey_splits(self) -> Splits:
        raise NotImplementedError

    def prepare(self) -> LetterDataModule:
        """Decode (or read from the cache) all splits; idempotent, callable outside Lightning."""
        if not self.splits:
            limit = self.train_limit  # checked here: Hydra's instantiate would wrap the error
            whole = isinstance(limit, int) and not isinstance(limit, bool)
            if limit is not None and not (whole and limit >= 1):
                raise ConfigError(
                    f"data.train_limit={self.train_limit}: a number of training images "
                    "(1 or more), or null for all of them"
                )
            grey = self.load_grey_splits()
            for split in SPLITS:
                images, labels = grey[split]
                if len(labels) == 0:
                    raise LettersError(f"{type(self).__name__}: the {split} split is empty")
                if split == "train" and self.train_limit is not None:
                    images, labels = fixed_subset(images, labels, self.train_limit)
                self.splits[split] = (to_model_input(images), labels)
        return self

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    @property
    def input_size(self) -> int:
        return self.norm_size * self.norm_size

    def move_to(self, device: torch.device | str) -> None:
        """Keep every split on the model's device: batches, shuffles and augmentation then
        happen there, with no copy from the host inside an epoch."""
        self.prepare()
        self.splits = {
            name: (inputs.to(device), labels.to(device))
            for name, (inputs, labels) in self.splits.items()
        }

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one training epoch."""
        self.prepare()
        return math.ceil(len(self.splits["train"][1]) / self.batch_size)

    def train_dataloader(self) -> MemberBatches:
        self.prepare()
        trainer = self.trainer
        self.train_batches = MemberBatches(
            *self.splits["train"],
            self.batch_size,
            self.steps_per_call,
            self.seeds,
            epoch=(lambda: trainer.current_epoch) if trainer is not None else None,
        )
        return self.train_batches

    def keep_members(self, kept: Sequence[int]) -> None:
        """From the next epoch on, batch only for the members at positions ``kept`` of
        ``seeds`` (the stack dropped the others): their seeds, here and in the training batches
        the Trainer holds. Each member's order stays a function of its seed and the epoch."""
        self.seeds = [self.seeds[k] for k in kept]
        if self.train_batches is not None:
            self.train_batches.seeds = list(self.seeds)

    def evaluation_batches(self, split: str) -> TensorBatches:
        self.prepare()
        return TensorBatches(*self.splits[split], self.eval_batch_size)

    def val_dataloader(self) -> TensorBatches:
        return self.evaluation_batches("validation")

    def test_dataloader(self) -> TensorBatches:
        return self.evaluation_batches("test")

    @property
    def name(self) -> str:
        """A short name for file names: the source's kind, or the data folder's name."""
        return type(self).__name__.removesuffix("DataModule").lower()

    def describe(self) -> str:
        self.prepare()
        sizes = ", ".join(f"{name} {len(labels)}" for name, (_, labels) in self.splits.items())
        return f"{type(self).__name__} ({sizes} images, {self.norm_size}x{self.norm_size})"


def fixed_subset(
    images: torch.Tensor, labels: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images of a split, the same ones every time and for every seed: a fixed
    random choice (a split's first images may all be of one letter), kept in split order."""
    if count >= len(labels):
        return images, labels
    chosen = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:count]
    chosen = chosen.sort().values
    return images[chosen], labels[chosen]


class ListDataModule(LetterDataModule):
    """The reference's layout on disk: ``data=list data.root=DIR``."""

    def __init__(self, root: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = root

    @property
    def name(self) -> str:
        return Path(self.root).expanduser().resolve().name

    def load_grey_splits(self) -> Splits:
        return load_list_layout(self.root, self.norm_size, self.cache_dir)


class SyntheticDataModule(LetterDataModule):
    """Letters rendered from the fonts installed with matplotlib: the default, no download."""

    def __init__(
        self,
        train_per_class: int = 200,
        validation_per_class: int = 40,
        test_per_class: int = 40,
        image_size: int = 48,
        data_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.counts = {
            "train": train_per_class,
            "validation": validation_per_class,
            "test": test_per_class,
        }
        self.image_size = image_size
        self.data_seed = data_seed

    def render(self) -> Splits:
        """The rendered splits at ``image_size`` (before resizing), cached on disk."""
        from letters.data import synthetic  # start-up: matplotlib's fonts, only when rendering

        key = cache_key([self.counts, self.image_size, self.data_seed, synthetic.VERSION])

        def build() -> Splits:
            return {
                split: synthetic.render_letters(count, self.image_size, self.data_seed * 3 + index)
                for index, (split, count) in enumerate(self.counts.items())
            }

        return cached_splits(self.cache_dir, "synthetic", key, build)

    def load_grey_splits(self) -> Splits:
        return {
            split: (resize_grey(images, self.norm_size), labels)
            for split, (images, labels) in self.render().items()
        }


class EmnistDataModule(LetterDataModule):
    """EMNIST "letters" (handwritten, 28x28) through torchvision; the last tenth of its
    training set is held out as validation."""

    def __init__(self, root: str = "~/.cache/letters/emnist", download: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.root = os.path.expanduser(root)
        self.download = download

    def load_split(self, train: bool):
        from torchvision.datasets import EMNIST  # start-up: torchvision, only for EMNIST

        try:
            dataset = EMNIST(self.root, split="letters", train=train, download=self.download)
        except Exception as error:
            raw = Path(self.root) / "EMNIST" / "raw"
            raise LettersError(
                f"{raw}: EMNIST letters not found and could not be downloaded ({error}); "
                f"on a machine with internet run `python -m letters.train data=emnist` once, or "
                f"copy the extracted EMNIST gzip files (emnist-letters-*-ubyte) into {raw}"
            ) from None
        # EMNIST stores images transposed; labels are 1..26.
        return dataset.data.transpose(1, 2).contiguous(), dataset.targets.long() - 1

    def load_grey_splits(self) -> Splits:
        key = cache_key(["emnist", self.root, self.norm_size])

        def build() -> Splits:
            train_images, train_labels = self.load_split(train=True)
            test_images, test_labels = self.load_split(train=False)
            cut = len(train_labels) * 9 // 10
            return {
                "train": (resize_grey(train_images[:cut], self.norm_size), train_labels[:cut]),
                "validation": (resize_grey(train_images[cut:], self.norm_size), train_labels[cut:]),
                "test": (resize_grey(test_images, self.norm_size), test_labels),
            }

        return cached_splits(self.cache_dir, "emnist", key, build)
