"""Evaluation shared by ``letters.train`` and ``letters.test``: predictions of a model on a
split, on the model's device, in large batches; or of each member of a stack, in one pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from letters.nn.autograd import cross_entropy

if TYPE_CHECKING:
    from letters.engine.module import LetterClassifier


@dataclass
class Predictions:
    """Everything the accuracy, the tables and the pictures of a split are made from."""

    logits: torch.Tensor  # [N, classes]
    labels: torch.Tensor  # [N]

    @property
    def predicted(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).float().mean())

    @property
    def loss(self) -> float:
        return float(cross_entropy(self.logits, self.labels, "mean"))


@torch.no_grad()
def predict_split(
    model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 4096
) -> Predictions:
    device = next(model.parameters()).device
    logits = torch.cat(
        [
            model(inputs[start : start + batch_size].to(device))
            for start in range(0, len(inputs), batch_size)
        ]
    )
    return Predictions(logits.cpu(), labels.cpu())


@torch.no_grad()
def predict_members(
    model: LetterClassifier, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 4096
) -> list[Predictions]:
    """Each member's own predictions of a stacked classifier, in one pass over the images that
    all members see, in the batches ``predict_split`` takes: for member k bit for bit what
    ``predict_split`` gives for member k alone (``member_logits(each_alone=True)``)."""
    device = next(model.parameters()).device
    logits = torch.cat(
        [
            model.member_logits(inputs[start : start + batch_size].to(device), each_alone=True)
            for start in range(0, len(inputs), batch_size)
        ],
        dim=1,
    ).cpu()
    labels = labels.cpu()
    return [Predictions(member, labels) for member in logits]
