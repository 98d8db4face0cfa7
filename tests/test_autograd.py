"""Tests of the hand-written autograd Functions: their gradients, and agreement with torch."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from letters.nn.autograd import (
    ACTIVATIONS,
    CrossEntropy,
    Identity,
    Linear,
    ReLU,
    Sigmoid,
    Tanh,
    cross_entropy,
    linear,
)

BATCHES = (1, 7)
MEMBERS = (1, 3)
LAYOUTS = ("contiguous", "transposed", "strided")
REDUCTION_NAMES = ("mean", "sum")
IN_FEATURES = 5
OUT_FEATURES = 3
CLASSES = 4

# float32 agreement with torch's kernels: different summation orders, so not bit-identical.
F32 = {"rtol": 1e-5, "atol": 1e-6}


def make_input(
    batch: int, features: int, layout: str, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A [batch, features] leaf that requires grad, laid out in memory as ``layout`` says.

    "transposed" is the transpose of a [features, batch] tensor and "strided" takes every other
    column of a [batch, 2 * features] tensor, so the Functions see non-contiguous memory.
    """
    if layout == "contiguous":
        x = torch.randn(batch, features, dtype=dtype)
    elif layout == "transposed":
        x = torch.randn(features, batch, dtype=dtype).t()
    elif layout == "strided":
        x = torch.randn(batch, 2 * features, dtype=dtype)[:, ::2]
    else:
        raise AssertionError(f"unknown layout {layout!r}")
    assert x.shape == (batch, features)
    # A transposed [features, 1] tensor is contiguous; every other non-contiguous case is not.
    if layout == "strided" or (layout == "transposed" and batch > 1):
        assert not x.is_contiguous()
    return x.requires_grad_()


def away_from_zero(x: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """``x`` with every |value| pushed to at least ``margin``, keeping its sign and layout."""
    with torch.no_grad():
        x.copy_(torch.where(x >= 0, x.clamp_min(margin), x.clamp_max(-margin)))
    return x


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------
# gradcheck: each backward formula is the derivative of its forward (float64, finite differences)
# ---------------------------------------------------------------------------------------------


def make_stacked_input(members: int, batch: int, features: int, layout: str) -> torch.Tensor:
    """A [members, batch, features] leaf laid out in memory as ``layout`` says."""
    if layout == "contiguous":
        x = torch.randn(members, batch, features, dtype=torch.float64)
    elif layout == "transposed":
        x = torch.randn(members, features, batch, dtype=torch.float64).transpose(1, 2)
    elif layout == "strided":
        x = torch.randn(members, batch, 2 * features, dtype=torch.float64)[:, :, ::2]
    else:
        raise AssertionError(f"unknown layout {layout!r}")
    return x.requires_grad_()


def stacked_weights(members: int) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.randn(members, OUT_FEATURES, IN_FEATURES, dtype=torch.float64)
    bias = torch.randn(members, OUT_FEATURES, dtype=torch.float64)
    return weight.requires_grad_(), bias.requires_grad_()


@pytest.mark.parametrize("members", MEMBERS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", BATCHES)
def test_linear_gradcheck(batch: int, layout: str, members: int) -> None:
    """Linear's backward gives the right gradient for x, W and b of every member, whatever x's
    memory layout."""
    x = make_stacked_input(members, batch, IN_FEATURES, layout)
    assert gradcheck(Linear.apply, (x, *stacked_weights(members)))


@pytest.mark.parametrize("members", MEMBERS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", BATCHES)
def test_linear_gradcheck_shared_input(batch: int, layout: str, members: int) -> None:
    """One batch [batch, in] seen by every member (evaluation): x's gradient sums the members'."""
    x = make_input(batch, IN_FEATURES, layout)
    assert gradcheck(Linear.apply, (x, *stacked_weights(members)))


@pytest.mark.parametrize("shared", [False, True], ids=["per-member", "shared"])
def test_linear_members_never_mix(shared: bool) -> None:
    """Member k's output depends on W_k and b_k alone: the gradient of one member's output
    reaches no other member's weights."""
    members = 3
    x = (
        make_input(4, IN_FEATURES, "contiguous")
        if shared
        else make_stacked_input(members, 4, IN_FEATURES, "contiguous")
    )
    weight, bias = stacked_weights(members)
    out = Linear.apply(x, weight, bias)
    out[1].sum().backward()
    for other in (0, 2):
        assert torch.count_nonzero(weight.grad[other]) == 0
        assert torch.count_nonzero(bias.grad[other]) == 0
    assert torch.count_nonzero(weight.grad[1]) > 0
    if not shared:
        assert torch.count_nonzero(x.grad[0]) == 0 and torch.count_nonzero(x.grad[2]) == 0


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("function", [Identity, Sigmoid, Tanh, ReLU], ids=lambda f: f.__name__)
def test_activation_gradcheck(function: type[torch.autograd.Function], batch: int, layout: str):
    """Every activation's backward is the derivative of its forward.

    Inputs stay at least 0.1 from 0, where ReLU has no derivative for finite differences to find.
    """
    x = away_from_zero(make_input(batch, IN_FEATURES, layout))
    assert gradcheck(function.apply, (x,))


@pytest.mark.parametrize("reduction", REDUCTION_NAMES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", BATCHES)
def test_cross_entropy_gradcheck(batch: int, layout: str, reduction: str) -> None:
    """CrossEntropy's backward is the derivative of the loss it reports, for both reductions."""
    logits = make_input(batch, CLASSES, layout)
    labels = torch.randint(CLASSES, (batch,))
    assert gradcheck(lambda z: CrossEntropy.apply(z, labels, reduction), (logits,))


def test_linear_skips_gradients_that_are_not_needed() -> None:
    """A network's input needs no gradient: W and b still get the right ones, x gets none."""
    x = torch.randn(2, 4, IN_FEATURES, dtype=torch.float64)
    weight, bias = stacked_weights(2)
    assert gradcheck(lambda w, b: Linear.apply(x, w, b), (weight, bias))
    linear(x, weight, bias).sum().backward()
    assert x.grad is None
    assert weight.grad is not None and bias.grad is not None


# ---------------------------------------------------------------------------------------------
# Agreement with torch's built-ins in float32, values and gradients
# ---------------------------------------------------------------------------------------------


def values_and_grads(
    function: Callable[..., torch.Tensor], inputs: list[torch.Tensor], upstream: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The output of ``function(*inputs)`` and the gradients of sum(output * upstream)."""
    leaves = [tensor.detach().clone().requires_grad_() for tensor in inputs]
    out = function(*leaves)
    grads = torch.autograd.grad((out * upstream).sum(), leaves)
    return (out.detach(), *grads)


@pytest.mark.parametrize("shared", [False, True], ids=["per-member", "shared"])
@pytest.mark.parametrize("batch", BATCHES)
def test_linear_matches_torch(batch: int, shared: bool) -> None:
    """linear() gives each member the values and x, W, b gradients of F.linear on its own."""
    members = 3
    x = torch.randn(batch, IN_FEATURES) if shared else torch.randn(members, batch, IN_FEATURES)
    inputs = [
        x,
        torch.randn(members, OUT_FEATURES, IN_FEATURES),
        torch.randn(members, OUT_FEATURES),
    ]
    upstream = torch.randn(members, batch, OUT_FEATURES)

    def per_member(x, weight, bias):
        return torch.stack(
            [F.linear(x if shared else x[k], weight[k], bias[k]) for k in range(members)]
        )

    ours = values_and_grads(linear, inputs, upstream)
    theirs = values_and_grads(per_member, inputs, upstream)
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, **F32)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("none", lambda x: x),
        ("sigmoid", torch.sigmoid),
        ("tanh", torch.tanh),
        ("relu", torch.relu),
    ],
)
@pytest.mark.parametrize("batch", BATCHES)
def test_activation_matches_torch(
    name: str, reference: Callable[[torch.Tensor], torch.Tensor], batch: int
) -> None:
    """Each named activation gives torch's values and gradients, including for large |x|."""
    x = torch.randn(batch, 11) * 4
    x[0, :3] = torch.tensor([-30.0, 30.0, 0.0])  # saturated sigmoid/tanh, and relu at 0
    upstream = torch.randn_like(x)
    ours = values_and_grads(ACTIVATIONS[name].apply, [x], upstream)
    theirs = values_and_grads(reference, [x], upstream)
    for mine, expected in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, expected, **F32)


@pytest.mark.parametrize("reduction", REDUCTION_NAMES)
@pytest.mark.parametrize("batch", BATCHES)
def test_cross_entropy_matches_torch(batch: int, reduction: str) -> None:
    """cross_entropy() gives F.cross_entropy's loss and logit gradient for both reductions."""
    logits = torch.randn(batch, 26) * 3
    labels = torch.randint(26, (batch,))
    upstream = torch.tensor(2.5)  # a scaled loss must scale the gradient too

    def ours(z: torch.Tensor) -> torch.Tensor:
        return cross_entropy(z, labels, reduction)

    def theirs(z: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z, labels, reduction=reduction)

    for mine, expected in zip(
        values_and_grads(ours, [logits], upstream),
        values_and_grads(theirs, [logits], upstream),
        strict=True,
    ):
        torch.testing.assert_close(mine, expected, **F32)


# ---------------------------------------------------------------------------------------------
# Cross-entropy specifics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTION_NAMES)
def test_cross_entropy_is_stable_for_huge_logits(reduction: str) -> None:
    """Logits of +-1e4 give a finite loss and gradient (no exp overflow), equal to torch's."""
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
    labels = torch.tensor([1, 0])
    z = logits.clone().requires_grad_()
    loss = cross_entropy(z, labels, reduction)
    loss.backward()
    assert torch.isfinite(loss)
    assert z.grad is not None and torch.isfinite(z.grad).all()

    z_ref = logits.clone().requires_grad_()
    loss_ref = F.cross_entropy(z_ref, labels, reduction=reduction)
    loss_ref.backward()
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(z.grad, z_ref.grad)
    # softmax is exactly [1, 0, 0] and [0, 1/2, 1/2] here, so the gradient is known by hand.
    by_hand = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 0.5, 0.5]])
    scale = 1.0 if reduction == "sum" else 1.0 / len(labels)
    torch.testing.assert_close(z.grad, by_hand * scale)


@pytest.mark.parametrize("batch", BATCHES)
def test_sum_gradient_is_batch_times_mean_gradient(batch: int) -> None:
    """The reference's trap: "sum" and "mean" gradients differ by exactly the batch size.

    A backward that ignores the reduction (as the reference's did) fails this for batch > 1.
    """
    logits = torch.randn(batch, CLASSES, dtype=torch.float64)
    labels = torch.randint(CLASSES, (batch,))
    results = {}
    for reduction in REDUCTION_NAMES:
        z = logits.clone().requires_grad_()
        loss = cross_entropy(z, labels, reduction)
        (grad,) = torch.autograd.grad(loss, z)
        results[reduction] = (loss.detach(), grad)
    mean_loss, mean_grad = results["mean"]
    sum_loss, sum_grad = results["sum"]
    torch.testing.assert_close(sum_loss, batch * mean_loss)
    torch.testing.assert_close(sum_grad, batch * mean_grad)
    if batch > 1:
        assert not torch.allclose(sum_grad, mean_grad)


def test_cross_entropy_gradient_is_softmax_minus_onehot() -> None:
    """With reduction "sum", dloss/dlogits is softmax(logits) - onehot(labels), row by row."""
    logits = torch.randn(6, CLASSES, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 3, 0])
    (grad,) = torch.autograd.grad(cross_entropy(logits, labels, "sum"), logits)
    expected = torch.softmax(logits.detach(), dim=1) - F.one_hot(labels, CLASSES).double()
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(grad.sum(dim=1), torch.zeros(6, dtype=torch.float64))


@pytest.mark.parametrize("reduction", ["none", "avg", "", "MEAN"])
def test_invalid_reduction_raises_value_error(reduction: str) -> None:
    """A misspelt reduction is refused with ValueError rather than silently picking one."""
    logits = torch.randn(3, CLASSES, requires_grad=True)
    labels = torch.randint(CLASSES, (3,))
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(logits, labels, reduction)  # type: ignore[arg-type]


@pytest.mark.parametrize("reduction", REDUCTION_NAMES)
@pytest.mark.parametrize("members", MEMBERS)
def test_stacked_cross_entropy_gradcheck(members: int, reduction: str) -> None:
    """Logits [K, batch, classes] give K losses, one per member, each with its own gradient."""
    logits = torch.randn(members, 5, CLASSES, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(CLASSES, (members, 5))
    assert gradcheck(lambda z: CrossEntropy.apply(z, labels, reduction), (logits,))


@pytest.mark.parametrize("reduction", REDUCTION_NAMES)
def test_stacked_cross_entropy_is_each_members_own_loss(reduction: str) -> None:
    """Member k's loss and gradient are F.cross_entropy of its own logits and labels alone."""
    logits = torch.randn(3, 6, CLASSES, requires_grad=True)
    labels = torch.randint(CLASSES, (3, 6))
    losses = cross_entropy(logits, labels, reduction)
    assert losses.shape == (3,)
    (grad,) = torch.autograd.grad(losses[1], logits)
    expected = F.cross_entropy(logits[1], labels[1], reduction=reduction)
    torch.testing.assert_close(losses[1], expected, **F32)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad, **F32)
    assert torch.count_nonzero(grad[0]) == 0 and torch.count_nonzero(grad[2]) == 0
