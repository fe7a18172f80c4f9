"""The frozen semantic encoders: DecisionNCE-T loss and training, freezing, CLIP RN50 loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from clad_lite.cli import main
from clad_lite.encoders import load_encoder
from clad_lite.encoders.augment import color_jitter, random_resized_crop
from clad_lite.encoders.base import EncoderLoadError, FrozenEncoder
from clad_lite.encoders.clip_rn50 import CLIP, CheckpointKeyError, CLIPConfig, SimpleTokenizer, bytes_to_unicode
from clad_lite.encoders.config import ENCODER_PRESETS, EncoderConfig
from clad_lite.encoders.decision_nce import apply_settings, decision_nce_t_loss
from clad_lite.encoders.lite import DecisionNCELite, LiteEncoder
from clad_lite.encoders.synthetic import synthetic_instruction, write_synthetic_demos

TINY = dict(embed_dim=16, image_size=32, widths=(8, 16), blocks=(1, 1), batch_size=8, holdout_frac=0.34,
            eval_clips_per_demo=5, warmup_steps=5, threads=1)


# ------------------------------------------------------------------------------- config
def test_presets_and_validation():
    assert ENCODER_PRESETS["ci"].embed_dim == 64 and ENCODER_PRESETS["cpu"].embed_dim == 256
    assert ENCODER_PRESETS["paper"].kind == "decisionnce" and ENCODER_PRESETS["paper"].embed_dim == 1024
    assert ENCODER_PRESETS["ci"].seed == 3407
    with pytest.raises(ValueError, match="temperature"):
        EncoderConfig(temperature=0)
    with pytest.raises(ValueError, match="cameras"):
        EncoderConfig(cameras=("frontview",))
    with pytest.raises(ValueError, match="blocks"):
        EncoderConfig(widths=(8, 16), blocks=(1,))
    with pytest.raises(ValueError, match="crop_ratio"):
        EncoderConfig(crop_ratio=(4 / 3, 3 / 4))
    config = apply_settings(EncoderConfig(), ["steps=7", "widths=4,8", "blocks=1,2", "clip_range=0.5,1", "crop_ratio=1,1"])
    assert (config.steps, config.widths, config.blocks, config.clip_range) == (7, (4, 8), (1, 2), (0.5, 1.0))
    assert config.crop_ratio == (1.0, 1.0)


# --------------------------------------------------------------------------------- loss
def test_decision_nce_t_loss_matches_the_reference_formula():
    torch.manual_seed(0)
    start, end, text = torch.randn(3, 6, 8).unbind(0)
    diff = (end - start) / ((end - start).norm(dim=-1, keepdim=True) + 1e-6)
    logits = diff @ (text / text.norm(dim=-1, keepdim=True)).t() * 100.0  # DecisionNCE: logit scale 100
    labels = torch.arange(6)
    reference = (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.t(), labels)) / 2
    assert torch.allclose(decision_nce_t_loss(start, end, text, temperature=0.01), reference, atol=1e-5)
    # distinct labels: the multi-positive form is the same loss
    assert torch.allclose(decision_nce_t_loss(start, end, text, labels, temperature=0.01), reference, atol=1e-5)
    # repeated instructions are positives of each other: the loss is invariant to which copy is matched
    text2 = text.clone()
    text2[3] = text2[0]
    repeated = torch.tensor([0, 1, 2, 0, 4, 5])
    a = decision_nce_t_loss(start, end, text2, repeated)
    assert torch.isfinite(a)


def test_augmentations_share_a_crop_within_a_clip():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 40, 40).repeat_interleave(2, dim=0)  # pairs of identical frames
    y = random_resized_crop(x, 24, scale=(0.2, 1.0), generator=generator, groups=2)
    assert y.shape == (6, 3, 24, 24)
    assert torch.allclose(y[0], y[1]) and torch.allclose(y[4], y[5]) and not torch.allclose(y[0], y[2])
    z = color_jitter(y, 0.5, 0.3, 0.3, 0.1, generator=generator)
    assert z.shape == y.shape and z.min() >= 0 and z.max() <= 1 and not torch.allclose(z[0], z[1])


def test_a_crop_of_the_whole_square_image_moves_nothing():
    """crop_scale = crop_ratio = (1, 1) (encoder.crop_*, the position-keeping setting): the image itself."""
    x = torch.rand(4, 3, 24, 24)
    y = random_resized_crop(x, 24, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(0), groups=2)
    assert torch.allclose(y, x, atol=1e-5)
    shifted = random_resized_crop(x, 24, scale=(0.6, 1.0), generator=torch.Generator().manual_seed(0), groups=2)
    assert not torch.allclose(shifted, x, atol=1e-2)


# ----------------------------------------------------------------------------- training
def test_train_encoder_cli_loss_falls_and_checkpoint_loads(tmp_path, capsys):
    data = tmp_path / "data"
    write_synthetic_demos(data, n_tasks=4, demos_per_task=6, length=12, size=32)
    ckpt = tmp_path / "enc.pt"
    settings = [f"--set={k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    code = main(["train-encoder", "--data", str(data), "--out", str(ckpt), "--profile", "ci", "--steps", "120",
                 "--no-progress", "--summary", str(tmp_path / "summary.json"), *settings])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    # DecisionNCE-T learns: the loss falls and held-out clips retrieve their instruction above chance
    assert summary["loss_last"] < summary["loss_first"] - 0.3, summary["loss_curve"]
    assert summary["retrieval_top1"] >= 0.5 > summary["chance"]  # measured: 0.8 (agentview), chance 0.25
    assert min(summary["retrieval_top1_per_camera"].values()) >= 0.5
    assert summary["n_instructions"] == 4 and summary["n_heldout_demos"] == 8
    assert {"git_sha", "data", "seed", "versions"} <= set(summary["provenance"])
    assert summary["provenance"]["seed"] == 3407 and summary["provenance"]["data"]["n_demos"] == 24

    encoder = load_encoder(str(ckpt))
    assert isinstance(encoder, LiteEncoder) and encoder.embed_dim == 16
    assert encoder.hash() == summary["encoder_hash"] == load_encoder(str(ckpt)).hash()
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    assert encoder.encode_images(frames, camera="wrist").shape == (5, 16)
    text = encoder.encode_text([synthetic_instruction(0), "an instruction never seen in training"])
    assert text.shape == (2, 16) and not text.requires_grad


def test_frozen_encoder_has_no_batchnorm_drift():
    torch.manual_seed(0)
    model = DecisionNCELite(EncoderConfig(**{**TINY, "steps": 10}))
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        model.train()
        model.image_features(torch.rand(8, 3, 32, 32))
    encoder = LiteEncoder(model, {"x": torch.randn(384)})
    parent = nn.Sequential(encoder, nn.Linear(1, 1))
    parent.train()  # e.g. CLaD's training loop
    assert not encoder.training and all(not m.training for m in encoder.modules())
    assert all(not p.requires_grad for p in encoder.parameters())
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    images = np.random.default_rng(0).integers(0, 255, (4, 40, 40, 3), dtype=np.uint8)
    first = encoder.encode_images(images)
    second = encoder.encode_images(images)
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(first, second) and not first.requires_grad
    # the stored frames are upside down: the encoder flips them back
    upright = encoder.encode_images(images[:, ::-1].copy())
    assert not torch.allclose(first, upright)


def test_load_encoder_rejects_foreign_files(tmp_path):
    with pytest.raises(EncoderLoadError, match="not found"):
        load_encoder(str(tmp_path / "missing.pt"))
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(EncoderLoadError, match="not a DecisionNCE-lite checkpoint"):
        load_encoder(str(tmp_path / "other.pt"))
    with pytest.raises(EncoderLoadError, match="bad option"):
        load_encoder(f"decisionnce:{tmp_path / 'other.pt'},vocabulary=x")


# --------------------------------------------------------------------------- CLIP RN50
def _tiny_vocab(path) -> SimpleTokenizer:
    merges = ["p u", "pu t</w>", "b l", "o c", "bl oc", "bloc k</w>", "t h", "th e</w>", "i n</w>"]
    path.write_text("#version: tiny test vocabulary\n" + "\n".join(merges) + "\n")
    return SimpleTokenizer(path)


TINY_CLIP = dict(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=8, context_length=16,
                 transformer_width=64, transformer_heads=1, transformer_layers=1)


def test_clip_tokenizer_with_a_tiny_vocabulary(tmp_path):
    tokenizer = _tiny_vocab(tmp_path / "vocab.txt")
    assert tokenizer.vocab_size == 2 * 256 + 9 + 2
    assert len(bytes_to_unicode()) == 256
    ids = tokenizer.encode("Put the  block in!")
    pieces = [tokenizer.decoder[i] for i in ids]
    assert pieces == ["put</w>", "the</w>", "block</w>", "in</w>", "!</w>"]
    tokens = tokenizer.tokenize(["put the block", "x " * 40], context_length=16)
    assert tokens.shape == (2, 16) and tokens[0, 0] == tokenizer.sot and tokens[0, 4] == tokenizer.eot
    assert tokens[1, -1] == tokenizer.eot  # truncated, end token kept


def test_decisionnce_loader_strict_keys(tmp_path):
    tokenizer = _tiny_vocab(tmp_path / "bpe_simple_vocab_16e6.txt.gz.txt")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text((tmp_path / "bpe_simple_vocab_16e6.txt.gz.txt").read_text())
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig(vocab_size=tokenizer.vocab_size, **TINY_CLIP)).eval()
    state = clip.state_dict()
    assert "visual.attnpool.c_proj.weight" in state and "transformer.resblocks.0.attn.in_proj_weight" in state
    assert "visual.layer1.0.downsample.0.weight" in state and "visual.bn3.running_mean" in state
    # as DecisionNCE saves it: CLIPBasedEncoder.model.* inside {"model": ...}
    torch.save({"model": {f"model.{k}": v for k, v in state.items()}}, tmp_path / "dnce.pth")
    encoder = load_encoder(f"decisionnce:{tmp_path / 'dnce.pth'},vocab={vocab}")
    assert isinstance(encoder, FrozenEncoder) and encoder.embed_dim == 32
    images = np.random.default_rng(0).integers(0, 255, (2, 48, 48, 3), dtype=np.uint8)
    v = encoder.encode_images(images, camera="agentview")
    assert v.shape == (2, 32)
    # the same as CLIP's own encode_image on the preprocessed (flipped, resized, normalised) frames
    x = torch.from_numpy(images[:, ::-1].copy()).permute(0, 3, 1, 2).float() / 255
    x = nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    x = (x - encoder.mean) / encoder.std
    with torch.no_grad():
        assert torch.allclose(v, clip.encode_image(x), atol=1e-4)
        t = encoder.encode_text(["put the block in"])
        assert torch.allclose(t, clip.encode_text(tokenizer.tokenize(["put the block in"], 16)), atol=1e-5)
    assert len(encoder.hash()) == 64

    # strict key matching: a missing and an unexpected key are both named
    broken = dict(state)
    del broken["visual.layer2.0.bn1.running_var"]
    broken["visual.extra_head.weight"] = torch.zeros(3)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointKeyError) as error:
        load_encoder(f"decisionnce:{tmp_path / 'broken.pth'},vocab={vocab}")
    message = str(error.value)
    assert "missing keys (1): visual.layer2.0.bn1.running_var" in message
    assert "unexpected keys (1): visual.extra_head.weight" in message

    # a vocabulary that does not fit the token embedding, and none at all
    (tmp_path / "small.txt").write_text("#version\np u\n")
    with pytest.raises(EncoderLoadError, match="vocabulary has"):
        load_encoder(f"decisionnce:{tmp_path / 'dnce.pth'},vocab={tmp_path / 'small.txt'}")
    with pytest.raises(EncoderLoadError, match="vocabulary not found"):
        load_encoder(f"decisionnce:{tmp_path / 'dnce.pth'}")


def test_frozen_encoder_parameter_counts():
    from clad_lite.encoders import frozen_encoder_parameters

    assert frozen_encoder_parameters("paper") == 102_007_137  # OpenAI CLIP RN50
    assert frozen_encoder_parameters("ci") < frozen_encoder_parameters("cpu")
    assert frozen_encoder_parameters("nonexistent") is None


def test_clips_of_strided_files_use_rendered_steps_only(tmp_path):
    from clad_lite.demos.fixtures import write_ours
    from clad_lite.encoders.data import demo_files
    from clad_lite.encoders.decision_nce import sample_batch, split_demos

    write_ours(tmp_path / "strided_demo.hdf5", lengths=(20, 17, 11), image_stride=4)
    files = demo_files(tmp_path)
    split = split_demos(files, holdout_frac=0.3, seed=0)
    config = EncoderConfig(batch_size=16, clip_range=(0.25, 1.0))
    frames, labels = sample_batch(split, split.by_instruction(), config, np.random.default_rng(0))
    steps = frames[:, 0, 0, 1].astype(int)  # the synthetic frames carry their step in green
    shown_black = frames.reshape(len(frames), -1).max(axis=1) == 0
    assert not shown_black.any() and (steps % 4 == 0).all()
    assert (steps[1::2] > steps[0::2]).all()  # end after start
