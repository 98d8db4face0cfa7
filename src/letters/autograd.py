"""Hand-written gradients: every operation the MLP and its loss need, as autograd Functions.

Each Function follows PyTorch's "Extending torch.autograd" pattern: ``forward`` computes the
value and saves what the backward formula needs, ``backward`` returns one gradient per input
(``None`` for inputs that need none). The backward formulas are the point of this project, so
they are written out here rather than left to autograd.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.autograd.function import FunctionCtx

Reduction = Literal["mean", "sum"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum")


class Linear(torch.autograd.Function):
    """y = x W^T + b, with x [batch, in], W [out, in], b [out]."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        ctx.save_for_backward(x, weight)
        # addmm fuses the bias add into the matrix product: one kernel instead of two.
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_out.mm(weight) if ctx.needs_input_grad[0] else None
        grad_weight = grad_out.t().mm(x) if ctx.needs_input_grad[1] else None
        grad_bias = grad_out.sum(dim=0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


class Identity(torch.autograd.Function):
    """y = x; the "none" activation, so that every layer has the same shape of code."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor):
        return x.view_as(x)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor):
        return grad_out


class Sigmoid(torch.autograd.Function):
    """y = 1 / (1 + e^-x); dy/dx = y (1 - y), from the saved output so x need not be kept."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor):
        y = torch.sigmoid(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor):
        (y,) = ctx.saved_tensors
        return grad_out * y * (1 - y)


class Tanh(torch.autograd.Function):
    """y = tanh x; dy/dx = 1 - y^2, from the saved output."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor):
        (y,) = ctx.saved_tensors
        return grad_out * (1 - y * y)


class ReLU(torch.autograd.Function):
    """y = max(x, 0); dy/dx = [y > 0], from the saved output (y > 0 exactly where x > 0)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor):
        y = x.clamp_min(0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor):
        (y,) = ctx.saved_tensors
        return grad_out * (y > 0).to(grad_out.dtype)


class CrossEntropy(torch.autograd.Function):
    """Softmax cross-entropy on logits z [batch, classes] against integer labels [batch].

    loss_i = logsumexp(z_i) - z_i[label_i], computed with the row maximum subtracted so that
    logits of +-1e4 stay finite. dloss_i/dz_i = softmax(z_i) - onehot(label_i).

    ``reduction`` picks the objective, and the backward matches it: "mean" divides the
    gradient by the batch size, "sum" does not. The reference's forward printed the mean but
    its backward was the gradient of the sum; "sum" reproduces its numbers honestly.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, logits: torch.Tensor, labels: torch.Tensor, reduction: Reduction = "mean"
    ):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        shifted = logits - logits.amax(dim=1, keepdim=True)
        log_norm = shifted.exp().sum(dim=1, keepdim=True).log()
        log_probs = shifted - log_norm
        losses = -log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
        ctx.save_for_backward(log_probs, labels)
        ctx.reduction = reduction
        return losses.sum() if reduction == "sum" else losses.mean()

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor):
        log_probs, labels = ctx.saved_tensors
        grad = log_probs.exp()
        grad.scatter_add_(
            1, labels.unsqueeze(1), torch.full_like(grad[:, :1], -1.0)
        )  # q - onehot(label)
        if ctx.reduction == "mean":
            grad = grad / log_probs.shape[0]
        return grad * grad_out, None, None


ACTIVATIONS: dict[str, type[torch.autograd.Function]] = {
    "none": Identity,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
}


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return Linear.apply(x, weight, bias)


def cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    return CrossEntropy.apply(logits, labels, reduction)
