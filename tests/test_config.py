"""Profiles validate themselves; a bad name, key or value is a clear error."""

import subprocess
import sys

import pytest

from clad_lite.config import PROFILE_NAMES, ConfigError, DataConfig, TrainConfig, apply_overrides, get_profile


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_named_profiles_build_and_agree_on_sizes(name):
    profile = get_profile(name)
    assert profile.name == name
    assert profile.clad.horizon == profile.policy.horizon == 6
    assert profile.clad.proprio_dim == profile.data.proprio_dim
    assert profile.clad.vision_dim == len(profile.data.cameras) * profile.encoder.embed_dim


def test_profiles_grow_from_ci_to_paper():
    ci, cpu, paper = (get_profile(n) for n in ("ci", "cpu", "paper"))
    assert ci.stage1.steps < cpu.stage1.steps <= paper.stage1.steps
    assert paper.stage1.steps == 25_000 and paper.stage2.steps == 200_000
    assert paper.stage1.batch_size == paper.stage2.batch_size == 128
    assert paper.clad.hidden_dim == 1024 and paper.clad.n_proprio_tokens == paper.clad.n_semantic_tokens == 4


def test_environment_variable_selects_profile(monkeypatch):
    monkeypatch.setenv("CLAD_PROFILE", "ci")
    assert get_profile().name == "ci"
    monkeypatch.setenv("CLAD_PROFILE", "gpu-huge")
    with pytest.raises(ConfigError, match=r"unknown profile 'gpu-huge' \(from \$CLAD_PROFILE\)"):
        get_profile()


def test_sections_validate_values():
    with pytest.raises(ConfigError, match="train.steps must be > 0"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match="warmup_steps"):
        TrainConfig(steps=10, warmup_steps=10)
    with pytest.raises(ConfigError, match="data.action_noise must be in"):
        DataConfig(action_noise=1.5)
    with pytest.raises(ConfigError, match="data.success_hold must be"):
        DataConfig(success_hold=-1)
    with pytest.raises(ConfigError, match="data.expert_motion must be one of"):
        DataConfig(expert_motion="spline")
    with pytest.raises(ConfigError, match="data.recovery_demos must be an integer >= 0"):
        DataConfig(recovery_demos=-1)
    with pytest.raises(ConfigError, match="data.recovery_demos needs data.vision_source=encoder"):
        DataConfig(recovery_demos=5, vision_source="sim_state")
    assert DataConfig(recovery_demos=5).recovery_demos == 5
    with pytest.raises(ConfigError, match="data.dagger_demos needs data.dagger_policy"):
        DataConfig(dagger_demos=5)
    with pytest.raises(ConfigError, match="data.dagger_demos needs data.vision_source=encoder"):
        DataConfig(dagger_demos=5, dagger_policy="runs/a/policy", vision_source="sim_state")
    with pytest.raises(ConfigError, match="data.dagger_handover must look like 20-400"):
        DataConfig(dagger_handover="soon")
    assert DataConfig(dagger_demos=5, dagger_policy="runs/a/policy", dagger_handover="10-50").dagger_demos == 5


def test_expert_motions_name_the_expert_factories():
    from clad_lite.config import EXPERT_FACTORIES
    from clad_lite.demos.generate import DEFAULT_POLICY, resolve_policy
    from clad_lite.expert.primitives import MOTIONS

    assert tuple(EXPERT_FACTORIES) == MOTIONS
    assert DataConfig().expert_policy == DEFAULT_POLICY  # the default keeps every earlier data set valid
    assert all(callable(resolve_policy(DataConfig(expert_motion=m).expert_policy)) for m in MOTIONS)


def test_overrides_are_typed_and_validated():
    profile = apply_overrides(get_profile("ci"), ["stage1.steps=77", "stage1.lr=1e-3", "data.tasks=0,1,2"])
    assert profile.stage1.steps == 77 and profile.stage1.lr == 1e-3 and profile.data.tasks == (0, 1, 2)
    assert get_profile("ci").stage1.steps != 77  # the named profile itself is untouched
    with pytest.raises(ConfigError, match="unknown key 'stage1.stepz'"):
        apply_overrides(profile, ["stage1.stepz=1"])
    with pytest.raises(ConfigError, match="unknown section"):
        apply_overrides(profile, ["optimizer.lr=1"])
    with pytest.raises(ConfigError, match="cannot read 'many' as int"):
        apply_overrides(profile, ["stage1.steps=many"])
    with pytest.raises(ConfigError, match="must look like section.field=value"):
        apply_overrides(profile, ["steps"])
    with pytest.raises(ConfigError, match="eval.episodes_per_task is at most 50"):
        apply_overrides(profile, ["eval.episodes_per_task=60"])


def test_sections_must_agree_on_tensor_sizes():
    with pytest.raises(ConfigError, match="proprio"):
        apply_overrides(get_profile("ci"), ["data.proprio=authors_code"])  # 9-D data, 16-D model
    assert apply_overrides(get_profile("cpu"), ["data.image_stride=2"]).data.image_stride == 2
    with pytest.raises(ConfigError, match="image_stride"):  # windows need images at t ± τ = t ± 6
        apply_overrides(get_profile("cpu"), ["data.image_stride=4"])
    with pytest.raises(ConfigError, match="image_stride"):
        apply_overrides(get_profile("cpu"), ["data.image_stride=0"])


def _cli(*args, env=None):
    import os

    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "clad_lite", *args], capture_output=True, text=True, env=full_env,
                          timeout=300)


def test_info_lists_the_ten_instructions():
    result = _cli("info", env={"CLAD_PROFILE": "ci"})
    assert result.returncode == 0, result.stderr
    assert "profile       ci" in result.stdout
    assert "9  put the yellow and white mug in the microwave and close it" in result.stdout
    assert "GL backend" in result.stdout and "CUDA" in result.stdout


def test_info_with_bad_profile_exits_nonzero_with_clear_message():
    result = _cli("info", env={"CLAD_PROFILE": "nope"})
    assert result.returncode == 2
    assert "unknown profile 'nope'" in result.stderr and "ci, cpu, paper" in result.stderr


def test_overrides_are_validated_together_whatever_their_order():
    profile = apply_overrides(get_profile("cpu"), ["stage1.steps=40", "stage1.warmup_steps=5"])
    assert (profile.stage1.steps, profile.stage1.warmup_steps) == (40, 5)
    with pytest.raises(ConfigError, match="warmup_steps"):
        apply_overrides(get_profile("cpu"), ["stage1.steps=40"])  # warmup 300 >= 40


def test_data_path_is_anchored_at_the_project_root(monkeypatch, tmp_path):
    from pathlib import Path

    profile = get_profile("ci")
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root / "notebooks")
    assert Path(profile.data.path) == root / "data" / "ci" / "libero_10"
    monkeypatch.chdir(tmp_path)  # outside any clone: relative to the working directory
    assert Path(profile.data.path) == tmp_path / "data" / "ci" / "libero_10"
