"""LIBERO evaluation: Wilson intervals, resumable episode bookkeeping, and a real rollout.

The end-to-end test builds a tiny run folder directly (no training: randomly initialised ``ci``
CLaD + policy checkpoints in the format of ``clad_lite.train``, a random DecisionNCE-lite
encoder checkpoint, an embedding-cache index naming it, and ``norm_stats.json``), then rolls
out 1 task x 1 episode of 30 steps in the real simulator with a video.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clad_lite.cli import main as cli_main
from clad_lite.evaluate import (
    EPISODES_NAME,
    EpisodeLog,
    episode_seed,
    evaluate,
    goal_counts,
    parse_tasks,
    read_episode_log,
    run_jobs,
    validate_results,
    wilson_interval,
)

TASK = 0
INSTRUCTION = "put both the alphabet soup and the tomato sauce in the basket"  # libero_10 task 0


# --------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("k, n, lo, hi", [
    (0, 10, 0.0, 0.2775),        # known values of the Wilson score interval, z = 1.96
    (5, 10, 0.2366, 0.7634),
    (10, 10, 0.7225, 1.0),
    (1, 20, 0.0089, 0.2361),
    (45, 50, 0.7864, 0.9565),
    (25, 50, 0.3664, 0.6336),
])
def test_wilson_interval_known_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_edge_cases_and_task_lists():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for n in (10, 100, 500):                 # the ends are exact, not the formula's rounding residue
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    assert parse_tasks("0-3,7") == [0, 1, 2, 3, 7] and parse_tasks("5") == [5] and parse_tasks(None) is None
    assert parse_tasks([2, 1, 2]) == [1, 2]
    with pytest.raises(ValueError):
        parse_tasks("a-b")
    assert episode_seed(7, 0, 3) == episode_seed(7, 0, 3) != episode_seed(7, 1, 3)


# --------------------------------------------------------------------------- bookkeeping
class Crash(RuntimeError):
    pass


def fake_rollout(calls: list, crash_after: int | None = None):
    def rollout(job):
        if crash_after is not None and len(calls) >= crash_after:
            raise Crash("killed")
        calls.append((job["task_id"], job["episode"]))
        return {"task_id": job["task_id"], "episode": job["episode"], "success": (job["episode"] + job["task_id"]) % 2 == 0,
                "steps": 1, "env_steps": 11, "seconds": 0.0}
    return rollout


def test_episode_log_resumes_without_losing_or_repeating(tmp_path):
    jobs = [{"task_id": t, "episode": e} for t in (0, 3) for e in range(5)]
    path = tmp_path / EPISODES_NAME
    calls: list = []
    with pytest.raises(Crash):  # the run dies after 4 episodes
        run_jobs(jobs, EpisodeLog(path), fake_rollout(calls, crash_after=4), progress=False)
    assert len(read_episode_log(path)) == 4
    # a kill in the middle of the 5th write leaves half a line; a duplicate line is ignored too
    with open(path, "a") as handle:
        handle.write(json.dumps({"task_id": 0, "episode": 0, "success": False}) + "\n")
        handle.write('{"task_id": 3, "episode": 4, "succ')
    records = read_episode_log(path)
    assert [(r["task_id"], r["episode"]) for r in records] == calls[:4]
    assert path.read_text().endswith("\n")  # the partial line was cut off
    resumed: list = []
    run_jobs(jobs, EpisodeLog(path), fake_rollout(resumed), progress=False)
    assert sorted(calls + resumed) == sorted((j["task_id"], j["episode"]) for j in jobs)  # each exactly once
    final = read_episode_log(path)
    assert sorted((r["task_id"], r["episode"]) for r in final) == sorted((j["task_id"], j["episode"]) for j in jobs)
    assert len(path.read_text().splitlines()) == len(jobs) + 1  # + the ignored duplicate
    again: list = []
    run_jobs(jobs, EpisodeLog(path), fake_rollout(again), progress=False)
    assert again == []


def test_in_process_rollouts_use_one_torch_thread_like_the_workers(tmp_path):
    """The thread count changes the networks' float rounding, which changes closed-loop outcomes, so in-process
    rollouts (--workers 1) run with one thread as the spawned workers do, and the caller's count comes back."""
    seen = []

    def rollout(job):
        seen.append(torch.get_num_threads())
        return fake_rollout([])(job)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_jobs([{"task_id": 0, "episode": e} for e in range(2)], EpisodeLog(tmp_path / EPISODES_NAME), rollout,
                 progress=False)
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- a tiny run
def make_tiny_run(root: Path, foresight: str = "both", max_steps: int = 30, ema: bool = False,
                  overrides: tuple[str, ...] = ()) -> Path:
    """A stage-2 run folder with random ci-sized models, its stage-1 run, data stats and encoder.

    ``ema``: the policy checkpoints also hold a weight EMA (another random policy), in the
    layout of torch's ``AveragedModel.state_dict()`` as ``clad_lite.train`` saves it.
    """
    from clad_lite.clad import CLaD
    from clad_lite.config import apply_overrides, get_profile
    from clad_lite.encoders.cache import CACHE_FORMAT
    from clad_lite.encoders.lite import DecisionNCELite, LiteEncoder, save_checkpoint
    from clad_lite.encoders.text import BASE_DIM
    from clad_lite.policy import ForesightPolicy
    from clad_lite.train import CHECKPOINT_FORMAT

    profile = apply_overrides(get_profile("ci"), [f"eval.max_steps={max_steps}", f"policy.foresight={foresight}",
                                                  *overrides])
    torch.manual_seed(0)
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    encoder_path = root / "encoder.pt"
    save_checkpoint(encoder_path, DecisionNCELite(profile.encoder), {INSTRUCTION: torch.randn(BASE_DIM)}, step=0)
    encoder_hash = LiteEncoder.load(encoder_path).hash()
    cache_dir = data_dir / "embeddings" / encoder_hash[:16]
    cache_dir.mkdir(parents=True)
    (cache_dir / "cache.json").write_text(json.dumps({
        "format": CACHE_FORMAT, "encoder_hash": encoder_hash, "encoder_spec": str(encoder_path),
        "embed_dim": profile.encoder.embed_dim, "cameras": list(profile.data.cameras), "dtype": "float16", "files": {}}))
    rng = np.random.default_rng(0)

    def stat(width, lo=-1.0, hi=1.0, std=0.5):
        return {"min": [lo] * width, "max": [hi] * width, "mean": rng.normal(0, 0.1, width).tolist(),
                "std": [std] * width, "count": 100}

    stats = {"version": 1, "files": {}, "keys": {
        "actions": {**stat(7, -0.5, 0.5), "max": [0.5] * 6 + [1.0], "min": [-0.5] * 6 + [-1.0]},
        "obs/joint_states": stat(7), "obs/gripper_states": stat(2, std=0.02), "obs/joint_vel": stat(7),
        "robot_states": stat(9)}}
    (data_dir / "norm_stats.json").write_text(json.dumps(stats))
    data = {"data_dir": str(data_dir), "cache_dir": str(cache_dir), "encoder_hash": encoder_hash, "windows": 0}

    clad_ckpt = None
    if profile.policy.uses_clad:
        s1 = root / "stage1"
        s1.mkdir()
        clad_ckpt = s1 / "ckpt_000001.pt"
        torch.save({"format": CHECKPOINT_FORMAT, "stage": 1, "step": 1, "model": CLaD(profile.clad).state_dict(),
                    "config": profile.to_dict(), "data": data}, clad_ckpt)
        (s1 / "config.json").write_text(json.dumps(profile.to_dict()))
    run_dir = root / "stage2"
    run_dir.mkdir()
    for step in (1, 2):
        torch.manual_seed(step)
        model = ForesightPolicy(profile.policy).state_dict()
        averaged = {f"module.{k}": v for k, v in ForesightPolicy(profile.policy).state_dict().items()}
        torch.save({"format": CHECKPOINT_FORMAT, "stage": 2, "step": step, "model": model,
                    "ema": {**averaged, "n_averaged": torch.tensor(step)} if ema else None, "config": profile.to_dict(),
                    "clad_checkpoint": str(clad_ckpt) if clad_ckpt else None, "data": data},
                   run_dir / f"ckpt_{step:06d}.pt")
    (run_dir / "last.pt").hardlink_to(run_dir / "ckpt_000002.pt")
    (run_dir / "config.json").write_text(json.dumps(profile.to_dict()))
    (run_dir / "run.json").write_text(json.dumps({"stage": 2, "data": data, "clad_checkpoint": str(clad_ckpt)}))
    return run_dir


def test_user_errors(tmp_path, capsys):
    assert cli_main(["eval", "--ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "e")]) == 2
    assert "not found" in capsys.readouterr().err
    run_dir = make_tiny_run(tmp_path / "r")
    assert cli_main(["eval", "--ckpt", str(tmp_path / "r" / "stage1"), "--out", str(tmp_path / "e")]) == 2
    assert "stage-1" in capsys.readouterr().err
    assert cli_main(["eval", "--ckpt", str(run_dir), "--encoder", str(tmp_path / "none.pt"), "--out",
                     str(tmp_path / "e")]) == 2
    assert "encoder checkpoint not found" in capsys.readouterr().err
    (tmp_path / "r" / "data" / "norm_stats.json").unlink()
    assert cli_main(["eval", "--ckpt", str(run_dir), "--out", str(tmp_path / "e")]) == 2
    assert "normalisation statistics not found" in capsys.readouterr().err


def test_top3_protocol_bookkeeping_with_a_fake_rollout(tmp_path):
    run_dir = make_tiny_run(tmp_path / "r")
    calls: list = []
    results = evaluate(run_dir, tmp_path / "e", tasks="0-1", protocol="top3", episodes=3, progress=False,
                       rollout=fake_rollout(calls))
    validate_results(results)
    assert len(calls) == 2 * 2 * 3  # 2 checkpoints x 2 tasks x 3 episodes
    checkpoints = results["protocol"]["checkpoints"]
    assert len(checkpoints) == 2 and all(c["selected"] for c in checkpoints)  # fewer than 3: all of them
    assert results["per_task"][0]["episodes"] == 6 and results["episodes_per_task"] == 3
    assert (tmp_path / "e" / "ckpt_000001" / EPISODES_NAME).exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_real_rollout_end_to_end(tmp_path):
    torch.set_num_threads(1)
    run_dir = make_tiny_run(tmp_path / "r", max_steps=30)
    out = tmp_path / "eval"
    results = evaluate(run_dir, out, tasks=[TASK], episodes=1, workers=1, videos=1, progress=False, fast_reset=True)
    validate_results(results)
    saved = json.loads((out / "results.json").read_text())
    assert saved["per_task"] == results["per_task"]
    assert set(saved) >= {"suite", "profile", "protocol", "episodes_per_task", "per_task", "average", "provenance"}
    assert set(saved["provenance"]) >= {"git_sha", "config", "seed", "data", "encoder", "versions", "device"}
    task = saved["per_task"][0]
    assert task["task_id"] == TASK and task["instruction"] == INSTRUCTION and task["episodes"] == 1
    assert saved["suite"] == "libero_10" and saved["profile"] == "ci" and saved["protocol"]["name"] == "single"
    records = read_episode_log(out / EPISODES_NAME)
    assert len(records) == 1
    record = records[0]
    assert record["steps"] == 30 or record["success"]
    assert task["episode_success"] == [int(record["success"])]  # what clad_lite.compare pairs
    assert record["queries"] == 5 and record["env_steps"] == 40  # τ = 6: queries at 0, 6, ..., 24; 10 warm-up steps
    video = Path(record["video"])
    assert video.is_file() and video.stat().st_size > 1000 and video.suffix == ".mp4"
    # partial progress: task 0's two goal predicates, neither reached by a random policy in 30 steps
    goals = ["In(alphabet_soup_1, basket_1_contain_region)", "In(tomato_sauce_1, basket_1_contain_region)"]
    assert record["goals"] == goals and record["goals_final"] == record["goals_reached"] == [False, False]
    assert task["goals"] == [{"predicate": g, "reached": 0, "final": 0, "episodes": 1} for g in goals]
    # grasps: every logged close names one of the task's movable objects, and the task's sums add up
    objects = {"alphabet_soup_1", "cream_cheese_1", "tomato_sauce_1", "ketchup_1", "orange_juice_1", "milk_1",
               "butter_1", "basket_1"}
    assert all(g["object"] in objects and g["t"] < 30 for g in record["grasps"])
    assert task["grasps"]["grasps"] == len(record["grasps"]) and task["grasps"]["episodes"] == 1
    # resuming a finished evaluation runs nothing and gives the same numbers
    again = evaluate(run_dir, out, tasks=[TASK], episodes=1, workers=1, videos=1, progress=False, fast_reset=True)
    assert again["per_task"] == results["per_task"]
    assert len(read_episode_log(out / EPISODES_NAME)) == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_policy_only_run_is_deterministic_per_seed(tmp_path):
    """foresight=none needs no CLaD; the policy's RNG is a function of (seed, task, episode)."""
    from clad_lite.evaluate import Agent, load_run

    torch.set_num_threads(1)
    run_dir = make_tiny_run(tmp_path / "r", foresight="none", max_steps=7)
    spec = dict(load_run(run_dir), suite="libero_10", max_steps=7, warmup_steps=2, query_every=6, ensemble=False,
                start_actions="noop", seed=7, fast_reset=True, video_dir=str(tmp_path / "v"))
    agent = Agent(spec)
    assert agent.clad is None
    env = agent.env(TASK)
    original, seen = env.step, []
    env.step = lambda action: (seen.append(np.asarray(action).copy()), original(action))[1]
    try:
        record = agent.rollout({"task_id": TASK, "episode": 1})
    finally:
        env.step = original
    assert record["queries"] == 2 and record["steps"] == 7 and len(seen) == 2 + 7
    assert np.all(np.abs(np.stack(seen)) <= 1.0)
    # the same history and generator seed give the same chunk; another seed another chunk
    rng = np.random.default_rng(0)
    proprio = [rng.normal(size=16).astype(np.float32)]
    vision = {0: rng.normal(size=128).astype(np.float32)}
    language = agent.language(INSTRUCTION)
    plan = lambda s: agent.plan(0, proprio, vision, [], language, torch.Generator().manual_seed(s))
    np.testing.assert_array_equal(plan(episode_seed(7, TASK, 1)), plan(episode_seed(7, TASK, 1)))
    assert not np.allclose(plan(episode_seed(7, TASK, 1)), plan(episode_seed(7, TASK, 2)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_longer_predicted_chunk_executes_its_first_tau_actions(tmp_path):
    """policy.extra_actions = 6: each query predicts 12 actions; the rollout executes the first τ = 6 of
    each and queries again, so the last 6 of every chunk are never executed."""
    from clad_lite.evaluate import Agent, load_run

    torch.set_num_threads(1)
    run_dir = make_tiny_run(tmp_path / "r", foresight="none", max_steps=13, overrides=("policy.extra_actions=6",))
    spec = dict(load_run(run_dir), suite="libero_10", max_steps=13, warmup_steps=2, query_every=6, ensemble=False,
                start_actions="noop", seed=7, fast_reset=True, video_dir=str(tmp_path / "v"))
    agent = Agent(spec)
    env = agent.env(TASK)
    original_step, original_plan, seen, chunks = env.step, agent.plan, [], []
    env.step = lambda action: (seen.append(np.asarray(action).copy()), original_step(action))[1]
    agent.plan = lambda *args: (chunks.append(original_plan(*args)), chunks[-1])[1]
    try:
        record = agent.rollout({"task_id": TASK, "episode": 0})
    finally:
        env.step = original_step
    assert record["queries"] == 3 and [c.shape for c in chunks] == [(12, 7)] * 3
    executed = np.concatenate([chunks[0][:6], chunks[1][:6], chunks[2][:1]])
    expected = np.clip(agent.normalizer.unnormalize_actions(executed), -1.0, 1.0)
    np.testing.assert_allclose(np.stack(seen[2:]), expected, rtol=1e-6, atol=1e-7)


def test_open_loop_and_temporal_ensembling_pick_actions():
    from clad_lite.evaluate import ENSEMBLE_M, Agent

    class Stub:
        def __init__(self):
            self.spec = {"ensemble": False}

    chunks = [(0, np.zeros((6, 7))), (2, np.ones((6, 7)))]
    stub = Stub()
    assert np.all(Agent.choose(stub, 3, chunks) == 1.0)  # open loop: the newest chunk
    assert np.all(Agent.choose(stub, 1, chunks[:1]) == 0.0)
    stub.spec = {"ensemble": True}
    w = np.exp(-ENSEMBLE_M)  # ACT: the oldest chunk has weight 1
    np.testing.assert_allclose(Agent.choose(stub, 3, chunks), w / (1 + w))
    np.testing.assert_allclose(Agent.choose(stub, 7, chunks), 1.0)  # only the second chunk covers step 7


def test_gripper_latch_flips_only_past_the_threshold():
    """--gripper-hysteresis h: the env and the history get a held ±1 gripper; off, the raw command passes."""
    from clad_lite.demos.windows import Normalizer
    from clad_lite.evaluate import Agent

    stats = {"keys": {"actions": {"min": [-0.5] * 6 + [-1.0], "max": [0.5] * 6 + [1.0]},
                      "robot_states": {"mean": [0.0] * 9, "std": [1.0] * 9}}}

    class Stub:
        def __init__(self, h):
            self.spec = {"gripper_hysteresis": h}
            self.normalizer = Normalizer(stats, "authors_code")
            self.gripper = -1.0

    arm = np.array([0.1, -0.2, 0.3, 0.0, 0.0, 0.0], np.float32)
    plain = Stub(None)
    history, env_action = Agent.to_env(plain, np.r_[arm, 0.3].astype(np.float32))
    np.testing.assert_allclose(history, np.r_[arm, 0.3], rtol=1e-6)
    np.testing.assert_allclose(env_action, plain.normalizer.unnormalize_actions(np.r_[arm, 0.3]), rtol=1e-6)
    latched = Stub(0.5)
    commands = [0.3, 0.6, 0.02, -0.4, -0.7, 0.45, 0.9]  # gripper commands (the normaliser maps ±1 to ±1)
    executed = []
    for command in commands:
        history, env_action = Agent.to_env(latched, np.r_[arm, command].astype(np.float32))
        np.testing.assert_allclose(env_action[:6], plain.normalizer.unnormalize_actions(np.r_[arm, 0])[:6], rtol=1e-6)
        np.testing.assert_allclose(latched.normalizer.unnormalize_actions(history)[-1], env_action[-1], atol=1e-6)
        executed.append(float(env_action[-1]))
    assert executed == [-1.0, 1.0, 1.0, 1.0, -1.0, -1.0, 1.0]
    sign = Stub(0.0)  # h = 0: the plain sign; exactly 0 holds
    assert [float(Agent.to_env(sign, np.r_[arm, c].astype(np.float32))[1][-1]) for c in (0.01, 0.0, -0.01, 0.0)] \
        == [1.0, 1.0, -1.0, -1.0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_weights_choice_ema_or_raw(tmp_path):
    """--weights auto picks the weight EMA when the run kept one; the choice is recorded and guarded."""
    from clad_lite.cli import UserError
    from clad_lite.evaluate import Agent, load_run

    torch.set_num_threads(1)
    run_dir = make_tiny_run(tmp_path / "r", foresight="none", ema=True)
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    for weights, source in (("auto", "ema"), ("ema", "ema"), ("raw", "model")):
        agent = Agent(dict(load_run(run_dir), weights=weights, device="cpu"))
        expected = checkpoint[source] if source == "model" else \
            {k[len("module."):]: v for k, v in checkpoint["ema"].items() if k.startswith("module.")}
        assert agent.weights == ("raw" if weights == "raw" else "ema")
        for key, value in agent.policy.state_dict().items():
            assert torch.equal(value, expected[key]), (weights, key)
    calls: list = []
    results = evaluate(run_dir, tmp_path / "e", tasks="0", episodes=2, progress=False, rollout=fake_rollout(calls))
    assert results["protocol"]["weights"] == "ema"
    with pytest.raises(UserError, match="other settings"):  # the raw weights are another evaluation
        evaluate(run_dir, tmp_path / "e", tasks="0", episodes=2, progress=False, weights="raw", rollout=fake_rollout(calls))
    raw = evaluate(run_dir, tmp_path / "e_raw", tasks="0", episodes=2, progress=False, weights="raw",
                   rollout=fake_rollout(calls))
    assert raw["protocol"]["weights"] == "raw"
    plain = make_tiny_run(tmp_path / "p", foresight="none")
    assert evaluate(plain, tmp_path / "e_plain", tasks="0", episodes=1, progress=False,
                    rollout=fake_rollout(calls))["protocol"]["weights"] == "raw"
    with pytest.raises(UserError, match="no weight EMA"):
        evaluate(plain, tmp_path / "e_plain2", tasks="0", episodes=1, progress=False, weights="ema",
                 rollout=fake_rollout(calls))
    # an evaluation folder written before weights were recorded counts as raw weights
    config = json.loads((tmp_path / "e_plain" / "eval_config.json").read_text())
    del config["weights"]
    (tmp_path / "e_plain" / "eval_config.json").write_text(json.dumps(config))
    evaluate(plain, tmp_path / "e_plain", tasks="0", episodes=1, progress=False, rollout=fake_rollout(calls))


def test_goal_counts_per_predicate():
    def record(reached, final, goals=("In(a, b)", "On(c, d)")):
        return {"goals": list(goals), "goals_reached": list(reached), "goals_final": list(final)}

    records = [record((True, True), (True, True)), record((True, False), (False, False)), record((False, False), (False, False))]
    assert goal_counts(records) == [{"predicate": "In(a, b)", "reached": 2, "final": 1, "episodes": 3},
                                    {"predicate": "On(c, d)", "reached": 1, "final": 1, "episodes": 3}]
    # episodes logged before goal tracking, or a mix, give no counts rather than wrong ones
    assert goal_counts([{"success": False}]) == [] and goal_counts(records + [{"success": True}]) == []
    assert goal_counts([record((True,), (True,), goals=("In(a, b)",)), records[0]]) == []


def plan_once(spec: dict) -> list[dict]:
    """The keyword arguments with which an Agent of ``spec`` calls ``policy.sample_actions`` for one chunk
    (a tiny run's 16-D proprio and 128-D vision, all zeros)."""
    from clad_lite.evaluate import Agent

    agent, seen = Agent(spec), []
    sample = agent.policy.sample_actions
    agent.policy.sample_actions = lambda *a, **k: (seen.append(k), sample(*a, **k))[1]
    agent.plan(0, [np.zeros(16, np.float32)], {0: np.zeros(128, np.float32)}, [], np.zeros(64, np.float32),
               torch.Generator().manual_seed(0))
    return seen


def test_action_samples_reach_the_policy_and_are_recorded(tmp_path):
    """--action-samples N: the Agent averages N draws per query; results.json and the settings identity
    record N, and an evaluation folder of one-draw rollouts (written before the option) still matches N = 1."""
    from clad_lite.cli import UserError
    from clad_lite.evaluate import load_run

    torch.set_num_threads(1)
    run_dir = make_tiny_run(tmp_path / "r", foresight="none")
    seen = plan_once(dict(load_run(run_dir), device="cpu", action_samples=4))
    assert [k["num_samples"] for k in seen] == [4]
    calls: list = []
    one = evaluate(run_dir, tmp_path / "e1", tasks="0", episodes=1, progress=False, rollout=fake_rollout(calls))
    assert one["protocol"]["action_samples"] == 1
    assert "action_samples" not in json.loads((tmp_path / "e1" / "eval_config.json").read_text())
    eight = evaluate(run_dir, tmp_path / "e8", tasks="0", episodes=1, progress=False, action_samples=8,
                     rollout=fake_rollout(calls))
    assert eight["protocol"]["action_samples"] == 8
    with pytest.raises(UserError, match="other settings"):
        evaluate(run_dir, tmp_path / "e1", tasks="0", episodes=1, progress=False, action_samples=8,
                 rollout=fake_rollout(calls))
    with pytest.raises(UserError, match="action-samples"):
        evaluate(run_dir, tmp_path / "e0", tasks="0", episodes=1, progress=False, action_samples=0,
                 rollout=fake_rollout(calls))


def test_sampler_reaches_the_policy_and_is_recorded(tmp_path):
    """--sampler ddim [--sampling-steps N]: the Agent samples with DDIM; results.json records the sampler and its
    step count, an older (DDPM) evaluation folder is not resumed with DDIM, and bad combinations are clear errors."""
    from clad_lite.cli import UserError
    from clad_lite.evaluate import load_run

    torch.set_num_threads(1)
    run_dir = make_tiny_run(tmp_path / "r", foresight="none")
    seen = plan_once(dict(load_run(run_dir), device="cpu")) + plan_once(
        dict(load_run(run_dir), device="cpu", sampler="ddim", sampling_steps=5))
    assert [(k["sampler"], k["num_inference_steps"]) for k in seen] == [("ddpm", None), ("ddim", 5)]
    calls: list = []
    ddpm = evaluate(run_dir, tmp_path / "e", tasks="0", episodes=1, progress=False, rollout=fake_rollout(calls))
    steps = load_run(run_dir)["config"]["policy"]["diffusion_steps"]
    assert (ddpm["protocol"]["sampler"], ddpm["protocol"]["sampling_steps"]) == ("ddpm", steps)
    assert "sampler" not in json.loads((tmp_path / "e" / "eval_config.json").read_text())
    ddim = evaluate(run_dir, tmp_path / "d", tasks="0", episodes=1, progress=False, sampler="ddim", sampling_steps=5,
                    rollout=fake_rollout(calls))
    assert (ddim["protocol"]["sampler"], ddim["protocol"]["sampling_steps"]) == ("ddim", 5)
    with pytest.raises(UserError, match="other settings"):
        evaluate(run_dir, tmp_path / "e", tasks="0", episodes=1, progress=False, sampler="ddim",
                 rollout=fake_rollout(calls))
    for bad in ({"sampler": "euler"}, {"sampling_steps": 5}, {"sampler": "ddim", "sampling_steps": steps + 1}):
        with pytest.raises(UserError, match="sampl"):
            evaluate(run_dir, tmp_path / "bad", tasks="0", episodes=1, progress=False, rollout=fake_rollout(calls), **bad)


def test_start_from_demos_reads_each_tasks_first_demo_states(tmp_path):
    """--start-from-demos DATA: episode i of task k starts from states[0] of demo i of task k's file; the protocol
    says so, the settings identity keeps it apart, and too few demos or a missing task are clear errors."""
    import h5py

    from clad_lite.cli import UserError
    from clad_lite.demos.fixtures import write_ours
    from clad_lite.evaluate import demo_start_states
    from clad_lite.sim import task_info

    data = tmp_path / "demos"
    data.mkdir()
    write_ours(data / "task0.hdf5", lengths=(5, 4, 6), images=False, instruction=task_info("libero_10", 0).instruction)
    with h5py.File(data / "task0.hdf5", "r") as f:
        firsts = np.stack([f[f"data/demo_{i}/states"][0] for i in range(3)])
    np.testing.assert_array_equal(demo_start_states(str(data), "libero_10", 0), firsts)
    with pytest.raises(UserError, match="no demonstrations of libero_10 task 1"):
        demo_start_states(str(data), "libero_10", 1)
    run_dir = make_tiny_run(tmp_path / "r", foresight="none")
    calls: list = []
    results = evaluate(run_dir, tmp_path / "e", tasks="0", episodes=3, progress=False, start_from_demos=data,
                       rollout=fake_rollout(calls))
    assert "training demo i" in results["protocol"]["init_states"]
    assert json.loads((tmp_path / "e" / "eval_config.json").read_text())["start_demos"] == str(data.resolve())
    with pytest.raises(UserError, match="other settings"):  # the LIBERO init states are another evaluation
        evaluate(run_dir, tmp_path / "e", tasks="0", episodes=3, progress=False, rollout=fake_rollout(calls))
    with pytest.raises(UserError, match="fewer than --episodes 4"):
        evaluate(run_dir, tmp_path / "e4", tasks="0", episodes=4, progress=False, start_from_demos=data,
                 rollout=fake_rollout(calls))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_live_vision_at_a_demo_state_is_the_training_embedding(tmp_path):
    """The whole chain, generation -> rendering -> cache (what training reads) against the evaluation's
    live render -> encoder (what the policy reads), at the same recorded states of a task with a fixture
    (task 5, the caddy): equal up to the cache's float16 rounding. Pass 2 once rendered the caddy where
    another reset had put it, up to 1 cm off: 2-4% of the embedding here, 20x the tolerance."""
    from clad_lite.demos import generate as G
    from clad_lite.demos import hdf5 as H
    from clad_lite.encoders.cache import EmbeddingCache, embed_directory
    from clad_lite.evaluate import Agent, load_run

    torch.set_num_threads(1)
    run_dir = make_tiny_run(tmp_path / "r", foresight="none")
    spec = dict(load_run(run_dir), suite="libero_10", max_steps=8, warmup_steps=0, seed=7, fast_reset=True)
    agent = Agent(spec)
    data = tmp_path / "demos"
    summary = G.generate(G.GenerateConfig(tasks=[5], demos=2, out=str(data), policy=G.STANDIN_POLICY, keep_failures=True,
                                          image_size=agent.profile.data.image_size, seed=3, budget=3, done_grace=0,
                                          progress=False))
    cache = EmbeddingCache(embed_directory(data, agent.encoder)["cache_dir"])
    env = agent.env(5)
    with H.DemoFile(data / summary["tasks"][0]["file"]) as demos:
        for demo in demos.demos:
            states = demos.read(demo, ["states"])["states"]
            env.reset(seed=int(demos.group(demo).attrs["env_seed"]))  # the demo's own placement, fixtures too
            for t in range(len(states)):
                env.set_sim_state(states[t])
                live = agent.vision(env.render_cameras())
                stored = np.concatenate([cache.frames(demos.path, demo, camera)[t] for camera in agent.cameras])
                np.testing.assert_allclose(live, stored, rtol=1e-3, atol=1e-4)  # float16: ~1e-3 relative
    cache.close()
