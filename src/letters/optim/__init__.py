"""The stacked optimizer: K members' updates in one step, each with its own settings.

The public names live in the modules below and are re-exported here, so that
``from letters.optim import StackedOptimizer`` is what callers write:

- ``stacked``: StackedOptimizer, and the one place that picks a step's path;
- ``algorithms``: the optimizers a config may name (OPTIMIZERS) and their updates;
- ``schedules``: the lr schedules (SCHEDULERS, schedule_factors);
- ``state``: which settings are per member, and one member's slice of a state dict;
- ``update_step``: the masked coefficients and gradients of the general path;
- ``fast_paths``: fused SGD, Adam and AdamW (torch's kernels), fast SGD.
"""

from letters.optim.algorithms import OPTIMIZERS, OptimizerKind
from letters.optim.schedules import SCHEDULERS, schedule_factors
from letters.optim.stacked import StackedOptimizer
from letters.optim.state import OPTIMIZER_MEMBER_KEYS, PER_MEMBER_KEYS, member_optimizer_state

__all__ = [
    "OPTIMIZERS",
    "OPTIMIZER_MEMBER_KEYS",
    "PER_MEMBER_KEYS",
    "SCHEDULERS",
    "OptimizerKind",
    "StackedOptimizer",
    "member_optimizer_state",
    "schedule_factors",
]
