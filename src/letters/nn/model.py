"""The multilayer perceptron, built only from the hand-written Functions in letters.nn.autograd.

One MLP object is a stack of K >= 1 independent networks of the same shape ("members"): every
weight carries a leading member dimension, and one forward pass computes all K with batched
matrix products. A single network is a stack of one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from letters.nn.autograd import ACTIVATIONS, Linear, Standardize

INITS: tuple[str, ...] = ("normal", "kaiming", "xavier")
INPUT_NORMS: tuple[str, ...] = ("none", "standardize")


class LinearLayer(nn.Module):
    """Holds W [K, out, in] and b [K, out]; the arithmetic and its gradient live in
    autograd.Linear."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(members, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Linear.apply(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        members, out_features, in_features = self.weight.shape
        return f"members={members}, in_features={in_features}, out_features={out_features}"


class Activation(nn.Module):
    """Wraps one of the hand-written activation Functions so it shows in the module tree."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
        self.name = name
        self.function = ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function.apply(x)

    def extra_repr(self) -> str:
        return self.name


class MLP(nn.Module):
    """Linear layers with an activation after every layer but the last (which gives logits).

    ``hidden_sizes`` empty means a linear classifier. ``input_norm`` "standardize" gives each
    image zero mean and unit spread before the first layer. ``init`` "normal" is the reference's
    W ~ N(0, 1) with b = 0; "kaiming" and "xavier" scale W by the fan-in so that deeper and
    wider networks start with activations of unit size instead of exploding.

    ``inits`` and ``seeds`` give one entry per member: the stack has ``len(inits)`` members, and
    member k draws its weights from a generator seeded with ``seeds[k]`` alone, so it starts
    exactly as it would in a stack of one. ``seeds`` None draws from torch's global generator.
    Input: [batch, ...] (every member sees the same images) or [K, batch, features] (a batch
    per member); output: logits [K, batch, classes].
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        init: str | Sequence[str] = "normal",
        input_norm: str = "none",
        seeds: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        inits = [init] if isinstance(init, str) else list(init)
        if not inits:
            raise ValueError("a stack needs at least one member (one init)")
        if seeds is not None and len(seeds) != len(inits):
            raise ValueError(f"{len(inits)} inits but {len(seeds)} seeds: one of each per member")
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {list(INPUT_NORMS)}, got {input_norm!r}")
        self.input_norm = input_norm
        for name in inits:
            if name not in INITS:
                raise ValueError(f"init must be one of {list(INITS)}, got {name!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.input_size = input_size
        self.members = len(inits)  # a plain int: read at every forward
        sizes = [input_size, *hidden_sizes, output_size]
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(LinearLayer(len(inits), fan_in, fan_out))
            if index < len(sizes) - 2:
                layers.append(Activation(activation))
        self.layers = nn.Sequential(*layers)
        self.reset_parameters(inits, seeds)

    def reset_parameters(self, inits: Sequence[str], seeds: Sequence[int] | None = None) -> None:
        """Member k: W ~ N(0, std(init_k)) layer after layer from its own generator, b = 0."""
        linears = [layer for layer in self.layers if isinstance(layer, LinearLayer)]
        for member, init in enumerate(inits):
            generator = None if seeds is None else torch.Generator().manual_seed(seeds[member])
            for layer in linears:
                _, fan_out, fan_in = layer.weight.shape
                if init == "normal":
                    std = 1.0
                elif init == "kaiming":
                    std = math.sqrt(2.0 / fan_in)
                else:
                    std = math.sqrt(2.0 / (fan_in + fan_out))
                with torch.no_grad():
                    weight = torch.empty(fan_out, fan_in).normal_(0.0, std, generator=generator)
                    layer.weight[member].copy_(weight)
                    layer.bias[member].zero_()

    def keep_members(self, kept: Sequence[int]) -> None:
        """Keep only the members at positions ``kept`` (in this order): every weight becomes a
        new Parameter holding those members' rows. New leaves, not the old ones with their data
        replaced: autograd keeps a leaf's shape in its gradient accumulator, which outlives the
        change wherever a graph over the old weights is still held. An optimizer holding the
        old ones takes the new ones over (StackedOptimizer.keep_members)."""
        if not kept or len(set(kept)) != len(kept) or not all(0 <= k < self.members for k in kept):
            raise ValueError(f"members to keep: distinct positions in 0..{self.members - 1}")
        for layer in self.layers:
            if not isinstance(layer, LinearLayer):
                continue
            positions = torch.tensor(list(kept), device=layer.weight.device)
            for name in ("weight", "bias"):
                rows = getattr(layer, name).detach().index_select(0, positions)
                setattr(layer, name, nn.Parameter(rows))
        self.members = len(kept)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Shared images [batch, ...] -> [batch, features]; per-member batches
        [K, batch, features] pass as they are."""
        per_member = x.dim() == 3 and x.shape[0] == self.members and x.shape[2] == self.input_size
        if not per_member:
            x = x.flatten(1)
        return Standardize.apply(x) if self.input_norm == "standardize" else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.prepare(x))
