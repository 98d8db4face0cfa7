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
    """A stack of K linear layers at once: y_k = x_k W_k^T + b_k, with W [K, out, in], b [K, out].

    x is either [K, batch, in], one batch per member, or [batch, in], one batch that every
    member sees (evaluation, where all members classify the same images). Output [K, batch, out].
    Backward, per member: dL/dx_k = g_k W_k, dL/dW_k = g_k^T x_k, dL/db_k = sum of g_k over the
    batch; for a shared x, dL/dx = sum over members of g_k W_k. Members never mix: member k's
    gradients depend on its own g_k, W_k and x_k only.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        ctx.save_for_backward(x, weight)
        if x.dim() == 3:
            # baddbmm fuses the bias add into the batched matrix product: one kernel.
            return torch.baddbmm(bias.unsqueeze(1), x, weight.mT)
        # A shared batch is one matrix product against all members' rows of W side by side.
        members, out_features, in_features = weight.shape
        flat = torch.addmm(bias.reshape(-1), x, weight.reshape(-1, in_features).t())
        return flat.view(x.shape[0], members, out_features).transpose(0, 1)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if x.dim() == 3:
            if ctx.needs_input_grad[0]:
                grad_x = torch.bmm(grad_out, weight)
            if ctx.needs_input_grad[1]:
                grad_weight = torch.bmm(grad_out.mT, x)
        else:
            # [K, batch, out] -> [batch, K * out]: the members' gradients side by side.
            flat = grad_out.transpose(0, 1).reshape(x.shape[0], -1)
            if ctx.needs_input_grad[0]:
                grad_x = flat.mm(weight.reshape(-1, weight.shape[2]))
            if ctx.needs_input_grad[1]:
                grad_weight = flat.t().mm(x).view_as(weight)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dim=1)
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

    dL/dx = (g - mean(g) - y * mean(g * y)) / sqrt(var + eps), per row (g = dL/dy). A row is the
    last dimension, so any leading dimensions (members, batch) work alike.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, eps: float = 1e-4):
        centred = x - x.mean(dim=-1, keepdim=True)
        spread = centred.pow(2).mean(dim=-1, keepdim=True).add_(eps).sqrt_()
        y = centred / spread
        ctx.save_for_backward(y, spread)
        return y

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor):
        y, spread = ctx.saved_tensors
        along = (grad_out * y).mean(dim=-1, keepdim=True)
        grad = grad_out - grad_out.mean(dim=-1, keepdim=True) - y * along
        return grad / spread, None


class CrossEntropy(torch.autograd.Function):
    """Softmax cross-entropy on logits z [..., batch, classes] against labels [..., batch].

    loss_i = -log q_i[label_i] with q_i = softmax(z_i), reduced over the batch dimension only:
    logits [K, batch, classes] of a stack give one loss per member, [K]; plain [batch, classes]
    give one number. PyTorch's fused log-softmax and softmax kernels compute log q and q with the
    row maximum subtracted (logits of +-1e4 stay finite), several times faster on small batches
    than composing the same steps from exp, sum and log. The gradient is ours:
    dloss_i/dz_i = q_i - onehot(label_i), scaled by each loss's incoming gradient.

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
        if labels.dim() != logits.dim() - 1:  # one set of labels for every member
            labels = labels.expand(logits.shape[:-1])
        index = labels.unsqueeze(-1)
        total = logits.log_softmax(dim=-1).gather(-1, index).sum(dim=(-2, -1)).neg_()
        ctx.save_for_backward(logits, index)
        ctx.reduction = reduction
        return total if reduction == "sum" else total / logits.shape[-2]

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor):
        logits, index = ctx.saved_tensors
        scale = grad_out if ctx.reduction == "sum" else grad_out / logits.shape[-2]
        scale = scale[..., None, None]  # one factor per loss, over its whole batch
        grad = logits.softmax(dim=-1).mul_(scale)  # q, scaled
        grad.scatter_add_(-1, index, scale.neg().expand_as(index))  # minus onehot, scaled
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
