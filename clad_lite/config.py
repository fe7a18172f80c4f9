"""Run profiles: one code path, three sizes.

A *profile* fixes every size and count of a run: data set, frozen encoder, CLaD (stage 1),
policy (stage 2), the two training loops and the evaluation. The code is the same for all;
only these numbers change.

==========  ==================================================================================
``ci``      seconds per stage: used by the tests and by CI (``CLAD_PROFILE=ci``)
``cpu``     a real lite run on the 2-core CPU machine: minutes to an hour per stage
``paper``   the paper's sizes and step counts (H = 1024, 25K + 200K steps, batch 128): a GPU
==========  ==================================================================================

``CLAD_PROFILE`` selects the active profile (default ``cpu``); ``get_profile()`` reads it.
``apply_overrides(profile, ["stage1.steps=100", ...])`` changes single values, as
``python -m clad_lite train --set key=value`` does. Every section validates itself: a bad
name, key or value raises ``ConfigError`` that says which and why.

The model sections (``CLaDConfig``, ``PolicyConfig``) live beside the models in
``clad_lite.configuration_clad``; the encoder section (``EncoderConfig``) beside the encoder.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field

from clad_lite.configuration_clad import MODEL_PRESETS, CLaDConfig, PolicyConfig
from clad_lite.demos.windows import PROPRIO_MODES, proprio_dim
from clad_lite.encoders.config import ENCODER_PRESETS, EncoderConfig

ENV_VAR = "CLAD_PROFILE"
DEFAULT_PROFILE = "cpu"

def project_root() -> str:
    """The folder holding ``pyproject.toml`` at or above the working directory (the clone),
    else the working directory itself. Relative output paths of a profile hang off it."""
    here = os.path.abspath(os.getcwd())
    for folder in (here, *_parents(here)):
        if os.path.isfile(os.path.join(folder, "pyproject.toml")) and os.path.isdir(os.path.join(folder, "clad_lite")):
            return folder
    return here


def _parents(path: str):
    while (parent := os.path.dirname(path)) != path:
        yield parent
        path = parent


class ConfigError(ValueError):
    """A profile name, key or value that is not valid."""


def _check(condition: bool, message: str):
    if not condition:
        raise ConfigError(message)


# data.expert_motion -> the scripted expert's factory (``generate --policy``); the keys are
# clad_lite.expert.primitives.MOTIONS (this module stays free of the simulator's imports)
EXPERT_FACTORIES = {"min_jerk": "clad_lite.expert:make_expert", "feedback": "clad_lite.expert:make_feedback_expert"}


def _positive(section: str, **values):
    for name, value in values.items():
        _check(isinstance(value, (int, float)) and value > 0, f"{section}.{name} must be > 0, got {value!r}")


@dataclass
class DataConfig:
    """Demonstrations: which tasks, how many, at what image size, which steps rendered.

    ``image_stride`` = s renders only every s-th step (rendering dominates the cost of a data
    set on a CPU, see clad_lite.demos.hdf5); τ must be a multiple of it, because training
    windows need images at t - τ, t and t + τ.

    ``vision_source``: what fills the models' vision (and language) inputs: ``"encoder"``, the
    frozen encoder's embeddings (the paper), or ``"sim_state"``, the simulator's true state and a
    one-hot task code (a privileged-perception diagnostic, not the paper: clad_lite.state_oracle).
    ``oracle_velocities``: with ``"sim_state"``, whether that state holds the velocities (qvel)
    besides the positions (qpos); ``false`` with ``proprio="no_joint_vel"`` leaves the models no
    velocity to copy the last motion from (a diagnostic of the copycat shortcut).

    ``action_noise``: DART-style noise injection while generating (not the paper, whose demos are
    human): std, in action units, of the held Gaussian noise added to the executed arm action,
    the expert's clean action being the label (clad_lite.demos.generate.ActionNoise). 0 = off.

    ``success_hold``: steps the expert goes on acting after success first holds (demos end when
    it has held ``success_hold`` + 1 steps in a row, as in robosuite's collectors, which use 10);
    0 = stop at the first success (clad_lite.demos.generate).

    ``expert_motion``: how the scripted expert moves (clad_lite.expert.primitives.MOTIONS):
    ``"min_jerk"`` carrots in time, at a random tempo, with random pauses (the default, the data
    of every earlier run), or ``"feedback"``: Markovian state-feedback motions, so that every arm
    action follows from the state and the goal, as behaviour cloning assumes (revision 2 solves
    97/100 fixed init states against min-jerk's 99/100; see figures/results/README.md, "A Markovian demonstrator").

    ``recovery_demos``: recovery demonstrations per task (not the paper; DAgger's idea with a
    scripted fumble, clad_lite.expert.recovery): the expert misses one grasp the way the lite
    policies do, and only how it recovers is recorded. Generated into ``<data>/recovery`` by the
    pipeline and added to both training stages' windows (the encoder trains on the clean demos
    only). 0 = none.

    ``dagger_demos``: on-policy recovery demonstrations per task (not the paper; DAgger with
    hand-overs, clad_lite.expert.dagger): the stage-2 policy of ``dagger_policy`` (a run folder or
    checkpoint) drives from a random placement until a random step in ``dagger_handover``, then
    the scripted expert finishes and only its steps are recorded. Generated into ``<data>/dagger``
    and read like the recovery set. 0 = none.
    """

    suite: str = "libero_10"
    tasks: tuple[int, ...] = tuple(range(10))
    demos_per_task: int = 50
    image_size: int = 128
    image_stride: int = 1
    cameras: tuple[str, ...] = ("agentview_rgb", "eye_in_hand_rgb")
    proprio: str = "paper"
    vision_source: str = "encoder"
    oracle_velocities: bool = True
    action_noise: float = 0.0
    success_hold: int = 0
    expert_motion: str = "min_jerk"
    recovery_demos: int = 0
    dagger_demos: int = 0
    dagger_policy: str = ""
    dagger_handover: str = "20-400"
    root: str = "data"
    workers: int = 2
    seed: int = 0

    def __post_init__(self):
        from clad_lite.sim import SUITES

        _check(self.suite in SUITES, f"data.suite must be one of {SUITES}, got {self.suite!r}")
        _check(len(self.tasks) > 0 and len(set(self.tasks)) == len(self.tasks), f"data.tasks must be distinct, got {self.tasks}")
        _check(all(isinstance(t, int) and 0 <= t < 90 for t in self.tasks), f"data.tasks out of range: {self.tasks}")
        _positive("data", demos_per_task=self.demos_per_task, image_size=self.image_size, workers=self.workers,
                  image_stride=self.image_stride)
        # the paper's joint angles + velocities, or the 9-D vector of the authors' code (see
        # clad_lite.demos.windows: official LIBERO files have no joint velocities)
        _check(self.proprio in PROPRIO_MODES, f"data.proprio must be one of {sorted(PROPRIO_MODES)}, got {self.proprio!r}")
        _check(len(self.cameras) > 0, "data.cameras must name at least one camera")
        from clad_lite.state_oracle import VISION_SOURCES

        _check(isinstance(self.success_hold, int) and self.success_hold >= 0,
               f"data.success_hold must be an integer >= 0, got {self.success_hold!r}")
        _check(0.0 <= self.action_noise <= 1.0, f"data.action_noise must be in [0, 1], got {self.action_noise}")
        _check(isinstance(self.recovery_demos, int) and self.recovery_demos >= 0,
               f"data.recovery_demos must be an integer >= 0, got {self.recovery_demos!r}")
        _check(self.expert_motion in EXPERT_FACTORIES,
               f"data.expert_motion must be one of {tuple(EXPERT_FACTORIES)}, got {self.expert_motion!r}")
        _check(self.vision_source in VISION_SOURCES,
               f"data.vision_source must be one of {VISION_SOURCES}, got {self.vision_source!r}")
        _check(isinstance(self.oracle_velocities, bool) and (self.oracle_velocities or self.vision_source != "encoder"),
               f"data.oracle_velocities=false needs data.vision_source=sim_state (it drops the oracle state's qvel), "
               f"got oracle_velocities={self.oracle_velocities!r} with vision_source={self.vision_source!r}")
        _check(not (self.recovery_demos and self.vision_source != "encoder"),
               "data.recovery_demos needs data.vision_source=encoder (the state oracle does not read them)")
        _check(isinstance(self.dagger_demos, int) and self.dagger_demos >= 0,
               f"data.dagger_demos must be an integer >= 0, got {self.dagger_demos!r}")
        _check(not (self.dagger_demos and not self.dagger_policy),
               "data.dagger_demos needs data.dagger_policy, the stage-2 run (folder or checkpoint) that drives")
        _check(not (self.dagger_demos and self.vision_source != "encoder"),
               "data.dagger_demos needs data.vision_source=encoder (the state oracle does not read them)")
        _check(bool(re.fullmatch(r"\d+(-\d+)?", str(self.dagger_handover))),
               f"data.dagger_handover must look like 20-400 (policy steps), got {self.dagger_handover!r}")

    @property
    def expert_policy(self) -> str:
        """The ``generate --policy`` factory of ``expert_motion``."""
        return EXPERT_FACTORIES[self.expert_motion]

    @property
    def proprio_dim(self) -> int:
        return proprio_dim(self.proprio)

    @property
    def path(self) -> str:
        """Where this profile's demonstrations live: ``{root}/{suite}``; a relative root is taken
        from the project folder, so notebooks (run from ``notebooks/``) find the same data."""
        return os.path.join(project_root(), self.root, self.suite)


@dataclass
class TrainConfig:
    """One training stage: AdamW with linear warmup then cosine decay (paper: lr 3e-4).

    ``ema_decay`` > 0 keeps an exponential moving average of the weights beside them,
    theta_ema <- decay * theta_ema + (1 - decay) * theta after every optimizer step (the
    diffusion-policy practice; the paper does not say). Evaluation uses it when a checkpoint
    holds one (``eval --weights``). 0 keeps none. Not to be confused with CLaD's EMA
    *target encoders* of eq. 14, which are part of the stage-1 model itself.
    """

    steps: int = 25_000
    batch_size: int = 128
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 1_000
    grad_clip: float = 1.0
    checkpoint_every: int = 5_000
    log_every: int = 50
    seed: int = 3407  # the authors' seed
    ema_decay: float = 0.0

    def __post_init__(self):
        _check(0.0 <= self.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        _positive("train", steps=self.steps, batch_size=self.batch_size, lr=self.lr, grad_clip=self.grad_clip,
                  checkpoint_every=self.checkpoint_every, log_every=self.log_every)
        _check(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        _check(0 <= self.warmup_steps < self.steps, f"train.warmup_steps must be in [0, steps), got {self.warmup_steps}")


@dataclass
class EvalConfig:
    """LIBERO rollouts: the standard protocol (see DESIGN.md)."""

    episodes_per_task: int = 50
    max_steps: int = 520  # libero_10 (LIBERO's own metric uses 600)
    warmup_steps: int = 10  # no-op steps with the gripper open before the policy acts
    replan_every: int = 6  # τ: a chunk is executed open-loop
    videos_per_task: int = 2
    workers: int = 2
    seed: int = 7
    # no MjSim rebuild per episode (≈ 10 ms instead of 5-9 s on this CPU; trajectories drift by
    # ~1e-5 from upstream's, see clad_lite.evaluate); recorded in results.json's protocol
    fast_reset: bool = False
    # chunks drawn per query and averaged (ForesightPolicy.sample_actions(num_samples=...)); 1 = the paper's
    # single draw; recorded in results.json's protocol
    action_samples: int = 1

    def __post_init__(self):
        _positive("eval", episodes_per_task=self.episodes_per_task, max_steps=self.max_steps, replan_every=self.replan_every,
                  workers=self.workers, action_samples=self.action_samples)
        _check(isinstance(self.action_samples, int), f"eval.action_samples must be an int, got {self.action_samples!r}")
        _check(self.episodes_per_task <= 50, f"eval.episodes_per_task is at most 50 (fixed init states), got {self.episodes_per_task}")
        _check(self.warmup_steps >= 0 and self.videos_per_task >= 0, "eval.warmup_steps and eval.videos_per_task must be >= 0")


@dataclass
class Profile:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    clad: CLaDConfig = field(default_factory=CLaDConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    stage1: TrainConfig = field(default_factory=TrainConfig)
    stage2: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        # the sections must agree on the tensor sizes that flow between them
        n_cameras = len(self.data.cameras)
        for model_name, model in (("clad", self.clad), ("policy", self.policy)):
            _check(model.proprio_dim == self.data.proprio_dim,
                   f"{model_name}.proprio_dim={model.proprio_dim} but data.proprio={self.data.proprio!r} is {self.data.proprio_dim}-D")
            _check(model.vision_dim == n_cameras * self.encoder.embed_dim,
                   f"{model_name}.vision_dim={model.vision_dim} but {n_cameras} cameras x encoder.embed_dim={self.encoder.embed_dim}")
            _check(model.language_dim == self.encoder.embed_dim,
                   f"{model_name}.language_dim={model.language_dim} but encoder.embed_dim={self.encoder.embed_dim}")
        _check(self.clad.horizon % self.data.image_stride == 0,
               f"data.image_stride={self.data.image_stride} must divide τ = clad.horizon={self.clad.horizon} "
               "(windows need images at t - τ, t, t + τ)")
        _check(self.clad.horizon == self.policy.horizon == self.eval.replan_every,
               f"τ must agree: clad.horizon={self.clad.horizon}, policy.horizon={self.policy.horizon}, "
               f"eval.replan_every={self.eval.replan_every}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _make(name: str, data: DataConfig, stage1: TrainConfig, stage2: TrainConfig, evaluation: EvalConfig) -> Profile:
    clad, policy = MODEL_PRESETS[name]
    return Profile(name, data, ENCODER_PRESETS[name], clad, policy, stage1, stage2, evaluation)


def _profiles() -> dict[str, Profile]:
    return {
        "ci": _make(
            "ci",
            DataConfig(tasks=(0, 2), demos_per_task=2, image_size=64, image_stride=3, workers=1, root="data/ci"),
            TrainConfig(steps=30, batch_size=16, warmup_steps=5, checkpoint_every=10, log_every=5),
            TrainConfig(steps=30, batch_size=16, warmup_steps=5, checkpoint_every=10, log_every=5),
            EvalConfig(episodes_per_task=1, max_steps=60, videos_per_task=1, workers=1),
        ),
        "cpu": _make(
            "cpu",
            DataConfig(demos_per_task=50, image_size=128, image_stride=6, workers=2),
            TrainConfig(steps=6_000, batch_size=64, warmup_steps=300, checkpoint_every=1_000, log_every=50),
            # stage 2 at 10K steps (≈ 27 epochs of the 23K windows) so that the whole run, both policies and
            # their 2 x 100 rollouts, fits an afternoon on 2 cores; fast resets save 5-9 s per episode
            TrainConfig(steps=10_000, batch_size=64, warmup_steps=500, checkpoint_every=2_000, log_every=50),
            EvalConfig(episodes_per_task=10, workers=2, fast_reset=True),
        ),
        "paper": _make(
            "paper",
            DataConfig(demos_per_task=50, image_size=128, workers=8),
            TrainConfig(steps=25_000, batch_size=128, warmup_steps=1_000, checkpoint_every=5_000),
            TrainConfig(steps=200_000, batch_size=128, warmup_steps=2_000, checkpoint_every=20_000),
            EvalConfig(episodes_per_task=50, workers=8),
        ),
    }


PROFILE_NAMES = ("ci", "cpu", "paper")


def get_profile(name: str | None = None) -> Profile:
    """The named profile, else the one ``$CLAD_PROFILE`` names, else ``cpu``."""
    if name is None:
        name = os.environ.get(ENV_VAR, "").strip() or DEFAULT_PROFILE
    if name not in PROFILE_NAMES:
        source = "" if name != os.environ.get(ENV_VAR) else f" (from ${ENV_VAR})"
        raise ConfigError(f"unknown profile {name!r}{source}; expected one of {', '.join(PROFILE_NAMES)}")
    return _profiles()[name]


def _parse_value(text: str, annotation, where: str):
    """Convert ``text`` to the type a dataclass field declares (int, float, bool, str, tuple[int, ...])."""
    origin = typing.get_origin(annotation)
    try:
        if annotation is bool:
            lowered = text.lower()
            _check(lowered in ("true", "false", "1", "0"), f"{where} expects true/false, got {text!r}")
            return lowered in ("true", "1")
        if annotation in (int, float, str):
            return annotation(text)
        if origin is tuple:
            item_type = typing.get_args(annotation)[0]
            return tuple(item_type(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise ConfigError(f"{where}: cannot read {text!r} as {getattr(annotation, '__name__', annotation)}") from error
    raise ConfigError(f"{where}: overriding a field of type {annotation} is not supported")


def apply_overrides(profile: Profile, assignments: list[str]) -> Profile:
    """Return a copy of ``profile`` with ``section.field=value`` assignments applied.

    All assignments are collected first and validated together, so their order does not
    matter (``stage1.steps=40 stage1.warmup_steps=5`` works on a profile whose warmup is 300).
    """
    sections = {f.name: getattr(profile, f.name) for f in dataclasses.fields(profile) if f.name != "name"}
    updates: dict[str, dict] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        section_name, dot, field_name = key.strip().partition(".")
        _check(bool(sep) and bool(dot), f"override {assignment!r} must look like section.field=value")
        _check(section_name in sections, f"unknown section {section_name!r} in {assignment!r}; sections: {sorted(sections)}")
        hints = typing.get_type_hints(type(sections[section_name]))
        _check(field_name in hints, f"unknown key {key!r}; {section_name} has {sorted(hints)}")
        updates.setdefault(section_name, {})[field_name] = _parse_value(text.strip(), hints[field_name], key)
    for section_name, values in updates.items():
        try:
            sections[section_name] = dataclasses.replace(sections[section_name], **values)
        except ValueError as error:  # the section's own validation
            changed = ", ".join(f"{section_name}.{k}={v}" for k, v in values.items())
            raise ConfigError(f"{changed}: {error}") from error
    return Profile(profile.name, **sections)
