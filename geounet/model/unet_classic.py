"""The U-Net of the 2015 paper (Ronneberger, Fischer and Brox), for users who follow it.

Five levels of 64-128-256-512-1024 channels, two 3×3 convolutions per level followed by ReLU
(with optional batch normalisation, which the paper predates), 2×2 max pooling on the way down,
2×2 transposed convolutions on the way up, skip connections by concatenation, dropout at the
bottom and He (Kaiming normal) initialisation. Unlike the paper, the convolutions are padded
(``padding=1``) so the output has the size of the input whenever height and width are multiples
of 16; tiled inference then needs no cropping arithmetic.

Example:
    >>> import torch
    >>> net = ClassicUNet(in_channels=3, classes=2, base_channels=4)
    >>> net(torch.zeros(1, 3, 32, 48)).shape
    torch.Size([1, 2, 32, 48])
"""

from __future__ import annotations

import torch
from torch import nn

from geounet.core.errors import InvalidParameterError

__all__ = ["ClassicUNet"]


def _double_conv(c_in: int, c_out: int, batchnorm: bool) -> nn.Sequential:
    """Two 3×3 convolutions, each followed by (batch norm and) ReLU."""
    layers: list[nn.Module] = []
    for c in (c_in, c_out):
        layers.append(nn.Conv2d(c, c_out, kernel_size=3, padding=1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ClassicUNet(nn.Module):
    """The paper's U-Net with same-size padding.

    Args:
        in_channels: Number of input bands.
        classes: Number of output classes (logits per pixel).
        base_channels: Channels of the first level (64 in the paper); level ``i`` has
            ``base_channels * 2**i``. Small values make tiny test networks.
        depth: Number of poolings (4 in the paper); inputs must be multiples of ``2**depth``.
        batchnorm: Add batch normalisation after each convolution (not in the paper, but it
            makes training from scratch far less sensitive to the learning rate).
        dropout: Dropout probability at the bottom of the network (the paper uses 0.5).
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        base_channels: int = 64,
        depth: int = 4,
        batchnorm: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if in_channels < 1 or classes < 1 or base_channels < 1 or depth < 1:
            raise InvalidParameterError(
                "ClassicUNet needs in_channels, classes, base_channels and depth >= 1, got "
                f"{in_channels}, {classes}, {base_channels}, {depth}."
            )
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.down = nn.ModuleList()
        c_prev = in_channels
        for w in widths:
            self.down.append(_double_conv(c_prev, w, batchnorm))
            c_prev = w
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for w_hi, w_lo in zip(reversed(widths[1:]), reversed(widths[:-1])):
            self.up.append(nn.ConvTranspose2d(w_hi, w_lo, kernel_size=2, stride=2))
            self.up_conv.append(_double_conv(2 * w_lo, w_lo, batchnorm))
        self.head = nn.Conv2d(widths[0], classes, kernel_size=1)
        self._init_weights()

    def _init_weights(self) -> None:
        """He (Kaiming normal) initialisation for the ReLU network, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes, H, W)`` for an input ``(N, in_channels, H, W)``."""
        h, w = x.shape[-2:]
        k = 2**self.depth
        if h % k or w % k:
            raise InvalidParameterError(
                f"ClassicUNet input must be a multiple of {k} pixels high and wide, got {h}×{w}; "
                "pad or crop the tile (tiled inference does this for you)."
            )
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        x = self.dropout(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips)):
            x = conv(torch.cat([skip, up(x)], dim=1))
        return self.head(x)
