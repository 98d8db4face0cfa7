"""Per-epoch seeds: what makes a member's batches and augmentation a function of its own seed
and the epoch alone, whether it trains alone, in a stack, or resumed."""

from __future__ import annotations

# What a seed is used for in an epoch; each purpose draws from its own generator.
ORDER, AUGMENT = 0, 1


def epoch_seed(seed: int, epoch: int, purpose: int) -> int:
    """The seed of one epoch's batch order or augmentation: a function of (seed, epoch) alone,
    so a resumed run, or a member trained in a stack, sees exactly the batches it would see
    trained alone from the start."""
    return seed * 100_003 + purpose * 50_000 + epoch
