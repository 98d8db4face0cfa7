"""The data lives where the model trains, and a training epoch never waits for the host.

The CUDA tests run only where a GPU is present (skipped on CPU-only machines and in CI)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from test_training import MEMBERS, FixedData, make_model

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def fit_on(accelerator: str, callbacks: list[pl.Callback] | None = None):
    model = make_model(MEMBERS, "mean", augment={"rotation": 10.0})
    data = FixedData(norm_size=8, batch_size=8, steps_per_call=4)
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator=accelerator,
        callbacks=callbacks or [],
    )
    trainer.fit(model, datamodule=data)
    return model, data


def test_the_splits_move_to_the_models_device_once() -> None:
    model, data = fit_on("cpu")
    for inputs, labels in data.splits.values():
        assert inputs.device == model.device and labels.device == model.device


class NoHostSyncInEpochs(pl.Callback):
    """Fails any CUDA call that waits for the device between an epoch's start and end."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        torch.cuda.set_sync_debug_mode("default")


@CUDA
def test_a_training_epoch_on_the_gpu_never_waits_for_the_host() -> None:
    """Batches, shuffles, augmentation, steps and divergence bookkeeping stay on the device:
    the one sync of an epoch comes after it (the callback above runs before the others)."""
    model, data = fit_on("gpu", [NoHostSyncInEpochs()])
    assert data.splits["train"][0].is_cuda
    assert len(model.histories[0]["train_loss"]) == 2


@CUDA
def test_a_stack_trains_on_the_gpu_as_on_the_cpu() -> None:
    """Same members, same data, same seeds: the GPU's weights match the CPU's to float32
    rounding (different kernels sum in different orders)."""
    on_gpu, _ = fit_on("gpu")
    on_cpu, _ = fit_on("cpu")
    for name, tensor in on_cpu.state_dict().items():
        torch.testing.assert_close(on_gpu.state_dict()[name].cpu(), tensor, rtol=1e-3, atol=1e-4)
