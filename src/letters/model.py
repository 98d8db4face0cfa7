"""The multilayer perceptron, built only from the hand-written Functions in letters.autograd."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from letters.autograd import ACTIVATIONS, Linear, Standardize

INITS: tuple[str, ...] = ("normal", "kaiming", "xavier")
INPUT_NORMS: tuple[str, ...] = ("none", "standardize")


class LinearLayer(nn.Module):
    """Holds W [out, in] and b [out]; the arithmetic and its gradient live in autograd.Linear."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Linear.apply(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}"


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
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        init: str = "normal",
        input_norm: str = "none",
    ) -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {list(INPUT_NORMS)}, got {input_norm!r}")
        self.input_norm = input_norm
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        sizes = [input_size, *hidden_sizes, output_size]
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(LinearLayer(fan_in, fan_out))
            if index < len(sizes) - 2:
                layers.append(Activation(activation))
        self.layers = nn.Sequential(*layers)
        self.reset_parameters(init)

    def reset_parameters(self, init: str) -> None:
        for layer in self.layers:
            if not isinstance(layer, LinearLayer):
                continue
            fan_out, fan_in = layer.weight.shape
            if init == "normal":
                std = 1.0
            elif init == "kaiming":
                std = math.sqrt(2.0 / fan_in)
            else:
                std = math.sqrt(2.0 / (fan_in + fan_out))
            with torch.no_grad():
                layer.weight.normal_(0.0, std)
                layer.bias.zero_()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return Standardize.apply(x) if self.input_norm == "standardize" else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.prepare(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's output (the input itself for a linear classifier)."""
        return self.layers[:-1](self.prepare(x))
