"""What of a StackedOptimizer's state belongs to one member, and one member's slice of it.

Every state tensor has the leading member dimension K, and the param group holds the
per-member settings and the active mask as lists of K values, so that member k's slice of a
stack's state dict is the state dict of a stack of one: what the member's own checkpoint holds.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

# The optimizer settings that each member of a stack has its own value of: StackedOptimizer's
# lists of K values (its param group's keys). letters.engine.members builds on them.
OPTIMIZER_MEMBER_KEYS: tuple[str, ...] = ("lr", "momentum", "weight_decay")

# Every key of a saved param group that holds one value per member: the settings above and the
# active mask (StackedOptimizer.state_dict adds it).
PER_MEMBER_KEYS: tuple[str, ...] = (*OPTIMIZER_MEMBER_KEYS, "active")


def member_optimizer_state(state_dict: dict[str, Any], index: int) -> dict[str, Any]:
    """The state dict of a stack of one: member ``index``'s slice of ``state_dict`` (a
    StackedOptimizer's). Every state tensor with the leading K dimension is sliced
    ``[index:index+1]`` (and copied), and so are the per-member lists of the param group."""
    group0 = state_dict["param_groups"][0]
    members = len(group0["lr"])
    if not -members <= index < members:
        raise IndexError(f"member {index} of a stack of {members}")
    index %= members

    def cut(value: Any) -> Any:
        if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == members:
            return value[index : index + 1].clone()
        return value

    groups = []
    for group in state_dict["param_groups"]:
        groups.append(
            {
                key: [value[index]]
                if key in PER_MEMBER_KEYS and isinstance(value, list | tuple)
                else cut(value)
                for key, value in group.items()
            }
        )
    return {
        "state": {
            key: {name: cut(value) for name, value in state.items()}
            for key, state in state_dict["state"].items()
        },
        "param_groups": groups,
    }
