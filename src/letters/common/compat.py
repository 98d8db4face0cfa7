"""Every use letters makes of torch's and Lightning's non-public API, in one place.

Checked against torch 2.14.1 and pytorch-lightning 2.6.6 (``CHECKED_AGAINST``):
tests/test_compat.py fails, naming the attribute and these versions, where one of them is gone
or no longer does what letters needs. After an upgrade, that test says what to look at here.

- torch's fused SGD, Adam and AdamW kernels ``torch._fused_sgd_``, ``torch._fused_adam_`` and
  ``torch._fused_adamw_`` (what ``torch.optim.SGD``, ``Adam`` and ``AdamW`` call with
  ``fused=True``), looked up by name: ``fused_kernel``.
- torch.optim's step wrapper, which StackedOptimizer.step skips where it would do nothing:
  the global step hooks (``torch.optim.optimizer._global_optimizer_pre_hooks`` and
  ``_post_hooks``), an optimizer's own (``Optimizer._optimizer_step_pre_hooks`` and
  ``_post_hooks``), the wrapper ``Optimizer.profile_hook_step``, and the ``hooked`` mark
  on a class's ``step`` that stops ``Optimizer.__init__`` from wrapping it:
  ``step_hooks_registered``, ``profiled_step``, ``unwrapped_step``.
- ``torch._C._autograd._profiler_enabled`` and ``torch._C._set_grad_enabled`` (what
  ``torch.no_grad`` calls, without a context-manager object per step): ``profiler_enabled``,
  ``set_grad_enabled``.
- ``torch._foreach_*``, the multi-tensor ops of torch.optim's foreach implementations, are
  called directly throughout letters.optim: a wrapper would cost a Python call per op on the
  hottest path for nothing. ``FOREACH_OPS`` names those letters calls; the test checks that
  the list is complete and that each exists.
- Lightning's optimizer-step counter under manual optimization (``trainer.fit_loop.
  epoch_loop.manual_optimization.optim_step_progress``): ``count_optimizer_steps``.
- Lightning's ``trainer._checkpoint_connector.dump_checkpoint``: ``dump_checkpoint``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch.optim import optimizer as _torch_optimizer

if TYPE_CHECKING:
    import pytorch_lightning as pl

CHECKED_AGAINST: dict[str, str] = {"torch": "2.14.1", "pytorch-lightning": "2.6.6"}

# The torch._foreach_* ops letters.optim calls (tests/test_compat.py keeps this list complete).
FOREACH_OPS: tuple[str, ...] = (
    "_foreach_add",
    "_foreach_add_",
    "_foreach_addcdiv_",
    "_foreach_addcmul",
    "_foreach_addcmul_",
    "_foreach_div_",
    "_foreach_lerp_",
    "_foreach_mul",
    "_foreach_mul_",
    "_foreach_sqrt",
    "_foreach_sqrt_",
)

# The names of torch's fused optimizer kernels, as torch.optim.SGD, Adam and AdamW call them.
FUSED_SGD_KERNEL = "_fused_sgd_"
FUSED_ADAM_KERNELS: tuple[str, ...] = ("_fused_adam_", "_fused_adamw_")
FUSED_KERNELS: tuple[str, ...] = (FUSED_SGD_KERNEL, *FUSED_ADAM_KERNELS)


def fused_kernel(name: str) -> Callable[..., Any] | None:
    """torch's fused kernel ``torch.<name>`` (one of FUSED_KERNELS), None where this torch has
    none. Its signature is torch.optim.sgd._fused_sgd's call (lists of params, grads,
    momentum buffers, then keyword arguments) or torch.optim.adam._fused_adam's (lists of
    params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, then keywords)."""
    return getattr(torch, name, None)


def _public_set_grad_enabled(mode: bool) -> None:
    torch.set_grad_enabled(mode)  # called as a function, it sets the mode


# What torch.no_grad() and torch.set_grad_enabled() call, without their context-manager object
# (torch's public function, which builds that object, where this torch has no such function).
set_grad_enabled: Callable[[bool], None] = getattr(
    torch._C, "_set_grad_enabled", _public_set_grad_enabled
)

# Whether the autograd profiler records (torch.autograd.profiler.profile and friends); where
# this torch has no such function, always True, so that every step keeps torch's wrapper.
profiler_enabled: Callable[[], bool] = getattr(
    torch._C._autograd, "_profiler_enabled", lambda: True
)

# torch.optim's global step hooks (register_optimizer_step_pre_hook and _post_hook).
_GLOBAL_PRE_HOOKS = getattr(_torch_optimizer, "_global_optimizer_pre_hooks", None)
_GLOBAL_POST_HOOKS = getattr(_torch_optimizer, "_global_optimizer_post_hooks", None)
# Where this torch keeps them elsewhere, every step goes through torch's wrapper.
_HOOKS_UNSEEN = _GLOBAL_PRE_HOOKS is None or _GLOBAL_POST_HOOKS is None


def step_hooks_registered(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a step pre- or post-hook, global or the optimizer's own, is registered (or
    this torch keeps them where this cannot see: True then, to be safe). Called every step:
    one expression."""
    return bool(
        _HOOKS_UNSEEN
        or _GLOBAL_PRE_HOOKS
        or _GLOBAL_POST_HOOKS
        or getattr(optimizer, "_optimizer_step_pre_hooks", True)
        or getattr(optimizer, "_optimizer_step_post_hooks", True)
    )


StepFunction = TypeVar("StepFunction", bound=Callable[..., Any])


def profiled_step(step: StepFunction) -> StepFunction:
    """``step`` inside torch's Optimizer.step wrapper: a profiler record and the step hooks."""
    return torch.optim.Optimizer.profile_hook_step(step)  # type: ignore[return-value]


def unwrapped_step(step: StepFunction) -> StepFunction:
    """Mark an Optimizer subclass's ``step`` as wrapped already, so that Optimizer.__init__
    leaves it as it is (the step then decides itself when to take ``profiled_step``)."""
    step.hooked = True  # type: ignore[attr-defined]
    return step


def count_optimizer_steps(trainer: pl.Trainer, steps: int) -> None:
    """Advance Lightning's optimizer-step counter (trainer.global_step) for steps taken
    directly on the torch optimizer under manual optimization, as LightningOptimizer.step
    would have."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    for _ in range(steps):
        progress.increment_ready()
        progress.increment_completed()


def dump_checkpoint(trainer: pl.Trainer) -> dict[str, Any]:
    """What Trainer.save_checkpoint would write now, as a dict, without writing it."""
    return trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
