"""``EncoderConfig``: the frozen semantic encoder of a profile, and how DecisionNCE-lite trains.

CLaD's semantic state is ``s = FiLM(v, l)`` with ``v`` / ``l`` from a frozen vision-language
model (the paper: DecisionNCE = CLIP RN50 trained with the DecisionNCE-T objective,
1024-D image and text embeddings). ``kind`` picks the encoder:

* ``"lite"``        - DecisionNCE-lite, trained in the project by ``python -m clad_lite
  train-encoder`` (``clad_lite.encoders.decision_nce``): a small ResNet image encoder
  (``widths`` x ``blocks``, input ``image_size``) and the frozen all-MiniLM-L6-v2 sentence
  encoder with a learned linear projection, both to ``embed_dim``.
* ``"decisionnce"`` - the real DecisionNCE weights (CLIP RN50, ``embed_dim = 1024``), loaded
  from ``decisionnce_checkpoint`` with the CLIP BPE vocabulary ``decisionnce_vocab``
  (``clad_lite.encoders.clip_rn50``). Nothing is trained; the training fields are unused.

Training fields (DecisionNCE-T, see ``decision_nce.py``): ``steps``, ``batch_size`` (clips per
step), ``lr`` / ``weight_decay`` / ``warmup_steps`` (AdamW, linear warmup - at most steps - 1 -
then cosine),
``temperature`` (DecisionNCE uses a fixed logit scale of 100, i.e. 0.01), ``clip_range``
(a clip's (end - start) length as a fraction of its demonstration, min and max),
``crop_scale`` / ``crop_ratio`` (RandomResizedCrop area and aspect-ratio ranges, one crop per clip as
DecisionNCE does; torchvision's ratio default (3/4, 4/3). ``crop_scale=[1,1] crop_ratio=[1,1]`` crops
nothing: every crop shifts and zooms the scene, which teaches the encoder to discount where things
stand, while the policy needs their positions to the centimetre),
``color_jitter`` (brightness, contrast, saturation, hue; per frame as DecisionNCE does;
DecisionNCE used brightness 0.5 only), ``cameras`` (each clip uses one camera, drawn
uniformly: both cameras get embeddings from the same network), ``holdout_frac`` (demos
per task held out for the retrieval check), ``eval_clips_per_demo``, ``save_every``
(periodic checkpoints, 0 = only at the end), ``threads`` (torch threads, 0 = leave as is),
``seed`` (3407, the CLaD authors' seed).

``ENCODER_PRESETS``:

* ``"ci"``    - seconds on 2 CPU cores: E = 64, a 4-stage ResNet of widths 8..64 at 48 px.
* ``"cpu"``   - tens of minutes on 2 CPU cores: E = 256, widths 16..128 at 64 px.
* ``"paper"`` - the real DecisionNCE (``kind="decisionnce"``, E = 1024). Its weights cannot be
  downloaded here: set ``decisionnce_checkpoint`` / ``decisionnce_vocab`` (e.g.
  ``--set encoder.decisionnce_checkpoint=/path/DecisionNCE-T.pth``) on a machine that has them.
  Without them the paper profile can use ``kind="lite"`` with ``embed_dim=1024``.

This module imports nothing heavy, so ``clad_lite.config`` can import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

ENCODER_KINDS = ("lite", "decisionnce")
CAMERA_KEYS = ("agentview_rgb", "eye_in_hand_rgb")


def _check(condition: bool, field: str, value, expectation: str) -> None:
    if not condition:
        raise ValueError(f"encoder.{field}={value!r}: {expectation}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class EncoderConfig:
    """The frozen encoder and DecisionNCE-lite's training run (see the module docstring)."""

    kind: str = "lite"
    embed_dim: int = 64
    image_size: int = 48
    widths: tuple[int, ...] = (8, 16, 32, 64)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    steps: int = 150
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 10
    temperature: float = 0.05
    clip_range: tuple[float, ...] = (0.25, 1.0)
    crop_scale: tuple[float, ...] = (0.6, 1.0)
    crop_ratio: tuple[float, ...] = (3 / 4, 4 / 3)
    color_jitter: tuple[float, ...] = (0.5, 0.0, 0.0, 0.0)
    cameras: tuple[str, ...] = CAMERA_KEYS
    holdout_frac: float = 0.1
    eval_clips_per_demo: int = 10
    save_every: int = 0
    log_every: int = 10
    threads: int = 0
    seed: int = 3407
    decisionnce_checkpoint: str = ""
    decisionnce_vocab: str = ""

    def __post_init__(self) -> None:
        # tuples may arrive as lists (JSON, checkpoints)
        for name in ("widths", "blocks", "clip_range", "crop_scale", "crop_ratio", "color_jitter", "cameras"):
            setattr(self, name, tuple(getattr(self, name)))
        _check(self.kind in ENCODER_KINDS, "kind", self.kind, f"must be one of {ENCODER_KINDS}")
        for name in ("embed_dim", "image_size", "steps", "batch_size", "eval_clips_per_demo", "log_every"):
            value = getattr(self, name)
            _check(_is_int(value) and value > 0, name, value, "must be a positive int")
        for name in ("warmup_steps", "save_every", "threads", "seed"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 0, name, value, "must be an int >= 0")
        _check(self.image_size >= 16, "image_size", self.image_size, "must be >= 16")
        _check(len(self.widths) > 0 and all(_is_int(w) and w > 0 for w in self.widths), "widths",
               self.widths, "must be positive ints")
        _check(len(self.blocks) == len(self.widths) and all(_is_int(b) and b > 0 for b in self.blocks),
               "blocks", self.blocks, f"must be {len(self.widths)} positive ints (one per width)")
        _check(self.lr > 0, "lr", self.lr, "must be > 0")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        _check(self.temperature > 0, "temperature", self.temperature, "must be > 0")
        _check(len(self.clip_range) == 2 and 0.0 <= self.clip_range[0] <= self.clip_range[1] <= 1.0,
               "clip_range", self.clip_range, "must be (min, max) with 0 <= min <= max <= 1")
        _check(len(self.crop_scale) == 2 and 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0,
               "crop_scale", self.crop_scale, "must be (min, max) with 0 < min <= max <= 1")
        _check(len(self.crop_ratio) == 2 and 0.0 < self.crop_ratio[0] <= self.crop_ratio[1],
               "crop_ratio", self.crop_ratio, "must be (min, max) width / height with 0 < min <= max")
        _check(len(self.color_jitter) == 4 and all(j >= 0 for j in self.color_jitter)
               and self.color_jitter[3] <= 0.5, "color_jitter", self.color_jitter,
               "must be (brightness, contrast, saturation, hue) >= 0 with hue <= 0.5")
        _check(len(self.cameras) > 0 and all(c in CAMERA_KEYS for c in self.cameras)
               and len(set(self.cameras)) == len(self.cameras), "cameras", self.cameras,
               f"must be distinct names from {CAMERA_KEYS}")
        _check(0.0 < self.holdout_frac < 1.0, "holdout_frac", self.holdout_frac, "must be in (0, 1)")
        if self.kind == "decisionnce":
            _check(self.embed_dim == 1024, "embed_dim", self.embed_dim, "must be 1024 for kind='decisionnce' (CLIP RN50)")

    @property
    def spec(self) -> str | None:
        """``load_encoder`` spec of a ``decisionnce`` encoder (None for ``lite``: its checkpoint path is the spec)."""
        if self.kind != "decisionnce":
            return None
        spec = f"decisionnce:{self.decisionnce_checkpoint}"
        return spec + (f",vocab={self.decisionnce_vocab}" if self.decisionnce_vocab else "")


ENCODER_PRESETS: dict[str, EncoderConfig] = {
    "ci": EncoderConfig(),
    "cpu": EncoderConfig(embed_dim=256, image_size=64, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1),
                         steps=2000, batch_size=64, lr=1e-3, warmup_steps=100, save_every=500, log_every=25,
                         eval_clips_per_demo=20),
    "paper": EncoderConfig(kind="decisionnce", embed_dim=1024, image_size=224),
}
