"""Learning-rate schedule of both training stages: linear warmup, then cosine decay.

``warmup_cosine(step, warmup_steps=W, total_steps=T)`` is the factor that multiplies the peak
learning rate before optimizer step ``step + 1`` (``torch.optim.lr_scheduler.LambdaLR``
calls it with the number of ``scheduler.step()`` calls so far, starting at 0):

* ``step < W``: linear warmup ``(step + 1) / W`` (the first step already has a non-zero lr,
  the W-th reaches the peak);
* ``W <= step < T``: ``min_ratio + (1 - min_ratio) * (1 + cos(pi * (step - W) / (T - W))) / 2``,
  from 1 down to ``min_ratio`` (reached after the last step).

``make_scheduler(optimizer, warmup_steps, total_steps)`` wraps it in a ``LambdaLR`` (a
``functools.partial``, so the scheduler's ``state_dict`` round-trips through a checkpoint).
"""

from __future__ import annotations

import functools
import math

import torch


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr before optimizer step ``step + 1`` (see the module docstring)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps), got {warmup_steps}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                   min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`warmup_cosine`; call ``scheduler.step()`` after each optimizer step."""
    factor = functools.partial(warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps,
                               min_ratio=min_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


__all__ = ["warmup_cosine", "make_scheduler"]
