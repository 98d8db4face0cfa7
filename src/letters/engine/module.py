"""The LightningModule: a stack of hand-written MLPs, their loss and optimizer, and what is
recorded per member (losses, accuracies, divergence, pruning); frozen members leave the stack's
tensors once enough of them are frozen."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch.func import functional_call

from letters.common.compat import count_optimizer_steps
from letters.common.records import percent
from letters.common.seeds import AUGMENT, epoch_seed
from letters.data.modules import Chunk
from letters.engine.members import DEFAULT_MEMBER, OPTIMIZER_MEMBER_KEYS
from letters.nn.augment import PhotoAugment, shifted_views
from letters.nn.autograd import cross_entropy
from letters.nn.model import MLP
from letters.optim import StackedOptimizer

log = logging.getLogger("letters.train")


def new_history() -> dict[str, list[float]]:
    """Per-epoch values of one member, for its learning-curve picture."""
    return {"epoch": [], "train_loss": [], "val_epoch": [], "val_acc": []}


class LetterClassifier(pl.LightningModule):
    """A stack of K members (``members``: one dict of per-member settings each, see
    letters.engine.members) trained at once; a single run is a stack of one.

    Everything a checkpoint needs to rebuild the model and its preprocessing is a constructor
    argument of plain Python types, saved as the checkpoint's hyper-parameters. Members never
    mix: each has its own loss, gradients, optimizer state, metrics and divergence.

    A member stops training when it diverges or is pruned (``prune``); it is frozen at once (the
    optimizer's mask) and, once at least ``drop_fraction`` of the rows are frozen, dropped from
    the stacked tensors at an epoch's end (``drop_frozen_rows``). Every per-member list here
    (``members``, ``histories``, ``validation_acc``, ``diverged_at``, ``pruned_at``,
    ``active``) keeps one entry per member as the stack was built; ``rows`` says which member
    each row of the stacked tensors (weights, optimizer state, batches, sums) holds.
    """

    # Frozen rows are dropped once at least this fraction of the rows (and at least one) are
    # frozen. A drop copies the weights and the optimizer state once (and, were the step
    # captured as a CUDA graph on a GPU, would capture it again), while each frozen row costs
    # its share of every step until it goes: an eighth bounds that waste to about 12% of a
    # step, and a stack to a handful of drops however its members stop (16 -> 14 -> 12 ...)
    # rather than one per member. Above 1: never drop (frozen rows keep costing their compute).
    drop_fraction: float = 1 / 8

    def __init__(
        self,
        norm_size: int = 32,
        classes: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        hidden_sizes: list[int] | tuple[int, ...] = (32,),
        activation: str = "relu",
        reduction: str = "sum",
        optimizer: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        input_norm: str = "none",
        augment: dict[str, float] | None = None,
        scheduler: str = "none",
        test_time_polarity: bool = False,
        test_time_shift: int = 0,
        members: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        # Lightning hands training_step a chunk of many mini-batches and the step loop runs
        # here: its per-call bookkeeping (~1 ms on a CPU) is then paid per chunk, not per
        # optimizer step, which at batch size 8 would otherwise cost more than the step itself.
        self.automatic_optimization = False
        # logger=False: train.py logs the hyper-parameters once, at the end, with real metrics.
        self.save_hyperparameters(logger=False)
        self.members = [{**DEFAULT_MEMBER, **member} for member in (members or [{}])]
        self.model = MLP(
            norm_size * norm_size,
            len(classes),
            list(hidden_sizes),
            activation,
            [member["init"] for member in self.members],
            input_norm,
            seeds=[member["seed"] for member in self.members],
        )
        self.reduction = reduction
        self.norm_size = norm_size
        self.augment = PhotoAugment(**augment) if augment else None
        self.scheduler = scheduler
        self.test_time_polarity = test_time_polarity
        self.test_time_shift = test_time_shift
        self.optimizer_config = dict(optimizer or {"name": "sgd"})
        self._direct_steps: bool | None = None
        # Where each member's scalars go (letters.runs.trackers.RunTrackers; train.py sets them).
        self.member_trackers: list[Any] = []
        # Which members still train is the optimizer's mask (StackedOptimizer.active, saved
        # with its state); ``active`` reads it. A new fit's optimizer takes over the last one's.
        self.stacked_optimizer: StackedOptimizer | None = None
        self._active_read: list[bool] | None = None
        # The member each row of the stacked tensors holds: all of them, until frozen ones are
        # dropped (drop_frozen_rows).
        self.rows: list[int] = list(range(len(self.members)))
        # Per member: where it diverged (its loss or weights became non-finite), and its
        # per-epoch values; saved in checkpoints, so a resumed run and letters.test draw the
        # whole curve.
        self.diverged_at: list[tuple[int, int] | None] = [None] * len(self.members)
        # Per member: the epoch (from 1) after whose validation it was pruned (``prune``);
        # saved in checkpoints beside the history.
        self.pruned_at: list[int | None] = [None] * len(self.members)
        self.start_afresh()
        self.reset_train_sums()
        self.reset_eval_sums()

    def start_afresh(self) -> None:
        """The run's records (curves, validation, epochs) begin here: at construction, and
        after pre-training, so that they are the real data's. Members that diverged stay
        stopped."""
        self.histories = [new_history() for _ in self.members]
        self.validation_acc: list[float | None] = [None] * len(self.members)
        self.closed_epoch = -1

    @property
    def stack_size(self) -> int:
        """The members the stack was built with (dropped ones included)."""
        return len(self.members)

    @property
    def active(self) -> list[bool]:
        """Which members still train, one entry per member (a copy): the optimizer's mask as
        the training's start, the last epoch's end or a pruning left it (``read_active``);
        False for a dropped member. A step may freeze a member on the device at any time; the
        epoch's end records it. Every member still in the stack where there is no optimizer (a
        module loaded to test or predict)."""
        if self._active_read is None:
            self.read_active()
        if self._active_read is None:
            held = set(self.rows)
            return [member in held for member in range(self.stack_size)]
        return list(self._active_read)

    def read_active(self) -> None:
        """Bring the optimizer's mask to the host for ``active``: a sync, done where the fit
        syncs anyway (its start, after Lightning restored a checkpoint; each epoch's end)."""
        optimizer = self.stacked_optimizer
        if optimizer is None:
            self._active_read = None
            return
        active = [False] * self.stack_size
        for member, on in zip(self.rows, optimizer.active.tolist(), strict=True):
            active[member] = on
        self._active_read = active

    def member_logits(self, inputs: torch.Tensor, each_alone: bool = False) -> torch.Tensor:
        """Each member's logits [K, batch, classes]. Test-time views (``test_time_polarity``:
        the image and its negative, light on dark <-> dark on light; ``test_time_shift``:
        every offset of up to that many pixels) are classified at once and each member's
        probabilities averaged over them.

        ``each_alone``: each member computes bit for bit what it computes in a stack of one
        (the model called on its own rows of every weight), where the shared batch's one
        product against all members' rows rounds otherwise; for an evaluation that must give
        what each member's own checkpoint gives."""
        views = inputs
        if self.test_time_shift:
            views = shifted_views(views, self.norm_size, self.test_time_shift)
        if self.test_time_polarity:
            views = torch.cat([views, -views])
        count = len(views) // len(inputs)
        if each_alone:
            weights = dict(self.model.named_parameters())
            logits = torch.cat(
                [
                    functional_call(
                        self.model, {name: w[k : k + 1] for name, w in weights.items()}, (views,)
                    )
                    for k in range(len(self.rows))
                ]
            )
        else:
            logits = self.model(views)
        if count == 1:
            return logits
        # log(mean of probabilities over the views), finite where one underflows to 0.
        per_view = logits.view(logits.shape[0], count, len(inputs), -1).log_softmax(dim=-1)
        return torch.logsumexp(per_view, dim=1) - math.log(count)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The stack's prediction [batch, classes]: a member's own logits for a stack of one,
        else the log of the members' mean probabilities."""
        logits = self.member_logits(inputs)
        if len(self.rows) == 1:
            return logits[0]
        # log(mean of probabilities), finite even where one member's probability underflows.
        return torch.logsumexp(logits.log_softmax(dim=-1), dim=0) - math.log(len(self.rows))

    # Sums kept as device tensors, one value per row: nothing in a step waits for the device
    # (no .item()). Training and evaluation keep separate sums: validation runs inside a
    # training epoch.
    def reset_train_sums(self) -> None:
        self.train_loss_sum = torch.zeros(len(self.rows), device=self.device)
        self.train_seen = 0
        self.train_steps = 0
        self.first_bad_step = torch.full((len(self.rows),), -1, device=self.device)

    def reset_eval_sums(self) -> None:
        self.eval_loss_sum = torch.zeros(len(self.rows), device=self.device)
        self.eval_correct = torch.zeros(len(self.rows), device=self.device, dtype=torch.long)
        self.eval_seen = 0

    def setup(self, stage: str) -> None:
        # Each member's batch order comes from its own seed; the data module batches.
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is not None:
            datamodule.seeds = [self.members[member]["seed"] for member in self.rows]

    def training_step(self, chunk: Chunk, batch_index: int) -> None:
        """One optimizer step of every member per mini-batch of the chunk."""
        inputs = None  # each mini-batch gathered when its step comes
        if self.augment is not None:
            inputs = torch.stack(
                [
                    self.augment(images, self.norm_size, generator)
                    for images, generator in zip(chunk.inputs, self.augment_generators, strict=True)
                ]
            )
        optimizer = self.optimizers()
        stacked = optimizer.optimizer
        direct = self.direct_steps()
        losses = []
        for batch_inputs, batch_labels in chunk.mini_batches(inputs):
            loss = cross_entropy(self.model(batch_inputs), batch_labels, self.reduction)  # [K]
            # A member whose loss is not finite stops here: its updates are masked from now on
            # (StackedOptimizer.active).
            if direct:
                stacked.zero_grad()
                loss.backward(self.loss_weights)  # = loss.sum().backward(), one node fewer
                stacked.step(losses=loss)
            else:
                optimizer.zero_grad()
                self.manual_backward(loss.sum())
                stacked.active.logical_and_(torch.isfinite(loss))
                optimizer.step()
            losses.append(loss.detach())
        if direct:
            count_optimizer_steps(self.trainer, len(losses))
        self.record_steps(torch.stack(losses), chunk)

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

    def record_steps(self, losses: torch.Tensor, chunk: Chunk) -> None:
        """Per-chunk bookkeeping on the device (no sync): each row's loss sum and first
        non-finite step. ``losses`` is [steps, rows]."""
        images = chunk.labels.shape[1]
        per_sample = losses if self.reduction == "sum" else losses * chunk.batch_size
        if self.reduction == "mean" and images % chunk.batch_size:
            per_sample[-1] = losses[-1] * (images % chunk.batch_size)
        self.train_loss_sum = self.train_loss_sum + per_sample.sum(dim=0)
        bad = ~torch.isfinite(losses)
        first_bad = torch.where(bad.any(dim=0), bad.int().argmax(dim=0) + self.train_steps, -1)
        self.first_bad_step = torch.where(self.first_bad_step >= 0, self.first_bad_step, first_bad)
        self.train_seen += images
        self.train_steps += len(losses)

    def on_fit_start(self) -> None:
        # The model is on its device by now; the data joins it once, for the whole fit.
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "move_to"):
            datamodule.move_to(self.device)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in an epoch of this fit: the data's, unless the Trainer takes only
        some chunks of it (trainer.limit_train_batches, as debug=fast does)."""
        data = self.trainer.datamodule
        chunks = self.trainer.num_training_batches
        if chunks == float("inf") or chunks * data.steps_per_call >= data.steps_per_epoch:
            return data.steps_per_epoch
        return int(chunks) * data.steps_per_call

    def on_train_start(self) -> None:
        self.loss_weights = torch.ones(len(self.rows), device=self.device)
        self.read_active()  # the members frozen before this fit (pre-training, a checkpoint)
        # Marks the end of start-up: scripts/benchmark.py times a run up to this line. It names
        # the device once (letters.runs.stack_run.quiet_lightning drops Lightning's lines on it).
        device = str(self.device)
        if self.device.type == "cuda":
            device += f" ({torch.cuda.get_device_name(self.device)})"
        log.info(
            "training starts on %s: %d epochs of %d optimizer steps, a stack of %d",
            device,
            self.trainer.max_epochs,
            self.steps_per_epoch,
            len(self.rows),
        )

    def on_train_epoch_start(self) -> None:
        # Augmentation randomness is a function of (seed, epoch), like the batch order.
        if self.augment is not None:
            self.augment_generators = [
                torch.Generator(self.device).manual_seed(
                    epoch_seed(self.members[member]["seed"], self.current_epoch, AUGMENT)
                )
                for member in self.rows
            ]
        self.reset_train_sums()

    def close_training_epoch(self) -> None:
        """Once per epoch, before anything validates, checkpoints or logs it (one sync):
        members whose loss or weights became non-finite stop; the others record the epoch.

        Lightning validates inside fit before the epoch's on_train_epoch_end hooks, and
        callbacks' hooks run before the module's, so each of them calls this; it acts once.
        """
        if self.closed_epoch == self.current_epoch or not self.train_seen:
            return
        self.closed_epoch = self.current_epoch
        bad_steps = self.first_bad_step.tolist()
        finite = torch.stack(
            [parameter.detach().isfinite().flatten(1).all(dim=1) for parameter in self.parameters()]
        ).all(dim=0)
        finite_weights = finite.tolist()
        losses = (self.train_loss_sum / self.train_seen).tolist()
        optimizer = self.stacked_optimizer
        epoch, step = self.current_epoch + 1, self.trainer.global_step
        active = self.active  # as this epoch began
        for row, member in enumerate(self.rows):
            if not active[member]:
                continue
            if bad_steps[row] >= 0 or not finite_weights[row]:
                where = bad_steps[row] + 1 if bad_steps[row] >= 0 else self.train_steps
                self.diverged_at[member] = (epoch, where)
                optimizer.active[row] = False  # a non-finite loss has frozen it already
                log.error(
                    "training diverged: non-finite %s at epoch %d, step %d",
                    "loss" if bad_steps[row] >= 0 else "weights",
                    epoch,
                    where,
                    extra={"member": member},
                )
                continue
            self.histories[member]["epoch"].append(epoch)
            self.histories[member]["train_loss"].append(losses[row])
            self.log_member(member, {"loss/train": losses[row]}, step)
        self.read_active()
        if not any(self.active):
            self.trainer.should_stop = True

    def prune(self, member: int) -> None:
        """Stop training member ``member`` after this epoch's validation (a search's pruner
        judged it): frozen as a diverged member is (the optimizer's mask, no sync), recorded
        in ``pruned_at`` and its train.log. Training stops when no member is left. A member
        that already stopped (diverged, pruned) stays as it is."""
        if self.stacked_optimizer is None:
            raise RuntimeError("prune: a member can only be pruned while the stack trains")
        if not self.active[member]:
            return
        epoch = self.current_epoch + 1
        self.pruned_at[member] = epoch
        self.stacked_optimizer.active[self.rows.index(member)] = False
        self._active_read[member] = False
        log.info(
            "pruned after epoch %d: val_acc %s",
            epoch,
            percent(self.validation_acc[member]),
            extra={"member": member},
        )
        if not any(self._active_read):
            self.trainer.should_stop = True

    def drop_frozen_rows(self) -> None:
        """At an epoch's end, once at least ``drop_fraction`` of the rows (and at least one)
        hold frozen members and some member still trains: cut the frozen rows out of the
        weights, the optimizer's state, the data's batches and the sums, so that every step
        from the next epoch on costs what a stack of the others costs. The members kept
        continue bit for bit as they would have; the dropped ones' records and checkpoints
        stay as their last epoch left them. Not on a fit's last epoch: nothing is left to gain.
        """
        active = self.active
        kept = [row for row, member in enumerate(self.rows) if active[member]]
        frozen = len(self.rows) - len(kept)
        trainer = self.trainer
        last_epoch = 0 < (trainer.max_epochs or 0) <= self.current_epoch + 1
        if (
            not kept
            or frozen < max(1.0, self.drop_fraction * len(self.rows))
            or trainer.should_stop
            or last_epoch
        ):
            return
        self.model.keep_members(kept)
        self.stacked_optimizer.keep_members(kept, list(self.model.parameters()))
        if trainer.datamodule is not None:
            trainer.datamodule.keep_members(kept)
        self.rows = [self.rows[row] for row in kept]
        self.loss_weights = torch.ones(len(self.rows), device=self.device)
        self.reset_train_sums()
        self.reset_eval_sums()
        stopped = self.stack_size - len(self.rows)
        log.info(
            "stack: %d of %d runs stopped; training the other %d as a stack of %d",
            stopped,
            self.stack_size,
            len(self.rows),
            len(self.rows),
        )

    def log_member(self, member: int, metrics: dict[str, float], step: int) -> None:
        if self.member_trackers:
            self.member_trackers[member].log_metrics(metrics, step)

    def on_train_epoch_end(self) -> None:
        # After the callbacks' (MemberCheckpoints has saved every member's last.ckpt).
        self.close_training_epoch()
        self.drop_frozen_rows()

    def on_validation_epoch_start(self) -> None:
        if self.trainer.state.fn == "fit":  # validation inside fit: never of diverged weights
            self.close_training_epoch()
        self.reset_eval_sums()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> None:
        inputs, labels = batch
        logits = self.member_logits(inputs)  # [K, batch, classes]
        self.eval_loss_sum = self.eval_loss_sum + cross_entropy(logits, labels, "sum")
        self.eval_correct = self.eval_correct + (logits.argmax(dim=-1) == labels).sum(dim=-1)
        self.eval_seen += len(labels)

    def on_validation_epoch_end(self) -> None:
        if not self.eval_seen:
            return
        accuracies = (self.eval_correct.float() / self.eval_seen).tolist()
        losses = (self.eval_loss_sum / self.eval_seen).tolist()
        in_fit = self.trainer.state.fn == "fit"
        active = self.active
        self.validation_acc[:] = [None] * self.stack_size  # the dropped and the frozen: none
        for row, member in enumerate(self.rows):
            if not active[member]:
                continue
            self.validation_acc[member] = accuracies[row]
            if in_fit:
                self.histories[member]["val_epoch"].append(self.current_epoch + 1)
                self.histories[member]["val_acc"].append(accuracies[row])
            metrics = {"loss/val": losses[row], "accuracy/val": accuracies[row]}
            if in_fit:  # the best so far, what the best checkpoint holds
                metrics["accuracy/best_val"] = max(self.histories[member]["val_acc"])
            self.log_member(member, metrics, self.trainer.global_step)
        if in_fit and not self.trainer.sanity_checking:
            self.log_validation()

    def log_validation(self) -> None:
        """One line per validation in each member's train.log: the epoch, its validation
        accuracy and its epoch's training loss, from numbers already on the host. A stack's
        console gets one line for all its members instead (``console: False`` keeps a
        member's own line out of it under hydra/launcher=stacked)."""
        epoch = f"epoch {self.current_epoch + 1}/{self.trainer.max_epochs}"
        validated = []
        for member, accuracy in enumerate(self.validation_acc):
            if accuracy is None:  # diverged: it said so when it stopped
                continue
            loss = self.histories[member]["train_loss"][-1:]
            validated.append((accuracy, loss[0] if loss else None))
            extra = {"member": member} | ({"console": False} if self.stack_size > 1 else {})
            log.info(
                "%s: val_acc %s, train_loss %s",
                epoch,
                percent(accuracy),
                "-" if not loss else f"{loss[0]:.4f}",
                extra=extra,
            )
        if self.stack_size > 1 and validated:
            accuracies = [accuracy for accuracy, _ in validated]
            losses = [loss for _, loss in validated if loss is not None]
            log.info(
                "%s, mean of %d runs: val_acc %s (%s to %s), train_loss %s",
                epoch,
                len(validated),
                percent(sum(accuracies) / len(accuracies)),
                percent(min(accuracies)),
                percent(max(accuracies)),
                f"{sum(losses) / len(losses):.4f}" if losses else "-",
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # One entry per member (letters.engine.members.MEMBER_RECORDS), and which member each
        # row of the weights holds (member_checkpoint cuts a member's row by it).
        checkpoint["history"] = self.histories
        checkpoint["pruned_at"] = self.pruned_at
        checkpoint["rows"] = self.rows

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.histories = checkpoint.get("history", self.histories)
        self.pruned_at = list(checkpoint.get("pruned_at", self.pruned_at))

    def configure_optimizers(self) -> StackedOptimizer:
        settings = {
            key: value
            for key, value in self.optimizer_config.items()
            if key != "name" and key not in OPTIMIZER_MEMBER_KEYS
        }
        total_steps = max(1, self.trainer.max_epochs * self.trainer.datamodule.steps_per_epoch)
        optimizer = StackedOptimizer(
            self.model.parameters(),
            self.optimizer_config["name"],
            lr=[self.members[member]["lr"] for member in self.rows],
            momentum=[self.members[member]["momentum"] for member in self.rows],
            weight_decay=[self.members[member]["weight_decay"] for member in self.rows],
            schedule=self.scheduler,
            total_steps=total_steps,
            **settings,
        )
        if self.stacked_optimizer is not None:  # a fit after pre-training: frozen stay frozen
            optimizer.active.copy_(self.stacked_optimizer.active)
        # Lightning may restore the mask from a checkpoint after this: read it from then on.
        self.stacked_optimizer, self._active_read = optimizer, None
        return optimizer
