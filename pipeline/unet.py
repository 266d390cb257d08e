"""A compact U-Net (Ronneberger et al. 2015) for per-pixel mine-feature classes from Sentinel-2 composites.

Four levels of two 3x3 convolutions with normalisation, max-pool down and transposed-convolution up, skip
connections by concatenation, a 1x1 head. The normalisation is batch normalisation (``norm="batch"``, the first
models) or group normalisation (``norm="group"``: statistics of each chip's own channel groups, so a pixel's output
never depends on the batch it was trained or predicted in; chips from many regions with different radiometry made
batch statistics a source of error, see docs/segmentation.md). With the default widths (16, 32, 64, 128) it has about 0.48 M
parameters (1.9 MB as float32): enough for the 10 m texture and shape of pits, dumps and tailings, small enough to
ship inside the package and to run at several megapixels per second on two CPU cores. See docs/segmentation.md
for why this and not segmentation-models-pytorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F


#: How each level normalises its activations.
Norm = Literal["batch", "group"]


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(max(1, min(8, channels // 4)), channels)  # groups of at least 4 channels, at most 8 groups


def _double_conv(in_channels: int, out_channels: int, norm: Norm) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), _norm(norm, out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), _norm(norm, out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net returning class logits ``(batch, n_classes, H, W)`` for inputs ``(batch, in_channels, H, W)``.

    Parameters
    ----------
    in_channels : int
        Input channels (bands and indices).
    n_classes : int
        Output classes, class 0 being "not mining".
    widths : sequence of int
        Feature channels per level, finest first; ``len(widths) - 1`` poolings, so inputs must be multiples of
        :attr:`multiple` pixels.
    norm : {"batch", "group"}
        Batch normalisation or group normalisation (up to 8 groups of at least 4 channels).
    """

    def __init__(self, in_channels: int, n_classes: int, widths: Sequence[int] = (16, 32, 64, 128),
                 norm: Norm = "batch") -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"a U-Net needs at least two levels; got widths {list(widths)}")
        if norm not in ("batch", "group"):
            raise ValueError(f"norm {norm!r} must be 'batch' or 'group'")
        self.widths = tuple(int(w) for w in widths)
        self.down = nn.ModuleList()
        channels = in_channels
        for width in self.widths:
            self.down.append(_double_conv(channels, width, norm))
            channels = width
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for width in reversed(self.widths[:-1]):
            self.up.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
            self.merge.append(_double_conv(2 * width, width, norm))
            channels = width
        self.head = nn.Conv2d(channels, n_classes, 1)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (2 to the number of poolings)."""
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of ``x``."""
        skips = []
        for level, block in enumerate(self.down):
            x = block(x)
            if level < len(self.down) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
