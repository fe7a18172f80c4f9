"""The privileged-state oracle: the same models with perfect perception, to measure what perception costs.

Not part of CLaD: a diagnostic, as state-based baselines are in robot learning. With
``--set data.vision_source=sim_state`` every input that normally carries the frozen encoder's
image embeddings, the ``vision`` slot (B, n_cam * E) of CLaD and of the policy (eq. 5, 20),
carries the simulator's true state instead, and the language slot (B, E) a one-hot code of the
task. Everything else (windows, proprio, actions, models, training loop, rollout protocol) is
unchanged, so the gap between an oracle run and an encoder run with the same data and budget is
what the lite encoder costs; an oracle that also fails points at the policy, the data or the
training budget instead.

Per step, from the flattened MuJoCo state ``states[t] = [time, qpos, qvel]`` (S = 1 + nq + nv)::

    s      = [qpos ; qvel]                                (nq + nv,)  time dropped
    x      = clip((s - mean_task) / std_task, -10, 10)    per dimension (dims with no spread: shifted only;
                                                          the clip bounds the rare velocity spikes of objects at rest)
    vision = [x ; 0, ..., 0]                              zero-padded to n_cam * E, camera c = vision[c E : (c+1) E]
    lang   = one_hot(index of the instruction)            zero-padded to E

``data.oracle_velocities=false`` keeps only the positions: ``s = qpos`` (the first nq entries,
nq found per task as the offset where the robot's recorded joint velocities sit in the state).
With ``data.proprio=no_joint_vel`` the models then see no velocity at all, which separates a
policy that reads the scene from one that copies the motion its last actions started (the
"copycat" shortcut of behaviour cloning, de Haan et al., 2019; Wen et al., 2020).

The layout of qpos differs per scene (each task has its own objects), so the statistics are per
task (per instruction), computed over every step of every demonstration of that task and saved as
``state_stats.json`` next to the data (recomputed when the files change), the way
``norm_stats.json`` is; a run also records them in its ``run.json`` and checkpoints, and its
rollouts read ``env.get_sim_state()`` through those, rendering cameras only for videos.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from clad_lite.demos import hdf5 as H

SIM_STATE = "sim_state"
VISION_SOURCES = ("encoder", SIM_STATE)
STATE_STATS_FILE = "state_stats.json"
STATS_VERSION = 2  # 2: each task's nq
_MIN_SPREAD = 1e-6
CLIP = 10.0


def scene_state(states: np.ndarray) -> np.ndarray:
    """Flattened MuJoCo states (T, 1 + nq + nv) or (1 + nq + nv,) -> [qpos; qvel] without the time."""
    states = np.asarray(states, dtype=np.float64)
    return states[..., 1:]


def compute_state_stats(paths: Sequence) -> dict:
    """Per-task mean / std of ``scene_state`` over every step of every demo of each file."""
    from clad_lite.demos.windows import _fingerprint

    paths = [Path(p) for p in paths]
    per_task: dict[str, list[np.ndarray]] = {}
    position_width: dict[str, int | None] = {}
    for path in paths:
        with H.DemoFile(path) as f:
            instruction = f.instruction
            if instruction not in position_width:
                position_width[instruction] = file_position_width(f)
            for demo in f.demos:
                states = scene_state(f.read(demo, ["states"])["states"])
                previous = per_task.setdefault(instruction, [])
                if previous and previous[0].shape[1] != states.shape[1]:
                    raise H.DemoFormatError(path, f"states have width {states.shape[1] + 1}, other demos of "
                                            f"{instruction!r} {previous[0].shape[1] + 1}", demo, "states")
                previous.append(states)
    tasks = {}
    for instruction in sorted(per_task):
        values = np.concatenate(per_task[instruction], axis=0)
        tasks[instruction] = {"width": int(values.shape[1]), "mean": values.mean(0).tolist(),
                              "std": values.std(0).tolist(), "count": int(len(values)),
                              "nq": position_width.get(instruction)}
    return {"version": STATS_VERSION, "files": _fingerprint(paths), "tasks": tasks}


def find_position_width(states: np.ndarray, joint_vel: np.ndarray) -> int | None:
    """nq of a scene: where the robot's joint velocities (T, 7) start in ``scene_state(states)``
    (T, nq + nv), whose qvel begins with the robot's joints as its qpos does; None if nowhere."""
    s = scene_state(states)
    width = joint_vel.shape[-1]
    for offset in range(width, s.shape[-1] - width + 1):
        if np.allclose(s[:, offset:offset + width], joint_vel, rtol=0.0, atol=1e-9):
            return offset
    return None


def file_position_width(f: H.DemoFile) -> int | None:
    """nq of an open demo file's scene, from its first demo; None when it has no demos, no joint
    velocities (official files) or none that sit in its states."""
    if not f.demos:
        return None
    try:
        raw = f.read(f.demos[0], ["states", "obs/" + H.JOINT_VEL_KEY])
    except H.DemoFormatError:
        return None
    return find_position_width(raw["states"], raw["obs/" + H.JOINT_VEL_KEY])


def load_or_compute_state_stats(paths: Sequence, stats_path=None) -> dict:
    """The saved statistics if they were computed on exactly these files, else compute and save them."""
    from clad_lite.demos.windows import load_or_compute_stats

    stats_path = Path(stats_path if stats_path is not None else Path(paths[0]).resolve().parent / STATE_STATS_FILE)
    stale = stats_path.exists() and json.loads(stats_path.read_text()).get("version") != STATS_VERSION
    return load_or_compute_stats(paths, stats_path, compute_state_stats, indent=None, recompute=stale)


class StateObservation:
    """Simulator states -> the (vision, language) inputs of the models (see the module docstring).

    ``stats``: the dict of :func:`compute_state_stats`; ``vision_dim`` = n_cam * E and
    ``language_dim`` = E of the profile; ``cameras``: the obs keys that share the vision slot;
    ``velocities=False``: only the positions, qpos (``data.oracle_velocities``).
    """

    def __init__(self, stats: Mapping, vision_dim: int, language_dim: int, cameras: Sequence[str],
                 velocities: bool = True):
        self.tasks = dict(stats["tasks"])
        self.velocities = bool(velocities)
        if not self.velocities:
            unknown = [k for k, v in self.tasks.items() if not v.get("nq")]
            if unknown:
                raise ValueError(f"data.oracle_velocities=false needs each task's nq in the state statistics "
                                 f"(found from the files' joint velocities), missing for {unknown}")
        self.instructions = sorted(self.tasks)
        self.vision_dim, self.language_dim, self.cameras = int(vision_dim), int(language_dim), tuple(cameras)
        if self.vision_dim % len(self.cameras):
            raise ValueError(f"vision_dim={vision_dim} is not a multiple of the {len(self.cameras)} cameras")
        self.camera_dim = self.vision_dim // len(self.cameras)
        too_wide = {k: v["width"] for k, v in self.tasks.items() if v["width"] > self.vision_dim}
        if too_wide:
            raise ValueError(f"scene states wider than the vision slot ({self.vision_dim}): {too_wide}")
        if len(self.instructions) > self.language_dim:
            raise ValueError(f"{len(self.instructions)} tasks do not fit a one-hot code of width {language_dim}")
        self._mean = {k: np.asarray(v["mean"]) for k, v in self.tasks.items()}
        self._scale = {k: np.where(np.asarray(v["std"]) > _MIN_SPREAD, np.asarray(v["std"]), 1.0)
                       for k, v in self.tasks.items()}

    def _task(self, instruction: str) -> str:
        if instruction not in self.tasks:
            raise KeyError(f"no state statistics for the task {instruction!r}; known: {self.instructions}")
        return instruction

    def standardise(self, instruction: str, states: np.ndarray) -> np.ndarray:
        """Flattened MuJoCo states (T, S) or (S,) -> standardised, clipped (T, S - 1) / (S - 1,) float32
        ((T, nq) / (nq,) with ``velocities=False``)."""
        key = self._task(instruction)
        s = scene_state(states)
        width = self.tasks[key]["width"]
        if s.shape[-1] != width:
            raise ValueError(f"a scene state of width {s.shape[-1] + 1} for {key!r}, whose statistics have "
                             f"{width + 1}: another scene or simulator version")
        x = np.clip((s - self._mean[key]) / self._scale[key], -CLIP, CLIP).astype(np.float32)
        return x if self.velocities else x[..., :self.tasks[key]["nq"]]

    def pad(self, x: np.ndarray) -> np.ndarray:
        """Standardised states (..., w) -> zero-padded (..., vision_dim)."""
        out = np.zeros((*x.shape[:-1], self.vision_dim), np.float32)
        out[..., :x.shape[-1]] = x
        return out

    def vision(self, instruction: str, states: np.ndarray) -> np.ndarray:
        """Flattened MuJoCo states (T, S) or (S,) -> standardised, zero-padded (T, vision_dim) / (vision_dim,)."""
        return self.pad(self.standardise(instruction, states))

    def camera_part(self, vision: np.ndarray, camera: str) -> np.ndarray:
        """The slice of a (..., vision_dim) vision vector that stands in camera ``camera``'s embedding."""
        c = self.cameras.index(camera)
        return vision[..., c * self.camera_dim:(c + 1) * self.camera_dim]

    def language(self, instruction: str) -> np.ndarray:
        """(language_dim,) one-hot code of the task."""
        code = np.zeros(self.language_dim, np.float32)
        code[self.instructions.index(self._task(instruction))] = 1.0
        return code


class StateEmbeddings:
    """The ``(file, demo, t, camera) -> (len(t), E)`` source of ``WindowDataset``, from the files' ``states``.

    Holds the standardised states of every demo in memory (float32, nq + nv wide per step).
    """

    def __init__(self, paths: Sequence, observation: StateObservation):
        self.observation = observation
        self._vision: dict[tuple[str, str], np.ndarray] = {}
        for path in paths:
            with H.DemoFile(path) as f:
                instruction = f.instruction
                for demo in f.demos:
                    states = f.read(demo, ["states"])["states"]
                    self._vision[(Path(path).name, demo)] = observation.standardise(instruction, states)

    def __call__(self, file, demo, t, camera):
        x = self._vision[(Path(file).name, demo)][np.asarray(t)]
        return self.observation.camera_part(self.observation.pad(x), camera)


def load_state_training_data(profile, data_dir=None):
    """``TrainingData`` whose vision slots hold simulator states (the counterpart of
    ``clad_lite.train.load_training_data`` for ``data.vision_source = "sim_state"``)."""
    from clad_lite.cli import UserError
    from clad_lite.demos.windows import WindowDataset
    from clad_lite.train import TrainingData

    data_dir = Path(data_dir if data_dir is not None else profile.data.path)
    if not data_dir.is_dir():
        raise UserError(f"data directory not found: {data_dir} (generate demonstrations with python -m clad_lite "
                        "generate --no-render; or pass --data)")
    files = H.find_demo_files([data_dir])
    try:
        stats = load_or_compute_state_stats(files)
        observation = StateObservation(stats, profile.policy.vision_dim, profile.policy.language_dim, profile.data.cameras,
                                       velocities=profile.data.oracle_velocities)
        embeddings = StateEmbeddings(files, observation)
        # windows at t = 0, s, 2s, ... with s = data.image_stride: those of an encoder run on data
        # rendered at that stride, so that only the perception differs (states exist at every step,
        # so data.image_stride=1 gives the windows of a fully rendered data set)
        dataset = WindowDataset(files, tau=profile.clad.horizon, proprio=profile.data.proprio,
                                cameras=profile.data.cameras, embeddings=embeddings,
                                text_embeddings=observation.language, window_stride=profile.data.image_stride,
                                future=profile.policy.chunk_length)
    except (KeyError, ValueError) as error:
        raise UserError(f"cannot build state-oracle windows from {data_dir}: {error}") from error
    # the run keeps its statistics (and so its one-hot codes), whatever later happens to the data folder
    return TrainingData(dataset, str(data_dir), None, None, extra={"state_stats": stats})


__all__ = ["SIM_STATE", "VISION_SOURCES", "STATE_STATS_FILE", "scene_state", "compute_state_stats", "find_position_width",
           "file_position_width",
           "load_or_compute_state_stats", "StateObservation", "StateEmbeddings", "load_state_training_data"]
