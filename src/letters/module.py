"""The LightningModule: the hand-written MLP and loss, their optimizer, and what gets logged."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.model_helpers import is_overridden

from letters.augment import PhotoAugment
from letters.autograd import cross_entropy
from letters.model import MLP
from letters.optimizers import build_optimizer, build_scheduler

log = logging.getLogger("letters.train")


def count_optimizer_steps(trainer: pl.Trainer, steps: int) -> None:
    """Advance Lightning's optimizer-step counter (trainer.global_step) for steps taken
    directly on the torch optimizer, as LightningOptimizer.step would have."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    for _ in range(steps):
        progress.increment_ready()
        progress.increment_completed()


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; carries where, for the run's record."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"training diverged: non-finite loss at epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


class LetterClassifier(pl.LightningModule):
    """Everything a checkpoint needs to rebuild the model and its preprocessing is a
    constructor argument of plain Python types, saved as the checkpoint's hyper-parameters."""

    def __init__(
        self,
        norm_size: int = 32,
        classes: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        hidden_sizes: list[int] | tuple[int, ...] = (32,),
        activation: str = "relu",
        init: str = "normal",
        reduction: str = "sum",
        optimizer: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        batch_size: int = 8,
        input_norm: str = "none",
        augment: dict[str, float] | None = None,
        scheduler: str = "none",
        test_time_polarity: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        # Lightning hands training_step a chunk of many mini-batches and the step loop runs
        # here: its per-call bookkeeping (~1 ms on a CPU) is then paid per chunk, not per
        # optimizer step, which at batch size 8 would otherwise cost more than the step itself.
        self.automatic_optimization = False
        self.batch_size = batch_size
        self._direct_steps: bool | None = None
        # logger=False: train.py logs the hyper-parameters once, at the end, with real metrics.
        self.save_hyperparameters(logger=False)
        self.model = MLP(
            norm_size * norm_size, len(classes), list(hidden_sizes), activation, init, input_norm
        )
        self.reduction = reduction
        self.norm_size = norm_size
        self.augment = PhotoAugment(**augment) if augment else None
        self.scheduler = scheduler
        self.test_time_polarity = test_time_polarity
        self.seed = seed
        self.optimizer_config = dict(optimizer or {"name": "sgd", "lr": 5e-4, "momentum": 0.9})
        self.reset_train_sums()
        self.reset_eval_sums()
        # Per-epoch values for the learning-curve picture; saved in checkpoints, so a resumed
        # run and letters.test draw the whole curve.
        self.history: dict[str, list[float]] = {
            "epoch": [],
            "train_loss": [],
            "val_epoch": [],
            "val_acc": [],
        }

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits for prediction. With ``test_time_polarity`` an image and its negative (light
        on dark <-> dark on light) are both classified and their probabilities averaged."""
        logits = self.model(inputs)
        if not self.test_time_polarity:
            return logits
        probabilities = logits.softmax(dim=1) + self.model(-inputs).softmax(dim=1)
        return probabilities.div_(2).log_()

    # Sums kept as device tensors: nothing in a step waits for the device (no .item()).
    # Training and evaluation keep separate sums: validation runs inside a training epoch.
    def reset_train_sums(self) -> None:
        self.train_loss_sum = torch.zeros((), device=self.device)
        self.train_seen = 0
        self.train_steps = 0
        self.first_bad_step = torch.full((), -1, device=self.device, dtype=torch.long)

    def reset_eval_sums(self) -> None:
        self.eval_loss_sum = torch.zeros((), device=self.device)
        self.eval_correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.eval_seen = 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> None:
        """One optimizer step per mini-batch of ``batch_size`` rows of the chunk."""
        inputs, labels = batch
        if self.augment is not None:
            inputs = self.augment(inputs, self.norm_size, self.augment_generator)
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        direct = self.direct_steps()
        losses = []
        for start in range(0, len(labels), self.batch_size):
            loss = cross_entropy(
                self.model(inputs[start : start + self.batch_size]),
                labels[start : start + self.batch_size],
                self.reduction,
            )
            if direct:
                optimizer.optimizer.zero_grad()
                loss.backward()
                optimizer.optimizer.step()
            else:
                optimizer.zero_grad()
                self.manual_backward(loss)
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(loss.detach())
        if direct:
            count_optimizer_steps(self.trainer, len(losses))
        self.record_steps(torch.stack(losses), len(labels))

    def direct_steps(self) -> bool:
        """Whether steps may bypass Lightning's per-step plumbing (~0.15 ms a step on a CPU).

        That plumbing serves mixed precision, several devices, and callbacks that watch each
        backward or optimizer step; when none of them is in play it only calls empty hooks.
        """
        if self._direct_steps is None:
            trainer = self.trainer
            hooks = (
                "on_before_backward",
                "on_after_backward",
                "on_before_optimizer_step",
                "on_before_zero_grad",
            )
            watched = any(
                is_overridden(hook, callback, pl.Callback)
                for callback in trainer.callbacks
                for hook in hooks
            ) or any(is_overridden(hook, self, pl.LightningModule) for hook in hooks)
            self._direct_steps = (
                str(trainer.precision) in ("32-true", "64-true")
                and isinstance(trainer.strategy, SingleDeviceStrategy)
                and not watched
            )
        return self._direct_steps

    def record_steps(self, losses: torch.Tensor, rows: int) -> None:
        """Per-chunk bookkeeping on the device (no sync): the loss sum and the first bad step."""
        per_sample = losses if self.reduction == "sum" else losses * self.batch_size
        if self.reduction == "mean" and rows % self.batch_size:
            per_sample[-1] = losses[-1] * (rows % self.batch_size)
        self.train_loss_sum = self.train_loss_sum + per_sample.sum()
        bad = ~torch.isfinite(losses)
        first_bad = torch.where(bad.any(), bad.int().argmax() + self.train_steps, -1)
        keep = self.first_bad_step >= 0
        self.first_bad_step = torch.where(keep, self.first_bad_step, first_bad)
        self.train_seen += rows
        self.train_steps += len(losses)

    def on_train_start(self) -> None:
        # Marks the end of start-up: scripts/benchmark.py times a run up to this line.
        log.info("training starts: %d optimizer steps per epoch", self.steps_per_epoch())

    def steps_per_epoch(self) -> int:
        datamodule = self.trainer.datamodule
        rows = len(datamodule.splits["train"][1]) if datamodule is not None else 0
        return -(-rows // self.batch_size)

    def on_train_epoch_start(self) -> None:
        # Augmentation randomness is a function of (seed, epoch), like the batch order.
        if self.augment is not None:
            self.augment_generator = torch.Generator(self.device)
            self.augment_generator.manual_seed(self.seed * 100_003 + self.current_epoch + 1)
        self.reset_train_sums()

    def check_finite(self) -> None:
        """Stop a diverged run before its weights can be validated or checkpointed (one sync)."""
        step = int(self.first_bad_step)
        if step >= 0:
            raise DivergedError(self.current_epoch + 1, step + 1)

    def on_train_epoch_end(self) -> None:
        self.check_finite()
        if self.train_seen:
            loss = self.train_loss_sum / self.train_seen
            self.log("train/loss", loss)
            self.history["epoch"].append(self.current_epoch + 1)
            self.history["train_loss"].append(float(loss))

    def evaluate(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        inputs, labels = batch
        logits = self(inputs)
        self.eval_loss_sum = self.eval_loss_sum + cross_entropy(logits, labels, "sum")
        self.eval_correct = self.eval_correct + (logits.argmax(dim=1) == labels).sum()
        self.eval_seen += len(labels)

    def log_evaluation(self, stage: str) -> None:
        if self.eval_seen:
            self.log(f"{stage}/loss", self.eval_loss_sum / self.eval_seen)
            self.log(f"{stage}/acc", self.eval_correct.float() / self.eval_seen)

    def on_validation_epoch_start(self) -> None:
        if self.trainer.state.fn == "fit":  # validation inside fit: never of diverged weights
            self.check_finite()
        self.reset_eval_sums()

    def validation_step(self, batch, batch_index: int) -> None:
        self.evaluate(batch)

    def on_validation_epoch_end(self) -> None:
        self.log_evaluation("val")
        if self.trainer.state.fn == "fit" and self.eval_seen:
            self.history["val_epoch"].append(self.current_epoch + 1)
            self.history["val_acc"].append(float(self.eval_correct) / self.eval_seen)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = checkpoint.get("history", self.history)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.parameters(), self.optimizer_config)
        if self.scheduler == "none":
            return optimizer
        total = max(1, self.trainer.max_epochs * self.steps_per_epoch())
        return {
            "optimizer": optimizer,
            "lr_scheduler": build_scheduler(self.scheduler, optimizer, total),
        }
