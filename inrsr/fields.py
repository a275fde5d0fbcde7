"""Fields: an encoding followed by a small MLP head, mapping normalised coordinates to values."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """``n_hidden_layers`` ReLU layers of width ``hidden`` and a linear output layer.

    ``zero_last`` starts the output at exactly 0 (used when the field learns a residual).
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden: int = 64, n_hidden_layers: int = 1, zero_last: bool = False
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(n_hidden_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        last = nn.Linear(width, out_dim)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Field(nn.Module):
    """``encoding`` then an MLP: ``(N, in_dim)`` in ``[-1, 1]`` -> ``(N, out_dim)``.

    ``out_dim = 2`` is read as the real and imaginary parts of a complex value by :meth:`complex`.
    """

    def __init__(
        self,
        encoding: nn.Module,
        out_dim: int = 1,
        hidden: int = 64,
        n_hidden_layers: int = 1,
        zero_last: bool = False,
    ) -> None:
        super().__init__()
        self.encoding = encoding
        self.in_dim = encoding.in_dim
        self.out_dim = out_dim
        self.head = MLP(encoding.out_dim, out_dim, hidden, n_hidden_layers, zero_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoding(x))

    def complex(self, x: torch.Tensor) -> torch.Tensor:
        """The field as complex values ``(N,)`` (needs ``out_dim == 2``)."""
        out = self(x)
        return torch.complex(out[:, 0].float(), out[:, 1].float())


class SineLayer(nn.Module):
    """``sin(w0 * (W x + b))`` with SIREN initialisation (Sitzmann et al. 2020)."""

    def __init__(self, in_dim: int, out_dim: int, w0: float, first: bool) -> None:
        super().__init__()
        self.w0 = w0
        self.linear = nn.Linear(in_dim, out_dim)
        bound = 1 / in_dim if first else math.sqrt(6 / in_dim) / w0
        nn.init.uniform_(self.linear.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * self.linear(x))


class SirenField(nn.Module):
    """A SIREN: sine activations throughout, linear output. ``(N, in_dim)`` -> ``(N, out_dim)``."""

    def __init__(
        self,
        in_dim: int = 3,
        out_dim: int = 1,
        hidden: int = 128,
        n_hidden_layers: int = 3,
        w0: float = 30.0,
        zero_last: bool = False,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        layers: list[nn.Module] = [SineLayer(in_dim, hidden, w0, first=True)]
        layers += [SineLayer(hidden, hidden, w0, first=False) for _ in range(n_hidden_layers - 1)]
        self.body = nn.Sequential(*layers)
        self.last = nn.Linear(hidden, out_dim)
        bound = math.sqrt(6 / hidden) / w0
        nn.init.uniform_(self.last.weight, -bound, bound)
        if zero_last:
            nn.init.zeros_(self.last.weight)
            nn.init.zeros_(self.last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.body(x))

    def complex(self, x: torch.Tensor) -> torch.Tensor:
        out = self(x)
        return torch.complex(out[:, 0].float(), out[:, 1].float())
