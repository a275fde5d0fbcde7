"""3D convolutional encoders of the encoder-decoder: a low-res volume -> a feature map at the same size.

Every encoder maps ``(B, 1, X, Y, Z)`` to ``(B, feature_dim, X, Y, Z)`` with 3x3x3 convolutions (zero padding
of 1, so the size is kept) and declares ``receptive_radius``: how many voxels away an input voxel can still change
an output feature. Tiled inference uses it as the halo that makes tiles agree with a whole-volume pass.

Variants (ArSSR, Wu et al. 2022): ``rdn`` (residual dense blocks), ``rescnn`` (residual blocks of plain convs) and
``srresnet`` (residual blocks conv-ReLU-conv); all take ``channels`` (64 in the paper) and ``feature_dim`` (128).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import ENCODERS


def conv3(c_in: int, c_out: int) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, kernel_size=3, padding=1)


class ResCNN(nn.Module):
    """``blocks`` residual blocks of ``convs`` conv+ReLU layers (paper: 3 x 6), then a conv to ``feature_dim``."""

    def __init__(self, channels: int = 64, feature_dim: int = 128, blocks: int = 3, convs: int = 6) -> None:
        super().__init__()
        self.head = conv3(1, channels)
        self.blocks = nn.ModuleList(
            nn.Sequential(*[m for _ in range(convs) for m in (conv3(channels, channels), nn.ReLU(inplace=True))])
            for _ in range(blocks)
        )
        self.tail = conv3(channels, feature_dim)
        self.receptive_radius = 2 + blocks * convs

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, X, Y, Z)`` -> ``(B, feature_dim, X, Y, Z)``."""
        h = self.head(x)
        for block in self.blocks:
            h = h + block(h)
        return self.tail(h)


class _DenseBlock(nn.Module):
    def __init__(self, channels: int, growth: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(conv3(channels + i * growth, growth), nn.ReLU(inplace=True)) for i in range(layers)
        )
        self.fuse = nn.Conv3d(channels + layers * growth, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch_cat(feats)))
        return x + self.fuse(torch_cat(feats))


def torch_cat(tensors: list[Tensor]) -> Tensor:
    return torch.cat(tensors, dim=1)


class RDN(nn.Module):
    """Residual dense network: ``blocks`` dense blocks of ``layers`` convs with ``growth`` channels (paper 8x3x64)."""

    def __init__(
        self, channels: int = 64, feature_dim: int = 128, blocks: int = 8, layers: int = 3, growth: int = 64
    ) -> None:
        super().__init__()
        self.head = nn.Sequential(conv3(1, channels), conv3(channels, channels))
        self.blocks = nn.ModuleList(_DenseBlock(channels, growth, layers) for _ in range(blocks))
        self.fuse = nn.Sequential(nn.Conv3d(blocks * channels, channels, kernel_size=1), conv3(channels, channels))
        self.tail = conv3(channels, feature_dim)
        self.receptive_radius = 4 + blocks * layers

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, X, Y, Z)`` -> ``(B, feature_dim, X, Y, Z)``."""
        shallow = self.head[0](x)
        h = self.head[1](shallow)
        outs = []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        return self.tail(self.fuse(torch_cat(outs)) + shallow)


class SRResNet(nn.Module):
    """``blocks`` residual blocks conv-ReLU-conv (paper: 18), a global skip, then a conv to ``feature_dim``."""

    def __init__(self, channels: int = 64, feature_dim: int = 128, blocks: int = 18) -> None:
        super().__init__()
        self.head = conv3(1, channels)
        self.blocks = nn.ModuleList(
            nn.Sequential(conv3(channels, channels), nn.ReLU(inplace=True), conv3(channels, channels))
            for _ in range(blocks)
        )
        self.body_tail = conv3(channels, channels)
        self.tail = conv3(channels, feature_dim)
        self.receptive_radius = 3 + 2 * blocks

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, X, Y, Z)`` -> ``(B, feature_dim, X, Y, Z)``."""
        shallow = self.head(x)
        h = shallow
        for block in self.blocks:
            h = h + block(h)
        return self.tail(self.body_tail(h) + shallow)


def build_encoder(name: str, channels: int, feature_dim: int, blocks: int, depth: int) -> nn.Module:
    """An encoder by name. ``blocks`` counts its blocks; ``depth`` the convs per block (``rdn``: layers per dense
    block with growth ``channels``; ``rescnn``: convs per block; ``srresnet``: ignored, each block has 2)."""
    if name == "rescnn":
        return ResCNN(channels=channels, feature_dim=feature_dim, blocks=blocks, convs=depth)
    if name == "rdn":
        return RDN(channels=channels, feature_dim=feature_dim, blocks=blocks, layers=depth, growth=channels)
    if name == "srresnet":
        return SRResNet(channels=channels, feature_dim=feature_dim, blocks=blocks)
    raise ValueError(f"unknown encoder {name!r}; expected one of {', '.join(ENCODERS)}")
