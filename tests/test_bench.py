"""``python -m clad_lite bench``: every figure present and positive for the ci preset."""

from __future__ import annotations

import json

import pytest

from clad_lite.bench import bench
from clad_lite.cli import main as cli_main

KEYS = ("params", "peak_memory_mb", "planning_latency_ms", "control_hz", "policy_chunk_ms")


def test_bench_ci_has_every_key_with_positive_numbers():
    result = bench("ci", "cpu", repeats=3, warmup=1)
    for key in KEYS:
        assert key in result
    for key in KEYS[1:]:
        assert result[key] > 0, key
    params = result["params"]
    assert params["clad"] > 0 and params["policy"] > 0 and params["frozen_encoder"] > 0
    assert params["trainable_total"] == params["clad"] + params["policy"]
    assert sum(params["policy_modules"].values()) == params["policy"]
    assert sum(params["clad_modules"].values()) == params["clad"]  # EMA targets excluded
    assert result["control_loop_ms"] >= result["policy_chunk_ms"] * 0.5
    assert result["control_hz"] == pytest.approx(6 * 1000 / result["control_loop_ms"], rel=1e-2)
    assert any("random" in note for note in result["notes"])


def test_bench_cli_prints_json(capsys):
    assert cli_main(["bench", "--config", "ci", "--json", "--repeats", "2", "--warmup", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert all(key in result for key in KEYS) and result["device"] == "cpu"
    assert cli_main(["bench", "--config", "nope"]) == 2
    assert "unknown profile" in capsys.readouterr().err
