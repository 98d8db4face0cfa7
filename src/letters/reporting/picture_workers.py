"""The processes that draw a stack's pictures: forked from one server process that imports
what drawing needs once (multiprocessing's "forkserver"), so that each worker starts drawing at
once instead of importing torch, matplotlib, openTSNE and TensorBoard (3 s of CPU) first.

Light on purpose (no torch, no matplotlib here): a sweep starts the server while its jobs are
prepared (``start_picture_server``), long before the first stack draws.
"""

from __future__ import annotations

import logging
import multiprocessing
from multiprocessing.context import BaseContext

log = logging.getLogger(__name__)

# What a worker imports to draw: the pictures module (torch, matplotlib), t-SNE and
# TensorBoard's writer.
DRAWING_MODULES = ("letters.reporting.pictures", "openTSNE", "torch.utils.tensorboard")


def picture_context() -> BaseContext:
    """Where picture workers come from: the forkserver with DRAWING_MODULES preloaded; where
    there is no forkserver (Windows), a fresh process each ("spawn"). A forked copy of a
    process that has run torch's thread pool can hang, so never plain "fork"."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(DRAWING_MODULES))  # read when the server starts
    return context


def start_picture_server() -> None:
    """Start the server now, without waiting for its imports: they then run while this
    process is busy with something else on one core (a sweep preparing its jobs, importing
    Lightning), not at the end of training, when the pictures are wanted. Idempotent. A
    server that cannot start now (no process to spare) is no job's failure: drawing starts it
    when the pictures are wanted, or says why it cannot."""
    context = picture_context()
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        try:
            forkserver.ensure_running()
        except OSError as error:
            log.debug("the picture workers' server did not start early: %s", error)
