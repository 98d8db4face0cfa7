"""The reference's published tables (the homework report letters reproduces), for comparison.

Single runs each, on the reference's own data set (1,200 / 400 / 400 scene-text letter crops,
not distributed), 50 epochs, batch 8, one hidden layer, relu, N(0, 1) initialisation and the
summed-loss gradient. ``letters.report`` shows them beside a sweep of the same swept key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ReferenceTable:
    """One published table: the key it sweeps, the recipe around it, and its numbers."""

    name: str  # how the report names it
    experiment: str  # the experiment config that reproduces it (conf/experiment/)
    key: str  # the swept key
    optimizer: str  # the optimizer kind it uses
    recipe: str  # the fixed settings, in words
    # swept value -> (validation accuracy at epoch 50, test accuracy), as fractions
    results: tuple[tuple[float, float, float], ...]

    def lookup(self, value: str | float | None) -> tuple[float, float] | None:
        """The published (val, test) accuracies for a swept value, or None if not in it."""
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        for swept, val_acc, test_acc in self.results:
            if math.isclose(number, swept, rel_tol=1e-9, abs_tol=1e-12):
                return val_acc, test_acc
        return None


MOMENTUM_TABLE = ReferenceTable(
    name="the reference's Table 1",
    experiment="momentum_table",
    key="momentum",
    optimizer="sgd",
    recipe="SGD, lr 5e-4, hidden 32, weight decay 0",
    results=(
        (0.88, 0.650, 0.695),
        (0.90, 0.672, 0.710),
        (0.92, 0.675, 0.708),
        (0.95, 0.748, 0.780),
        (0.98, 0.620, 0.618),
    ),
)

WEIGHT_DECAY_TABLE = ReferenceTable(
    name="the reference's Table 2",
    experiment="weight_decay_table",
    key="weight_decay",
    optimizer="adam",
    recipe="Adam, lr 2e-3, hidden 64",
    results=(
        (0.08, 0.792, 0.825),
        (0.10, 0.805, 0.802),
        (0.12, 0.778, 0.798),
        (0.15, 0.808, 0.842),
        (0.18, 0.800, 0.828),
    ),
)

TABLES = (MOMENTUM_TABLE, WEIGHT_DECAY_TABLE)
