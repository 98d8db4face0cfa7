"""The Lightning training path takes exactly the optimizer steps a plain loop takes, however
many mini-batches Lightning hands it at once."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from letters.autograd import cross_entropy
from letters.data import LetterDataModule, TensorBatches
from letters.module import LetterClassifier

ROWS, BATCH, SEED = 90, 8, 3
OPTIMIZER = {"name": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.01}


class FixedData(LetterDataModule):
    """Random 8x8 'images' held in memory, so the test needs no files."""

    def load_grey_splits(self):
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (ROWS, 8, 8), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 26, (ROWS,), generator=generator)
        return {split: (images, labels) for split in ("train", "validation", "test")}


def make_model(reduction: str) -> LetterClassifier:
    torch.manual_seed(0)
    return LetterClassifier(
        norm_size=8,
        hidden_sizes=[16],
        init="kaiming",
        reduction=reduction,
        optimizer=OPTIMIZER,
        batch_size=BATCH,
    )


def plain_loop(reduction: str, epochs: int) -> LetterClassifier:
    model = make_model(reduction)
    data = FixedData(norm_size=8, batch_size=BATCH, seed=SEED).prepare()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=0.01)
    for epoch in range(epochs):
        batches = TensorBatches(*data.splits["train"], BATCH, True, SEED, lambda e=epoch: e)
        for inputs, labels in batches:
            optimizer.zero_grad()
            cross_entropy(model(inputs), labels, reduction).backward()
            optimizer.step()
    return model


@pytest.mark.parametrize("steps_per_call", [1, 5, 64])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_lightning_steps_equal_a_plain_loop(steps_per_call: int, reduction: str) -> None:
    epochs = 2
    model = make_model(reduction)
    data = FixedData(norm_size=8, batch_size=BATCH, seed=SEED, steps_per_call=steps_per_call)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=data)
    expected = plain_loop(reduction, epochs)
    for name, parameter in expected.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], parameter, rtol=0, atol=0)
    assert trainer.global_step == epochs * -(-ROWS // BATCH)
    per_image = list(model.history["train_loss"])
    assert len(per_image) == epochs and all(value > 0 for value in per_image)
