"""clad_lite.analysis: collapse metrics, linear probes, demo-level splits, stage-1/2 collectors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from clad_lite import analysis as A
from clad_lite.configuration_clad import get_model_presets


def test_effective_rank_of_known_matrices():
    gen = torch.Generator().manual_seed(0)
    # k orthogonal directions with equal variance -> effective rank k
    for k in (1, 3, 8):
        basis = torch.linalg.qr(torch.randn(16, 16, generator=gen))[0][:, :k]        # (16, k) orthonormal
        codes = torch.tensor([[1.0 if (i // 2) % k == j else 0.0 for j in range(k)] for i in range(4 * k)])
        codes = codes * torch.where(torch.arange(4 * k) % 2 == 0, 1.0, -1.0)[:, None]  # zero mean, equal spread
        x = codes @ basis.T
        assert A.effective_rank(x) == pytest.approx(k, rel=1e-6)
    # isotropic Gaussian in D dims: close to D; a constant matrix (complete collapse): 0
    x = torch.randn(4000, 10, generator=gen)
    assert 9.5 < A.effective_rank(x) <= 10.0
    assert A.effective_rank(torch.ones(50, 10) * 3.0) == 0.0
    # one dominant direction plus tiny noise: close to 1
    line = torch.randn(500, 1, generator=gen) * torch.ones(1, 10) + 1e-4 * torch.randn(500, 10, generator=gen)
    assert A.effective_rank(line) < 1.05
    spectrum = A.singular_spectrum(x)
    assert spectrum.shape == (10,) and spectrum.sum().item() == pytest.approx(1.0)


def test_representation_stats_detects_collapse():
    gen = torch.Generator().manual_seed(1)
    spread = A.representation_stats(torch.randn(3000, 32, generator=gen))
    # unit vectors spread over the sphere: each coordinate has std ~ 1/sqrt(D)
    assert spread["normalized_std"] == pytest.approx(1 / math.sqrt(32), rel=0.05)
    assert spread["uniform_std"] == pytest.approx(1 / math.sqrt(32))
    collapsed = A.representation_stats(torch.ones(3000, 32) + 1e-3 * torch.randn(3000, 32, generator=gen))
    assert collapsed["normalized_std"] < 0.01 * spread["normalized_std"]
    assert collapsed["total_std"] < 0.01 * spread["total_std"]


def test_linear_probe_regression_on_linear_data():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(12, 3))
    x = rng.normal(size=(600, 12))
    y = x @ w + 0.01 * rng.normal(size=(600, 3))
    result = A.linear_probe_regression(x[:400], y[:400], x[400:], y[400:], alpha=1e-3)
    assert result["r2"] > 0.99 and result["r2_per_dim"].shape == (3,)
    noise = A.linear_probe_regression(rng.normal(size=(400, 12)), y[:400], rng.normal(size=(200, 12)), y[400:])
    assert noise["r2"] < 0.1   # features unrelated to the target: no better than the mean


def test_linear_probe_classification():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=600)
    x = rng.normal(size=(600, 8)) + 4.0 * np.eye(8)[labels]
    result = A.linear_probe_classification(x[:400], labels[:400], x[400:], labels[400:])
    assert result["accuracy"] > 0.95 and 0.2 < result["chance"] < 0.5
    assert A.linear_probe_classification(x[:10], np.zeros(10), x[10:20], np.zeros(10))["accuracy"] == 1.0


class _FakeWindows(torch.utils.data.Dataset):
    """The bookkeeping of a WindowDataset: 2 tasks x 3 demos x 5 windows."""

    def __init__(self):
        self._task = [0, 0, 0, 1, 1, 1]
        self._index = np.array([(d, t) for d in range(6) for t in range(5)])

    def __len__(self):
        return len(self._index)


def test_split_by_demo_holds_out_whole_demonstrations():
    data = _FakeWindows()
    train, test = A.split_by_demo(data)
    table = A.window_table(data)
    assert len(train) + len(test) == len(data) and not set(train) & set(test)
    assert set(table["demo_index"][test]) == {2, 5}          # the last demo of each task
    assert set(table["task_id"][test]) == {0, 1}
    sub = torch.utils.data.Subset(data, train)
    assert set(A.window_table(sub)["demo_index"]) == {0, 1, 3, 4}
    with pytest.raises(ValueError):
        A.split_by_demo(data, holdout_per_task=3)


def test_collect_stage1_outputs_and_metrics_on_a_tiny_model():
    from clad_lite.clad import CLaD, make_dummy_batch

    clad_cfg, _ = get_model_presets("ci")
    torch.manual_seed(0)
    clad = CLaD(clad_cfg)
    batch = make_dummy_batch(clad_cfg, 64, torch.Generator().manual_seed(0))

    class Windows(torch.utils.data.Dataset):
        cameras = ("cam",)

        def __len__(self):
            return 64

        def __getitem__(self, i):
            E = clad_cfg.language_dim
            return {"proprio_prev": batch["proprio_past"][i], "proprio": batch["proprio"][i],
                    "proprio_next": batch["proprio_future"][i], "cam_prev": batch["vision_past"][i][:2 * E],
                    "cam": batch["vision"][i][:2 * E], "cam_next": batch["vision_future"][i][:2 * E],
                    "instruction_emb": batch["language"][i], "actions_past": batch["actions_past"][i],
                    "actions": batch["actions"][i], "task_id": torch.tensor(i % 2),
                    "demo_index": torch.tensor(i // 16), "t": torch.tensor(i % 16)}

    out = A.collect_stage1_outputs(clad, Windows(), ("cam",), batch_size=20)
    H = clad_cfg.hidden_dim
    assert out["z_dyn"].shape == (64, H) and out["foresight_proprio"].shape == (64, H)
    assert out["latent_proprio"].shape == (64,)
    assert ((out["latent_proprio"] >= 0) & (out["latent_proprio"] <= 4)).all()
    metrics = A.stage1_metrics(out, np.arange(32), np.arange(32, 64))
    for key in ("erank_z_dyn", "std_foresight_s", "latent", "probe_future_r2", "probe_task_acc"):
        assert np.isfinite(metrics[key]), key
    assert 1.0 <= metrics["erank_z_dyn"] <= H


def _demo_file(path, actions_of_state, demos=10, length=40, seed=0):
    import h5py

    from clad_lite.demos import hdf5 as H

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        H.write_data_attrs(data, instruction="do it", problem_name="p", bddl_file="p.bddl", env_args={"env_name": "synthetic"})
        for d in range(demos):
            qpos = np.cumsum(rng.normal(0, 0.1, (length, 4)), axis=0)  # [time, qpos (4)] rows of a flattened MjState
            states = np.concatenate([np.arange(length)[:, None] * 0.05, qpos], axis=1)
            obs = {"joint_states": rng.normal(size=(length, 7)), "gripper_states": rng.normal(size=(length, 2)),
                   "ee_pos": rng.normal(size=(length, 3)), "ee_ori": rng.normal(size=(length, 3)),
                   "ee_states": rng.normal(size=(length, 6)), "joint_vel": rng.normal(size=(length, 7))}
            H.write_demo(data, f"demo_{d}", {
                "actions": actions_of_state(qpos, rng), "states": states, "rewards": np.eye(length, dtype=np.uint8)[-1],
                "dones": np.eye(length, dtype=np.uint8)[-1], "robot_states": rng.normal(size=(length, 9)), "obs": obs})
    return path


def test_action_predictability_separates_a_state_feedback_from_noise(tmp_path):
    def feedback(qpos, rng):  # the action is a smooth function of the state
        return np.concatenate([np.tanh(qpos[:, :3]), np.tanh(qpos[:, 3:] - qpos[:, :3]), rng.uniform(-1, 1, (len(qpos), 1))], 1)

    def unrelated(qpos, rng):  # the action ignores the state
        return rng.uniform(-1, 1, (len(qpos), 7))

    markov = A.action_predictability(_demo_file(tmp_path / "markov.hdf5", feedback, demos=40), holdout_every=4)
    noise = A.action_predictability(_demo_file(tmp_path / "noise.hdf5", unrelated, demos=40), holdout_every=4)
    assert markov["r2"] > 0.8 and abs(noise["r2"]) < 0.3, (markov, noise)
    assert markov["demos"] == 40 and markov["test_steps"] == 10 * 40 and markov["train_steps"] == 30 * 40
    with pytest.raises(ValueError, match="needs >= 2 demos"):
        A.action_predictability(_demo_file(tmp_path / "one.hdf5", feedback, demos=1))


def test_action_predictability_without_velocities_exposes_a_copycat_demonstrator(tmp_path):
    """An action that echoes the joint velocities is predictable from [qpos; qvel], not from qpos alone."""
    import h5py

    from clad_lite.demos import hdf5 as H

    rng = np.random.default_rng(0)
    path, length = tmp_path / "copycat.hdf5", 40
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        H.write_data_attrs(data, instruction="do it", problem_name="p", bddl_file="p.bddl", env_args={"env_name": "synthetic"})
        for d in range(40):
            qvel = np.cumsum(rng.normal(0, 0.3, (length, 7)), axis=0)       # smooth, like an arm's motion
            qpos = rng.normal(size=(length, 10))                              # positions that carry no action
            states = np.concatenate([np.arange(length)[:, None] * 0.05, qpos, qvel], axis=1)
            actions = np.concatenate([np.tanh(qvel[:, :6]), np.ones((length, 1))], axis=1)
            obs = {"joint_states": qpos[:, :7], "gripper_states": qpos[:, 7:9], "ee_pos": rng.normal(size=(length, 3)),
                   "ee_ori": rng.normal(size=(length, 3)), "ee_states": rng.normal(size=(length, 6)), "joint_vel": qvel}
            H.write_demo(data, f"demo_{d}", {
                "actions": actions, "states": states, "rewards": np.eye(length, dtype=np.uint8)[-1],
                "dones": np.eye(length, dtype=np.uint8)[-1], "robot_states": rng.normal(size=(length, 9)), "obs": obs})
    full = A.action_predictability(path, holdout_every=4)
    positions = A.action_predictability(path, holdout_every=4, velocities=False)
    assert full["r2"] > 0.4 > 0.1 > positions["r2"], (full, positions)  # kNN in 17-D: 0.52 against -0.18
    from clad_lite.cli import main

    assert main(["action-predictability", "--data", str(tmp_path), "--holdout-every", "4", "--json",
                 str(tmp_path / "table.json")]) == 0
    (row,) = json.loads((tmp_path / "table.json").read_text())["rows"]
    assert row["r2_state"] == full["r2"] and row["r2_positions"] == positions["r2"] and row["demos"] == 40
    with pytest.raises(ValueError, match="joint velocities sit nowhere"):
        A.action_predictability(_demo_file(tmp_path / "plain.hdf5", lambda q, r: r.uniform(-1, 1, (len(q), 7)), demos=4),
                                velocities=False)
