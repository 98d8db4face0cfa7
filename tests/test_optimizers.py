"""StackedOptimizer against torch.optim, one torch optimizer per member; masking, state dicts."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from torch.optim.optimizer import register_optimizer_step_pre_hook

from letters.engine import members as engine_members
from letters.optim import (
    OPTIMIZER_MEMBER_KEYS,
    OPTIMIZERS,
    PER_MEMBER_KEYS,
    SCHEDULERS,
    StackedOptimizer,
    fast_paths,
    member_optimizer_state,
    schedule_factors,
)
from letters.optim.fast_paths import FUSED_PATHS, FusedSGD, FusedStep

K = 3
SHAPES = ((K, 5, 4), (K, 5))
STEPS = 25
LRS = {
    "sgd": [0.05, 0.01, 0.2],
    "adam": [1e-3, 3e-3, 1e-2],
    "adamw": [1e-3, 3e-3, 1e-2],
    "adagrad": [1e-2, 5e-2, 0.1],
    "rmsprop": [1e-3, 3e-3, 1e-2],
    "adadelta": [1.0, 0.5, 2.0],
}
MOMENTA = [0.9, 0.0, 0.5]  # a member without momentum: torch's other code path
WEIGHT_DECAYS = [0.0, 1e-2, 0.1]

# Measured (torch 2.14.1, CPU, ATEN_CPU_CAPABILITY avx512, avx2 and default): the largest
# difference to torch.optim, over every kind and schedule, parameters and state after 25
# steps, is 0: each op rounds as torch's does. The tolerance leaves room for another
# platform's or torch version's rounding (1 ulp a step accumulates to well under this).
TOLERANCE = {"rtol": 1e-6, "atol": 1e-7}

# SGD, Adam and AdamW take torch's fused kernel on a CPU (the ids without a suffix); "-general"
# runs them off it (StackedOptimizer.fused = False: SGD's fast path or the general one, Adam's
# general one), the others' only path.
FUSED_KINDS = [kind for kind, spec in OPTIMIZERS.items() if spec.fused is not None]
KIND_PATHS = [pytest.param(kind, True, id=kind) for kind in OPTIMIZERS] + [
    pytest.param(kind, False, id=f"{kind}-general") for kind in FUSED_KINDS
]


def use_path(monkeypatch: pytest.MonkeyPatch, fused: bool) -> None:
    """The optimizers built from here on take the fused path (where the kind has one) or not."""
    monkeypatch.setattr(StackedOptimizer, "fused", fused)


def assert_path(optimizer: StackedOptimizer, fused: bool) -> None:
    """The path its steps took: the fused one where asked for and the kind has one."""
    expected = fused and OPTIMIZERS[optimizer.defaults["kind"]].fused is not None
    assert isinstance(optimizer._fast_path, FusedStep) == expected


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test, as these tiny tensors need no more: the fused CPU kernels
    open a parallel region for every tensor of every member, however small, and with
    the cores shared (pytest -n 2) each one waits for a thread the other worker holds (the
    file took 26 s on two busy cores where one thread takes 2 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_run(seed: int = 0, steps: int = STEPS) -> tuple[list[torch.Tensor], list[list]]:
    """Initial parameters and ``steps`` gradients for each (float32, seeded)."""
    generator = torch.Generator().manual_seed(seed)
    initial = [torch.randn(shape, generator=generator) for shape in SHAPES]
    grads = [[torch.randn(shape, generator=generator) for shape in SHAPES] for _ in range(steps)]
    return initial, grads


def stacked(
    kind: str, initial: list[torch.Tensor], schedule: str = "none", **settings
) -> tuple[list[torch.Tensor], StackedOptimizer]:
    params = [tensor.clone().requires_grad_() for tensor in initial]
    optimizer = StackedOptimizer(
        params,
        kind,
        LRS[kind],
        MOMENTA,
        WEIGHT_DECAYS,
        schedule=schedule,
        total_steps=STEPS,
        **settings,
    )
    return params, optimizer


def step(params: list[torch.Tensor], optimizer: torch.optim.Optimizer, grads: list) -> None:
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad.clone()
    optimizer.step()


def torch_reference(kind: str, schedule: str, initial: list[torch.Tensor], member: int):
    """Member ``member`` alone: torch.optim's single-tensor optimizer and scheduler."""
    params = [tensor[member].clone().requires_grad_() for tensor in initial]
    spec = OPTIMIZERS[kind]
    arguments = {"lr": LRS[kind][member], "weight_decay": WEIGHT_DECAYS[member]}
    if spec.takes_momentum:
        arguments["momentum"] = MOMENTA[member]
    optimizer = getattr(torch.optim, spec.torch_name)(params, foreach=False, **arguments)
    scheduler = None
    if schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=LRS[kind][member],
            total_steps=STEPS,
            pct_start=0.15,
            cycle_momentum=spec.cycled is not None,
        )
    elif schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS)
    return params, optimizer, scheduler


def step_beside(params: list, optimizer: Any, references: list, grads: list) -> None:
    """Each step's gradients to the stack, and member k's to its reference (params,
    optimizer, scheduler or None), step by step."""
    for step_grads in grads:
        step(params, optimizer, step_grads)
        for k, (member_params, member_optimizer, scheduler) in enumerate(references):
            step(member_params, member_optimizer, [grad[k] for grad in step_grads])
            if scheduler is not None:
                scheduler.step()


@pytest.mark.parametrize("schedule", SCHEDULERS)
@pytest.mark.parametrize(("kind", "fused"), KIND_PATHS)
def test_matches_torch_per_member(
    kind: str, fused: bool, schedule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also the fused path: its kernel rounds otherwise than torch's single-tensor SGD and
    Adam, by at most 1.5e-8 here (test_fused_matches_torch_fused_per_member: bit-for-bit)."""
    use_path(monkeypatch, fused)
    initial, grads = random_run()
    params, optimizer = stacked(kind, initial, schedule)
    references = [torch_reference(kind, schedule, initial, k) for k in range(K)]
    step_beside(params, optimizer, references, grads)
    assert_path(optimizer, fused)
    assert optimizer.param_groups[0]["schedule_step"] == STEPS
    worst = 0.0
    for k, (member_params, member_optimizer, _) in enumerate(references):
        for param, member_param in zip(params, member_params, strict=True):
            worst = max(worst, (param[k] - member_param).abs().max().item())
            torch.testing.assert_close(param[k], member_param, **TOLERANCE)
            for name, value in member_optimizer.state[member_param].items():
                ours = optimizer.state[param][name][k]
                if name != "step":
                    worst = max(worst, (ours - value).abs().max().item())
                torch.testing.assert_close(ours, value.to(ours.dtype), **TOLERANCE)
    print(f"{kind} {schedule}: max abs difference to torch.optim {worst:.3g}")


@pytest.mark.parametrize(  # the fused paths take the step, sgd's fast path leaves it
    ("kind", "fused"), [("adam", True), ("adam", False), ("sgd", True), ("sgd", False)]
)
def test_a_parameter_without_gradient_is_skipped_as_torch_does(
    kind: str, fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_path(monkeypatch, fused)
    initial, grads = random_run()
    params, optimizer = stacked(kind, initial)
    references = [torch_reference(kind, "none", initial, k) for k in range(K)]
    for index, step_grads in enumerate(grads):
        missing = index % 4 == 1  # the bias has no gradient on some steps
        for param, grad in zip(params, step_grads, strict=True):
            param.grad = grad.clone()
        if missing:
            params[1].grad = None
        optimizer.step()
        for k, (member_params, member_optimizer, _) in enumerate(references):
            for param, grad in zip(member_params, step_grads, strict=True):
                param.grad = grad[k].clone()
            if missing:
                member_params[1].grad = None
            member_optimizer.step()
    for k, (member_params, member_optimizer, _) in enumerate(references):
        for param, member_param in zip(params, member_params, strict=True):
            torch.testing.assert_close(param[k], member_param, **TOLERANCE)
            if kind == "adam":
                step_count = member_optimizer.state[member_param]["step"]
                assert optimizer.state[param]["step"][k] == step_count


@pytest.mark.parametrize("schedule", ["onecycle", "none"])  # none: the static coefficients
@pytest.mark.parametrize(("kind", "fused"), KIND_PATHS)
@pytest.mark.parametrize("eps", [None, 0.0])
def test_frozen_member_is_untouched_and_others_unaffected(
    kind: str, fused: bool, eps: float | None, schedule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Member 1 is frozen after 5 steps and then gets NaN/inf gradients: its parameters and
    state stay bit-for-bit, and members 0 and 2 stay bit-for-bit those of an unmasked run."""
    if eps is not None and kind == "sgd":
        pytest.skip("sgd has no eps")
    use_path(monkeypatch, fused)
    settings = {} if eps is None else {"eps": eps}
    initial, grads = random_run()
    params, optimizer = stacked(kind, initial, schedule, **settings)
    free_params, free_optimizer = stacked(kind, initial, schedule, **settings)
    for index, step_grads in enumerate(grads):
        if index == 5:
            optimizer.active.logical_and_(torch.tensor([True, False, True]))
            frozen_params = [param[1].clone() for param in params]
            frozen_state = [
                {name: value[1].clone() for name, value in optimizer.state[param].items()}
                for param in params
            ]
        masked_grads = [grad.clone() for grad in step_grads]
        if index >= 5:
            for grad in masked_grads:
                grad[1] = float("nan")
                grad[1].view(-1)[0] = float("inf")
        step(params, optimizer, masked_grads)
        step(free_params, free_optimizer, step_grads)
    assert_member_1_frozen_others_free(
        params, optimizer, frozen_params, frozen_state, free_params, free_optimizer
    )


def assert_member_1_frozen_others_free(
    params: list, optimizer: Any, frozen: list, frozen_state: list, free_params: list, free: Any
) -> None:
    """Member 1's parameters and state are exactly as they were frozen; members 0 and 2 are
    exactly those of an optimizer that never froze anything."""
    for i, (param, free_param) in enumerate(zip(params, free_params, strict=True)):
        assert torch.equal(param[1], frozen[i])
        for name, value in optimizer.state[param].items():
            assert torch.equal(value[1], frozen_state[i][name]), name
        for k in (0, 2):
            assert torch.equal(param[k], free_param[k])
            for name, value in optimizer.state[param].items():
                assert torch.equal(value[k], free.state[free_param][name][k]), name


@pytest.mark.parametrize(("kind", "fused"), KIND_PATHS)
def test_never_active_member_stays_put(
    kind: str, fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member frozen from the start (no state yet, step 0: Adam's 1 - beta1**0 == 0)."""
    use_path(monkeypatch, fused)
    initial, grads = random_run(steps=3)
    params, optimizer = stacked(kind, initial)
    optimizer.active[2] = False
    for step_grads in grads:
        step(params, optimizer, step_grads)
    for param, start in zip(params, initial, strict=True):
        assert torch.equal(param[2], start[2])
        assert all(torch.isfinite(value).all() for value in optimizer.state[param].values())


def saved(state_dict: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer)


@pytest.mark.parametrize(("kind", "fused"), KIND_PATHS)
def test_state_dict_round_trip(kind: str, fused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    use_path(monkeypatch, fused)
    initial, grads = random_run()
    params, optimizer = stacked(kind, initial, "onecycle")
    for step_grads in grads[:5]:
        step(params, optimizer, step_grads)
    optimizer.active[0] = False
    state = saved(optimizer.state_dict())
    assert state["param_groups"][0]["schedule_step"] == 5
    assert state["param_groups"][0]["active"] == [False, True, True]

    resumed_params = [param.detach().clone().requires_grad_() for param in params]
    resumed = StackedOptimizer(resumed_params, kind, [1.0] * K, [0.0] * K, [0.0] * K)
    resumed.load_state_dict(state)
    assert resumed.active.tolist() == [False, True, True]
    assert resumed.param_groups[0]["lr"] == LRS[kind]
    for step_grads in grads[5:]:
        step(params, optimizer, step_grads)
        step(resumed_params, resumed, step_grads)
    for param, resumed_param in zip(params, resumed_params, strict=True):
        assert torch.equal(param, resumed_param)
        for name, value in optimizer.state[param].items():
            assert torch.equal(value, resumed.state[resumed_param][name]), name


@pytest.mark.parametrize(("kind", "fused"), KIND_PATHS)
def test_member_state_continues_like_the_member(
    kind: str, fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_path(monkeypatch, fused)
    initial, grads = random_run()
    params, optimizer = stacked(kind, initial, "cosine")
    for step_grads in grads[:5]:
        step(params, optimizer, step_grads)
    state = saved(optimizer.state_dict())
    snapshot = [param.detach().clone() for param in params]
    for step_grads in grads[5:10]:
        step(params, optimizer, step_grads)
    for member in range(K):
        member_state = member_optimizer_state(state, member)
        group = member_state["param_groups"][0]
        assert group["lr"] == [LRS[kind][member]]
        assert group["momentum"] == [MOMENTA[member]]
        assert group["weight_decay"] == [WEIGHT_DECAYS[member]]
        assert group["schedule_step"] == 5
        for tensors in member_state["state"].values():
            assert all(value.shape[0] == 1 for value in tensors.values())
        # A stack of one, built with other hyper-parameters: the loaded state decides.
        alone_params = [param[member : member + 1].clone().requires_grad_() for param in snapshot]
        alone = StackedOptimizer(alone_params, kind, [1.0], [0.0], [0.0])
        alone.load_state_dict(member_state)
        for step_grads in grads[5:10]:
            step(alone_params, alone, [grad[member : member + 1] for grad in step_grads])
        for param, alone_param in zip(params, alone_params, strict=True):
            assert torch.equal(param[member : member + 1], alone_param)
            for name, value in optimizer.state[param].items():
                if name == "momentum_buffer" and MOMENTA[member] == 0:
                    continue  # rmsprop's scratch for a member without momentum
                assert torch.equal(value[member : member + 1], alone.state[alone_param][name])


def test_schedule_factors_follow_torch_schedulers() -> None:
    total = 40
    parameter = torch.zeros(1, requires_grad=True)
    onecycle_optimizer = torch.optim.SGD([parameter], lr=1.0, momentum=0.9)
    onecycle = torch.optim.lr_scheduler.OneCycleLR(
        onecycle_optimizer, max_lr=1.0, total_steps=total, pct_start=0.15
    )
    cosine_optimizer = torch.optim.SGD([parameter], lr=1.0)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(cosine_optimizer, T_max=total)
    for index in range(total):
        factor, momentum = schedule_factors("onecycle", index, total)
        group = onecycle_optimizer.param_groups[0]
        assert factor == pytest.approx(group["lr"], rel=1e-12, abs=1e-15)
        assert momentum == pytest.approx(group["momentum"], rel=1e-12)
        factor, momentum = schedule_factors("cosine", index, total)
        assert factor == pytest.approx(cosine_optimizer.param_groups[0]["lr"], abs=1e-12)
        assert momentum is None
        assert schedule_factors("none", index, total) == (1.0, None)
        onecycle_optimizer.step()
        onecycle.step()
        cosine_optimizer.step()
        cosine.step()
    with pytest.raises(ValueError, match="total steps"):
        schedule_factors("onecycle", total + 1, total)


def test_registry() -> None:
    assert list(OPTIMIZERS) == ["sgd", "adam", "adamw", "adagrad", "rmsprop", "adadelta"]
    assert [name for name, kind in OPTIMIZERS.items() if kind.takes_momentum] == [
        "sgd",
        "rmsprop",
    ]
    for kind in OPTIMIZERS.values():
        assert hasattr(torch.optim, kind.torch_name)
    assert SCHEDULERS == ("none", "onecycle", "cosine")


CONF = Path(__file__).resolve().parents[1] / "conf"


def test_every_optimizer_has_a_config_and_every_config_an_optimizer() -> None:
    assert {path.stem for path in (CONF / "optimizer").glob("*.yaml")} == set(OPTIMIZERS)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_config_takes_the_member_settings_its_optimizer_takes(name: str) -> None:
    """conf/optimizer/<name>.yaml passes each per-member setting on from the run's own key
    (``lr: ${lr}``), momentum exactly where OPTIMIZERS says the optimizer takes one; any other
    key is one of its shared settings."""
    config = OmegaConf.to_container(OmegaConf.load(CONF / "optimizer" / f"{name}.yaml"))
    kind = OPTIMIZERS[name]
    assert config.pop("name") == name
    assert ("momentum" in config) == kind.takes_momentum
    for key in OPTIMIZER_MEMBER_KEYS:
        if key != "momentum" or kind.takes_momentum:
            assert config.pop(key) == f"${{{key}}}"
    assert set(config) <= set(kind.settings)


@pytest.mark.parametrize("path", sorted((CONF / "hparams_search").glob("*.yaml")), ids=str)
def test_search_spaces_draw_from_the_optimizers_and_leave_momentum_to_them(path: Path) -> None:
    """A search space's optimizer choices are OPTIMIZERS' names; the momentum is in the space
    as such only where every trial's optimizer takes one (OptimizerKind.takes_momentum), else
    letters.runs.search.momentum_where_used samples it for the trials whose optimizer does."""
    config = OmegaConf.load(path)
    sweeper = config.hydra.sweeper
    if "momentum" in sweeper.params:
        assert "optimizer" not in sweeper.params
        chosen = [
            next(iter(entry.values()))
            for entry in config.get("defaults", [])
            if isinstance(entry, DictConfig) and "override /optimizer" in entry
        ]
        default = next(
            entry.optimizer
            for entry in OmegaConf.load(CONF / "train.yaml").defaults
            if isinstance(entry, DictConfig) and "optimizer" in entry
        )
        assert OPTIMIZERS[(chosen or [default])[0]].takes_momentum
    else:
        assert sweeper.custom_search_space == "letters.runs.search.momentum_where_used"
    if "optimizer" in sweeper.params:
        override = f"optimizer={sweeper.params.optimizer}"
        (parsed,) = OverridesParser.create().parse_overrides([override])
        assert set(parsed.sweep_string_iterator()) <= set(OPTIMIZERS)


def test_per_member_keys_are_the_lists_of_a_saved_param_group_and_the_engines() -> None:
    """PER_MEMBER_KEYS (what member_optimizer_state cuts) are exactly the param group's lists
    of one value per member; the engine's member settings include the optimizer's."""
    group = make("adam").state_dict()["param_groups"][0]
    lists = {key for key, value in group.items() if key != "params" and isinstance(value, list)}
    assert lists == set(PER_MEMBER_KEYS)
    assert all(len(group[key]) == K for key in PER_MEMBER_KEYS)
    assert engine_members.OPTIMIZER_MEMBER_KEYS is OPTIMIZER_MEMBER_KEYS
    assert set(OPTIMIZER_MEMBER_KEYS) <= set(engine_members.MEMBER_KEYS)


def make(kind: str = "adam", **settings) -> StackedOptimizer:
    params = [torch.zeros(shape, requires_grad=True) for shape in SHAPES]
    lr = settings.pop("lr", [1e-3] * K)
    return StackedOptimizer(params, kind, lr, [0.9] * K, [0.0] * K, **settings)


@pytest.mark.parametrize(
    ("kind", "settings", "message"),
    [
        ("lion", {}, "'lion' is not one of: sgd, adam"),
        ("sgd", {"nesterov": True}, "does not support nesterov=True"),
        ("adam", {"amsgrad": True, "maximize": True}, "amsgrad=True, maximize=True"),
        ("rmsprop", {"centered": True}, "does not support centered=True"),
        ("sgd", {"dampening": 0.1}, "does not support dampening=0.1"),
        ("adam", {"fused": True}, "does not support fused=True"),
        ("sgd", {"betas": (0.9, 0.99)}, "takes no setting betas"),
        ("adagrad", {"alpha": 0.9}, "takes no setting alpha"),
        ("adamw", {"decoupled_weight_decay": True}, "takes no setting decoupled_weight_decay"),
        ("adam", {"betas": (0.9, 1.0)}, "betas="),
        ("rmsprop", {"eps": -1.0}, "eps=-1.0 must be a number >= 0"),
        ("adadelta", {"rho": 1.5}, "rho=1.5"),
        ("adam", {"schedule": "step"}, "schedule must be one of"),
        ("adam", {"total_steps": 0}, "total_steps=0"),
        ("adam", {"lr": [1e-3, 1e-3]}, "one value per member"),
        ("adam", {"lr": [1e-3, -1.0, 1e-3]}, "lr="),
    ],
)
def test_rejects_what_it_does_not_do(kind: str, settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(kind, **settings)


def test_accepts_torch_defaults_and_settings() -> None:
    make("sgd", nesterov=False, dampening=0, maximize=False, foreach=None)
    make("sgd", dampening=0.0, foreach=False, fused=False, differentiable=False)
    optimizer = make("adam", betas=[0.8, 0.99], eps=1e-6, amsgrad=False)
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.99)
    make("adagrad", lr_decay=0.01, initial_accumulator_value=0.1, eps=1e-9)


def test_rejects_parameters_without_the_member_dimension() -> None:
    with pytest.raises(ValueError, match="leading dimension K=3"):
        StackedOptimizer([torch.zeros(2, 4)], "sgd", [0.1] * K, [0.0] * K, [0.0] * K)


def test_rejects_a_state_of_another_kind() -> None:
    adam = make("adam")
    with pytest.raises(ValueError, match="cannot load the state of a 'sgd' optimizer"):
        adam.load_state_dict(make("sgd").state_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("kind", "schedule"), [("adam", "onecycle"), ("sgd", "none")])
def test_cuda_load_from_cpu_and_no_host_sync(kind: str, schedule: str) -> None:
    initial, grads = random_run()
    params, optimizer = stacked(kind, initial, schedule)
    for step_grads in grads[:5]:
        step(params, optimizer, step_grads)
    cuda_params = [param.detach().cuda().requires_grad_() for param in params]
    cuda = StackedOptimizer(cuda_params, kind, [1.0] * K, [0.0] * K, [0.0] * K)
    cuda.load_state_dict(saved(optimizer.state_dict()))
    losses = torch.zeros(K, device="cuda")
    for state in cuda.state.values():
        assert all(value.is_cuda for value in state.values())
    assert cuda.active.is_cuda
    cuda.active[1] = False
    optimizer.active[1] = False
    cuda_grads = [[grad.cuda() for grad in step_grads] for step_grads in grads[5:]]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step_grads in cuda_grads:
            for param, grad in zip(cuda_params, step_grads, strict=True):
                param.grad = grad.clone()
            cuda.step(losses=losses)
            cuda.zero_grad()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for step_grads in grads[5:]:
        step(params, optimizer, step_grads)
    for param, cuda_param in zip(params, cuda_params, strict=True):
        torch.testing.assert_close(cuda_param.cpu(), param, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kind", "schedule"), [("rmsprop", "onecycle"), ("sgd", "none"), ("adamw", "onecycle")]
)
def test_deepcopy_continues_alike(kind: str, schedule: str) -> None:
    initial, grads = random_run(steps=6)
    params, optimizer = stacked(kind, initial, schedule)
    for step_grads in grads[:3]:
        step(params, optimizer, step_grads)
    optimizer.active[2] = False
    twin = copy.deepcopy(optimizer)
    twin_params = twin.param_groups[0]["params"]
    assert twin.active.tolist() == [True, True, False]
    for step_grads in grads[3:]:
        step(params, optimizer, step_grads)
        step(twin_params, twin, step_grads)
    assert type(twin._fast_path) is type(optimizer._fast_path)
    for param, twin_param in zip(params, twin_params, strict=True):
        assert torch.equal(param, twin_param)


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_step_losses_freeze_the_members_whose_loss_is_not_finite(kind: str) -> None:
    """step(losses=...) is ``active &= isfinite(losses)`` then the step."""
    initial, grads = random_run(steps=6)
    params, optimizer = stacked(kind, initial)
    manual_params, manual = stacked(kind, initial)
    nan, inf = float("nan"), float("inf")
    schedule = [[1.0, 2.0, 3.0], [1.0, nan, 3.0], [1.0, 2.0, 3.0], [-inf, 2.0, 3.0]]
    for index, step_grads in enumerate(grads):
        losses = torch.tensor(schedule[min(index, len(schedule) - 1)])
        for param, grad in zip(params, step_grads, strict=True):
            param.grad = grad.clone()
        optimizer.step(losses=losses)
        manual.active.logical_and_(torch.isfinite(losses))
        step(manual_params, manual, step_grads)
    assert optimizer.active.tolist() == [False, False, True]
    for param, manual_param in zip(params, manual_params, strict=True):
        assert torch.equal(param, manual_param)
    assert optimizer.param_groups[0]["schedule_step"] == len(grads)


def test_step_zeroes_the_frozen_members_gradients_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off the fused path, without weight decay, sgd masks the gradients in place: the frozen
    members' slices become +0.0, the active members' keep their bits. (The fused path does not
    read a frozen member's gradients: test_fused_frozen_member_is_skipped_bit_for_bit.)"""
    use_path(monkeypatch, False)
    initial, grads = random_run(steps=3)
    params = [tensor.clone().requires_grad_() for tensor in initial]
    optimizer = StackedOptimizer(params, "sgd", LRS["sgd"], MOMENTA, [0.0] * K)
    optimizer.active[1] = False
    for step_grads in grads:
        for param, grad in zip(params, step_grads, strict=True):
            param.grad = grad.clone()
            param.grad[1] = float("nan")
        optimizer.step()
        for param, grad in zip(params, step_grads, strict=True):
            assert torch.equal(param.grad[0], grad[0]) and torch.equal(param.grad[2], grad[2])
            assert torch.equal(param.grad[1], torch.zeros_like(grad[1]))
    for param, start in zip(params, initial, strict=True):
        assert torch.equal(param[1], start[1])


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_step_hooks_and_profiler_still_run(kind: str) -> None:
    """step() skips torch's step wrapper only when it would do nothing."""
    initial, grads = random_run(steps=4)
    params, optimizer = stacked(kind, initial)
    calls = []
    handles = [
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre")),
        optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append("post")),
        register_optimizer_step_pre_hook(lambda opt, args, kwargs: calls.append("global pre")),
    ]
    step(params, optimizer, grads[0])
    step(params, optimizer, grads[1])
    assert calls == ["global pre", "pre", "post"] * 2
    for handle in handles:
        handle.remove()
    step(params, optimizer, grads[2])
    assert len(calls) == 6
    with torch.autograd.profiler.profile() as profile:
        step(params, optimizer, grads[3])
        optimizer.zero_grad()
    names = {event.name for event in profile.function_events}
    assert "Optimizer.step#StackedOptimizer.step" in names
    assert "Optimizer.zero_grad#StackedOptimizer.zero_grad" in names
    assert all(param.grad is None for param in params)
    assert optimizer.param_groups[0]["schedule_step"] == 4


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "fast"])
def test_load_state_dict_after_fast_steps(fused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A load replaces the state the sgd fast paths had bound."""
    use_path(monkeypatch, fused)
    initial, grads = random_run(steps=10)
    params, optimizer = stacked("sgd", initial)
    other_params, other = stacked("sgd", initial)
    for step_grads in grads[:5]:
        step(params, optimizer, step_grads)
    for step_grads in grads[5:8]:
        step(other_params, other, step_grads)
    with torch.no_grad():
        for param, other_param in zip(params, other_params, strict=True):
            other_param.copy_(param)
    other.load_state_dict(saved(optimizer.state_dict()))
    for step_grads in grads[5:]:
        step(params, optimizer, step_grads)
        step(other_params, other, step_grads)
    for param, other_param in zip(params, other_params, strict=True):
        assert torch.equal(param, other_param)


@pytest.mark.parametrize("schedule", ["onecycle", "none"])  # none: the static coefficients
@pytest.mark.parametrize(("kind", "fused"), KIND_PATHS)
def test_keep_members_continues_as_the_others_would(
    kind: str, fused: bool, schedule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Member 1 is frozen after 5 steps and its rows are cut out after 10 (new parameters of
    the others' rows, as the model makes them, then keep_members): the optimizer goes on as a
    stack of members 0 and 2 on its prepared path, and they end bit for bit where they end in
    a stack that never froze anything."""
    use_path(monkeypatch, fused)
    initial, grads = random_run()
    params, optimizer = stacked(kind, initial, schedule)
    free_params, free = stacked(kind, initial, schedule)
    kept = [0, 2]
    for index, step_grads in enumerate(grads):
        if index == 5:
            optimizer.active[1] = False
        if index == 10:
            with pytest.raises(ValueError, match="members kept"):
                optimizer.keep_members(kept, params)
            params = [param.detach()[kept].requires_grad_() for param in params]
            optimizer.keep_members(kept, params)
            assert optimizer.members == 2 and optimizer.active.tolist() == [True, True]
            group = optimizer.param_groups[0]
            assert group["lr"] == [LRS[kind][k] for k in kept]
            assert group["momentum"] == [MOMENTA[k] for k in kept]
            assert group["weight_decay"] == [WEIGHT_DECAYS[k] for k in kept]
        mine = step_grads if index < 10 else [grad[kept] for grad in step_grads]
        step(params, optimizer, mine)
        step(free_params, free, step_grads)
    assert_path(optimizer, fused)
    for param, free_param in zip(params, free_params, strict=True):
        assert torch.equal(param, free_param[kept])
        for name, value in optimizer.state[param].items():
            assert value.shape[0] == 2, name
            assert torch.equal(value, free.state[free_param][name][kept]), name


# The fused path (SGD, Adam and AdamW by torch's fused kernel, once per member).


def torch_fused_reference(kind: str, schedule: str, initial: list[torch.Tensor], member: int):
    """Member ``member`` alone: torch.optim's fused optimizer (the same kernel) and scheduler."""
    params = [tensor[member].clone().requires_grad_() for tensor in initial]
    arguments = {"lr": LRS[kind][member], "weight_decay": WEIGHT_DECAYS[member]}
    if OPTIMIZERS[kind].takes_momentum:
        arguments["momentum"] = MOMENTA[member]
    optimizer = getattr(torch.optim, OPTIMIZERS[kind].torch_name)(params, fused=True, **arguments)
    scheduler = None
    if schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=LRS[kind][member], total_steps=STEPS, pct_start=0.15
        )
    elif schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS)
    return params, optimizer, scheduler


@pytest.mark.parametrize("kind", FUSED_KINDS)
def test_fused_path_is_taken_on_cpu(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SGD and Adam(W) on a CPU: one fused kernel call per member and step (a frozen member's
    returns at once), the general path never."""
    initial, grads = random_run(steps=4)
    params, optimizer = stacked(kind, initial, "onecycle")

    def general_path(self: StackedOptimizer) -> None:
        raise AssertionError("the general path ran")

    monkeypatch.setattr(StackedOptimizer, "_general_step", general_path)
    step(params, optimizer, grads[0])
    assert isinstance(optimizer._fast_path, FUSED_PATHS[OPTIMIZERS[kind].fused])
    optimizer.step(losses=torch.tensor([1.0, float("nan"), 2.0]))
    with torch.autograd.profiler.profile() as profile:
        step(params, optimizer, grads[2])
        step(params, optimizer, grads[3])
    calls = [event.name for event in profile.function_events]
    assert calls.count(f"aten::{OPTIMIZERS[kind].fused}") == 2 * K
    assert optimizer.param_groups[0]["schedule_step"] == 4
    assert optimizer.active.tolist() == [True, False, True]
    if kind != "sgd":  # sgd counts no steps
        assert all(state["step"].tolist() == [4.0, 1.0, 4.0] for state in optimizer.state.values())


@pytest.mark.parametrize("schedule", SCHEDULERS)
@pytest.mark.parametrize("kind", FUSED_KINDS)
def test_fused_matches_torch_fused_per_member(kind: str, schedule: str) -> None:
    """Member k of the stack is torch.optim.<Kind>(fused=True) on member k alone: the same
    kernel call on the same values. Bit-for-bit without a schedule (measured: with them too;
    a schedule's lr may differ from torch's scheduler's in the last bit of a float64)."""
    initial, grads = random_run()
    params, optimizer = stacked(kind, initial, schedule)
    references = [torch_fused_reference(kind, schedule, initial, k) for k in range(K)]
    step_beside(params, optimizer, references, grads)
    tolerance = {"rtol": 0.0, "atol": 0.0} if schedule == "none" else TOLERANCE
    for k, (member_params, member_optimizer, _) in enumerate(references):
        for param, member_param in zip(params, member_params, strict=True):
            torch.testing.assert_close(param[k], member_param, **tolerance)
            for name, value in member_optimizer.state[member_param].items():
                ours = optimizer.state[param][name][k]
                torch.testing.assert_close(ours, value.to(ours.dtype), **tolerance)


@pytest.mark.parametrize("kind", FUSED_KINDS)
def test_fused_with_a_frozen_member_matches_torch_fused_per_member(kind: str) -> None:
    """Members with and without momentum and weight decay, one frozen after 5 steps (its
    gradients NaN from then on): each member ends bit for bit where torch.optim.<Kind>(
    fused=True) on that member alone ends, the frozen one where its optimizer stopped."""
    initial, grads = random_run()
    params, optimizer = stacked(kind, initial)
    references = [torch_fused_reference(kind, "none", initial, k) for k in range(K)]
    for index, step_grads in enumerate(grads):
        if index == 5:
            optimizer.active[1] = False
        masked_grads = [grad.clone() for grad in step_grads]
        if index >= 5:
            for grad in masked_grads:
                grad[1] = float("nan")
        step(params, optimizer, masked_grads)
        for k, (member_params, member_optimizer, _) in enumerate(references):
            if k != 1 or index < 5:
                step(member_params, member_optimizer, [grad[k] for grad in step_grads])
    if kind == "sgd":
        assert isinstance(optimizer._fast_path, FusedSGD)
    for k, (member_params, member_optimizer, _) in enumerate(references):
        for param, member_param in zip(params, member_params, strict=True):
            assert torch.equal(param[k], member_param)
            for name, value in member_optimizer.state[member_param].items():
                assert torch.equal(optimizer.state[param][name][k], value.to(torch.float32))


@pytest.mark.parametrize("kind", FUSED_KINDS)
def test_fused_frozen_member_is_skipped_bit_for_bit(kind: str) -> None:
    """found_inf skips a frozen member entirely: its parameters, state, step counter and even
    its (NaN) gradients stay bit-for-bit, also with a state that is no longer finite (and,
    for Adam, eps == 0), which the general path's masking cannot promise, and the others run
    on as in an unmasked stack."""
    settings = {} if kind == "sgd" else {"eps": 0.0}
    poisoned = "momentum_buffer" if kind == "sgd" else "exp_avg_sq"
    initial, grads = random_run(steps=8)
    params, optimizer = stacked(kind, initial, "onecycle", **settings)
    free_params, free = stacked(kind, initial, "onecycle", **settings)
    for step_grads in grads[:3]:
        step(params, optimizer, step_grads)
        step(free_params, free, step_grads)
    optimizer.active[1] = False
    for param in params:
        optimizer.state[param][poisoned][1].view(-1)[0] = float("inf")
    frozen = [param[1].clone() for param in params]
    frozen_state = [
        {name: value[1].clone() for name, value in optimizer.state[param].items()}
        for param in params
    ]
    for step_grads in grads[3:]:
        for param, grad in zip(params, step_grads, strict=True):
            param.grad = grad.clone()
            param.grad[1] = float("nan")
        optimizer.step()
        for param in params:
            assert param.grad[1].isnan().all()  # not even read
        step(free_params, free, step_grads)
    assert_member_1_frozen_others_free(params, optimizer, frozen, frozen_state, free_params, free)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", FUSED_KINDS)
def test_fused_stack_member_equals_member_alone(kind: str, threads: int) -> None:
    """A member of a stack and a stack of one with its hyper-parameters, from the start,
    through a schedule, a freeze and a thaw: bit-for-bit alike at every step. With 2 threads
    the CPU kernel splits every tensor in two; the sizes are odd, so that each part has a
    vectorised body and a scalar tail."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(1)
    shapes = ((K, 37, 29), (K, 37))
    initial = [torch.randn(shape, generator=generator) for shape in shapes]
    grads = [[torch.randn(shape, generator=generator) for shape in shapes] for _ in range(12)]
    params, optimizer = stacked(kind, initial, "onecycle")
    alone = []
    for k in range(K):
        member_params = [tensor[k : k + 1].clone().requires_grad_() for tensor in initial]
        member_optimizer = StackedOptimizer(
            member_params,
            kind,
            LRS[kind][k : k + 1],
            MOMENTA[k : k + 1],
            WEIGHT_DECAYS[k : k + 1],
            schedule="onecycle",
            total_steps=STEPS,
        )
        alone.append((member_params, member_optimizer))
    for index, step_grads in enumerate(grads):
        active = [not (4 <= index < 8 and k == 2) for k in range(K)]
        optimizer.active.copy_(torch.tensor(active))
        step(params, optimizer, step_grads)
        for k, (member_params, member_optimizer) in enumerate(alone):
            member_optimizer.active.fill_(active[k])
            step(member_params, member_optimizer, [grad[k : k + 1] for grad in step_grads])
            for param, member_param in zip(params, member_params, strict=True):
                assert torch.equal(param[k : k + 1], member_param)
                for name, value in optimizer.state[param].items():
                    ours = value[k : k + 1]
                    assert torch.equal(ours, member_optimizer.state[member_param][name]), name


def test_fused_path_declines_non_contiguous_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-contiguous gradient sends the step to the general path, on the same state."""
    initial, grads = random_run()
    params, optimizer = stacked("adamw", initial, "cosine")
    references = [torch_reference("adamw", "cosine", initial, k) for k in range(K)]
    general_steps = []
    general = StackedOptimizer._general_step

    def counted(self: StackedOptimizer) -> None:
        general_steps.append(self.param_groups[0]["schedule_step"])
        general(self)

    monkeypatch.setattr(StackedOptimizer, "_general_step", counted)
    for index, step_grads in enumerate(grads):
        if index % 3 == 1:  # the same values, laid out transposed
            weight = step_grads[0].transpose(1, 2).contiguous().transpose(1, 2)
            assert not weight.is_contiguous()
            step_grads = [weight, *step_grads[1:]]
        step(params, optimizer, step_grads)
        for k, (member_params, member_optimizer, scheduler) in enumerate(references):
            step(member_params, member_optimizer, [grad[k] for grad in step_grads])
            scheduler.step()
    assert general_steps == list(range(1, STEPS, 3))
    for k, (member_params, member_optimizer, _) in enumerate(references):
        for param, member_param in zip(params, member_params, strict=True):
            torch.testing.assert_close(param[k], member_param, **TOLERANCE)
            for name, value in member_optimizer.state[member_param].items():
                ours = optimizer.state[param][name][k]
                torch.testing.assert_close(ours, value.to(ours.dtype), **TOLERANCE)


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
@pytest.mark.parametrize("missing", ["absent", "refusing"])
def test_general_path_where_the_fused_kernel_does_not_run(
    missing: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a fused kernel for the device and dtype (none in torch, or one that raises),
    SGD and Adam(W) take the general path (here with a schedule, which SGD's fast path does
    not take)."""
    name = OPTIMIZERS[kind].fused
    monkeypatch.setattr(fast_paths, "_FUSED_KERNELS", {})
    if missing == "absent":
        monkeypatch.delattr(torch, name)
    else:

        def refuse(*args, **kwargs) -> None:
            raise RuntimeError(f"{name} is not implemented for this device")

        monkeypatch.setattr(torch, name, refuse)
    initial, grads = random_run(steps=5)
    params, optimizer = stacked(kind, initial, "onecycle")
    for step_grads in grads:
        step(params, optimizer, step_grads)
    assert optimizer._fast_path is None
    monkeypatch.undo()  # torch's kernel back: the general path by choice
    use_path(monkeypatch, False)
    general_params, general = stacked(kind, initial, "onecycle")
    for step_grads in grads:
        step(general_params, general, step_grads)
    assert general._fast_path is None
    for param, general_param in zip(params, general_params, strict=True):
        assert torch.equal(param, general_param)


@pytest.mark.parametrize(("kind", "threads", "fused"), [("sgd", 1, True), ("sgd", 2, False)])
def test_sgd_on_several_cpu_threads_takes_the_path_that_uses_them(
    kind: str, threads: int, fused: bool
) -> None:
    """SGD's fused kernel runs member by member on one thread: with several CPU threads the
    fast path's whole-stack operations are the faster (StackedOptimizer._take_step). Adam
    keeps its fused kernel either way."""
    torch.set_num_threads(threads)  # the autouse fixture puts it back
    sgd, adam = make(kind), make("adam")
    for optimizer in (sgd, adam):
        for param in optimizer.param_groups[0]["params"]:
            param.grad = torch.ones_like(param)
        optimizer.step()
        optimizer.step()
    assert isinstance(sgd._fast_path, FusedStep) == fused
    assert isinstance(adam._fast_path, FusedStep)
