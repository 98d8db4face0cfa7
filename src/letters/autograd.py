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
        return (1 - y).mul_(y).mul_(grad_out)


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
        return (y * y).neg_().add_(1).mul_(grad_out)


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
        # y >= 0, so sign(y) is exactly [y > 0]; float arithmetic is several times faster
        # here than a comparison and a mask.
        return y.sign().mul_(grad_out)


class Standardize(torch.autograd.Function):
    """Per-row standardization y = (x - mean) / sqrt(var + eps): each image's pixels get mean 0
    and unit spread, so contrast and brightness stop mattering to the first layer.

    dL/dx = (g - mean(g) - y * mean(g * y)) / sqrt(var + eps), per row (g = dL/dy).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, eps: float = 1e-4):
        centred = x - x.mean(dim=1, keepdim=True)
        spread = centred.pow(2).mean(dim=1, keepdim=True).add_(eps).sqrt_()
        y = centred / spread
        ctx.save_for_backward(y, spread)
        return y

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor):
        y, spread = ctx.saved_tensors
        along = (grad_out * y).mean(dim=1, keepdim=True)
        grad = grad_out - grad_out.mean(dim=1, keepdim=True) - y * along
        return grad / spread, None


class CrossEntropy(torch.autograd.Function):
    """Softmax cross-entropy on logits z [batch, classes] against integer labels [batch].

    loss_i = -log q_i[label_i] with q_i = softmax(z_i). PyTorch's fused log-softmax and softmax
    kernels compute log q and q with the row maximum subtracted (logits of +-1e4 stay finite),
    several times faster on small batches than composing the same steps from exp, sum and log.
    The gradient is ours: dloss_i/dz_i = q_i - onehot(label_i).

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
        index = labels.unsqueeze(1)
        total = -logits.log_softmax(dim=1).gather(1, index).sum()
        ctx.save_for_backward(logits, index)
        ctx.reduction = reduction
        return total if reduction == "sum" else total / logits.shape[0]

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor):
        logits, index = ctx.saved_tensors
        scale = grad_out if ctx.reduction == "sum" else grad_out / logits.shape[0]
        grad = logits.softmax(dim=1).mul_(scale)  # q, scaled
        grad.scatter_add_(1, index, scale.neg().expand(index.shape))  # minus onehot, scaled
        return grad, None, None


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
