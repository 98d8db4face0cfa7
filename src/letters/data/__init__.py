"""Letter data sources, each a Lightning DataModule chosen by the Hydra group ``data``."""

from letters.data.images import CLASSES
from letters.data.modules import (
    EmnistDataModule,
    LetterDataModule,
    ListDataModule,
    SyntheticDataModule,
    TensorBatches,
)

__all__ = [
    "CLASSES",
    "EmnistDataModule",
    "LetterDataModule",
    "ListDataModule",
    "SyntheticDataModule",
    "TensorBatches",
]
