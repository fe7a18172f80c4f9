"""DecisionNCE-lite: the trainable two-tower model and its frozen form.

* ``DecisionNCELite(config)`` - image tower ``SmallResNet`` (upright float images (B, 3, H, W)
  in [0, 1] -> resized to ``config.image_size``, normalised -> (B, E)) and text tower
  ``TextProjection`` over frozen MiniLM sentence embeddings ((n, 384) -> (n, E)). Trained by
  ``clad_lite.encoders.decision_nce.train_encoder``.
* ``LiteEncoder`` - the same weights frozen behind the ``FrozenEncoder`` interface; this is
  what CLaD, the policy and the embedding cache use. ``LiteEncoder.load(path)`` reads a
  checkpoint written by ``save_checkpoint`` (strict key matching).

Checkpoint (``torch.save`` dict, written atomically): ``format`` = ``CHECKPOINT_FORMAT``,
``config`` (``EncoderConfig`` as a dict), ``state_dict`` (of ``DecisionNCELite``),
``text_table`` ({instruction: frozen 384-D MiniLM embedding} of the training instructions, so
that known instructions embed without loading MiniLM), ``text_base`` (which MiniLM),
``step`` and, once training finished, ``summary``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from clad_lite.encoders.augment import resize
from clad_lite.encoders.base import EncoderLoadError, FrozenEncoder, state_dict_digest
from clad_lite.encoders.config import EncoderConfig
from clad_lite.encoders.resnet import SmallResNet
from clad_lite.encoders.text import BASE_DIM, TextProjection, base_identity, sentence_embeddings

CHECKPOINT_FORMAT = "clad_lite/decision-nce-lite/v1"
# fixed input normalisation of the image tower (images in [0, 1])
IMAGE_MEAN, IMAGE_STD = 0.5, 0.25
# all-MiniLM-L6-v2, counted from the packaged model (frozen; part of the "VLM" count)
MINILM_PARAMETERS = 22_713_216


class DecisionNCELite(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.image_net = SmallResNet(config.widths, config.blocks, config.embed_dim, config.image_size)
        self.text_proj = TextProjection(config.embed_dim, BASE_DIM)

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """Upright float images (B, 3, H, W) in [0, 1] -> (B, E)."""
        x = resize(x, self.config.image_size)
        return self.image_net((x - IMAGE_MEAN) / IMAGE_STD)

    def text_features(self, base: torch.Tensor) -> torch.Tensor:
        """Frozen sentence embeddings (n, 384) -> (n, E)."""
        return self.text_proj(base)


def _architecture(config: EncoderConfig) -> dict:
    return {k: getattr(config, k) for k in ("embed_dim", "image_size", "widths", "blocks")}


def save_checkpoint(path: str | os.PathLike, model: DecisionNCELite, text_table: dict[str, torch.Tensor],
                    step: int, summary: dict | None = None) -> None:
    """Write a DecisionNCE-lite checkpoint atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": dataclasses.asdict(model.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "text_table": {k: v.detach().cpu().float() for k, v in text_table.items()},
        "text_base": base_identity(),
        "step": int(step),
        "summary": summary,
    }
    handle, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class LiteEncoder(FrozenEncoder):
    """Frozen DecisionNCE-lite (see the module docstring)."""

    def __init__(self, model: DecisionNCELite, text_table: dict[str, torch.Tensor] | None = None,
                 source: str | None = None):
        super().__init__()
        self.model = model
        self.config = model.config
        self.text_table = {k: v.float().cpu() for k, v in (text_table or {}).items()}
        self.source = source
        self.freeze()

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def _encode_float_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.image_features(x)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        base = sentence_embeddings(texts, known=self.text_table).to(self.device)
        return self.model.text_features(base)

    def hash(self) -> str:
        digest = hashlib.sha256()
        digest.update(CHECKPOINT_FORMAT.encode())
        digest.update(json.dumps(_architecture(self.config), sort_keys=True).encode())
        digest.update(f"norm={IMAGE_MEAN},{IMAGE_STD};text={base_identity()};".encode())
        state_dict_digest(digest, self.model.state_dict())
        return digest.hexdigest()

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "LiteEncoder":
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file
            raise EncoderLoadError(f"cannot read encoder checkpoint {path}: {error}") from error
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise EncoderLoadError(
                f"{path} is not a DecisionNCE-lite checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r}); "
                "for real DecisionNCE weights use the spec decisionnce:PATH")
        try:
            config = EncoderConfig(**payload["config"])
        except (TypeError, ValueError) as error:
            raise EncoderLoadError(f"{path}: bad encoder config: {error}") from error
        model = DecisionNCELite(config)
        try:
            result = model.load_state_dict(payload["state_dict"], strict=False)
        except RuntimeError as error:  # shape mismatches
            raise EncoderLoadError(f"{path}: state dict does not match DecisionNCE-lite: {error}") from error
        if result.missing_keys or result.unexpected_keys:
            raise EncoderLoadError(f"{path}: state dict does not match DecisionNCE-lite{_key_report(result)}")
        encoder = cls(model, payload.get("text_table") or {}, source=str(path))
        return encoder.to(device)


def _key_report(result) -> str:
    text = ""
    if result.missing_keys:
        text += f"\n  missing keys ({len(result.missing_keys)}): " + ", ".join(result.missing_keys)
    if result.unexpected_keys:
        text += f"\n  unexpected keys ({len(result.unexpected_keys)}): " + ", ".join(result.unexpected_keys)
    return text


def count_parameters(config: EncoderConfig, include_text_base: bool = True) -> int:
    """Parameters of DecisionNCE-lite (image tower + projection [+ frozen MiniLM])."""
    with torch.device("meta"):
        model = DecisionNCELite(config)
    count = sum(p.numel() for p in model.parameters())
    return count + (MINILM_PARAMETERS if include_text_base else 0)
