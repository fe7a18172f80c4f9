"""On-policy recovery data (``clad_lite.expert.dagger``): a trained policy drives, the scripted expert
takes over, and ``generate`` records only the expert."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from test_evaluate import TASK, make_tiny_run

from clad_lite.cli import UserError
from clad_lite.demos import generate as G
from clad_lite.encoders.base import file_sha256
from clad_lite.expert import dagger

POLICY = "clad_lite.expert:make_dagger_expert"


def test_handover_ranges_parse_and_are_checked():
    assert dagger.parse_handover("20-400") == (20, 400)
    assert dagger.parse_handover("150") == (150, 150)
    for bad in ("a-b", "9-3", "-5", ""):
        with pytest.raises(UserError, match="handover"):
            dagger.parse_handover(bad)


def test_canonical_args_pin_the_checkpoint_and_refuse_what_is_unknown(tmp_path):
    torch.set_num_threads(1)
    run_dir = make_tiny_run(tmp_path / "r", foresight="none", max_steps=5)
    args = dagger.canonical_args({"checkpoint": str(run_dir)})
    checkpoint = run_dir / "last.pt"
    assert args == {"checkpoint": str(checkpoint.resolve()), "handover": "20-400",
                    "checkpoint_sha256": file_sha256(checkpoint)}
    assert dagger.canonical_args({**args, "handover": "5"})["handover"] == "5-5"
    with pytest.raises(UserError, match="checkpoint=RUN"):
        dagger.canonical_args({"handover": "1-2"})
    with pytest.raises(UserError, match="checkpoint=RUN"):
        dagger.canonical_args({"checkpoint": str(run_dir), "beta": "0.5"})
    with pytest.raises(UserError, match="not found"):
        dagger.canonical_args({"checkpoint": str(tmp_path / "nowhere")})
    with pytest.raises(UserError, match="changed since"):  # a worker refuses a checkpoint rewritten under the data set
        dagger.agent_for(str(checkpoint), "0" * 64)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_policy_drives_until_the_handover_then_the_expert_is_recorded(tmp_path, monkeypatch):
    """A real pass 1 + pass 2 in the simulator with a (random, tiny) trained policy: it drives for the
    attempt's hand-over step count, unrecorded, with rendered cameras; the expert then finishes the
    task from that scene and only its steps are stored, from the hand-over state on."""
    from clad_lite.evaluate import Agent

    torch.set_num_threads(1)
    run_dir = make_tiny_run(tmp_path / "r", foresight="none", max_steps=5)
    calls = []
    original = Agent.act
    monkeypatch.setattr(Agent, "act", lambda self, *a: (calls.append(1), original(self, *a))[1])
    size = json.loads((run_dir / "config.json").read_text())["data"]["image_size"]
    out = tmp_path / "dagger"
    cfg = G.GenerateConfig(tasks=[TASK], demos=1, out=str(out), policy=POLICY, workers=1, image_size=size,
                           image_stride=50, budget=900, max_attempts=3, kind="dagger", progress=False,
                           policy_args={"checkpoint": str(run_dir), "handover": "4-8"})
    summary = G.generate(cfg)
    row = summary["tasks"][0]
    assert row["demos"] == 1 and row["file"].endswith("_dagger.hdf5")
    assert summary["config"]["policy_args"]["handover"] == "4-8"
    attempts = [json.loads(p.read_text()) for p in sorted(G.parts_dir(out, TASK).glob("attempt_*.json"))]
    kept = [a for a in attempts if a["kept"]][0]
    assert row["ended_before_recording"] == sum(a["ended_before_recording"] for a in attempts)
    # the hand-over step is the attempt's own draw (the first child of its policy RNG)
    _, rng = G.attempt_seeds(cfg.seed, cfg.suite, TASK, kept["attempt"])
    handover = int(rng.spawn(2)[0].integers(4, 9))
    assert kept["unrecorded_steps"] == handover and len(calls) == sum(a["unrecorded_steps"] for a in attempts)
    with h5py.File(out / row["file"], "r") as f:
        demo = f["data/demo_0"]
        assert demo.attrs["unrecorded_steps"] == handover and len(demo["actions"]) == kept["length"] > 50
        np.testing.assert_array_equal(demo.attrs["init_state"], demo["states"][0])
        assert demo["obs/agentview_rgb"].shape[1:] == (size, size, 3)
    # resuming the finished set runs nothing; another checkpoint is another data set
    assert G.generate(cfg)["tasks"][0]["attempts"] == row["attempts"]
    assert len(calls) == sum(a["unrecorded_steps"] for a in attempts)
    other = make_tiny_run(tmp_path / "r2", foresight="none", max_steps=5, overrides=("policy.obs_noise=0.1",))
    with pytest.raises(UserError, match="policy_args"):
        G.generate(G.GenerateConfig(**{**cfg.__dict__, "policy_args": {"checkpoint": str(other)}}))
