"""Lightning callbacks that letters.train adds to every Trainer."""

from __future__ import annotations

import pytorch_lightning as pl


class ValidateLastEpoch(pl.Callback):
    """Validate every ``check_val_every_n_epoch`` epochs *and* after the last one, inside fit,
    so the final weights are always validated and can become the best checkpoint (Lightning
    alone skips the last epoch when it is not a multiple of the interval)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_epochs is not None and trainer.current_epoch + 1 == trainer.max_epochs:
            trainer.check_val_every_n_epoch = 1
