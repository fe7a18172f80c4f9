"""The frozen semantic encoder of CLaD: s = FiLM(v, l), with v and l from a frozen VLM.

The paper uses DecisionNCE (CLIP RN50 trained with the DecisionNCE-T objective, 1024-D image
and text embeddings). Its weights cannot be downloaded here, so the project provides:

* DecisionNCE-lite, trained in the project (``python -m clad_lite train-encoder``):
  ``resnet.py`` (image tower), ``text.py`` (frozen all-MiniLM-L6-v2 + learned projection),
  ``lite.py`` (model, checkpoint, frozen ``LiteEncoder``), ``decision_nce.py`` (the
  DecisionNCE-T loss, training, retrieval check), ``augment.py`` (DecisionNCE's
  augmentations), ``data.py`` (reading LIBERO HDF5 demonstrations).
* A real DecisionNCE loader (``clip_rn50.py``): CLIP RN50 (ModifiedResNet + text transformer
  + BPE tokenizer) with strict key matching.
* An embedding cache (``cache.py``, ``python -m clad_lite embed``): per-frame and
  per-instruction embeddings computed once, keyed by the encoder's hash.
* ``config.py``: ``EncoderConfig`` and its ``ENCODER_PRESETS`` (ci / cpu / paper).

Both encoders implement ``FrozenEncoder`` (``base.py``): ``encode_images(uint8 (B, H, W, 3)
as stored, camera=...) -> (B, E)``, ``encode_text(list[str]) -> (n, E)``, ``embed_dim``,
``hash()``; always eval mode, no gradients, BatchNorm statistics never drift.
``load_encoder(spec)``: spec = a DecisionNCE-lite checkpoint path, or
``decisionnce:CKPT[,vocab=VOCAB]`` for the real weights - swapping encoders is one argument.

Names are imported lazily, so ``clad_lite.encoders.config`` stays cheap to import.
"""

from importlib import import_module

_LAZY = {
    "FrozenEncoder": "clad_lite.encoders.base",
    "EncoderLoadError": "clad_lite.encoders.base",
    "load_encoder": "clad_lite.encoders.base",
    "canonical_camera": "clad_lite.encoders.base",
    "EncoderConfig": "clad_lite.encoders.config",
    "ENCODER_PRESETS": "clad_lite.encoders.config",
    "DecisionNCELite": "clad_lite.encoders.lite",
    "LiteEncoder": "clad_lite.encoders.lite",
    "decision_nce_t_loss": "clad_lite.encoders.decision_nce",
    "train_encoder": "clad_lite.encoders.decision_nce",
    "evaluate_retrieval": "clad_lite.encoders.decision_nce",
    "DecisionNCEEncoder": "clad_lite.encoders.clip_rn50",
    "load_decisionnce": "clad_lite.encoders.clip_rn50",
    "EmbeddingCache": "clad_lite.encoders.cache",
    "embed_directory": "clad_lite.encoders.cache",
    "cache_dir_for": "clad_lite.encoders.cache",
}


def frozen_encoder_parameters(name: str) -> int | None:
    """Parameters of the frozen encoder of preset ``name`` (hook used by ``python -m clad_lite params``).

    lite: image tower + text projection + the frozen all-MiniLM-L6-v2 (22,713,216);
    decisionnce: CLIP RN50, built on the meta device.
    """
    from clad_lite.encoders.config import ENCODER_PRESETS

    if name not in ENCODER_PRESETS:
        return None
    config = ENCODER_PRESETS[name]
    if config.kind == "decisionnce":
        from clad_lite.encoders.clip_rn50 import CLIPConfig, count_parameters as count_clip

        return count_clip(CLIPConfig())
    from clad_lite.encoders.lite import count_parameters

    return count_parameters(config)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clad_lite.encoders' has no attribute {name!r}")


__all__ = sorted(_LAZY) + ["frozen_encoder_parameters"]
