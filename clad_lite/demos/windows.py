"""CLaD training windows (τ = 6) from LIBERO demonstration files, and normalisation.

:class:`WindowDataset` (a ``torch.utils.data.Dataset``) yields one window per
``(file, demo, t)``. An item is a dict; the default collate stacks it into a batch:

===========================  =================  ===============================================
key                          shape per item     meaning
===========================  =================  ===============================================
``proprio_prev``             (D_p,) float32     proprio p^{t-τ} (normalised)
``proprio``                  (D_p,) float32     proprio p^t
``proprio_next``             (D_p,) float32     proprio p^{t+τ} (CLaD's reconstruction target)
``<cam>_prev``, ``<cam>``,   (3, H, W) uint8    camera image at t-τ, t, t+τ; ``<cam>`` is the
``<cam>_next``               or (D,) float32    obs key (``agentview_rgb``, ``eye_in_hand_rgb``);
                                                an embedding instead when ``embeddings`` is given
``actions_past``             (τ, 7) float32     a^{t-τ:t} (normalised to [-1, 1])
``actions``                  (L, 7) float32     the target chunk a^{t:t+L}, L = ``future`` (τ by default)
``actions_past_is_pad``      (τ,) bool          True where ``actions_past`` is edge padding
``actions_is_pad``           (L,) bool          True where ``actions`` is edge padding
``task_id``                  () int64           index into ``dataset.instructions``
``instruction``              str                the language instruction (collates to a list)
``instruction_emb``          (D_l,) float32     only when ``text_embeddings`` is given
``t``, ``demo_index``        () int64           position of the window (for debugging)
===========================  =================  ===============================================

**Proprio** (``proprio=``): ``"paper"`` (default) = joint_states (7) + gripper_states (2) +
joint_vel (7) = 16-D, the paper's "joint angles and velocities"; needs our files (official
LIBERO files have no joint velocities). ``"authors_code"`` = gripper qpos (2) + eef pos (3) +
eef quat xyzw (4) = 9-D, i.e. ``robot_states``, as in the authors' code; works on both.
``"no_joint_vel"`` = joint_states (7) + gripper_states (2) = 9-D, the paper's vector without the
velocities (an ablation: velocities tell the policy what the last actions were, a shortcut it can
copy instead of reading the scene, de Haan et al., 2019, "Causal confusion in imitation learning").

**Edges** (``edge=``): ``"pad"`` (default) makes a window for every step t in [0, T-1].
Frame indices outside [0, T-1] are clamped (p^{t-τ} before the start is the first frame,
p^{t+τ} after the end the last one). Past actions before the start are the no-op
``[0, 0, 0, 0, 0, 0, -1]`` (exactly what the robot did while the objects settled before
recording started); future actions after the end hold still with the last gripper command
``[0, 0, 0, 0, 0, 0, g_{T-1}]``. Padded steps are flagged in the ``*_is_pad`` masks.
``"inside"`` keeps only windows with no padding at all: τ <= t <= T-1-τ (and t + L <= T).

**Image stride**: a file whose images exist only at every s-th step (``image_stride`` = s,
see :mod:`clad_lite.demos.hdf5`) gives windows only at t = 0, s, 2s, ... when cameras are
read (τ must be a multiple of s), and frames clamp to the last rendered step instead of
T-1. Without cameras every step is a window.

**Images** come out channel-first uint8, flipped upright by default (``upright=True``; the
files store them upside down). **Embeddings**: pass ``embeddings``, a callable
``embeddings(file, demo, t, camera) -> array (len(t), D)`` where ``file`` is the file path
as a string, ``demo`` e.g. ``"demo_3"``, ``t`` an int64 array of frame indices and
``camera`` the obs image key. An object with ``frames(file, demo, camera) -> (T, D)``, such as
``clad_lite.encoders.cache.EmbeddingCache``, is adapted automatically (:class:`CacheEmbeddings`),
and ``text_embeddings`` may likewise be an object with ``text(instruction)``, a callable or a
mapping; :class:`ArrayEmbeddings` adapts a dict of per-demo arrays. Then no image is read.

**Normalisation** (:func:`load_or_compute_norm_stats`): per-dimension min, max, mean and std
of the actions and every proprio key, computed once over all files and saved as
``norm_stats.json`` next to the data (recomputed when the set of files or demos changes).
Actions map to [-1, 1] by min/max; proprio is standardised (x - mean) / std. Dimensions
with (almost) no spread are only shifted. :class:`Normalizer` also undoes the action
mapping for rollouts.

Official LIBERO files are used as they are (as the authors' code and OpenVLA do): their
``obs[t]`` is the observation after ``actions[t]``, one step later than in our files
(see :mod:`clad_lite.demos.hdf5`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from clad_lite.demos import hdf5 as H
from clad_lite.sim import NOOP_ACTION  # what the robot did while objects settled

TAU = 6
PROPRIO_MODES: dict[str, tuple[tuple[str, int], ...]] = {
    "paper": (("obs/joint_states", 7), ("obs/gripper_states", 2), ("obs/" + H.JOINT_VEL_KEY, 7)),
    "authors_code": (("robot_states", 9),),
    # the paper's vector without the joint velocities (an ablation, not the paper): velocities echo the
    # last actions, a shortcut a cloned policy can copy instead of reading the scene ("copycat")
    "no_joint_vel": (("obs/joint_states", 7), ("obs/gripper_states", 2)),
}
STATS_FILE = "norm_stats.json"
STATS_KEYS = ("actions", "robot_states") + tuple("obs/" + k for k in (*H.LOWDIM_OBS, H.JOINT_VEL_KEY))
EDGE_RULES = ("pad", "inside")
_MIN_SPREAD = 1e-6


def proprio_dim(mode: str) -> int:
    return sum(width for _, width in _proprio_keys(mode))


def _proprio_keys(mode: str):
    if mode not in PROPRIO_MODES:
        raise ValueError(f"unknown proprio mode {mode!r}; expected one of {tuple(PROPRIO_MODES)}")
    return PROPRIO_MODES[mode]


# =========================================================================== normalisation
def _fingerprint(paths: Sequence[Path]) -> dict:
    out = {}
    for path in paths:
        with H.DemoFile(path) as f:
            lengths = f.lengths()
        out[Path(path).name] = {"demos": len(lengths), "steps": int(sum(lengths.values()))}
    return out


def compute_norm_stats(paths: Sequence) -> dict:
    """Per-dimension min/max/mean/std of actions and every proprio key present in all files."""
    paths = [Path(p) for p in paths]
    sums: dict[str, list] = {}
    present = None
    for path in paths:
        with H.DemoFile(path) as f:
            for demo in f.demos:
                keys = [k for k in STATS_KEYS if k in f.group(demo)]
                present = set(keys) if present is None else present & set(keys)
                for key, value in f.read(demo, keys).items():
                    sums.setdefault(key, []).append(np.asarray(value, dtype=np.float64))
    stats = {}
    for key in sorted(present or ()):
        values = np.concatenate(sums[key], axis=0)
        stats[key] = {"min": values.min(0).tolist(), "max": values.max(0).tolist(),
                      "mean": values.mean(0).tolist(), "std": values.std(0).tolist(), "count": len(values)}
    return {"version": 1, "files": _fingerprint(paths), "keys": stats}


def default_stats_path(paths: Sequence) -> Path:
    """``norm_stats.json`` in the directory that holds the (first) data file."""
    return Path(paths[0]).resolve().parent / STATS_FILE


def load_or_compute_stats(paths: Sequence, stats_path, compute: Callable[[list[Path]], dict], *,
                          recompute: bool = False, indent: int | None = 1) -> dict:
    """The statistics saved at ``stats_path`` if their ``files`` fingerprint is that of exactly these
    files, else ``compute(paths)`` (a dict with that fingerprint under ``files``), saved atomically."""
    paths = [Path(p) for p in paths]
    stats_path = Path(stats_path)
    if stats_path.exists() and not recompute:
        saved = json.loads(stats_path.read_text())
        if saved.get("files") == _fingerprint(paths):
            return saved
    stats = compute(paths)
    tmp = stats_path.with_name(stats_path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stats, indent=indent))
    os.replace(tmp, stats_path)
    return stats


def load_or_compute_norm_stats(paths: Sequence, stats_path=None, *, recompute: bool = False) -> dict:
    """Load the saved statistics if they were computed on exactly these files, else compute and save."""
    stats_path = stats_path if stats_path is not None else default_stats_path(paths)
    return load_or_compute_stats(paths, stats_path, compute_norm_stats, recompute=recompute)


class Normalizer:
    """Per-dimension normalisation from saved statistics for one proprio mode."""

    def __init__(self, stats: Mapping, proprio: str = "paper"):
        keys = stats["keys"]
        missing = [k for k, _ in _proprio_keys(proprio) if k not in keys] + (["actions"] if "actions" not in keys else [])
        if missing:
            raise ValueError(f"normalisation statistics lack {missing} (needed by proprio={proprio!r})")
        a = keys["actions"]
        self.action_min, self.action_max = np.asarray(a["min"]), np.asarray(a["max"])
        self.proprio_mean = np.concatenate([np.asarray(keys[k]["mean"]) for k, _ in _proprio_keys(proprio)])
        self.proprio_std = np.concatenate([np.asarray(keys[k]["std"]) for k, _ in _proprio_keys(proprio)])
        self._a_center = (self.action_max + self.action_min) / 2
        spread = (self.action_max - self.action_min) / 2
        self._a_scale = np.where(spread > _MIN_SPREAD, spread, 1.0)
        self._p_scale = np.where(self.proprio_std > _MIN_SPREAD, self.proprio_std, 1.0)

    def normalize_actions(self, actions):
        return (np.asarray(actions) - self._a_center) / self._a_scale

    def unnormalize_actions(self, actions):
        return np.asarray(actions) * self._a_scale + self._a_center

    def normalize_proprio(self, proprio):
        return (np.asarray(proprio) - self.proprio_mean) / self._p_scale

    def unnormalize_proprio(self, proprio):
        return np.asarray(proprio) * self._p_scale + self.proprio_mean


class CacheEmbeddings:
    """Adapts an object with ``frames(file, demo, camera) -> (T, D)`` (e.g.
    ``clad_lite.encoders.cache.EmbeddingCache``) to the ``(file, demo, t, camera)`` source
    interface, keeping the last ``max_demos`` per-demo arrays in memory."""

    def __init__(self, cache, max_demos: int = 64):
        from functools import lru_cache

        self.cache = cache
        self._frames = lru_cache(maxsize=max_demos)(
            lambda file, demo, camera: np.asarray(cache.frames(file, demo, camera), dtype=np.float32))

    def __call__(self, file, demo, t, camera):
        return self._frames(str(file), demo, camera)[np.asarray(t)]

    def __getstate__(self):  # DataLoader workers rebuild the memo
        return {"cache": self.cache, "max_demos": self._frames.cache_info().maxsize}

    def __setstate__(self, state):
        self.__init__(state["cache"], state["max_demos"])


def as_embedding_source(source):
    """A callable ``(file, demo, t, camera) -> (len(t), D)``, or an object with ``frames``."""
    if source is None or (callable(source) and not hasattr(source, "frames")):
        return source
    if hasattr(source, "frames"):
        return CacheEmbeddings(source)
    raise TypeError("embeddings must be a callable (file, demo, t, camera) -> array, or have a frames() method")


def _text_lookup(source):
    if hasattr(source, "text") and callable(source.text):
        return source.text  # e.g. EmbeddingCache.text(instruction)
    return source if callable(source) else source.__getitem__


class ArrayEmbeddings:
    """An embedding source from arrays: ``{(file name, demo, camera): (T, D) array}``.

    Files are matched by their base name, so the mapping does not depend on where the data lie.
    """

    def __init__(self, arrays: Mapping):
        self.arrays = {(Path(f).name, d, c): np.asarray(v) for (f, d, c), v in arrays.items()}

    def __call__(self, file, demo, t, camera):
        key = (Path(file).name, demo, camera)
        if key not in self.arrays:
            raise KeyError(f"no embeddings for {key}")
        return self.arrays[key][np.asarray(t)]


# =========================================================================== dataset
def _torch_dataset_base():
    from torch.utils.data import Dataset

    return Dataset


class WindowDataset(_torch_dataset_base()):
    """CLaD training windows over one or more demonstration files (see the module docstring).

    Args:
        paths: HDF5 files (official LIBERO or ours) or directories of them.
        tau: window half-length τ (6 in the paper: 0.3 s at 20 Hz).
        proprio: ``"paper"`` (16-D, default) or ``"authors_code"`` (9-D).
        cameras: obs image keys to return (``()`` for none).
        embeddings: optional ``embeddings(file, demo, t, camera) -> (len(t), D)``, or an object
            with ``frames(file, demo, camera)`` (an ``EmbeddingCache``); when given, the camera
            keys carry embeddings and no image is read.
        text_embeddings: optional object with ``text(str)``, ``callable(str) -> (D_l,)`` or
            mapping str -> vector.
        edge: ``"pad"`` or ``"inside"`` (see the module docstring).
        normalize: apply :class:`Normalizer` to actions and proprio.
        stats: statistics dict, a path to a JSON file, or None = :func:`load_or_compute_norm_stats`
            next to the data.
        upright: flip images upright (the files store them upside down).
        future: length L of the target chunk ``actions`` (default τ, the paper; longer for a policy
            that predicts beyond the τ actions it executes, ``PolicyConfig.extra_actions``).
        window_stride: windows at t = 0, s, 2s, ... for this s instead of the file's image stride
            (only with ``embeddings`` that exist at every step, such as simulator states; s must
            divide τ).
    """

    def __init__(self, paths, *, tau: int = TAU, proprio: str = "paper", cameras: Sequence[str] = H.IMAGE_KEYS,
                 embeddings: Callable | None = None, text_embeddings=None, edge: str = "pad",
                 normalize: bool = True, stats=None, upright: bool = True, window_stride: int | None = None,
                 future: int | None = None):
        if tau < 1:
            raise ValueError(f"tau must be >= 1, got {tau}")
        future = tau if future is None else future
        if future < 1:
            raise ValueError(f"future (the target chunk's length) must be >= 1, got {future}")
        if edge not in EDGE_RULES:
            raise ValueError(f"edge must be one of {EDGE_RULES}, got {edge!r}")
        bad = [c for c in cameras if c not in H.IMAGE_KEYS]
        if bad:
            raise ValueError(f"unknown cameras {bad}; expected obs image keys {H.IMAGE_KEYS}")
        self.paths = H.find_demo_files(paths if isinstance(paths, (list, tuple)) else [paths])
        self.tau, self.future, self.proprio_mode, self.cameras, self.edge = tau, future, proprio, tuple(cameras), edge
        self.embeddings, self.upright = as_embedding_source(embeddings), upright
        proprio_keys = [k for k, _ in _proprio_keys(proprio)]
        needs_images = bool(self.cameras) and embeddings is None
        if window_stride is not None and (needs_images or window_stride < 1 or tau % window_stride):
            raise ValueError(f"window_stride={window_stride} needs embeddings at every step and must divide τ = {tau}")
        require = proprio_keys + (["obs/" + c for c in self.cameras] if needs_images else [])

        self.instructions: list[str] = []
        self._demos: list[tuple[int, str]] = []  # (file index, demo name)
        self._stride: list[int] = []  # per demo: image stride of its file (1 without cameras)
        self._task: list[int] = []
        self._actions: list[np.ndarray] = []
        self._proprio: list[np.ndarray] = []
        index = []
        for file_index, path in enumerate(self.paths):
            with H.DemoFile(path) as f:
                try:
                    f.validate(require=require, require_images=needs_images)
                except H.DemoFormatError as error:
                    if error.key == "obs/" + H.JOINT_VEL_KEY and proprio == "paper":
                        raise H.DemoFormatError(
                            path, "missing: proprio='paper' needs joint velocities, which official LIBERO "
                            "files lack; use proprio='authors_code'", error.demo, error.key) from None
                    raise
                instruction = f.instruction
                stride = window_stride or (f.image_stride if self.cameras else 1)
                if tau % stride:
                    raise ValueError(f"{path}: images every {stride} steps, but τ = {tau} is not a multiple of that")
                if instruction not in self.instructions:
                    self.instructions.append(instruction)
                task_id = self.instructions.index(instruction)
                for demo in f.demos:
                    arrays = f.read(demo, ["actions", *proprio_keys])
                    actions = np.asarray(arrays["actions"], dtype=np.float64)
                    T = len(actions)
                    demo_index = len(self._demos)
                    self._demos.append((file_index, demo))
                    self._stride.append(stride)
                    self._task.append(task_id)
                    self._actions.append(actions)
                    self._proprio.append(np.concatenate([np.asarray(arrays[k], np.float64) for k in proprio_keys], 1))
                    ts = range(0, T, stride) if edge == "pad" else range(tau, min(T - tau, T - future + 1), stride)
                    index.extend((demo_index, t) for t in ts)
        self._index = np.asarray(index, dtype=np.int64).reshape(-1, 2)
        self.normalizer = None
        if normalize:
            if stats is None:
                stats = load_or_compute_norm_stats(self.paths)
            elif isinstance(stats, (str, Path)):
                stats = json.loads(Path(stats).read_text())
            self.normalizer = Normalizer(stats, proprio)
        self._text = None
        if text_embeddings is not None:
            lookup = _text_lookup(text_embeddings)
            self._text = [np.asarray(lookup(s), dtype=np.float32) for s in self.instructions]
        self._handles: dict = {}
        self._pid = None

    # ------------------------------------------------------------------ helpers
    @property
    def proprio_dim(self) -> int:
        return proprio_dim(self.proprio_mode)

    @property
    def num_demos(self) -> int:
        return len(self._demos)

    def __len__(self) -> int:
        return len(self._index)

    def _file(self, file_index: int):
        import h5py

        if self._pid != os.getpid():  # DataLoader workers must not share the parent's handles
            self._handles, self._pid = {}, os.getpid()
        if file_index not in self._handles:
            self._handles[file_index] = h5py.File(self.paths[file_index], "r")
        return self._handles[file_index]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = {}, None
        return state

    def window_indices(self, T: int, t: int, stride: int = 1):
        """(frames at t-τ, t, t+τ clamped to the rendered steps; past action indices; future
        action indices) for one window."""
        tau = self.tau
        frames = np.clip(np.array([t - tau, t, t + tau]), 0, H.last_image_frame(T, stride))
        return frames, np.arange(t - tau, t), np.arange(t, t + self.future)

    def __getitem__(self, i: int) -> dict:
        import torch

        demo_index, t = (int(x) for x in self._index[i])
        file_index, demo = self._demos[demo_index]
        actions, proprio = self._actions[demo_index], self._proprio[demo_index]
        T = len(actions)
        frames, past, future = self.window_indices(T, t, self._stride[demo_index])
        past_pad, future_pad = past < 0, future >= T
        a_past = np.where(past_pad[:, None], NOOP_ACTION, actions[np.clip(past, 0, T - 1)])
        hold = np.zeros(7)
        hold[6] = actions[-1, 6]
        a_future = np.where(future_pad[:, None], hold, actions[np.clip(future, 0, T - 1)])
        p = proprio[frames]
        if self.normalizer is not None:
            a_past = self.normalizer.normalize_actions(a_past)
            a_future = self.normalizer.normalize_actions(a_future)
            p = self.normalizer.normalize_proprio(p)
        item = {
            "proprio_prev": torch.as_tensor(p[0], dtype=torch.float32),
            "proprio": torch.as_tensor(p[1], dtype=torch.float32),
            "proprio_next": torch.as_tensor(p[2], dtype=torch.float32),
            "actions_past": torch.as_tensor(a_past, dtype=torch.float32),
            "actions": torch.as_tensor(a_future, dtype=torch.float32),
            "actions_past_is_pad": torch.as_tensor(past_pad),
            "actions_is_pad": torch.as_tensor(future_pad),
            "task_id": torch.tensor(self._task[demo_index], dtype=torch.int64),
            "instruction": self.instructions[self._task[demo_index]],
            "t": torch.tensor(t, dtype=torch.int64),
            "demo_index": torch.tensor(demo_index, dtype=torch.int64),
        }
        if self._text is not None:
            item["instruction_emb"] = torch.as_tensor(self._text[self._task[demo_index]])
        for camera in self.cameras:
            if self.embeddings is not None:
                values = np.asarray(self.embeddings(str(self.paths[file_index]), demo, frames, camera), np.float32)
                if values.ndim != 2 or len(values) != 3:
                    raise ValueError(f"embedding source returned shape {values.shape} for 3 frames of "
                                     f"{self.paths[file_index]}:{demo}:{camera}; expected (3, D)")
                values = torch.as_tensor(values)
            else:
                try:
                    images = H._take(self._file(file_index)["data"][demo]["obs"][camera], frames)
                except (OSError, ValueError, KeyError) as error:
                    raise H.DemoFormatError(self.paths[file_index], f"cannot read images: {error}",
                                            demo, "obs/" + camera) from None
                if self.upright:
                    images = images[:, ::-1]
                values = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
            item[f"{camera}_prev"], item[camera], item[f"{camera}_next"] = values[0], values[1], values[2]
        return item

    def close(self):
        for handle in self._handles.values():
            handle.close()
        self._handles = {}
