"""The privileged-state oracle (clad_lite.state_oracle): statistics, features, windows, training, a rollout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clad_lite.config import ConfigError, apply_overrides, get_profile
from clad_lite.demos import hdf5 as H
from clad_lite.demos.fixtures import synthetic_position_width, write_ours
from clad_lite.state_oracle import (
    STATE_STATS_FILE,
    StateObservation,
    compute_state_stats,
    find_position_width,
    load_or_compute_state_stats,
    load_state_training_data,
)

OTHER = "pick up the synthetic cup"


def _files(tmp_path):
    return [write_ours(tmp_path / "a_demo.hdf5", lengths=(30, 24), images=False),
            write_ours(tmp_path / "b_demo.hdf5", lengths=(13,), images=False, instruction=OTHER)]


def _oracle_profile(*extra):
    return apply_overrides(get_profile("ci"), ["data.vision_source=sim_state", "policy.foresight=none", *extra])


def test_statistics_standardise_each_task_and_are_saved(tmp_path):
    files = _files(tmp_path)
    stats = load_or_compute_state_stats(files)
    assert (tmp_path / STATE_STATS_FILE).is_file()
    assert sorted(stats["tasks"]) == sorted([OTHER, "put the synthetic block in the synthetic basket"])
    task = stats["tasks"][OTHER]
    assert task["width"] == 19 and task["count"] == 13  # fixture states are 20 wide: time dropped
    observation = StateObservation(stats, vision_dim=64, language_dim=32, cameras=("agentview_rgb", "eye_in_hand_rgb"))
    with H.DemoFile(files[1]) as f:
        states = f.read("demo_0", ["states"])["states"]
    x = observation.vision(OTHER, states)
    assert x.shape == (13, 64) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, :19].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[:, :19].std(0), 1.0, atol=1e-4)
    assert np.all(x[:, 19:] == 0)  # zero padding
    far = observation.vision(OTHER, np.full(20, 1e6))
    assert far[:19].max() == 10.0 and far[19:].max() == 0.0  # clipped at 10 standard deviations
    assert observation.camera_part(x, "eye_in_hand_rgb").shape == (13, 32)
    np.testing.assert_array_equal(observation.camera_part(x, "agentview_rgb"), x[:, :32])
    code = observation.language(OTHER)
    assert code.shape == (32,) and code.sum() == 1 and code[sorted(stats["tasks"]).index(OTHER)] == 1
    # clear errors: another scene's state, an unknown task, a slot too narrow
    with pytest.raises(ValueError, match="width 21"):
        observation.vision(OTHER, np.zeros((2, 21)))
    with pytest.raises(KeyError, match="no state statistics"):
        observation.language("open the synthetic door")
    with pytest.raises(ValueError, match="wider than the vision slot"):
        StateObservation(stats, vision_dim=16, language_dim=32, cameras=("agentview_rgb",))
    # saved statistics are reused for the same files and recomputed when the files change
    assert load_or_compute_state_stats(files) == json.loads((tmp_path / STATE_STATS_FILE).read_text())
    write_ours(files[1], lengths=(13, 5), images=False, instruction=OTHER)
    assert load_or_compute_state_stats(files)["tasks"][OTHER]["count"] == 18 == compute_state_stats(files)["tasks"][OTHER]["count"]


def test_positions_only_drop_every_velocity(tmp_path):
    """data.oracle_velocities=false: the oracle state is qpos alone, nq found from the joint velocities."""
    files = _files(tmp_path)
    stats = load_or_compute_state_stats(files)
    nq = synthetic_position_width(20)
    assert nq == 10 and all(task["nq"] == nq for task in stats["tasks"].values())
    with H.DemoFile(files[1]) as f:
        raw = f.read("demo_0", ["states", "obs/" + H.JOINT_VEL_KEY])
    assert find_position_width(raw["states"], raw["obs/" + H.JOINT_VEL_KEY]) == nq
    assert find_position_width(raw["states"], raw["obs/" + H.JOINT_VEL_KEY] + 1.0) is None
    cameras = ("agentview_rgb", "eye_in_hand_rgb")
    full = StateObservation(stats, vision_dim=64, language_dim=32, cameras=cameras)
    positions = StateObservation(stats, vision_dim=64, language_dim=32, cameras=cameras, velocities=False)
    x, q = full.vision(OTHER, raw["states"]), positions.vision(OTHER, raw["states"])
    np.testing.assert_array_equal(q[:, :nq], x[:, :nq])
    assert np.all(q[:, nq:] == 0) and np.abs(x[:, nq:19]).max() > 0
    # statistics without nq (official files have no joint velocities; version-1 files) are refused
    stats["tasks"][OTHER]["nq"] = None
    with pytest.raises(ValueError, match="oracle_velocities=false needs each task's nq"):
        StateObservation(stats, vision_dim=64, language_dim=32, cameras=cameras, velocities=False)
    old = dict(json.loads((tmp_path / STATE_STATS_FILE).read_text()), version=1)
    (tmp_path / STATE_STATS_FILE).write_text(json.dumps(old))
    assert load_or_compute_state_stats(files)["version"] == 2  # an older file is recomputed
    profile = _oracle_profile("data.oracle_velocities=false", "data.proprio=no_joint_vel",
                              "clad.proprio_dim=9", "policy.proprio_dim=9")
    item = load_state_training_data(profile, tmp_path).dataset[1]
    assert item["proprio"].shape == (9,) and torch.all(item["agentview_rgb"][nq:] == 0)
    with pytest.raises(ConfigError, match="oracle_velocities=false needs data.vision_source=sim_state"):
        apply_overrides(get_profile("ci"), ["data.oracle_velocities=false"])


def test_windows_carry_states_at_the_profile_stride(tmp_path):
    _files(tmp_path)
    profile = _oracle_profile()  # ci: image_stride 3
    data = load_state_training_data(profile, tmp_path)
    assert data.cache_dir is None and data.encoder_hash is None
    E = profile.encoder.embed_dim
    assert len(data.dataset) == 10 + 8 + 5  # t = 0, 3, 6, ... of demos of 30, 24, 13 steps
    item = data.dataset[1]
    assert int(item["t"]) == 3 and item["agentview_rgb"].shape == (E,) and item["instruction_emb"].shape == (E,)
    observation = StateObservation(load_or_compute_state_stats(sorted(tmp_path.glob("*.hdf5"))),
                                   profile.policy.vision_dim, E, profile.data.cameras)
    with H.DemoFile(tmp_path / "a_demo.hdf5") as f:
        states = f.read("demo_0", ["states"])["states"]
    expected = observation.vision(f"put the synthetic block in the synthetic basket", states[[0, 3, 9]])
    vision = torch.cat([item["agentview_rgb_prev"], item["eye_in_hand_rgb_prev"]])
    np.testing.assert_allclose(vision.numpy(), expected[0], atol=1e-6)  # t - τ = -3 clamps to step 0
    np.testing.assert_allclose(torch.cat([item["agentview_rgb_next"], item["eye_in_hand_rgb_next"]]).numpy(),
                               expected[2], atol=1e-6)
    dense = load_state_training_data(_oracle_profile("data.image_stride=1"), tmp_path)
    assert len(dense.dataset) == 30 + 24 + 13
    with pytest.raises(ConfigError, match="vision_source"):
        apply_overrides(get_profile("ci"), ["data.vision_source=lidar"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_oracle_trains_and_rolls_out_in_the_simulator(tmp_path):
    """A few stage-2 steps on synthetic states, then a real rollout reading env.get_sim_state():
    statistics for the real scene (task 0) are added so that its states fit."""
    from clad_lite.evaluate import evaluate, read_episode_log
    from clad_lite.sim import LiberoEnv, task_info
    from clad_lite.train import load_checkpoint, train

    torch.set_num_threads(1)
    env = LiberoEnv("libero_10", 0, render=False)
    env.reset(seed=0)
    state_dim = env.get_sim_state().shape[0]
    env.close()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_ours(data_dir / "task0_demo.hdf5", lengths=(20, 16), images=False, state_dim=state_dim,
               instruction=task_info("libero_10", 0).instruction)
    write_ours(data_dir / "other_demo.hdf5", lengths=(13,), images=False, instruction=OTHER)
    profile = _oracle_profile("stage2.steps=4", "stage2.warmup_steps=1", "stage2.checkpoint_every=2",
                              "eval.max_steps=12")
    result = train(profile, 2, tmp_path / "policy", data_dir=data_dir, progress=False, workers=0)
    assert result.step == 4
    checkpoint = load_checkpoint(tmp_path / "policy")
    assert checkpoint["config"]["data"]["vision_source"] == "sim_state"
    assert checkpoint["data"]["state_stats"]["tasks"][OTHER]["count"] == 13
    (data_dir / STATE_STATS_FILE).unlink()  # the run keeps its own statistics
    results = evaluate(tmp_path / "policy", tmp_path / "eval", tasks=[0], episodes=1, workers=1, videos=0,
                       progress=False, fast_reset=True)
    record = read_episode_log(tmp_path / "eval" / "episodes.jsonl")[0]
    assert record["steps"] == 12 or record["success"]
    assert record["queries"] == 2 and record["renders"] == 0  # τ = 6; no camera is read
    assert results["provenance"]["data"]["vision_source"] == "sim_state"
    assert results["provenance"]["encoder"]["spec"] is None
