"""The embedding cache: round trip, reuse, invalidation by encoder and by data, the embed command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clad_lite.cli import main
from clad_lite.encoders import load_encoder
from clad_lite.encoders.cache import EmbeddingCache, StaleCacheError, cache_dir_for, embed_directory, open_cache
from clad_lite.encoders.config import EncoderConfig
from clad_lite.encoders.data import demo_files
from clad_lite.encoders.lite import DecisionNCELite, save_checkpoint
from clad_lite.encoders.synthetic import synthetic_instruction, write_synthetic_demos

CONFIG = EncoderConfig(embed_dim=8, image_size=32, widths=(4, 8), blocks=(1, 1), steps=1)


def _encoder_checkpoint(path, seed: int, instructions) -> str:
    torch.manual_seed(seed)
    model = DecisionNCELite(CONFIG)
    # frozen text-base vectors given directly, so the test does not need to load MiniLM
    table = {text: torch.randn(384) for text in instructions}
    save_checkpoint(path, model, table, step=0)
    return str(path)


@pytest.fixture()
def setup(tmp_path):
    data = tmp_path / "libero_syn"
    write_synthetic_demos(data, n_tasks=2, demos_per_task=2, length=6, size=24)
    instructions = [synthetic_instruction(k) for k in range(2)]
    return data, _encoder_checkpoint(tmp_path / "a.pt", 0, instructions), instructions


def test_cache_round_trip_and_reuse(setup):
    data, ckpt, instructions = setup
    encoder = load_encoder(ckpt)
    report = embed_directory(data, ckpt, batch_size=4, dtype="float32")
    assert sorted(report["computed"]) == ["synthetic_task0_demo", "synthetic_task1_demo"] and not report["reused"]
    folder = cache_dir_for(data, encoder.hash())
    assert report["cache_dir"] == str(folder) and folder.parent.name == "embeddings"

    cache = EmbeddingCache(folder, expected_hash=encoder.hash())
    assert cache.embed_dim == 8 and cache.files == ["synthetic_task0_demo", "synthetic_task1_demo"]
    assert cache.demos("synthetic_task0_demo.hdf5") == ["demo_0", "demo_1"]
    for demo_file in demo_files(data):
        for demo in demo_file.demos:
            for camera in ("agentview_rgb", "eye_in_hand_rgb"):
                expected = encoder.encode_images(demo_file.frames(demo, camera), camera=camera).numpy()
                cached = cache.frames(demo_file.path, demo, camera)
                assert cached.shape == (6, 8) and cached.dtype == np.float32
                np.testing.assert_allclose(cached, expected, rtol=1e-5, atol=1e-5)
        assert cache.instruction(demo_file.stem) == demo_file.instruction
    np.testing.assert_allclose(cache.frames("synthetic_task0_demo", "demo_1", "wrist"),
                               cache.frames("synthetic_task0_demo", "demo_1", "eye_in_hand_rgb"))
    text = encoder.encode_text(instructions).numpy()
    for row, instruction in zip(text, instructions):
        np.testing.assert_allclose(cache.text(instruction), row, rtol=1e-6)
    with pytest.raises(KeyError):
        cache.text("an unknown instruction")
    cache.close()

    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.hdf5")}
    again = embed_directory(data, ckpt, batch_size=4, dtype="float32")
    assert not again["computed"] and len(again["reused"]) == 2
    assert stamps == {p.name: p.stat().st_mtime_ns for p in folder.glob("*.hdf5")}


def test_cache_invalidation(setup, tmp_path):
    data, ckpt_a, instructions = setup
    hash_a = load_encoder(ckpt_a).hash()
    embed_directory(data, ckpt_a)  # float16 by default
    # another encoder: another hash, recomputed; the old cache refuses to serve it
    ckpt_b = _encoder_checkpoint(tmp_path / "b.pt", 1, instructions)
    hash_b = load_encoder(ckpt_b).hash()
    assert hash_b != hash_a
    with open_cache(data, ckpt_b) as cache_b:
        assert cache_b.encoder_hash == hash_b
        assert cache_b.frames("synthetic_task1_demo", "demo_0", "agentview").shape == (6, 8)
    with pytest.raises(StaleCacheError, match="re-run"):
        EmbeddingCache(cache_dir_for(data, hash_a), expected_hash=hash_b)
    # a changed data file is recomputed, the others reused
    write_synthetic_demos(data, n_tasks=1, demos_per_task=3, length=6, size=24, seed=5)
    report = embed_directory(data, ckpt_a)
    assert report["computed"] == ["synthetic_task0_demo"] and report["reused"] == ["synthetic_task1_demo"]
    with EmbeddingCache(report["cache_dir"], expected_hash=hash_a) as cache:
        assert cache.demos("synthetic_task0_demo") == ["demo_0", "demo_1", "demo_2"]


def test_embed_command(setup, capsys):
    data, ckpt, _ = setup
    assert main(["embed", "--data", str(data), "--encoder", ckpt, "--no-progress", "--cameras", "agentview"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["computed"]) == 2 and report["encoder_spec"] == ckpt
    index = json.loads((cache_dir_for(data, report["encoder_hash"]) / "cache.json").read_text())
    assert index["cameras"] == ["agentview_rgb"] and index["encoder_spec"] == ckpt
    assert main(["embed", "--data", str(data), "--encoder", str(data / "missing.pt"), "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err


def test_strided_files_embed_rendered_steps_only(tmp_path):
    from clad_lite.demos.fixtures import INSTRUCTION, write_ours
    from clad_lite.demos.windows import WindowDataset

    data = tmp_path / "strided"
    data.mkdir()
    write_ours(data / "strided_demo.hdf5", lengths=(13, 8), image_stride=3)
    ckpt = _encoder_checkpoint(tmp_path / "a.pt", 0, [INSTRUCTION])
    encoder = load_encoder(ckpt)
    embed_directory(data, ckpt, batch_size=2, dtype="float32")  # batches smaller than a demo
    cache = EmbeddingCache(cache_dir_for(data, encoder.hash()), expected_hash=encoder.hash())
    (demo_file,) = demo_files(data)
    assert demo_file.image_stride == 3
    for demo, T in demo_file.lengths.items():
        rendered = np.arange(0, T, 3)
        cached = cache.frames("strided_demo", demo, "agentview_rgb")
        assert cached.shape == (T, 8)
        unrendered = np.setdiff1d(np.arange(T), rendered)
        assert np.isnan(cached[unrendered]).all() and np.isfinite(cached[rendered]).all()
        expected = encoder.encode_images(demo_file.frames(demo, "agentview_rgb", rendered), camera="agentview_rgb")
        np.testing.assert_allclose(cached[rendered], expected.numpy(), rtol=1e-5, atol=1e-5)
    # training windows read only rendered steps: no NaN reaches a batch
    windows = WindowDataset(data / "strided_demo.hdf5", cameras=("agentview_rgb",), embeddings=cache, normalize=False)
    assert all(torch.isfinite(windows[i]["agentview_rgb_next"]).all() for i in range(len(windows)))
    cache.close()
