"""The optimizers a config may name, and how a config's settings become one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

# Config name -> torch.optim class name. Momentum is a setting only of sgd and rmsprop.
OPTIMIZERS: dict[str, str] = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "adadelta": "Adadelta",
}


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter], settings: dict[str, Any]
) -> torch.optim.Optimizer:
    """``settings`` is an optimizer config: its ``name`` plus the class's keyword arguments."""
    settings = dict(settings)
    optimizer_class = getattr(torch.optim, OPTIMIZERS[settings.pop("name")])
    return optimizer_class(parameters, **settings)
