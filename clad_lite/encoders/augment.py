"""The DecisionNCE augmentations, written in torch (there is no torchvision here).

DecisionNCE (``DecisionNCE/datasets/EpicKitchen_engine.py``) applies ``RandomResizedCrop``
once per trajectory (the same crop for every frame of a clip) and ``ColorJitter(0.5)``
(brightness only) to each frame independently. These functions do the same on batches of
upright float images (B, 3, H, W) in [0, 1], on any device:

* ``random_resized_crop(x, size, scale, ratio, generator, groups)`` - one crop per group of
  ``groups`` consecutive images (a clip's start and end frame share a crop), resized to
  ``size`` with bilinear sampling (``grid_sample``).
* ``color_jitter(x, brightness, contrast, saturation, hue, generator)`` - per image; factors
  drawn uniformly from [1 - b, 1 + b] (hue: a shift in [-hue, hue] of a turn, applied as a
  rotation in YIQ space).
* ``resize(x, size)`` - the deterministic (evaluation) path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < x.shape[-1])


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator).to(device) * (high - low) + low


def random_resized_crop(x: torch.Tensor, size: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3),
                        generator: torch.Generator | None = None, groups: int = 1) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size); the B/groups crops are shared within each group."""
    b = x.shape[0]
    if b % groups:
        raise ValueError(f"batch {b} is not a multiple of groups={groups}")
    n = b // groups
    area = _uniform(n, scale[0], scale[1], generator, "cpu")
    log_ratio = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator, "cpu")
    aspect = torch.exp(log_ratio)
    # crop width / height as fractions of the image side, clipped to the image
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * (1 - w) + w / 2) * 2 - 1  # centre in [-1, 1]
    cy = (torch.rand(n, generator=generator) * (1 - h) + h / 2) * 2 - 1
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    theta = theta.repeat_interleave(groups, dim=0).to(x.device, x.dtype)
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def color_jitter(x: torch.Tensor, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 hue: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image colour jitter of (B, 3, H, W) in [0, 1] (fixed order: b, c, s, h)."""
    b, device = x.shape[0], x.device
    shape = (b, 1, 1, 1)
    if brightness > 0:
        x = x * _uniform(b, max(0.0, 1 - brightness), 1 + brightness, generator, device).view(shape)
    if contrast > 0:
        factor = _uniform(b, max(0.0, 1 - contrast), 1 + contrast, generator, device).view(shape)
        mean = (x * torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = (x - mean.mean(dim=(2, 3), keepdim=True)) * factor + mean.mean(dim=(2, 3), keepdim=True)
    if saturation > 0:
        factor = _uniform(b, max(0.0, 1 - saturation), 1 + saturation, generator, device).view(shape)
        gray = (x * torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = (x - gray) * factor + gray
    if hue > 0:
        angle = _uniform(b, -hue, hue, generator, device) * 2 * math.pi
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.zeros(b, 3, 3, device=device)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
        to_yiq = _RGB_TO_YIQ.to(device)
        matrix = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # (B, 3, 3)
        x = torch.einsum("bij,bjhw->bihw", matrix, x)
    return x.clamp(0.0, 1.0)
