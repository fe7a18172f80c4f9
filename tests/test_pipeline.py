"""``python -m clad_lite pipeline`` / ``clad_lite.pipeline.Pipeline``: end to end on the ci profile.

One module-scoped run (real simulator, real training, real rollouts, shrunk below the ci
profile so the whole file stays under 4 minutes on 2 busy cores: about 2.5 minutes here), then: a second run
reuses every step, a deleted output is redone alone, a killed training run is resumed, a
changed setting redoes the stale steps only, and bad input is a clean error.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from clad_lite.cli import UserError, main
from clad_lite.pipeline import Pipeline, _result_rows

HAVE_EVAL = True
try:
    import clad_lite.evaluate  # noqa: F401
except ImportError:  # the evaluation module is not there yet: test up to stage 2
    HAVE_EVAL = False

STEPS = ["data", "encoder", "embeddings", "stage1:clad", "stage2:policy", "eval:policy"]


def overrides(root: Path) -> list[str]:
    # the ci profile, smaller still (data generation dominates): 1 demo of one task, a short encoder
    # run, short rollouts
    return [f"data.root={root / 'data'}", "data.tasks=2", "data.demos_per_task=1", "encoder.steps=12", "encoder.warmup_steps=3",
            "encoder.batch_size=8", "stage1.steps=20", "stage1.warmup_steps=2", "stage2.steps=20",
            "stage2.warmup_steps=2", "eval.max_steps=12"]


def statuses(steps) -> dict[str, str]:
    return {(s["step"] if isinstance(s, dict) else s.step): (s["status"] if isinstance(s, dict) else s.status)
            for s in steps}


@pytest.fixture(scope="module")
def one_thread():
    # Pipeline(threads=1) / --threads 1 set torch's threads and OMP_NUM_THREADS: restore both after
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("pipeline")
    pipe = Pipeline("ci", out=root / "run", overrides=overrides(root), threads=1, progress=False)
    summary = pipe.run(skip_eval=not HAVE_EVAL)
    return root, pipe, summary


def new_pipeline(root: Path, *extra) -> Pipeline:
    return Pipeline("ci", out=root / "run", overrides=overrides(root) + list(extra), threads=1, progress=False)


def test_first_run_makes_every_output(first_run):
    root, pipe, summary = first_run
    got = statuses(summary["steps"])
    assert list(got) == STEPS
    assert all(status == "done" for step, status in got.items() if step != "eval:policy"), got
    assert pipe.data() == root / "data" / "libero_10"
    assert (pipe.data() / "summary.json").is_file()
    assert Path(pipe.encoder()) == root / "run" / "encoder.pt" and Path(pipe.encoder()).is_file()
    assert (pipe.embeddings() / "cache.json").is_file()
    for run in ("clad", "policy"):
        assert (root / "run" / run / "last.pt").is_file()
        assert str(root / "run" / run / "loss_curve.png") in summary["figures"]
    report = json.loads((root / "run" / "pipeline.json").read_text())
    assert statuses(report["steps"]) == got
    assert "stage 2" in summary["table"]
    if HAVE_EVAL:
        assert got["eval:policy"] == "done"
        results = json.loads((root / "run" / "eval_policy" / "results.json").read_text())
        rows, average = _result_rows(results)
        assert [r["task"] for r in rows] == [2] and 0.0 <= average <= 1.0
        assert all(0.0 <= r["ci95"][0] <= r["rate"] <= r["ci95"][1] <= 1.0 for r in rows)
        assert summary["videos"] and all(Path(v).stat().st_size > 0 for v in summary["videos"])
        assert "95% interval" in summary["table"] and "avg" in summary["table"]
    else:
        assert got["eval:policy"] == "skipped"


def test_second_run_reuses_every_step(first_run, one_thread, capsys):
    root, _, _ = first_run
    args = ["pipeline", "--profile", "ci", "--out", str(root / "run"), "--threads", "1", "--no-progress"]
    for assignment in overrides(root):
        args += ["--set", assignment]
    if not HAVE_EVAL:
        args.append("--skip-eval")
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((root / "run" / "pipeline.json").read_text())
    got = statuses(report["steps"])
    assert list(got) == STEPS
    assert all(s == "reused" for step, s in got.items() if step != "eval:policy" or HAVE_EVAL), got
    assert "[3/6] embeddings: reused (hash " in printed
    assert "[4/6] stage 1: reused" in printed
    assert sum(s["seconds"] for s in report["steps"]) < 30


def test_a_deleted_output_is_redone_alone(first_run):
    root, first, _ = first_run
    shutil.rmtree(first.embeddings())  # the embedding cache
    (root / "run" / "encoder.pt").unlink()  # the encoder: retrained to the same weights, the same hash
    pipe = new_pipeline(root)
    summary = pipe.run(skip_eval=not HAVE_EVAL)
    got = statuses(summary["steps"])
    assert got["encoder"] == "done" and got["embeddings"] == "done", got
    assert all(got[s] == "reused" for s in ("data", "stage1:clad", "stage2:policy")), got
    if HAVE_EVAL:
        assert got["eval:policy"] == "reused"
        # results.json deleted: the evaluation is redone from its episode log, nothing else
        (root / "run" / "eval_policy" / "results.json").unlink()
        got = statuses(new_pipeline(root).run()["steps"])
        assert got["eval:policy"] != "reused" and (root / "run" / "eval_policy" / "results.json").is_file()
        assert all(got[s] == "reused" for s in STEPS[:-1]), got


def test_a_killed_training_run_is_resumed_and_downstream_redone(first_run):
    root, _, _ = first_run
    run = root / "run" / "clad"
    # as if killed between the checkpoints at steps 10 and 20: only the step-10 checkpoint is left
    (run / "ckpt_000020.pt").unlink()
    (run / "last.pt").unlink()
    os.link(run / "ckpt_000010.pt", run / "last.pt")
    pipe = new_pipeline(root)
    assert pipe.stage2() == root / "run" / "policy"  # runs what it needs first
    got = statuses(pipe.steps)
    assert got["stage1:clad"] == "resumed at step 10", got
    assert got["stage2:policy"] == "redone (stale)", got  # its stage-1 checkpoint is a new file
    assert got["embeddings"] == "reused"
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 20


def test_baseline_uses_the_same_data_and_budget(first_run):
    root, _, _ = first_run
    summary = new_pipeline(root).run(baseline=True, skip_eval=not HAVE_EVAL)
    got = statuses(summary["steps"])
    assert list(got) == STEPS[:5] + ["stage2:policy_only", "eval:policy", "eval:policy_only"]
    assert all(got[s] == "reused" for s in STEPS[:5]), got  # stage 2 was redone by the test before
    assert got["stage2:policy_only"] == "done"
    baseline = torch.load(root / "run" / "policy_only" / "last.pt", weights_only=True)
    policy = torch.load(root / "run" / "policy" / "last.pt", weights_only=True)
    assert baseline["config"]["policy"]["foresight"] == "none" and baseline["clad_checkpoint"] is None
    assert baseline["step"] == policy["step"] and baseline["data"] == policy["data"]
    assert baseline["config"]["stage2"] == policy["config"]["stage2"]
    if HAVE_EVAL:
        assert got["eval:policy"] == "redone (stale)"  # its policy was retrained by the test before
        assert "success of policy_only" in summary["table"]
        assert (root / "run" / "eval_policy_only" / "results.json").is_file()


def test_state_oracle_skips_encoder_and_embeddings(first_run):
    """data.vision_source=sim_state: the same data, no encoder or embeddings, CLaD and the policy on states."""
    root, _, _ = first_run
    pipe = Pipeline("ci", out=root / "oracle", overrides=overrides(root) + ["data.vision_source=sim_state"], threads=1,
                    progress=False)
    summary = pipe.run(skip_eval=not HAVE_EVAL)
    got = statuses(summary["steps"])
    assert list(got) == STEPS and got["data"] == "reused"
    assert got["encoder"] == got["embeddings"] == "skipped" and got["stage1:clad"] == got["stage2:policy"] == "done"
    policy = torch.load(root / "oracle" / "policy" / "last.pt", weights_only=True)
    assert policy["data"]["encoder_hash"] is None and set(policy["data"]["state_stats"]["tasks"]) == {
        "turn on the stove and put the moka pot on it"}
    if HAVE_EVAL:
        results = json.loads((root / "oracle" / "eval_policy" / "results.json").read_text())
        assert results["provenance"]["data"]["vision_source"] == "sim_state"
        # a rollout reads the same features as training: a demo's first state restored in the evaluation's
        # environment gives exactly the windows' vision
        from clad_lite.demos import hdf5 as H
        from clad_lite.evaluate import Agent, load_run
        from clad_lite.sim import task_info

        agent = Agent(dict(load_run(root / "oracle" / "policy"), suite="libero_10", max_steps=12, warmup_steps=0,
                           query_every=6, ensemble=False, start_actions="noop", seed=7, fast_reset=True))
        env = agent.env(2)
        (demo_file,) = H.find_demo_files([pipe.data_dir])
        with H.DemoFile(demo_file) as f:
            first = f.read("demo_0", ["states"])["states"][0]
        env.reset()
        env.set_sim_state(first)
        instruction = task_info("libero_10", 2).instruction
        seen = agent.state_observation.vision(instruction, env.get_sim_state())
        assert seen.shape == (policy["config"]["policy"]["vision_dim"],) and np.any(seen != 0)
        np.testing.assert_array_equal(seen, agent.state_observation.vision(instruction, first))
    assert statuses(pipe.run(skip_eval=not HAVE_EVAL)["steps"])["stage2:policy"] == "reused"


def test_parallel_baseline_runs_in_a_second_process(first_run):
    root, _, _ = first_run
    pipe = Pipeline("ci", out=root / "parallel", overrides=overrides(root), threads=1, progress=False)
    summary = pipe.run(baseline=True, skip_eval=not HAVE_EVAL, parallel=True)
    got = statuses(summary["steps"])
    # the second process trained (and evaluated) the baseline; the summary pass found it done
    assert got["stage2:policy_only"] == "reused" and got["stage2:policy"] == "done", got
    baseline = torch.load(root / "parallel" / "policy_only" / "last.pt", weights_only=True)
    policy = torch.load(root / "parallel" / "policy" / "last.pt", weights_only=True)
    assert baseline["config"]["policy"]["foresight"] == "none" and baseline["step"] == policy["step"]
    if HAVE_EVAL:
        assert got["eval:policy_only"] == "reused" and got["eval:policy"] == "done", got
        assert (root / "parallel" / "eval_policy_only" / "results.json").is_file()
    # publish: the committable results, named as clad_lite.reports finds them
    written = {Path(p).name for p in pipe.publish(root / "published")}
    assert {"libero_10_ci_clad_loss.png", "libero_10_ci_policy_loss.png", "libero_10_ci_policy_only_loss.png",
            "libero_10_ci_policy_train_log.csv", "encoder_libero_10_ci.json", "libero_10_ci_pipeline.json"} <= written
    encoder_summary = json.loads((root / "published" / "encoder_libero_10_ci.json").read_text())
    assert "retrieval_top1" in encoder_summary and "git_sha" in encoder_summary["provenance"]
    if HAVE_EVAL:
        assert {"libero_10_ci.json", "libero_10_ci_policy_only.json", "libero_10_ci_rollouts.png"} <= written
        published = json.loads((root / "published" / "libero_10_ci_policy_only.json").read_text())
        assert published == json.loads((root / "parallel" / "eval_policy_only" / "results.json").read_text())
    assert main(["pipeline", "--profile", "ci", "--parallel", "--out", str(root / "nothing")]) == 2  # no --baseline
    assert not (root / "nothing").exists()


def test_a_changed_setting_redoes_only_the_stale_steps(first_run):
    root, _, _ = first_run
    pipe = new_pipeline(root, "stage2.steps=24", "eval.workers=2")  # eval.workers changes no output
    pipe.stage2()
    got = statuses(pipe.steps)
    assert got["stage1:clad"] == "reused" and got["stage2:policy"] == "redone (stale)", got
    assert (root / "run" / "policy.stale" / "last.pt").exists()  # the old run is kept aside
    assert torch.load(root / "run" / "policy" / "last.pt", weights_only=True)["step"] == 24


def test_data_made_without_noise_do_not_serve_a_noisy_profile(first_run):
    root = first_run[0]
    assert new_pipeline(root)._data_complete()[0]
    complete, why = new_pipeline(root, "data.action_noise=0.1")._data_complete()
    assert not complete and "action noise 0.0" in why and "wants 0.1" in why
    with pytest.raises(UserError, match="action_noise: 0.0 -> 0.1"):  # generate refuses to mix them
        new_pipeline(root, "data.action_noise=0.1").data()
    complete, why = new_pipeline(root, "data.success_hold=10")._data_complete()
    assert not complete and "success hold 0" in why and "wants 10" in why
    complete, why = new_pipeline(root, "data.expert_motion=feedback")._data_complete()
    assert not complete and "make_expert" in why and "wants clad_lite.expert:make_feedback_expert" in why


def test_data_of_an_older_expert_revision_are_not_reused(first_run, monkeypatch):
    import clad_lite.expert

    root = first_run[0]
    monkeypatch.setattr(clad_lite.expert.make_expert, "revision", 2, raising=False)  # the expert was fixed
    complete, why = new_pipeline(root)._data_complete()
    assert not complete and "revision 1 of clad_lite.expert:make_expert" in why and "now at revision 2" in why


def test_images_of_an_older_render_revision_are_not_reused(first_run, monkeypatch):
    """Data rendered before pass 2 placed the fixtures as pass 1 had them are incomplete: generate renders them again."""
    import clad_lite.demos.generate as G

    root = first_run[0]
    monkeypatch.setattr(G, "RENDER_REVISION", G.RENDER_REVISION + 1)  # as if the files were made by an older version
    complete, why = new_pipeline(root)._data_complete()
    assert not complete and f"render revision {G.RENDER_REVISION - 1}, now {G.RENDER_REVISION}" in why
    assert new_pipeline(root, "data.vision_source=sim_state")._data_complete()[0]  # the oracle reads no image


def test_bad_input_is_a_user_error(tmp_path, one_thread, capsys):
    assert main(["pipeline", "--profile", "nope", "--out", str(tmp_path)]) == 2
    assert main(["pipeline", "--profile", "ci", "--set", "stage1.nope=1", "--out", str(tmp_path)]) == 2
    assert "unknown key" in capsys.readouterr().err
    with pytest.raises(UserError):
        Pipeline("ci", out=tmp_path, overrides=["data.demos_per_task=0"])


def test_a_field_at_its_neutral_value_keeps_older_stamps_valid():
    """Fingerprints leave out ``ema_decay`` = 0 (runs stamped before it existed still match); other values count."""
    from clad_lite.config import apply_overrides, get_profile
    from clad_lite.pipeline import _content, _section

    profile = get_profile("ci")
    assert "ema_decay" not in _section(profile, "stage2") and "checkpoint_every" not in _section(profile, "stage2")
    assert _section(apply_overrides(profile, ["stage2.ema_decay=0.99"]), "stage2")["ema_decay"] == 0.99
    saved_before = {k: v for k, v in profile.to_dict()["stage2"].items() if k != "ema_decay"}
    assert _content("stage2", saved_before) == _section(profile, "stage2")
    data_before = {k: v for k, v in profile.to_dict()["data"].items() if k != "vision_source"}
    assert _content("data", data_before) == _section(profile, "data")
    assert _section(apply_overrides(profile, ["data.vision_source=sim_state"]), "data")["vision_source"] == "sim_state"
    data_before = {k: v for k, v in profile.to_dict()["data"].items() if k != "action_noise"}
    assert _content("data", data_before) == _section(profile, "data")
    assert _section(apply_overrides(profile, ["data.action_noise=0.1"]), "data")["action_noise"] == 0.1
    encoder_before = {k: v for k, v in profile.to_dict()["encoder"].items() if k != "crop_ratio"}
    assert _content("encoder", encoder_before) == _section(profile, "encoder")
    saved_after = json.loads(json.dumps(profile.to_dict()["encoder"]))  # a run's config.json: the tuple is a list
    assert _content("encoder", saved_after) == _section(profile, "encoder")
    assert _section(apply_overrides(profile, ["encoder.crop_ratio=1,1"]), "encoder")["crop_ratio"] == [1.0, 1.0]
    data_before = {k: v for k, v in profile.to_dict()["data"].items() if k != "success_hold"}
    assert _content("data", data_before) == _section(profile, "data")
    assert _section(apply_overrides(profile, ["data.success_hold=10"]), "data")["success_hold"] == 10
    data_before = {k: v for k, v in profile.to_dict()["data"].items() if k != "recovery_demos"}
    assert _content("data", data_before) == _section(profile, "data")
    assert _section(apply_overrides(profile, ["data.recovery_demos=5"]), "data")["recovery_demos"] == 5


def test_recovery_demos_are_generated_embedded_and_trained_on(first_run, one_thread):
    """``data.recovery_demos``: the recovery expert's demonstrations go to DATA/recovery (files
    ``<task>_recovery.hdf5``, their own cache); both training stages read them, the encoder does not."""
    from clad_lite.demos import hdf5 as H

    root = first_run[0]
    pipe = Pipeline("ci", out=root / "run", overrides=overrides(root) + ["data.recovery_demos=1"], threads=1,
                    progress=False)
    pipe.stage2()
    got = statuses(pipe.steps)
    assert got["data"] == "reused" and got["recovery"] == "done" and got["encoder"] == "reused", got
    assert got["stage1:clad"] == got["stage2:policy"] == "redone (stale)", got  # more data: both stages again
    recovery = root / "data" / "libero_10" / "recovery"
    (path,) = H.find_demo_files([recovery])
    assert path.name.endswith("_recovery.hdf5")
    summary = json.loads((recovery / "summary.json").read_text())
    assert summary["config"]["policy"] == "clad_lite.expert:make_recovery_expert" and summary["config"]["seed"] == 1
    with H.DemoFile(path) as demo_file:
        (demo,) = demo_file.demos
        assert demo_file.group(demo).attrs["unrecorded_steps"] > 0  # it starts at the hand-over
    for run in ("clad", "policy"):
        data = json.loads((root / "run" / run / "run.json").read_text())["data"]
        assert data["recovery_files"] == 1 and data["recovery_dir"] == str(recovery), data
    again = Pipeline("ci", out=root / "run", overrides=overrides(root) + ["data.recovery_demos=1"], threads=1,
                     progress=False)
    again.stage2()
    assert set(statuses(again.steps).values()) == {"reused"}, statuses(again.steps)
    # without recovery demos the stamps no longer match: the clean-data runs come back
    back = new_pipeline(root)
    back.stage1()
    assert statuses(back.steps)["stage1:clad"] == "redone (stale)"


def test_dagger_demos_are_driven_by_another_runs_policy(first_run, one_thread):
    """``data.dagger_demos`` + ``data.dagger_policy``: a trained run's policy drives, the expert takes
    over (``clad_lite.expert.dagger``); the expert's part goes to DATA/dagger (own files and cache), the
    hand-over range and the driving checkpoint are the set's fingerprint; both stages read it. The
    driver must not be a run this pipeline trains (it would change under its own data)."""
    from clad_lite.demos import hdf5 as H

    root = first_run[0]
    driver = root / "run" / "policy"
    settings = overrides(root) + ["data.dagger_demos=1", f"data.dagger_policy={driver}", "data.dagger_handover=3-6"]
    with pytest.raises(UserError, match="another run's policy"):
        Pipeline("ci", out=root / "run", overrides=settings, threads=1, progress=False)
    out = root / "dagger_run"
    out.mkdir()
    shutil.copy2(root / "run" / "encoder.pt", out / "encoder.pt")  # the same encoder, as a reused step
    pipe = Pipeline("ci", out=out, overrides=settings, threads=1, progress=False)
    pipe.stage1()
    got = statuses(pipe.steps)
    assert got["data"] == "reused" and got["dagger"] == "done" and got["encoder"] == "reused", got
    dagger_dir = root / "data" / "libero_10" / "dagger"
    (path,) = H.find_demo_files([dagger_dir])
    assert path.name.endswith("_dagger.hdf5")
    config = json.loads((dagger_dir / "summary.json").read_text())["config"]
    assert (config["policy"], config["seed"], config["budget"]) == ("clad_lite.expert:make_dagger_expert", 2, 900)
    assert config["policy_args"]["checkpoint"] == str((driver / "last.pt").resolve())
    assert config["policy_args"]["handover"] == "3-6"
    with H.DemoFile(path) as demo_file:
        (demo,) = demo_file.demos
        assert 3 <= demo_file.group(demo).attrs["unrecorded_steps"] <= 6  # the expert's part only
    data = json.loads((out / "clad" / "run.json").read_text())["data"]
    assert data["dagger_files"] == 1 and data["dagger_dir"] == str(dagger_dir), data
    again = Pipeline("ci", out=out, overrides=settings, threads=1, progress=False)
    again.stage1()
    assert set(statuses(again.steps).values()) == {"reused"}, statuses(again.steps)
