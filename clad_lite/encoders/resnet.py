"""A small ResNet image encoder, written in the project (DecisionNCE-lite's vision tower).

``SmallResNet(widths, blocks, embed_dim)``: (B, 3, S, S) normalised images -> (B, E).
A 3x3 stride-2 stem, then one stage per width of ``BasicBlock``s (two 3x3 convolutions with
BatchNorm and a residual connection; every stage after the first halves the resolution;
He et al. 2016, scaled down), then a linear projection of the *flattened* final feature map
to E. Not global average pooling: pooling throws away where things are, and an instruction
is visible in where objects move (CLIP's RN50 keeps position through the positional
embedding of its attention pooling; the flattened map is the cheap equivalent).

BatchNorm: while DecisionNCE-lite trains, BatchNorm uses batch statistics as usual. Once the
encoder is frozen (``clad_lite.encoders.lite.LiteEncoder``) the module is in eval mode for
good, so BatchNorm uses its stored running statistics and never updates them.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity (Goyal et al. 2017)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """(B, 3, S, S) -> (B, embed_dim) for S = ``image_size``; see the module docstring."""

    def __init__(self, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1), embed_dim: int = 256, image_size: int = 64):
        super().__init__()
        side = (image_size + 1) // 2  # after the stride-2 stem
        for _ in widths[1:]:
            side = (side + 1) // 2
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, in_ch = [], widths[0]
        for stage, (width, n_blocks) in enumerate(zip(widths, blocks)):
            for i in range(n_blocks):
                layers.append(BasicBlock(in_ch, width, stride=2 if (stage > 0 and i == 0) else 1))
                in_ch = width
        self.stages = nn.Sequential(*layers)
        self.final_side = side
        self.head = nn.Linear(in_ch * side * side, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(x.flatten(1))
