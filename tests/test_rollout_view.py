"""clad_lite.rollout_view: one rollout recorded per query, foresight decoded through h_p / h_s."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from test_evaluate import INSTRUCTION, TASK, make_tiny_run

from clad_lite.rollout_view import (
    RolloutRecord,
    foresight_errors,
    plot_foresight,
    record_rollout,
    rollout_spec,
)


def test_record_rollout_on_a_tiny_run(tmp_path):
    from clad_lite.evaluate import Agent

    torch.set_num_threads(1)
    run_dir = make_tiny_run(tmp_path / "r", max_steps=13)
    spec = rollout_spec(run_dir, warmup_steps=2, fast_reset=True)
    assert spec["max_steps"] == 13 and spec["query_every"] == 6 and spec["device"] == "cpu"
    agent = Agent(spec)
    rec = record_rollout(agent=agent, task_id=TASK)
    assert agent.observer is None                      # the hook is removed again
    tau, Q = rec.tau, 3                                # queries at t = 0, 6, 12
    assert rec.instruction == INSTRUCTION and tau == 6
    np.testing.assert_array_equal(rec.steps, [0, 6, 12])
    assert rec.episode_record["queries"] == Q and rec.episode_record["steps"] == 13
    assert rec.frames.shape == (Q, 64, 128, 3) and rec.frames.dtype == np.uint8
    assert rec.proprio.shape == (13, 16) and rec.chunks.shape == (Q, tau, 7)
    np.testing.assert_array_equal(rec.p_now, rec.proprio[rec.steps])
    # p^{t+tau} comes from the same episode; the last query (t = 12) has no future within 13 steps
    np.testing.assert_array_equal(rec.has_future, [True, True, False])
    np.testing.assert_array_equal(rec.p_true[:2], rec.proprio[[6, 12]])
    assert rec.p_pred.shape == (Q, 16) and np.isfinite(rec.p_pred).all()
    # h_p / h_s applied to the foresight the policy saw at the last query
    zhat_p, zhat_s = agent.last_foresight
    with torch.no_grad():
        np.testing.assert_allclose(rec.p_pred[-1], agent.clad.h_p(zhat_p)[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(rec.s_pred[-1], agent.clad.h_s(zhat_s)[0].numpy(), atol=1e-6)
    # the semantic truth at t + tau is the next query's h_s target
    np.testing.assert_array_equal(rec.s_true[:2], rec.s_now[1:])
    assert np.isnan(rec.s_true[2]).all()
    errors = foresight_errors(rec)
    assert errors["queries"] == 2 and errors["semantic_queries"] == 2
    assert np.isfinite([errors["proprio"], errors["proprio_no_change"], errors["semantic"]]).all()
    fig = plot_foresight(rec, 1)
    assert len(fig.axes) == 3

    # a policy-only run has no foresight to decode
    only = record_rollout(make_tiny_run(tmp_path / "o", foresight="none", max_steps=7), TASK,
                          warmup_steps=2, fast_reset=True)
    assert only.p_pred is None and only.s_pred is None and len(only.steps) == 2
    with pytest.raises(ValueError, match="policy-only"):
        foresight_errors(only)


def test_foresight_errors_by_hand():
    nan = np.full(2, np.nan, np.float32)
    rec = RolloutRecord(task_id=0, episode=0, instruction="x", tau=6, steps=np.array([0, 6, 12]),
                        frames=np.zeros((3, 4, 8, 3), np.uint8),
                        p_now=np.array([[0, 0], [1, 1], [5, 5]], np.float32),
                        p_true=np.stack([np.array([1, 1], np.float32), np.array([1, 3], np.float32), nan]),
                        p_pred=np.array([[1, 0], [1, 2], [9, 9]], np.float32))
    errors = foresight_errors(rec)
    assert errors["queries"] == 2
    assert errors["proprio"] == pytest.approx((0 + 1 + 0 + 1) / 4)          # the NaN query is left out
    assert errors["proprio_no_change"] == pytest.approx((1 + 1 + 0 + 4) / 4)
    np.testing.assert_allclose(errors["proprio_per_dim"], [0, 1])
    assert "semantic" not in errors
    rec.p_true[:] = np.nan
    with pytest.raises(ValueError, match="no query"):
        foresight_errors(rec)
