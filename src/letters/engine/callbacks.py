"""Lightning callbacks that letters.train adds to every Trainer."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks.progress import ProgressBar

from letters.common.compat import dump_checkpoint
from letters.common.files import write_atomically
from letters.engine.members import member_checkpoint, stacked_checkpoint

log = logging.getLogger("letters.train")


def submitit_requeue_signal() -> signal.Signals | None:
    """The signal submitit sends a job it is about to preempt or time out (SIGUSR2 unless
    SUBMITIT_PREEMPT_SIGNAL names another), when this process is a submitit job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal.Signals, f"SIG{name}", None)


class ValidateLastEpoch(pl.Callback):
    """Validate every ``check_val_every_n_epoch`` epochs *and* after the last one, inside fit,
    so the final weights are always validated and can become the best checkpoint (Lightning
    alone skips the last epoch when it is not a multiple of the interval)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_epochs is not None and trainer.current_epoch + 1 == trainer.max_epochs:
            trainer.check_val_every_n_epoch = 1


class MemberCheckpoints(pl.Callback):
    """Each member's ``best.ckpt`` (highest validation accuracy) and ``last.ckpt`` (every
    epoch) in its own run directory, as ordinary one-member checkpoints.

    Lightning's ModelCheckpoint saves the whole module; a stack's members are separate runs,
    each with its own best epoch, so this cuts the Trainer's checkpoint into one per member
    (letters.engine.members.member_checkpoint). A member that diverged is never saved again:
    its files keep the last finite weights. A member pruned after a validation gets its
    last.ckpt of that epoch, which says so (``pruned_at``), and its best.ckpt says so too; then
    neither is written again. Writes are atomic: a kill mid-save leaves the old file.
    """

    # Where a checkpoint holds this callback's state (Lightning's default key, said once here
    # because stacking members' checkpoints back into one needs it without an instance).
    STATE_KEY = "MemberCheckpoints"

    def __init__(self, run_dirs: Sequence[str | Path]) -> None:
        self.directories = [Path(run_dir) / "checkpoints" for run_dir in run_dirs]
        self.best_scores: list[float | None] = [None] * len(self.directories)

    @property
    def state_key(self) -> str:
        return self.STATE_KEY

    @classmethod
    def stacked(cls, checkpoints: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The one-member checkpoints this callback wrote (the members' last.ckpt of one
        point) stacked back into their stack's, which Trainer.fit continues them from as one
        stack (letters.engine.members.stacked_checkpoint: CheckpointsDiffer if they cannot)."""
        return stacked_checkpoint(checkpoints, cls.STATE_KEY)

    def best_path(self, member: int) -> Path | None:
        path = self.directories[member] / "best.ckpt"
        return path if self.best_scores[member] is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {"best_scores": list(self.best_scores)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_scores = list(state_dict["best_scores"])

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        improved = []
        active = pl_module.active
        for member, accuracy in enumerate(pl_module.validation_acc):
            best = self.best_scores[member]
            if active[member] and accuracy is not None and (best is None or accuracy > best):
                self.best_scores[member] = accuracy
                improved.append(member)
        self.save(trainer, improved, "best")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        pl_module.close_training_epoch()
        epoch = trainer.current_epoch + 1
        pruned = [member for member, at in enumerate(pl_module.pruned_at) if at == epoch]
        active = [member for member, on in enumerate(pl_module.active) if on]
        self.save(trainer, sorted(active + pruned), "last")
        for member in pruned:
            self.mark_pruned(member, epoch)

    def mark_pruned(self, member: int, epoch: int) -> None:
        """Write into the member's best.ckpt (saved before it was pruned) that it was pruned
        after ``epoch``, as its last.ckpt says."""
        path = self.best_path(member)
        if path is None or not path.is_file():
            return
        best = torch.load(path, map_location="cpu", weights_only=True)
        best["pruned_at"] = [epoch]
        write_atomically(path, lambda handle: torch.save(best, handle))

    def save(self, trainer: pl.Trainer, members: list[int], name: str) -> None:
        if not members:
            return
        # What Trainer.save_checkpoint writes, before it is written: cut per member first.
        checkpoint = dump_checkpoint(trainer)
        for member in members:
            one = member_checkpoint(checkpoint, member, self.state_key)
            write_atomically(
                self.directories[member] / f"{name}.ckpt",
                lambda handle, one=one: torch.save(one, handle),
            )


class MemberPruning(pl.Callback):
    """Stop the members that ``should_prune(member, epoch, accuracy)`` says to, after each
    validation inside fit (not the sanity check): it is asked for every member still training,
    with the epoch counted from 1 and that validation's accuracy as a fraction, and a True
    prunes the member (LetterClassifier.prune: frozen at once, dropped from the stack's tensors
    later, ``pruned_at`` in its records and checkpoints). Training stops when none is left.

    Place it after MemberCheckpoints among the Trainer's callbacks, so that a validation's
    best.ckpt is saved before its member may be pruned.
    """

    def __init__(self, should_prune: Callable[[int, int, float], bool]) -> None:
        self.should_prune = should_prune

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        active = pl_module.active
        for member, accuracy in enumerate(pl_module.validation_acc):
            asked = active[member] and accuracy is not None
            if asked and self.should_prune(member, epoch, accuracy):
                pl_module.prune(member)


class GracefulStop(pl.Callback):
    """SIGTERM (a scheduler's preemption or time limit, ``kill``) and SIGINT (Ctrl-C) end
    training at the end of the current epoch, after every member's last.ckpt is written,
    instead of killing it mid-write or mid-epoch. ``signal`` then names the signal received.

    Under submitit (``hydra/launcher=submitit_*``) its preemption signal (SIGUSR2) is caught
    the same way; ``requeue`` then says that submitit's own handler must take over once the
    runs are recorded (it checkpoints the job and requeues it: letters.runs.resume.requeued_job).

    The epoch in progress finishes (well under a second at the reference's sizes): a resumed
    run repeats nothing and sees exactly the batches an uninterrupted run would. A second
    Ctrl-C stops at once. Lightning's own SIGTERM handling (stop after the current batch, exit
    status 0) is replaced while training runs.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self.requeue_signal = submitit_requeue_signal()
        self._previous: dict[int, Any] = {}

    @property
    def requeue(self) -> bool:
        """Stopped by submitit's preemption signal: its handler requeues the job."""
        return self.signal is not None and self.signal == self.requeue_signal

    def install(self) -> None:
        """Catch the signals from now on (the engine calls this before fit starts)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        signals = (*self.SIGNALS, self.requeue_signal) if self.requeue_signal else self.SIGNALS
        for signum in signals:
            self._previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self._received)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def hand_over(self) -> None:
        """After the runs are recorded: let submitit's handler requeue the job (it exits)."""
        handler = signal.getsignal(self.signal)
        if self.requeue and callable(handler):
            handler(int(self.signal), None)

    def _received(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal = signal.Signals(signum)
        then = "; submitit requeues the job after that" if self.requeue else ""
        log.warning(
            "%s received: stopping at the end of this epoch, once last.ckpt is saved%s",
            self.signal.name,
            then,
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.install()  # again: Lightning set its own SIGTERM handler when fit began

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.signal is not None:
            trainer.should_stop = True


class StepProgressBar(ProgressBar):
    """The terminal's view of training: one bar over the whole fit, counted in optimizer steps
    (not in Lightning's chunks of them), the epoch (from 1) and how many of a stack's runs still
    train in its description, with the last epoch's training loss and the last validation
    accuracy (the members' mean in a stack). Log lines print above the bar instead of breaking
    into it.

    Its time left is the whole fit's, at the average rate since the bar started (tqdm's
    smoothing off): validation pauses are part of that rate, so the estimate holds steady
    instead of swinging with each epoch's pace. A pre-training bar is given ``then_steps``, the
    optimizer steps of the fit on the real data that follows, and also says how long the whole
    run has left (at the pre-training's rate). Nothing here syncs with the device: the numbers
    are those each epoch's end has already brought to the host.
    """

    def __init__(self, phase: str = "Epoch", then_steps: int = 0) -> None:
        super().__init__()
        self.phase = phase  # what the bar calls an epoch: "Pre-training epoch" before the data
        self.then_steps = then_steps
        self.enabled = True
        self.bar: Any = None
        self._redirect: Any = None
        self._numbers: dict[str, str] = {}

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        if not self.enabled:
            return
        self._redirect = logging_redirect_tqdm()
        self._redirect.__enter__()
        steps = pl_module.steps_per_epoch
        self.bar = tqdm(
            total=steps * trainer.max_epochs,
            initial=steps * trainer.current_epoch,  # a resumed fit: the epochs done before
            unit="step",
            smoothing=0,  # the rate since the start, pauses included: a steady time left
            dynamic_ncols=True,
            file=sys.stderr,
            bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
            "[{elapsed}<{remaining}, {rate_fmt}{postfix}]",
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is None:
            return
        runs, training = pl_module.stack_size, sum(pl_module.active)
        stack = ""
        if runs > 1 and training == runs:
            stack = f" ({runs} runs)"
        elif runs > 1:  # some stopped (diverged, pruned)
            stack = f" ({training} of {runs} runs training)"
        self.bar.set_description(
            f"{self.phase} {trainer.current_epoch + 1}/{trainer.max_epochs}{stack}", refresh=False
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *_
    ) -> None:
        if self.bar is None:
            return
        rows = batch.labels.shape[1]
        if self.then_steps:
            self.show_postfix(refresh=False)  # the whole run's time left moves with the bar
        self.bar.update(-(-rows // batch.batch_size))  # the chunk's optimizer steps

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.show_numbers(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.show_numbers(pl_module)

    def show_numbers(self, pl_module: Any) -> None:
        if self.bar is None:
            return
        numbers = {}
        losses = [h["train_loss"][-1] for h in pl_module.histories if h["train_loss"]]
        if losses:
            numbers["loss"] = f"{sum(losses) / len(losses):.4g}"
        accuracies = [acc for acc in pl_module.validation_acc if acc is not None]
        if accuracies:
            numbers["val_acc"] = f"{100 * sum(accuracies) / len(accuracies):.1f}%"
        self._numbers = numbers
        self.show_postfix(refresh=True)

    def show_postfix(self, refresh: bool) -> None:
        """The numbers, and before the real data's fit, the whole run's time left."""
        parts = [f"{key}={value}" for key, value in self._numbers.items()]
        left = self.whole_run_left()
        if left is not None:
            parts.append(f"whole run ~{left} left")
        self.bar.set_postfix_str(", ".join(parts), refresh=refresh)

    def whole_run_left(self) -> str | None:
        """Pre-training's steps left and the real data's, at the rate of the steps so far."""
        bar = self.bar
        if not self.then_steps or bar.n <= bar.initial:
            return None
        elapsed = bar.format_dict["elapsed"]
        if elapsed <= 0:
            return None
        rate = (bar.n - bar.initial) / elapsed
        return bar.format_interval((bar.total - bar.n + self.then_steps) / rate)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
