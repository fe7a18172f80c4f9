"""The real DecisionNCE encoder: CLIP RN50 (architecture, BPE tokenizer, strict loader).

DecisionNCE (Li et al. 2024) fine-tunes OpenAI CLIP RN50 with the DecisionNCE-T objective; its
``DecisionNCE.load`` wraps CLIP as ``CLIPBasedEncoder.model``, so a released checkpoint holds
CLIP's state dict with keys prefixed ``model.`` (optionally inside ``{"model": ...}``).
This module re-implements CLIP's ``model.py`` (ResNet variant) with CLIP's exact parameter
names, so such a checkpoint - or a plain OpenAI CLIP RN50 state dict - loads with strict key
matching:

* ``ModifiedResNet`` - 3-conv stem, anti-aliased (avg-pool) strided Bottlenecks,
  ``AttentionPool2d`` (``visual.*``); ``Transformer`` text encoder with causal mask,
  ``token_embedding``, ``positional_embedding``, ``ln_final``, ``text_projection``,
  ``logit_scale``. ``CLIPConfig()`` = RN50: embed_dim 1024, layers (3, 4, 6, 3), width 64,
  224 px, context 77, vocab 49408, text width 512, 8 heads, 12 layers (102,007,137 params).
* ``SimpleTokenizer`` - CLIP's byte-level BPE. Its vocabulary file
  (``bpe_simple_vocab_16e6.txt.gz``, shipped with OpenAI's ``clip`` package) is not in any
  package installed here, so the user gives its path next to the checkpoint.
* ``load_decisionnce(ckpt, vocab_path=None)`` -> ``DecisionNCEEncoder`` (a ``FrozenEncoder``).
  The architecture is read from the state dict's shapes (as CLIP's ``build_model`` does), then
  the state dict is loaded strictly: any missing or unexpected key raises
  ``CheckpointKeyError`` listing them. Preprocessing as DecisionNCE: flip upright, resize the
  short side to 224 (bilinear), centre crop, CLIP mean/std normalisation.

Spec for ``load_encoder``: ``decisionnce:/path/DecisionNCE-T.pth,vocab=/path/bpe_simple_vocab_16e6.txt.gz``
(the vocab defaults to that file name next to the checkpoint).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import regex as re
import torch
import torch.nn.functional as F
from torch import nn

from clad_lite.encoders.base import EncoderLoadError, FrozenEncoder, file_sha256

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
# keys OpenAI's JIT checkpoints carry that are not parameters (CLIP's build_model drops them)
IGNORED_KEYS = ("input_resolution", "context_length", "vocab_size")


class CheckpointKeyError(EncoderLoadError):
    """A state dict whose keys do not match the architecture (lists missing / unexpected keys)."""

    def __init__(self, path, missing, unexpected, shape_errors=()):
        self.missing, self.unexpected, self.shape_errors = list(missing), list(unexpected), list(shape_errors)
        lines = [f"{path}: the checkpoint does not match CLIP RN50 (strict key matching)"]
        if self.missing:
            lines.append(f"  missing keys ({len(self.missing)}): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append(f"  unexpected keys ({len(self.unexpected)}): " + ", ".join(self.unexpected))
        if self.shape_errors:
            lines.append(f"  shape mismatches ({len(self.shape_errors)}): " + "; ".join(self.shape_errors))
        super().__init__("\n".join(lines))


@dataclass
class CLIPConfig:
    embed_dim: int = 1024
    image_resolution: int = 224
    vision_layers: tuple[int, ...] = (3, 4, 6, 3)
    vision_width: int = 64
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 12


# ------------------------------------------------------------------------------ vision
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int | None = None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(start_dim=2).permute(2, 0, 1)  # (HW, N, C)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)  # (HW+1, N, C)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False)
        return x.squeeze(0)


class ModifiedResNet(nn.Module):
    def __init__(self, layers, output_dim: int, heads: int, input_resolution: int = 224, width: int = 64):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.conv1.weight.dtype)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.relu3(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


# -------------------------------------------------------------------------------- text
class LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int, attn_mask: torch.Tensor | None = None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model)
        self.attn_mask = attn_mask

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.attn_mask.to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor | None = None):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class CLIP(nn.Module):
    """OpenAI CLIP with the ModifiedResNet vision tower, parameter names as in CLIP's model.py."""

    def __init__(self, config: CLIPConfig):
        super().__init__()
        c = config
        self.config = c
        self.context_length = c.context_length
        self.visual = ModifiedResNet(c.vision_layers, c.embed_dim, c.vision_width * 32 // 64,
                                     c.image_resolution, c.vision_width)
        mask = torch.empty(c.context_length, c.context_length).fill_(float("-inf")).triu_(1)
        self.transformer = Transformer(c.transformer_width, c.transformer_layers, c.transformer_heads, mask)
        self.vocab_size = c.vocab_size
        self.token_embedding = nn.Embedding(c.vocab_size, c.transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(c.context_length, c.transformer_width))
        self.ln_final = LayerNorm(c.transformer_width)
        self.text_projection = nn.Parameter(torch.empty(c.transformer_width, c.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * torch.log(torch.tensor(1 / 0.07)))
        if not self.positional_embedding.is_meta:
            nn.init.normal_(self.token_embedding.weight, std=0.02)
            nn.init.normal_(self.positional_embedding, std=0.01)
            nn.init.normal_(self.text_projection, std=c.transformer_width ** -0.5)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.text_projection


def count_parameters(config: CLIPConfig) -> int:
    with torch.device("meta"):
        model = CLIP(config)
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- tokenizer
@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(zip(word[:-1], word[1:]))


def _clean(text: str) -> str:
    try:  # CLIP fixes mojibake with ftfy; optional here
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class SimpleTokenizer:
    """CLIP's BPE tokenizer from a merges file (``bpe_simple_vocab_16e6.txt.gz`` or plain text).

    The first line of the file is a header; at most 49152 - 256 - 2 merges are used (CLIP's
    cut). Vocabulary: 256 byte symbols, the same with ``</w>``, one token per merge, then
    ``<|startoftext|>`` and ``<|endoftext|>`` (49408 tokens for CLIP's file).
    """

    def __init__(self, bpe_path: str | os.PathLike):
        path = Path(bpe_path)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            lines = handle.read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1] if line.strip()]
        if any(len(m) != 2 for m in merges):
            raise EncoderLoadError(f"{path}: not a BPE merges file (every line after the header must be 'a b')")
        self.byte_encoder = bytes_to_unicode()
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}
        self.pat = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                              re.IGNORECASE)
        self.sot, self.eot = self.encoder["<|startoftext|>"], self.encoder["<|endoftext|>"]

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        result = " ".join(word)
        self.cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        tokens = []
        for token in re.findall(self.pat, _clean(text).lower()):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            tokens.extend(self.encoder[piece] for piece in self.bpe(token).split(" "))
        return tokens

    def tokenize(self, texts: list[str], context_length: int = 77) -> torch.Tensor:
        """(n, context_length) int64: [sot, tokens..., eot, 0...]; too long texts are truncated (eot kept)."""
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            tokens = [self.sot] + self.encode(text) + [self.eot]
            if len(tokens) > context_length:
                tokens = tokens[:context_length]
                tokens[-1] = self.eot
            result[i, :len(tokens)] = torch.tensor(tokens)
        return result


# ------------------------------------------------------------------------------ loading
def unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    """A CLIP state dict from a DecisionNCE / CLIP checkpoint: unwraps {"model": ...} /
    {"state_dict": ...}, strips the ``module.`` and ``model.`` prefixes, drops IGNORED_KEYS."""
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise EncoderLoadError(f"expected a state dict, found {type(obj).__name__}")
    state = dict(obj)
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in IGNORED_KEYS}


REQUIRED_FOR_SHAPES = ("visual.layer1.0.conv1.weight", "visual.attnpool.positional_embedding", "text_projection",
                       "positional_embedding", "token_embedding.weight", "ln_final.weight")


def infer_config(state: dict[str, torch.Tensor], path="checkpoint") -> CLIPConfig:
    """The CLIP ResNet hyper-parameters implied by a state dict (as CLIP's build_model)."""
    absent = [k for k in REQUIRED_FOR_SHAPES if k not in state]
    if absent:  # cannot even read the architecture: report what is missing (and the foreign keys)
        foreign = [k for k in state if not k.startswith(("visual.", "transformer.")) and k not in
                   ("token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias",
                    "text_projection", "logit_scale")]
        raise CheckpointKeyError(f"{path} (cannot infer the CLIP architecture)", absent, foreign)
    vision_layers = tuple(len({k.split(".")[2] for k in state if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4))
    output_width = round((state["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
    width = state["ln_final.weight"].shape[0]
    return CLIPConfig(
        embed_dim=state["text_projection"].shape[1],
        image_resolution=output_width * 32,
        vision_layers=vision_layers,
        vision_width=state["visual.layer1.0.conv1.weight"].shape[0],
        context_length=state["positional_embedding"].shape[0],
        vocab_size=state["token_embedding.weight"].shape[0],
        transformer_width=width,
        transformer_heads=max(1, width // 64),
        transformer_layers=len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")}),
    )


def build_clip(state: dict[str, torch.Tensor], config: CLIPConfig | None = None, path="checkpoint") -> CLIP:
    """A CLIP model with ``state`` loaded strictly (``CheckpointKeyError`` lists every mismatch)."""
    config = config or infer_config(state, path)
    model = CLIP(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        raise CheckpointKeyError(path, missing, unexpected, shapes)
    model.load_state_dict(state, strict=True)
    return model.float()


class DecisionNCEEncoder(FrozenEncoder):
    """Frozen DecisionNCE (CLIP RN50) behind the ``FrozenEncoder`` interface."""

    def __init__(self, clip: CLIP, tokenizer: SimpleTokenizer, digest: str, source: str | None = None):
        super().__init__()
        if tokenizer.vocab_size != clip.vocab_size:
            raise EncoderLoadError(f"the BPE vocabulary has {tokenizer.vocab_size} tokens but the checkpoint's "
                                   f"token embedding has {clip.vocab_size}: wrong vocabulary file?")
        self.clip = clip
        self.tokenizer = tokenizer
        self._digest = digest
        self.source = source
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    @property
    def embed_dim(self) -> int:
        return self.clip.config.embed_dim

    def _encode_float_images(self, x: torch.Tensor) -> torch.Tensor:
        size = self.clip.config.image_resolution
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bilinear",
                          align_corners=False)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top:top + size, left:left + size]
        return self.clip.encode_image((x - self.mean) / self.std)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer.tokenize(texts, self.clip.context_length).to(self.device)
        return self.clip.encode_text(tokens)

    def hash(self) -> str:
        return self._digest


def load_decisionnce(path: str | os.PathLike, vocab_path: str | os.PathLike | None = None,
                     device: str | torch.device = "cpu", config: CLIPConfig | None = None) -> DecisionNCEEncoder:
    """Load real DecisionNCE (or CLIP RN50) weights strictly; see the module docstring."""
    path = Path(path)
    vocab = Path(vocab_path) if vocab_path else path.parent / DEFAULT_VOCAB_NAME
    if not vocab.is_file():
        raise EncoderLoadError(
            f"CLIP BPE vocabulary not found: {vocab}. It is not shipped by any installed package; copy "
            f"{DEFAULT_VOCAB_NAME} (from OpenAI's clip package) next to the checkpoint, or give it with "
            "decisionnce:CKPT,vocab=PATH")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise EncoderLoadError(f"cannot read DecisionNCE checkpoint {path}: {error}") from error
    state = unwrap_state_dict(payload)
    clip = build_clip(state, config, path)
    digest = hashlib.sha256()
    digest.update(b"clad_lite/decisionnce-clip/v1;")
    digest.update(f"{asdict(clip.config)};mean={CLIP_MEAN};std={CLIP_STD};".encode())
    digest.update(file_sha256(path).encode())
    digest.update(file_sha256(vocab).encode())
    return DecisionNCEEncoder(clip, SimpleTokenizer(vocab), digest.hexdigest(), source=str(path)).to(device)
