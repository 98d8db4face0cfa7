"""Tests of the MLP: its shape, structure, initialisation, and hand-written gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import letters.nn.autograd as autograd
from letters.nn.model import MLP, Activation, LinearLayer

ACTIVATION_NAMES = ("none", "sigmoid", "tanh", "relu")
TORCH_ACTIVATIONS = {
    "none": lambda x: x,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def linear_layers(model: MLP) -> list[LinearLayer]:
    return [module for module in model.layers if isinstance(module, LinearLayer)]


# ---------------------------------------------------------------------------------------------
# Shapes and structure
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 5])
def test_logits_shape_for_flat_and_image_input(batch: int) -> None:
    """A batch of flat 1024-vectors or of 32x32 images gives [1, batch, 26] logits (a stack
    of one member), the same ones."""
    model = MLP(1024, 26, [32], "relu", "normal")
    images = torch.rand(batch, 32, 32)
    from_images = model(images)
    from_flat = model(images.reshape(batch, 1024))
    assert from_images.shape == (1, batch, 26)
    assert from_flat.shape == (1, batch, 26)
    torch.testing.assert_close(from_images, from_flat)


def test_no_hidden_layers_is_a_linear_classifier() -> None:
    """hidden_sizes=[] is one LinearLayer and no activation: logits are x W^T + b."""
    model = MLP(12, 4, [], "relu", "kaiming")
    assert len(model.layers) == 1
    assert isinstance(model.layers[0], LinearLayer)
    assert not any(isinstance(module, Activation) for module in model.modules())
    x = torch.randn(3, 12)
    layer = model.layers[0]
    torch.testing.assert_close(model(x)[0], x @ layer.weight[0].T + layer.bias[0])


def test_two_hidden_layers_alternate_with_no_activation_after_logits() -> None:
    """[64, 32] is Linear, Act, Linear, Act, Linear: sizes chain and the logits are not squashed."""
    model = MLP(100, 26, [64, 32], "tanh", "xavier")
    kinds = [type(module) for module in model.layers]
    assert kinds == [LinearLayer, Activation, LinearLayer, Activation, LinearLayer]
    shapes = [tuple(layer.weight.shape) for layer in linear_layers(model)]
    assert shapes == [(1, 64, 100), (1, 32, 64), (1, 26, 32)]
    assert all(module.name == "tanh" for module in model.layers if isinstance(module, Activation))


# ---------------------------------------------------------------------------------------------
# Only the hand-written Functions are used
# ---------------------------------------------------------------------------------------------


def test_model_contains_no_torch_layers() -> None:
    """No torch.nn layer does the arithmetic: the modules are letters' own wrappers."""
    builtin = (nn.Linear, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Identity)
    for activation in ACTIVATION_NAMES:
        model = MLP(20, 5, [8, 6], activation, "kaiming")
        assert not any(isinstance(module, builtin) for module in model.modules())
        leaf_kinds = {type(module) for module in model.modules() if not list(module.children())}
        assert leaf_kinds == {LinearLayer, Activation}


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_backward_runs_the_hand_written_formulas(
    activation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """loss.backward() calls Linear.backward per layer and the activation's backward per hidden
    layer; autograd never falls back to torch's own derivatives of the forward."""
    calls: dict[str, int] = {}

    def counting(function: type[torch.autograd.Function]) -> None:
        original = function.backward
        calls[function.__name__] = 0

        def backward(ctx, *grads):
            calls[function.__name__] += 1
            return original(ctx, *grads)

        monkeypatch.setattr(function, "backward", staticmethod(backward))

    act_function = autograd.ACTIVATIONS[activation]
    for function in (autograd.Linear, act_function, autograd.CrossEntropy):
        counting(function)

    model = MLP(20, 5, [8, 6], activation, "kaiming")
    logits = model(torch.randn(4, 20))
    # The output's grad_fn is the backward node of letters' Linear, not torch's AddmmBackward0.
    assert type(logits.grad_fn).__name__ == "LinearBackward"
    assert logits.grad_fn._forward_cls is autograd.Linear  # type: ignore[union-attr]
    autograd.cross_entropy(logits, torch.randint(5, (4,)), "mean").sum().backward()

    assert calls == {"Linear": 3, act_function.__name__: 2, "CrossEntropy": 1}
    assert all(parameter.grad is not None for parameter in model.parameters())


# ---------------------------------------------------------------------------------------------
# Whole-network gradients equal autograd's on a plain torch model
# ---------------------------------------------------------------------------------------------


def torch_copy(model: MLP) -> nn.Sequential:
    """nn.Linear layers holding copies of ``model``'s weights and biases."""
    layers = linear_layers(model)
    reference = nn.Sequential(
        *[nn.Linear(*layer.weight.shape[:0:-1], dtype=layer.weight.dtype) for layer in layers]
    )
    with torch.no_grad():
        for mine, theirs in zip(layers, reference, strict=True):
            theirs.weight.copy_(mine.weight[0])
            theirs.bias.copy_(mine.bias[0])
    return reference


def torch_forward(reference: nn.Sequential, x: torch.Tensor, activation: str) -> torch.Tensor:
    """The MLP's forward written with torch's built-in linear layers and activations."""
    h = x.flatten(1)
    for index, layer in enumerate(reference):
        h = layer(h)
        if index < len(reference) - 1:
            h = TORCH_ACTIVATIONS[activation](h)
    return h


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_mlp_gradients_equal_plain_torch(activation: str, reduction: str) -> None:
    """Every weight, bias and input gradient of the MLP equals the built-in torch model's."""
    model = MLP(20, 5, [8, 6], activation, "kaiming").double()
    with torch.no_grad():  # non-zero biases, so a bias dropped from the forward would show
        for layer in linear_layers(model):
            layer.bias.normal_()
    images = torch.randn(7, 4, 5, dtype=torch.float64)
    labels = torch.randint(5, (7,))

    x = images.clone().requires_grad_()
    loss = autograd.cross_entropy(model(x), labels, reduction)[0]
    loss.backward()

    reference = torch_copy(model)
    x_ref = images.clone().requires_grad_()
    logits_ref = torch_forward(reference, x_ref, activation)
    loss_ref = F.cross_entropy(logits_ref, labels, reduction=reduction)
    loss_ref.backward()

    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    for mine, theirs in zip(linear_layers(model), reference, strict=True):
        torch.testing.assert_close(mine.weight.grad[0], theirs.weight.grad)
        torch.testing.assert_close(mine.bias.grad[0], theirs.bias.grad)


# ---------------------------------------------------------------------------------------------
# Initialisation and argument checking
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("init", "expected_std"),
    [
        ("normal", lambda fan_in, fan_out: 1.0),
        ("kaiming", lambda fan_in, fan_out: math.sqrt(2.0 / fan_in)),
        ("xavier", lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out))),
    ],
)
def test_init_scales_weights_and_zeroes_biases(init: str, expected_std) -> None:
    """Each init draws zero-mean weights of the documented std for every layer; biases are 0."""
    model = MLP(1024, 256, [512], "relu", init)
    for layer in linear_layers(model):
        _, fan_out, fan_in = layer.weight.shape
        std = expected_std(fan_in, fan_out)
        weight = layer.weight.detach()
        assert weight.std().item() == pytest.approx(std, rel=0.03)
        assert abs(weight.mean().item()) < 0.03 * std
        assert torch.count_nonzero(layer.bias) == 0


def test_default_init_is_the_references_normal() -> None:
    """Leaving init out gives the reference's N(0, 1) weights."""
    model = MLP(512, 256, [])
    assert model.layers[0].weight.std().item() == pytest.approx(1.0, rel=0.03)


def test_unknown_init_raises_value_error() -> None:
    """A misspelt init is refused, naming the choices."""
    with pytest.raises(ValueError, match="init"):
        MLP(10, 3, [4], "relu", "he")


def test_unknown_activation_raises_value_error() -> None:
    """A misspelt activation is refused when the network has hidden layers."""
    with pytest.raises(ValueError, match="activation"):
        MLP(10, 3, [4], "gelu", "normal")


def test_unknown_activation_raises_value_error_without_hidden_layers() -> None:
    """A misspelt activation is refused even when no activation layer would be built."""
    with pytest.raises(ValueError, match="activation"):
        MLP(10, 3, [], "gelu", "normal")


# ---------------------------------------------------------------------------------------------
# Stacks: K members in one model, each exactly what it would be alone
# ---------------------------------------------------------------------------------------------


def test_stack_members_start_and_compute_as_alone() -> None:
    """Member k of a stack draws the weights of a stack of one with its seed and init, and its
    logits (per-member or shared input) are that stack's."""
    stack = MLP(20, 5, [8], "relu", ["normal", "kaiming", "xavier"], seeds=[4, 5, 6])
    x = torch.randn(3, 7, 20)
    shared = torch.randn(7, 20)
    for member, (init, seed) in enumerate([("normal", 4), ("kaiming", 5), ("xavier", 6)]):
        alone = MLP(20, 5, [8], "relu", init, seeds=[seed])
        for mine, theirs in zip(linear_layers(stack), linear_layers(alone), strict=True):
            torch.testing.assert_close(mine.weight[member], theirs.weight[0], rtol=0, atol=0)
        torch.testing.assert_close(stack(x)[member], alone(x[member : member + 1])[0])
        torch.testing.assert_close(stack(shared)[member], alone(shared)[0])


def test_members_and_seeds_must_agree() -> None:
    with pytest.raises(ValueError, match="seeds"):
        MLP(10, 3, [4], "relu", ["normal", "normal"], seeds=[1])
