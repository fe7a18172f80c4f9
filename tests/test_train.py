"""The training loop: exact resumption after SIGKILL, DDP on 2 CPU processes (gloo), stage 2.

Everything runs on a tiny synthetic data set written here (LIBERO-layout HDF5 files and an
embedding cache in the format of ``clad_lite.encoders.cache``) with the ``ci`` model sizes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from clad_lite.cli import UserError, main as cli_main
from clad_lite.config import ConfigError, apply_overrides, get_profile
from clad_lite.demos import hdf5 as H
from clad_lite.encoders.cache import CACHE_FORMAT
from clad_lite.schedule import warmup_cosine
from clad_lite.train import (StepBatchSampler, jitter_observations, load_checkpoint, load_training_data, model_batch,
                             train)

REPO = Path(__file__).resolve().parents[1]
CAMERAS = ("agentview_rgb", "eye_in_hand_rgb")
INSTRUCTIONS = ("put the bowl on the plate", "open the top drawer")
FAKE_HASH = "ab" * 32


def write_synthetic_data(root: Path, embed_dim: int = 64, demos: int = 2, length: int = 30, seed: int = 0) -> Path:
    """Two task files in the LIBERO layout (no images) + an embedding cache for them."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    cache = root / "embeddings" / FAKE_HASH[:16]
    cache.mkdir(parents=True)
    text = rng.normal(size=(len(INSTRUCTIONS), embed_dim)).astype(np.float32)
    index_files = {}
    for task, instruction in enumerate(INSTRUCTIONS):
        stem = f"task{task}_demo"
        with h5py.File(root / f"{stem}.hdf5", "w") as f:
            data = f.create_group("data")
            H.write_data_attrs(data, instruction=instruction, problem_name=f"task{task}", bddl_file=f"task{task}.bddl",
                               env_args={"env_name": "synthetic"})
            for d in range(demos):
                T = length + d
                joints = np.cumsum(rng.normal(0, 0.05, (T, 7)), 0)
                obs = {"joint_states": joints, "gripper_states": rng.uniform(0, 0.04, (T, 2)),
                       "ee_pos": rng.normal(size=(T, 3)), "ee_ori": rng.normal(size=(T, 3)),
                       "ee_states": rng.normal(size=(T, 6)), "joint_vel": np.gradient(joints, axis=0)}
                H.write_demo(data, f"demo_{d}", {
                    "actions": rng.uniform(-1, 1, (T, 7)), "states": rng.normal(size=(T, 10)),
                    "rewards": np.eye(T, dtype=np.uint8)[-1], "dones": np.eye(T, dtype=np.uint8)[-1],
                    "robot_states": rng.normal(size=(T, 9)), "obs": obs})
        with h5py.File(cache / f"{stem}.hdf5", "w") as f:
            for d in range(demos):
                for camera in CAMERAS:
                    f.create_dataset(f"demo_{d}/{camera}", data=rng.normal(size=(length + d, embed_dim)).astype(np.float16))
            f.create_dataset("text", data=text)
            f.attrs.update({"format": CACHE_FORMAT, "encoder_hash": FAKE_HASH, "embed_dim": embed_dim,
                            "cameras": json.dumps(list(CAMERAS)), "instruction": instruction,
                            "instructions": json.dumps(list(INSTRUCTIONS)), "source": f"{stem}.hdf5"})
        index_files[stem] = {"source": f"{stem}.hdf5", "instruction": instruction, "n_demos": demos}
    (cache / "cache.json").write_text(json.dumps({
        "format": CACHE_FORMAT, "encoder_hash": FAKE_HASH, "encoder_spec": None, "embed_dim": embed_dim,
        "cameras": list(CAMERAS), "dtype": "float16", "files": index_files}))
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_synthetic_data(tmp_path_factory.mktemp("train_data") / "libero_10")


def ci(*overrides):
    return apply_overrides(get_profile("ci"), list(overrides))


def cli(*args, threads=1, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "CLAD_PROFILE": "ci", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "clad_lite", "train", "--threads", str(threads), "--no-progress",
                             *map(str, args)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(process, timeout=120):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out


# --------------------------------------------------------------------------- small parts
def test_schedule_warms_up_then_decays():
    f = [warmup_cosine(s, warmup_steps=5, total_steps=30) for s in range(30)]
    assert f[0] == pytest.approx(0.2) and f[4] == pytest.approx(1.0) and f[5] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[5:], f[6:])) and 0 < f[-1] < 0.01


def test_sampler_position_is_a_function_of_seed_and_step():
    whole = StepBatchSampler(10, 4, seed=3, start_step=0, end_step=12)
    batches = list(whole)
    assert len(batches) == 12 and all(len(b) == 4 for b in batches)
    resumed = StepBatchSampler(10, 4, seed=3, start_step=7, end_step=12)
    assert list(resumed) == batches[7:]
    flat = [i for b in batches[:5] for i in b]  # 20 samples = 2 epochs, each a permutation
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    ranks = [StepBatchSampler(10, 4, seed=3, start_step=0, end_step=12, rank=r, world_size=2) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == batches


def test_model_batch_maps_window_keys(data_dir):
    profile = ci()
    data = load_training_data(profile, data_dir)
    assert data.encoder_hash == FAKE_HASH
    window = torch.utils.data.default_collate([data.dataset[i] for i in range(3)])
    batch = model_batch(window, profile.data.cameras)
    assert batch["vision"].shape == (3, profile.clad.vision_dim)
    assert torch.equal(batch["vision_past"][:, :64], window["agentview_rgb_prev"])
    assert torch.equal(batch["vision_future"][:, 64:], window["eye_in_hand_rgb_next"])
    assert batch["proprio_past"].shape == (3, 16) and batch["language"].shape == (3, 64)
    assert batch["actions_past"].shape == batch["actions"].shape == (3, 6, 7)


def test_jitter_observations_perturbs_each_feature_by_its_spread():
    """policy.obs_noise: noise of std scale x (the feature's std over the batch) on the observations only."""
    g = torch.Generator().manual_seed(0)
    spread = torch.tensor([0.1, 1.0, 10.0])
    batch = {key: torch.randn(4000, 3, generator=g) * spread + 5.0 for key in ("proprio_past", "proprio", "vision_past", "vision")}
    batch |= {"vision_future": torch.randn(4000, 3), "language": torch.randn(4000, 3), "actions": torch.randn(4000, 6, 7)}
    assert jitter_observations(batch, 0.0) is batch
    noisy = jitter_observations(batch, 0.2, generator=torch.Generator().manual_seed(1))
    for key in ("proprio_past", "proprio", "vision_past", "vision"):
        ratio = (noisy[key] - batch[key]).std(dim=0) / spread
        assert torch.allclose(ratio, torch.full((3,), 0.2), rtol=0.08), (key, ratio)
    for key in ("vision_future", "language", "actions"):
        assert noisy[key] is batch[key]
    again = jitter_observations(batch, 0.2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again["vision"], noisy["vision"])  # a function of the generator's state


def test_obs_noise_is_validated_and_changes_stage_2_training(tmp_path, data_dir):
    with pytest.raises(ConfigError, match="obs_noise"):
        ci("policy.obs_noise=-0.1")
    torch.set_num_threads(1)
    args = ("stage2.warmup_steps=1", "stage2.steps=3", "stage2.checkpoint_every=3", "policy.foresight=none")
    plain = train(ci(*args), 2, tmp_path / "plain", data_dir=data_dir, workers=0, progress=False)
    same = train(ci(*args, "policy.obs_noise=0"), 2, tmp_path / "same", data_dir=data_dir, workers=0, progress=False)
    noisy = train(ci(*args, "policy.obs_noise=0.5"), 2, tmp_path / "noisy", data_dir=data_dir, workers=0, progress=False)
    def equal(a, b):
        return all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())

    assert equal(plain, same) and not equal(plain, noisy)


def test_extra_actions_train_on_longer_target_chunks(tmp_path, data_dir):
    """policy.extra_actions = e: stage 2's windows carry a^{t:t+τ+e} and the saved policy predicts them."""
    torch.set_num_threads(1)
    profile = ci("stage2.warmup_steps=1", "stage2.steps=2", "stage2.checkpoint_every=2", "policy.foresight=none",
                 "policy.extra_actions=6")
    data = load_training_data(profile, data_dir)
    assert data.dataset[0]["actions"].shape == (profile.clad.horizon + 6, 7)
    result = train(profile, 2, tmp_path / "long", data=data, workers=0, progress=False)
    assert result.model.config.chunk_length == profile.clad.horizon + 6
    saved = json.loads((tmp_path / "long" / "config.json").read_text())
    assert saved["policy"]["extra_actions"] == 6


def test_user_errors(tmp_path, data_dir, capsys):
    assert cli_main(["train", "--stage", "1", "--profile", "ci", "--data", str(tmp_path / "none"),
                     "--out", str(tmp_path / "r")]) == 2
    assert "data directory not found" in capsys.readouterr().err
    assert cli_main(["train", "--stage", "1", "--profile", "ci", "--set", "stage1.nope=1", "--out", str(tmp_path / "r")]) == 2
    assert "unknown key" in capsys.readouterr().err
    empty = tmp_path / "empty"
    write_synthetic_data(empty)
    import shutil

    shutil.rmtree(empty / "embeddings")
    assert cli_main(["train", "--stage", "1", "--profile", "ci", "--data", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "no embedding cache" in capsys.readouterr().err
    assert cli_main(["train", "--stage", "2", "--profile", "ci", "--data", str(data_dir), "--out", str(tmp_path / "r")]) == 2
    assert "--clad" in capsys.readouterr().err


# --------------------------------------------------------------------------- resume after SIGKILL
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, data_dir):
    steps = 60
    sets = [f"stage1.steps={steps}", "stage1.checkpoint_every=10", "clad.mask_schedule=curriculum"]
    args = ["--stage", "1", "--profile", "ci", "--data", data_dir] + [x for s in sets for x in ("--set", s)]
    killed = cli(*args, "--out", tmp_path / "killed")
    first = tmp_path / "killed" / "ckpt_000010.pt"

    def kill_after_first_checkpoint():
        deadline = time.time() + 90
        while not first.exists() and killed.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        killed.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    # meanwhile, the uninterrupted run, here (1 thread and 1 data worker, as the CLI runs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(ci(*sets), 1, tmp_path / "whole", data_dir=data_dir, progress=False)
    finally:
        torch.set_num_threads(threads)
    killer.join()
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    at_kill = load_checkpoint(tmp_path / "killed")["step"]
    assert 10 <= at_kill < steps
    # --resume alone: stage, profile, overrides and data come from the run directory
    report = json.loads(finish(cli("--out", tmp_path / "killed", "--resume")))
    assert report["step"] == steps and report["steps_this_run"] == steps - at_kill

    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "killed")
    assert a["step"] == b["step"] == steps
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert any(k.startswith("f_p_target.") for k in a["model"])  # the EMA targets are in there too
    run = tmp_path / "killed"
    for name in ("config.json", "run.json", "train_log.csv", "loss_curve.png", "last.pt", f"ckpt_{steps:06d}.pt"):
        assert (run / name).is_file(), name
    assert not list(run.glob(".*tmp*"))
    log_steps = [int(line.split(",")[0]) for line in (run / "train_log.csv").read_text().splitlines()[1:]]
    assert log_steps == list(range(5, steps + 1, 5))  # no duplicated or torn rows after the resume
    assert json.loads((run / "config.json").read_text())["stage1"]["steps"] == steps


# --------------------------------------------------------------------------- DDP (gloo, 2 CPU processes)
def _ddp_worker(rank, world, port, data_dir, out, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    profile = apply_overrides(get_profile("ci"), ["stage1.warmup_steps=1", "stage1.steps=6", "stage1.checkpoint_every=3", "stage1.log_every=2"])
    result = train(profile, 1, out, data_dir=data_dir, workers=0, progress=False)
    torch.save({"model": result.model.state_dict(), "written": result.written}, Path(results) / f"rank{rank}.pt")
    import torch.distributed as dist

    dist.destroy_process_group()


def test_ddp_two_cpu_processes_stay_in_sync(tmp_path, data_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = tmp_path / "results"
    results.mkdir()
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(data_dir), str(tmp_path / "run"), str(results)),
                                nprocs=2, join=True)
    r0, r1 = (torch.load(results / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in r0["model"]:
        assert torch.equal(r0["model"][key], r1["model"][key]), key
    assert r1["written"] == [] and r0["written"]
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint["step"] == 6 and checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    for key in r0["model"]:
        assert torch.equal(checkpoint["model"][key], r0["model"][key])
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["ckpt_000003.pt", "ckpt_000006.pt", "config.json", "last.pt", "loss_curve.png", "run.json",
                     "train_log.csv"]


# --------------------------------------------------------------------------- stage 2
def test_stage2_on_a_frozen_stage1_and_the_policy_only_baseline(tmp_path, data_dir):
    torch.set_num_threads(1)
    stage1 = train(ci("stage1.warmup_steps=1", "stage1.steps=4", "stage1.checkpoint_every=4", "clad.attention=self"), 1, tmp_path / "s1",
                   data_dir=data_dir, workers=0, progress=False)
    frozen = {k: v.clone() for k, v in stage1.model.state_dict().items()}
    result = train(ci("stage2.warmup_steps=1", "stage2.steps=4", "stage2.checkpoint_every=2"), 2, tmp_path / "s2", data_dir=data_dir,
                   clad=tmp_path / "s1", workers=0, progress=False)
    assert result.step == 4 and np.isfinite(result.last_log["loss"])
    config = json.loads((tmp_path / "s2" / "config.json").read_text())
    assert config["clad"]["attention"] == "self"  # the stage-1 run's CLaD, not the profile's
    run = json.loads((tmp_path / "s2" / "run.json").read_text())
    assert run["clad_checkpoint"] == str((tmp_path / "s1" / "ckpt_000004.pt").resolve()) or \
        run["clad_checkpoint"].endswith("last.pt")
    from clad_lite.train import load_stage1

    clad, _ = load_stage1(tmp_path / "s1")
    for key, value in clad.state_dict().items():
        assert torch.equal(value, frozen[key])  # stage 2 did not touch the CLaD
    baseline = train(ci("stage2.warmup_steps=1", "stage2.steps=2", "policy.foresight=none"), 2, tmp_path / "s2_none", data_dir=data_dir,
                     workers=0, progress=False)
    assert baseline.step == 2
    with pytest.raises(UserError, match="already holds a run"):
        train(ci("stage2.warmup_steps=1", "stage2.steps=2", "policy.foresight=none"), 2, tmp_path / "s2_none", data_dir=data_dir, workers=0,
              progress=False)
    with pytest.raises(UserError, match="another configuration"):
        train(ci("stage2.warmup_steps=1", "stage2.steps=3", "policy.foresight=none"), 2, tmp_path / "s2_none", data_dir=data_dir, workers=0,
              progress=False, resume=True)


# --------------------------------------------------------------------------- kill between save and link
def test_a_kill_between_checkpoint_and_last_link_resumes_from_the_newest(tmp_path, data_dir):
    """ckpt_XXXXXX.pt is saved before last.pt is re-pointed: a kill in between must not lose it."""
    import shutil

    from clad_lite.train import LAST, newest_checkpoint

    torch.set_num_threads(1)
    sets = ("stage2.warmup_steps=1", "stage2.steps=4", "stage2.checkpoint_every=1", "policy.foresight=none")
    train(ci(*sets), 2, tmp_path / "whole", data_dir=data_dir, workers=0, progress=False)
    whole = tmp_path / "whole"
    assert newest_checkpoint(whole) == whole / LAST and newest_checkpoint(tmp_path) is None

    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    (cut / "ckpt_000004.pt").unlink()
    (cut / LAST).unlink()
    assert newest_checkpoint(cut) == cut / "ckpt_000003.pt"  # killed before the first link: no last.pt
    shutil.copyfile(cut / "ckpt_000002.pt", cut / LAST)      # killed before the re-link (a copied last.pt)
    assert newest_checkpoint(cut) == cut / "ckpt_000003.pt"
    assert load_checkpoint(cut)["step"] == 3
    resumed = train(ci(*sets), 2, cut, data_dir=data_dir, workers=0, progress=False, resume=True)
    assert resumed.steps_done_here == 1 and load_checkpoint(cut)["step"] == 4
    assert newest_checkpoint(cut) == cut / LAST
    a, b = load_checkpoint(whole)["model"], load_checkpoint(cut)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key

    # numbered files pruned by hand but last.pt newer: last.pt wins
    for k in (2, 3, 4):
        (cut / f"ckpt_{k:06d}.pt").unlink()
    (cut / LAST).unlink()
    shutil.copyfile(whole / LAST, cut / LAST)
    assert newest_checkpoint(cut) == cut / LAST


# --------------------------------------------------------------------------- weight EMA
def test_weight_ema_follows_its_formula_and_resumes_exactly(tmp_path, data_dir):
    """stage2.ema_decay = d: ema_1 = theta_1, ema_k = d ema_{k-1} + (1 - d) theta_k; saved and resumed."""
    import shutil

    from clad_lite.train import LAST, checkpoint_weights

    torch.set_num_threads(1)
    d = 0.75
    sets = ("stage2.warmup_steps=1", "stage2.steps=4", "stage2.checkpoint_every=1", f"stage2.ema_decay={d}",
            "policy.foresight=none")
    whole = train(ci(*sets), 2, tmp_path / "whole", data_dir=data_dir, workers=0, progress=False)
    ckpt = [load_checkpoint(tmp_path / "whole" / f"ckpt_{k:06d}.pt") for k in (1, 2, 3, 4)]
    raw = [checkpoint_weights(c, "raw")[0] for c in ckpt]
    ema = [checkpoint_weights(c, "ema")[0] for c in ckpt]
    assert checkpoint_weights(ckpt[0], "auto")[1] == "ema" and int(ckpt[3]["ema"]["n_averaged"]) == 4
    assert ema[0].keys() == raw[0].keys()
    name = next(k for k in raw[0] if k.endswith("weight") and raw[0][k].dim() == 2)
    torch.testing.assert_close(ema[0][name], raw[0][name], rtol=0, atol=0)  # the first update copies
    for k in (1, 2, 3):
        torch.testing.assert_close(ema[k][name], d * ema[k - 1][name] + (1 - d) * raw[k][name])
    assert not torch.equal(ema[3][name], raw[3][name])
    for key, value in whole.ema.state_dict().items():
        assert torch.equal(value, ema[3][key]), key

    # a run cut after step 2 (its later checkpoints lost) resumes to the same raw and EMA weights
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "whole", cut)
    for k in (3, 4):
        (cut / f"ckpt_{k:06d}.pt").unlink()
    (cut / LAST).unlink()
    os.link(cut / "ckpt_000002.pt", cut / LAST)
    resumed = train(ci(*sets), 2, cut, data_dir=data_dir, workers=0, progress=False, resume=True)
    assert resumed.steps_done_here == 2
    again = load_checkpoint(cut)
    for key in raw[3]:
        assert torch.equal(again["model"][key], ckpt[3]["model"][key]), key
    for key in ckpt[3]["ema"]:
        assert torch.equal(again["ema"][key], ckpt[3]["ema"][key]), key

    # without ema_decay there is no EMA: "auto" falls back to the raw weights, "ema" is an error
    plain = train(ci(*sets[:-2], "policy.foresight=none"), 2, tmp_path / "plain", data_dir=data_dir, workers=0,
                  progress=False)
    assert plain.ema is None and load_checkpoint(tmp_path / "plain")["ema"] is None
    assert checkpoint_weights(load_checkpoint(tmp_path / "plain"), "auto")[1] == "raw"
    with pytest.raises(ValueError, match="no weight EMA"):
        checkpoint_weights(load_checkpoint(tmp_path / "plain"), "ema")
    with pytest.raises(ValueError, match="must be one of"):
        checkpoint_weights(ckpt[0], "best")
    with pytest.raises(ValueError, match="ema_decay"):
        ci("stage2.ema_decay=1.0")


def test_resume_accepts_a_run_saved_before_a_field_existed(tmp_path, data_dir):
    """A checkpoint whose config lacks a later-added field (at its default) still resumes."""
    from clad_lite.train import atomic_save

    torch.set_num_threads(1)
    sets = ("stage2.warmup_steps=1", "stage2.steps=2", "stage2.checkpoint_every=1", "policy.foresight=none")
    train(ci(*sets), 2, tmp_path / "old", data_dir=data_dir, workers=0, progress=False)
    path = tmp_path / "old" / "ckpt_000001.pt"
    old = torch.load(path, weights_only=True)
    del old["config"]["stage2"]["ema_decay"]
    atomic_save(old, path)
    (tmp_path / "old" / "ckpt_000002.pt").unlink()
    (tmp_path / "old" / "last.pt").unlink()
    os.link(path, tmp_path / "old" / "last.pt")
    assert train(ci(*sets), 2, tmp_path / "old", data_dir=data_dir, workers=0, progress=False, resume=True).step == 2


def test_profile_from_dict_round_trip_and_unknown_keys():
    """A saved config rebuilds the same profile; a key this code does not know is an error that names it
    (silently dropping e.g. policy.prediction would roll out an x0 network as a noise predictor)."""
    from clad_lite.train import profile_from_dict

    profile = apply_overrides(get_profile("ci"), ["policy.prediction=sample", "data.tasks=0"])
    saved = json.loads(json.dumps(profile.to_dict()))
    assert profile_from_dict(saved) == profile
    saved["policy"]["from_the_future"] = 1
    with pytest.raises(ConfigError, match=r"policy\.from_the_future"):
        profile_from_dict(saved)
