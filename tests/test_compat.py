"""The torch and Lightning internals that letters.common.compat relies on are still there and
still do what letters needs; a failure names the attribute and the versions compat was
checked against, which is where to look after an upgrade."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.optim import optimizer as torch_optimizer
from torch.utils.data import DataLoader, TensorDataset

from letters.common import compat

SOURCES = Path(__file__).resolve().parents[1] / "src" / "letters"


def gone(what: str) -> str:
    """The failure message for an internal that is gone or changed."""
    checked = ", ".join(f"{name} {version}" for name, version in compat.CHECKED_AGAINST.items())
    return (
        f"{what}: letters.common.compat was checked against {checked}; installed are torch "
        f"{torch.__version__}, pytorch-lightning {pl.__version__}"
    )


def test_foreach_ops_letters_calls_are_listed_and_exist() -> None:
    called = {
        name
        for path in SOURCES.rglob("*.py")
        for name in re.findall(r"torch\.(_foreach_\w+)", path.read_text())
    }
    assert called == set(compat.FOREACH_OPS), "compat.FOREACH_OPS: the ops letters calls"
    for name in compat.FOREACH_OPS:
        assert hasattr(torch, name), gone(f"torch.{name}")


@pytest.mark.parametrize("name", compat.FUSED_ADAM_KERNELS)
def test_fused_adam_kernel_steps_one_element_on_cpu_and_skips_on_found_inf(name: str) -> None:
    """The call letters.optim.fast_paths makes: 0-dim views, a float32 step counter and
    found_inf. Adam's first step moves the parameter by lr (against the gradient's sign)."""
    kernel = compat.fused_kernel(name)
    assert kernel is not None, gone(f"torch.{name}")
    param, grad, exp_avg, exp_avg_sq = torch.tensor([[1.0], [1.0], [0.0], [0.0]]).unbind(0)
    steps = torch.tensor([1.0, 0.0])  # the counter after its increment; found_inf
    for found_inf, expected in ((1.0, 1.0), (0.0, 1.0 - 1e-3)):
        steps[1] = found_inf
        try:
            kernel(
                [param[0]],
                [grad[0]],
                [exp_avg[0]],
                [exp_avg_sq[0]],
                [],
                [steps[0]],
                amsgrad=False,
                lr=1e-3,
                beta1=0.9,
                beta2=0.999,
                weight_decay=0.0,
                eps=1e-8,
                maximize=False,
                grad_scale=None,
                found_inf=steps[1],
            )
        except (RuntimeError, TypeError) as error:
            pytest.fail(gone(f"torch.{name}(...) as letters calls it: {error}"))
        assert param.item() == pytest.approx(expected, abs=1e-7), gone(f"torch.{name}")


def test_fused_sgd_kernel_steps_one_element_on_cpu_and_skips_on_found_inf() -> None:
    """The call letters.optim.fast_paths makes: one member's views, a momentum buffer and
    found_inf. A first step moves the parameter by lr * (gradient + weight_decay * param)."""
    kernel = compat.fused_kernel(compat.FUSED_SGD_KERNEL)
    assert kernel is not None, gone(f"torch.{compat.FUSED_SGD_KERNEL}")
    param, grad, buffer = torch.tensor([[1.0], [1.0], [0.0]]).unbind(0)
    found_inf = torch.zeros(())
    for flag, expected in ((1.0, 1.0), (0.0, 1.0 - 0.1 * (1.0 + 0.5))):
        found_inf.fill_(flag)
        try:
            kernel(
                [param],
                [grad],
                [buffer],
                weight_decay=0.5,
                momentum=0.9,
                lr=0.1,
                dampening=0.0,
                nesterov=False,
                maximize=False,
                is_first_step=True,
                grad_scale=None,
                found_inf=found_inf,
            )
        except (RuntimeError, TypeError) as error:
            pytest.fail(gone(f"torch.{compat.FUSED_SGD_KERNEL}(...) as letters calls it: {error}"))
        assert param.item() == pytest.approx(expected, abs=1e-7), gone("torch._fused_sgd_")
    assert buffer.item() == pytest.approx(1.5, abs=1e-7), gone("torch._fused_sgd_")


def test_every_fused_kernel_an_optimizer_names_is_one_compat_knows() -> None:
    from letters.optim import OPTIMIZERS
    from letters.optim.fast_paths import FUSED_PATHS

    named = {kind.fused for kind in OPTIMIZERS.values() if kind.fused is not None}
    assert named == set(compat.FUSED_KERNELS) == set(FUSED_PATHS)


def test_grad_mode_and_profiler_switches() -> None:
    assert hasattr(torch._C, "_set_grad_enabled"), gone("torch._C._set_grad_enabled")
    assert hasattr(torch._C._autograd, "_profiler_enabled"), gone(
        "torch._C._autograd._profiler_enabled"
    )
    with torch.enable_grad():
        compat.set_grad_enabled(False)
        assert not torch.is_grad_enabled(), gone("torch._C._set_grad_enabled")
        compat.set_grad_enabled(True)
        assert torch.is_grad_enabled(), gone("torch._C._set_grad_enabled")
    assert not compat.profiler_enabled()
    with torch.autograd.profiler.profile():
        assert compat.profiler_enabled(), gone("torch._C._autograd._profiler_enabled")


def test_step_hooks_are_seen_where_torch_keeps_them() -> None:
    for name in ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks"):
        assert isinstance(getattr(torch_optimizer, name, None), dict), gone(
            f"torch.optim.optimizer.{name}"
        )
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    for name in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks"):
        assert isinstance(getattr(optimizer, name, None), dict), gone(f"Optimizer.{name}")
    assert not compat.step_hooks_registered(optimizer)
    own = optimizer.register_step_post_hook(lambda *_: None)
    assert compat.step_hooks_registered(optimizer), gone("Optimizer._optimizer_step_post_hooks")
    own.remove()
    handle = torch_optimizer.register_optimizer_step_pre_hook(lambda *_: None)
    assert compat.step_hooks_registered(optimizer), gone("_global_optimizer_pre_hooks")
    handle.remove()
    assert not compat.step_hooks_registered(optimizer)


def test_an_unwrapped_step_stays_so_and_profiled_step_runs_the_hooks() -> None:
    assert hasattr(torch.optim.Optimizer, "profile_hook_step"), gone(
        "torch.optim.Optimizer.profile_hook_step"
    )

    class Probe(torch.optim.SGD):
        @compat.unwrapped_step
        def step(self, closure=None):  # type: ignore[override]
            return "stepped"

    own_step = Probe.step
    optimizer = Probe([torch.zeros(1, requires_grad=True)], lr=0.1)
    assert Probe.step is own_step, gone("the 'hooked' mark Optimizer.__init__ looks for")
    calls = []
    optimizer.register_step_pre_hook(lambda *_: calls.append("pre"))
    optimizer.register_step_post_hook(lambda *_: calls.append("post"))
    with torch.autograd.profiler.profile() as profile:
        assert compat.profiled_step(own_step)(optimizer) == "stepped"
    assert calls == ["pre", "post"], gone("Optimizer.profile_hook_step")
    names = {event.name for event in profile.function_events}
    assert "Optimizer.step#Probe.step" in names, gone("Optimizer.profile_hook_step")


class _ManualSteps(pl.LightningModule):
    """One batch that counts three optimizer steps taken outside Lightning and dumps the
    checkpoint Lightning would write, as letters' engine and MemberCheckpoints do."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = torch.nn.Linear(2, 1)
        self.dumped: dict | None = None

    def training_step(self, batch, batch_index) -> None:
        compat.count_optimizer_steps(self.trainer, 3)

    def on_train_epoch_end(self) -> None:
        self.dumped = compat.dump_checkpoint(self.trainer)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=4)


def test_lightning_step_counter_and_checkpoint_dump(tmp_path: Path) -> None:
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    module = _ManualSteps()
    try:
        trainer.fit(module)
    except AttributeError as error:  # in count_optimizer_steps or dump_checkpoint
        pytest.fail(gone(str(error)))
    loop = trainer.fit_loop.epoch_loop
    assert hasattr(loop, "manual_optimization"), gone("trainer.fit_loop.epoch_loop.manual_...")
    assert hasattr(loop.manual_optimization, "optim_step_progress"), gone(
        "trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress"
    )
    assert trainer.global_step == 3, gone("optim_step_progress as trainer.global_step")
    assert hasattr(trainer, "_checkpoint_connector"), gone("trainer._checkpoint_connector")
    dumped = module.dumped
    assert dumped is not None and {"state_dict", "optimizer_states", "global_step"} <= set(
        dumped
    ), gone("trainer._checkpoint_connector.dump_checkpoint")
    assert dumped["global_step"] == 3
