"""A sweep's pictures drawn while its next stack trains, on the cores training leaves idle.

The stacked launcher trains a sweep's stacks one after another in one process. Where training
leaves cores idle (beside a GPU, or with ``torch_threads`` below the cores), a stack's pictures
go to worker processes here instead of holding up the next stack: it trains meanwhile. A run's
metrics.json is written when its test ends; a picture that then cannot be written is added to
it (``pictures_error``) and said in one line, on the console and in the run's own log files,
when the sweep next looks (before it tests its next stack, and at its end). The sweep waits
for the last pictures, on every core, before its summary (SweepSummary), or at exit where no
summary runs.

Light on purpose (no torch, no matplotlib here): the summary imports it in every sweep.
"""

from __future__ import annotations

import atexit
import logging
import time
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from letters.common.errors import LettersError, first_line, user_error_line
from letters.common.records import RecordError, read_record, write_record

log = logging.getLogger("letters.train")


@dataclass
class PendingRun:
    """One run's pictures, handed to a worker: whose they are and where its lines go."""

    run_dir: Path
    label: str  # what its lines start with ('momentum=0.9,seed=1: ', as TensorBoard names it)
    # The run's log files (its train.log), with their formats, as they were when it was
    # tested: by the time its pictures end, the sweep's logging serves another stack.
    log_files: list[tuple[str, logging.Formatter | None]]
    task: tuple[str | None, dict[str, Any]]  # draw_run_pictures' argument
    future: Future[None] | None = field(default=None, repr=False)


def member_log_files(member: int) -> list[tuple[str, logging.Formatter | None]]:
    """The log files that take a record about stack member ``member`` now: those the
    stacked launcher routes its records to (their filters decide), with their formats."""
    probe = logging.makeLogRecord({"member": member})
    return [
        (handler.baseFilename, handler.formatter)
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.FileHandler) and handler.filter(probe)
    ]


class BackgroundPictures:
    """Worker processes drawing runs' pictures beside training, ``beside_training`` of them;
    ``finish`` waits for the last ones with ``cores`` at work."""

    def __init__(self, beside_training: int, cores: int) -> None:
        from letters.reporting.pictures import picture_pool  # drawing is under way

        self.beside_training = beside_training
        self.cores = cores
        self.pool = picture_pool(beside_training)
        self.pending: list[PendingRun] = []

    def submit(self, run: PendingRun) -> None:
        self.queue_on(self.pool, run)
        self.pending.append(run)

    def settle_done(self) -> None:
        """Say and record what the runs whose pictures have ended left undone; forget them."""
        for run in [run for run in self.pending if run.future is not None and run.future.done()]:
            self.pending.remove(run)
            settle(run)

    def finish(self) -> None:
        """Wait for every run's pictures, with the cores training no longer needs: those
        not yet begun go to more workers. Then settle them all."""
        if not self.pending:
            self.pool.shutdown()
            return
        started = time.perf_counter()
        waiting = len(self.pending)
        log.info("waiting for the pictures of %d %s", waiting, "run" if waiting == 1 else "runs")
        self.spread_over_free_cores()
        undrawn = 0
        for run in list(self.pending):
            assert run.future is not None
            wait([run.future])
            self.pending.remove(run)
            undrawn += not settle(run)
        self.pool.shutdown()
        outcome = "all drawn" if not undrawn else f"{waiting - undrawn} drawn, {undrawn} not"
        log.info("pictures: %s, after %.1f s of waiting", outcome, time.perf_counter() - started)

    def spread_over_free_cores(self) -> None:
        """Hand the runs not yet begun to a second pool with the cores training had."""
        extra = self.cores - self.beside_training
        not_begun = [run for run in self.pending if run.future is not None and run.future.cancel()]
        if extra < 1 or not not_begun:
            for run in not_begun:  # cancelled for nothing: queue them again
                self.queue_on(self.pool, run)
            return
        from letters.reporting.pictures import picture_pool

        second = picture_pool(min(extra, len(not_begun)))
        for run in not_begun:
            self.queue_on(second, run)
        second.shutdown(wait=False)  # its workers end once their runs are drawn

    def queue_on(self, pool: ProcessPoolExecutor, run: PendingRun) -> None:
        """Queue a run (or a cancelled one again): on ``pool``, or on the first pool where
        ``pool`` cannot start a process; a run that cannot be queued at all (the interpreter
        is exiting) ends with that error."""
        from letters.reporting.pictures import draw_run_pictures

        try:
            try:
                run.future = pool.submit(draw_run_pictures, run.task)
            except OSError:  # no process to spare: the workers that exist draw it
                run.future = self.pool.submit(draw_run_pictures, run.task)
        except (OSError, RuntimeError) as error:
            run.future = Future()
            run.future.set_exception(error)


def settle(run: PendingRun) -> bool:
    """A run whose pictures ended: on failure, one line on the console and in its log files,
    and ``pictures_error`` in its metrics.json; on success, a line in its log files. Returns
    whether they were all drawn."""
    assert run.future is not None
    error = CancelledError() if run.future.cancelled() else run.future.exception()
    if error is None:
        say(run, logging.INFO, "pictures drawn", console=False)
        return True
    # A bug's traceback stays in the worker; its kind and first line are said.
    message = user_error_line(error) or f"{type(error).__name__}: {first_line(error)}"
    say(run, logging.ERROR, f"pictures not drawn: {message}", console=True)
    try:
        record = read_record(run.run_dir)
        if record is not None:
            write_record(run.run_dir, {**record, "pictures_error": message})
    except (RecordError, LettersError) as unwritable:
        say(run, logging.ERROR, str(unwritable), console=True)
    return False


def say(run: PendingRun, level: int, text: str, console: bool) -> None:
    """Log a line about ``run``: to its own log files, and to the console handlers of the
    moment (not to the log files of the stack that trains now)."""
    record = log.makeRecord(log.name, level, __file__, 0, "%s%s", (run.label, text), None)
    if console:
        for handler in logging.getLogger().handlers:
            if not isinstance(handler, logging.FileHandler) and level >= handler.level:
                handler.handle(record)
    for path, formatter in run.log_files:
        handler = logging.FileHandler(path, mode="a", encoding="utf-8", delay=True)
        handler.setFormatter(formatter)
        try:
            handler.handle(record)
        finally:
            handler.close()


# The sweep's one queue, made by its first stack that draws beside training.
_background: BackgroundPictures | None = None


def background_pictures(beside_training: int, cores: int) -> BackgroundPictures:
    """The sweep's queue (made on first use, with ``beside_training`` workers); the end of
    the process waits for it if the sweep's summary did not."""
    global _background
    if _background is None:
        _background = BackgroundPictures(beside_training, cores)
        atexit.register(finish_background_pictures)
    return _background


def settle_background_pictures() -> None:
    """Say and record what the pictures ended since the last look left undone."""
    if _background is not None:
        _background.settle_done()


def finish_background_pictures() -> None:
    """Wait for every picture still being drawn (SweepSummary, before the summary)."""
    global _background
    if _background is None:
        return
    background, _background = _background, None
    background.finish()
