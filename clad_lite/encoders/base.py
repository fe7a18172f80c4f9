"""The frozen-encoder interface shared by DecisionNCE-lite and the real DecisionNCE.

Every encoder is an ``nn.Module`` that is frozen for good: ``requires_grad`` is off, it is in
eval mode and ``train()`` cannot switch it back (so BatchNorm running statistics never drift
when a parent module is put in training mode - the CLaD authors' code let them drift), and
every ``encode_*`` call runs under ``torch.no_grad()``.

* ``encode_images(images, camera="agentview_rgb", augment=None) -> (B, E) float32`` -
  ``images`` are uint8 (B, H, W, 3) frames *as stored* in LIBERO HDF5 files (upside down;
  the encoder flips them upright), numpy or torch. ``augment`` (optional) maps upright float
  images (B, 3, H, W) in [0, 1] to the same - the online path for augmentation experiments.
* ``encode_text(list[str]) -> (n, E) float32``.
* ``embed_dim`` (E), ``hash()`` - a stable hex digest of everything that determines the
  embeddings (weights, preprocessing, text model); embedding caches are keyed by it.

``load_encoder(spec)`` builds one: ``spec`` is a DecisionNCE-lite checkpoint path written by
``python -m clad_lite train-encoder``, or ``decisionnce:CKPT[,vocab=VOCAB]`` for the real
DecisionNCE weights (CLIP RN50) with the CLIP BPE vocabulary file (default: the file
``bpe_simple_vocab_16e6.txt.gz`` next to ``CKPT``), or an encoder instance (returned as is).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

CAMERA_KEYS = ("agentview_rgb", "eye_in_hand_rgb")
CAMERA_ALIASES = {
    "agentview_rgb": "agentview_rgb", "agentview": "agentview_rgb", "agentview_image": "agentview_rgb",
    "eye_in_hand_rgb": "eye_in_hand_rgb", "eye_in_hand": "eye_in_hand_rgb", "wrist": "eye_in_hand_rgb",
    "robot0_eye_in_hand_image": "eye_in_hand_rgb",
}


class EncoderLoadError(ValueError):
    """An encoder spec, checkpoint or vocabulary that cannot be loaded (the message says why)."""


def canonical_camera(camera: str) -> str:
    """The HDF5 obs key of a camera name or alias ("agentview", "wrist", ...)."""
    try:
        return CAMERA_ALIASES[camera]
    except KeyError:
        raise ValueError(f"unknown camera {camera!r}; expected one of {sorted(CAMERA_ALIASES)}") from None


def stored_to_float(images, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, H, W, 3) frames as stored (upside down) -> upright float (B, 3, H, W) in [0, 1]."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a numpy array or torch tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (B, H, W, 3), got {tuple(images.shape)} {images.dtype}")
    x = images.to(device).flip(1)  # rows: upside down (OpenGL) -> upright
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def state_dict_digest(digest, state_dict: dict) -> None:
    """Feed names, shapes, dtypes and bytes of a state dict into a hashlib digest (stable order)."""
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


class FrozenEncoder(nn.Module):
    """Base class: a frozen vision-language encoder (see the module docstring)."""

    embed_dim: int

    def freeze(self) -> "FrozenEncoder":
        self.requires_grad_(False)
        super().train(False)
        return self

    def train(self, mode: bool = True) -> "FrozenEncoder":  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    def encode_images(self, images, camera: str = "agentview_rgb", augment=None) -> torch.Tensor:
        canonical_camera(camera)
        with torch.no_grad():
            x = stored_to_float(images, self.device)
            if augment is not None:
                x = augment(x)
            return self._encode_float_images(x).float()

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings")
        with torch.no_grad():
            return self._encode_text(list(texts)).float()

    def _encode_float_images(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def hash(self) -> str:
        raise NotImplementedError


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``"decisionnce:CKPT,vocab=V"`` -> ("decisionnce", CKPT, {"vocab": V}); a path -> ("lite", path, {})."""
    if spec.startswith("decisionnce:"):
        body = spec[len("decisionnce:"):]
        path, *options = body.split(",")
        parsed = {}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep or key not in ("vocab",):
                raise EncoderLoadError(f"bad option {option!r} in encoder spec {spec!r}; "
                                       "expected decisionnce:CKPT[,vocab=VOCAB]")
            parsed[key] = value
        if not path:
            raise EncoderLoadError(f"encoder spec {spec!r} names no checkpoint; expected decisionnce:CKPT[,vocab=VOCAB]")
        return "decisionnce", path, parsed
    return "lite", spec, {}


def load_encoder(spec, device: str | torch.device = "cpu") -> FrozenEncoder:
    """A frozen encoder from a spec (see the module docstring). Raises ``EncoderLoadError``."""
    if isinstance(spec, FrozenEncoder):
        return spec
    kind, path, options = parse_spec(str(spec))
    if not Path(path).is_file():
        raise EncoderLoadError(f"encoder checkpoint not found: {path}")
    if kind == "decisionnce":
        from clad_lite.encoders.clip_rn50 import load_decisionnce

        return load_decisionnce(path, vocab_path=options.get("vocab"), device=device)
    from clad_lite.encoders.lite import LiteEncoder

    return LiteEncoder.load(path, device=device)
