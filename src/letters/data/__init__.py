"""Letter data sources, each a Lightning DataModule chosen by the Hydra group ``data``.

The modules are imported on first use (PEP 562): a cheap check of the data
(letters.data.list_layout.check_layout) must not wait for Lightning to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from letters.data.images import CLASSES

if TYPE_CHECKING:
    from letters.data.modules import (
        Chunk,
        EmnistDataModule,
        LetterDataModule,
        ListDataModule,
        MemberBatches,
        SyntheticDataModule,
        TensorBatches,
    )

__all__ = [
    "CLASSES",
    "Chunk",
    "EmnistDataModule",
    "LetterDataModule",
    "ListDataModule",
    "MemberBatches",
    "SyntheticDataModule",
    "TensorBatches",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("letters.data.modules"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
