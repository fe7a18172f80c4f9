"""Paired comparison of two evaluations (clad_lite.compare)."""

import json
import math

import pytest

from clad_lite.cli import UserError, main
from clad_lite.compare import compare, mcnemar_exact_p, newcombe_paired_interval, paired_counts
from clad_lite.evaluate import wilson_interval

INIT = "episode i starts from LIBERO's fixed init state i"


def write_eval(folder, outcomes: dict, prediction="epsilon", **protocol):
    """An eval directory with results.json and episodes.jsonl; outcomes: {(task, episode): success}."""
    folder.mkdir(parents=True)
    settings = {"init_states": INIT, "checkpoint": "run/last.pt", "gripper_hysteresis": None, **protocol}
    config = {"name": "cpu", "policy": {"prediction": prediction, "horizon": 6}, "eval": {"action_samples": 8}}
    (folder / "results.json").write_text(json.dumps({"suite": "libero_10", "protocol": settings,
                                                     "provenance": {"config": config}}))
    lines = [json.dumps({"task_id": t, "episode": e, "init_state": e, "success": s}) for (t, e), s in outcomes.items()]
    (folder / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_newcombe_without_correlation_is_the_unpaired_square_and_add_interval():
    # continuity correction: φ = 0 when both * neither - only_a * only_b is within [0, n/2]
    both, only_a, only_b, neither = 3, 4, 2, 3  # excess 9 - 8 = 1 <= n/2 = 6
    n = both + only_a + only_b + neither
    p_b, p_a = (both + only_b) / n, (both + only_a) / n
    l_b, u_b = wilson_interval(both + only_b, n)
    l_a, u_a = wilson_interval(both + only_a, n)
    expected = (p_b - p_a - math.hypot(p_b - l_b, u_a - p_a), p_b - p_a + math.hypot(u_b - p_b, p_a - l_a))
    assert newcombe_paired_interval(both, only_a, only_b, neither) == pytest.approx(expected, abs=1e-12)


def test_newcombe_is_antisymmetric_and_narrows_with_concordant_pairs():
    lo, hi = newcombe_paired_interval(40, 5, 23, 32)
    assert lo < 0.18 < hi
    assert newcombe_paired_interval(40, 23, 5, 32) == pytest.approx((-hi, -lo), abs=1e-12)
    # same margins (45 vs 63 of 100) with fewer concordant successes: a weaker pairing, a wider interval
    lo_weak, hi_weak = newcombe_paired_interval(25, 20, 38, 17)
    assert hi - lo < hi_weak - lo_weak
    # a perfectly concordant table: no difference, a narrow interval around 0
    lo0, hi0 = newcombe_paired_interval(30, 0, 0, 70)
    assert lo0 <= 0.0 <= hi0 and hi0 - lo0 < 0.1
    assert newcombe_paired_interval(0, 0, 0, 0) == (-1.0, 1.0)


def test_mcnemar_exact_p():
    assert mcnemar_exact_p(0, 6) == pytest.approx(2 * 0.5 ** 6)
    assert mcnemar_exact_p(3, 3) == pytest.approx(1.0)
    assert mcnemar_exact_p(0, 0) == 1.0


def test_paired_counts():
    c = paired_counts([(True, True), (True, False), (False, True), (False, True), (False, False)])
    assert (c["pairs"], c["a"], c["b"], c["both"], c["only_a"], c["only_b"]) == (5, 2, 3, 1, 1, 2)
    assert c["difference"] == pytest.approx(0.2)
    assert c["ci95"][0] < 0.2 < c["ci95"][1]


def test_compare_pairs_by_task_and_episode(tmp_path):
    a = write_eval(tmp_path / "a", {(0, 0): False, (0, 1): True, (1, 0): False, (1, 1): False, (1, 2): True})
    b = write_eval(tmp_path / "b", {(0, 0): True, (0, 1): True, (1, 0): True, (1, 1): False},
                   gripper_hysteresis=0.5, checkpoint="run/last.pt", prediction="sample")
    report = compare(a, b)
    assert [t["task_id"] for t in report["per_task"]] == [0, 1]
    assert report["per_task"][0]["only_b"] == 1 and report["per_task"][0]["both"] == 1
    pooled = report["pooled"]
    assert (pooled["pairs"], pooled["a"], pooled["b"], pooled["only_b"]) == (4, 1, 3, 2)
    assert report["unpaired_episodes"] == {"a": 1, "b": 0}  # A's episode (1, 2) has no partner
    assert report["settings_that_differ"] == {"gripper_hysteresis": [None, 0.5], "policy.prediction": ["epsilon", "sample"]}


def test_an_evaluation_from_before_the_sampler_option_counts_as_ddpm(tmp_path):
    outcomes = {(0, 0): False, (0, 1): True}
    old = write_eval(tmp_path / "old", outcomes)
    ddpm = write_eval(tmp_path / "ddpm", outcomes, sampler="ddpm", sampling_steps=None)
    ddim = write_eval(tmp_path / "ddim", outcomes, sampler="ddim", sampling_steps=5)
    assert compare(old, ddpm)["settings_that_differ"] == {}
    assert compare(old, ddim)["settings_that_differ"] == {"sampler": ["ddpm", "ddim"], "sampling_steps": [None, 5]}


def test_compare_refuses_unpairable_evaluations(tmp_path):
    a = write_eval(tmp_path / "a", {(0, 0): True})
    demos = write_eval(tmp_path / "demos", {(0, 0): True}, init_states="episode i starts from training demo i")
    with pytest.raises(UserError, match="different states"):
        compare(a, demos)
    other = write_eval(tmp_path / "other", {(3, 0): True})
    with pytest.raises(UserError, match="no episode"):
        compare(a, other)
    with pytest.raises(UserError, match="missing/results.json"):
        compare(a, tmp_path / "missing")


def test_compare_cli_writes_json(tmp_path, capsys):
    a = write_eval(tmp_path / "a", {(0, e): e < 2 for e in range(10)})
    b = write_eval(tmp_path / "b", {(0, e): e < 7 for e in range(10)})
    out = tmp_path / "cmp" / "report.json"
    assert main(["compare", str(a), str(b), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| **all** | 10 | 2 | 7 | 0 | 5 | +50.0 [" in printed and "McNemar" in printed
    report = json.loads(out.read_text())
    assert report["pooled"]["only_b"] == 5 and report["pooled"]["mcnemar_p"] == pytest.approx(2 * 0.5 ** 5)
    assert main(["compare", str(a), str(tmp_path / "nope")]) == 2


def test_compare_reads_committed_results_files_without_their_episode_logs(tmp_path):
    a = write_eval(tmp_path / "a", {})
    b = write_eval(tmp_path / "b", {})
    for folder, outcomes in ((a, [1, 0, 0, 0]), (b, [1, 1, 1, 0])):
        results = json.loads((folder / "results.json").read_text())
        results["per_task"] = [{"task_id": 2, "successes": sum(outcomes), "episodes": 4, "episode_success": outcomes}]
        (folder / "results.json").write_text(json.dumps(results))
    report = compare(a / "results.json", b / "results.json")  # a file: its episodes.jsonl is not read
    assert report["pooled"]["only_b"] == 2 and report["pooled"]["pairs"] == 4
    (a / "results.json").write_text(json.dumps({"suite": "libero_10", "protocol": {"init_states": INIT},
                                                "per_task": [{"task_id": 2, "successes": 1, "episodes": 4}]}))
    with pytest.raises(UserError, match="no episode outcomes"):
        compare(a / "results.json", b / "results.json")
