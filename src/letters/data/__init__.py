"""Letter data sources, each a Lightning DataModule chosen by the Hydra group ``data``."""

from letters.data.images import CLASSES
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
