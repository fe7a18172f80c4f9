"""LIBERO demonstration files: the official HDF5 layout, a writer, and a validating reader.

One file per task. The layout is the one LIBERO's own ``scripts/create_dataset.py`` writes::

    data                                  attrs: problem_info (JSON, "language_instruction"),
                                                 env_args (JSON), bddl_file_name, env_name,
                                                 macros_image_convention, num_demos, total
    data/demo_<i>/actions        (T, 7)   float64, OSC_POSE deltas in [-1, 1]
    data/demo_<i>/states         (T, S)   float64, flattened MuJoCo state [time, qpos, qvel]
    data/demo_<i>/rewards        (T,)     uint8 (1 on the last step)
    data/demo_<i>/dones          (T,)     uint8 (1 on the last step)
    data/demo_<i>/robot_states   (T, 9)   gripper qpos (2), eef pos (3), eef quat xyzw (4)
    data/demo_<i>/obs/agentview_rgb    (T, H, W, 3) uint8, upside down (OpenGL convention)
    data/demo_<i>/obs/eye_in_hand_rgb  (T, H, W, 3) uint8, upside down
    data/demo_<i>/obs/joint_states     (T, 7)   arm joint angles
    data/demo_<i>/obs/gripper_states   (T, 2)   finger joint positions
    data/demo_<i>/obs/ee_pos           (T, 3)   end-effector position
    data/demo_<i>/obs/ee_ori           (T, 3)   end-effector orientation, axis-angle
    data/demo_<i>/obs/ee_states        (T, 6)   [ee_pos, ee_ori]

Files written by this project (``clad_lite``) add:

* ``obs/joint_vel (T, 7)``: arm joint velocities (the paper's proprio uses them; official
  files have none);
* ``data`` attrs ``clad_lite_format`` (layout version), ``obs_convention``,
  ``images_rendered`` (False between generation pass 1 and pass 2), ``render_revision`` (how
  pass 2 rendered: 2 places the fixtures with the attempt's seed first; absent = 1, see
  ``clad_lite.demos.generate``), ``suite``, ``task_id``, ``generator`` (JSON: seed, policy,
  budget, versions);
* ``executed_actions (T, 7)`` when generated with DART-style noise (``--action-noise``): what
  the robot executed; ``actions`` then holds the expert's clean labels;
* per-demo attrs ``attempt``, ``env_seed``, ``success``, ``num_samples``, ``init_state``.

Time alignment differs and is recorded in ``obs_convention``:

* ours, ``"before_action"``: ``obs[t]``, ``robot_states[t]`` and ``states[t]`` are all the
  observation / state *before* ``actions[t]`` (the one a policy saw when choosing it);
* official LIBERO files, ``"after_action"``: the dataset script replays the actions, drops
  the first 5 steps and stores ``obs[t]`` (and ``robot_states[t]``) observed *after*
  ``actions[t]``, while ``states[t]`` is the state before it. Files without the attribute
  are treated as official.

Images are stored like the official files (upside down); ours are compressed (chunked
gzip, one chunk per frame, so random frame access stays cheap).

**Image stride** (ours, ``data`` attr ``image_stride`` = s, default 1). Rendering, not
physics, is the cost of a data set on a CPU (about 40 ms per frame and camera here, nearly
independent of the image size), so generation may render only every s-th step: the image
datasets keep the official shape (T, H, W, 3), but only rows t with t % s == 0 are written.
The others are never stored (HDF5 does not allocate unwritten chunks) and read as black.
:meth:`DemoFile.image_frames` lists the rendered rows; windows and the encoder read only
those (τ must be a multiple of s). Official files have every frame (s = 1).

Reading goes through :class:`DemoFile`, which validates on demand and raises
:class:`DemoFormatError` naming the file, the demo and the key for anything missing,
truncated (lengths that disagree inside a demo, or unreadable bytes) or mis-shaped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from clad_lite.cli import UserError

FORMAT_VERSION = 1
OBS_BEFORE_ACTION = "before_action"
OBS_AFTER_ACTION = "after_action"
# robosuite camera name -> obs key in the files
CAMERA_KEYS = {"agentview": "agentview_rgb", "robot0_eye_in_hand": "eye_in_hand_rgb"}
IMAGE_KEYS = tuple(CAMERA_KEYS.values())
# low-dimensional obs keys every file has, with their widths
LOWDIM_OBS = {"joint_states": 7, "gripper_states": 2, "ee_pos": 3, "ee_ori": 3, "ee_states": 6}
JOINT_VEL_KEY = "joint_vel"  # extra key in our files
EXTRA_OBS = {JOINT_VEL_KEY: 7}
ACTION_DIM = 7
ROBOT_STATE_DIM = 9
DEMO_KEYS = ("actions", "states", "rewards", "dones", "robot_states")
# written when present: the actions the robot executed, where they differ from the recorded labels
# (clad_lite.demos.generate's DART-style --action-noise); official files have none
OPTIONAL_DEMO_KEYS = ("executed_actions",)
DATA_ATTRS = ("problem_info", "env_args", "bddl_file_name")
# chunked gzip, one frame per chunk: about 2x smaller than raw for 128 px LIBERO frames
IMAGE_COMPRESSION = {"compression": "gzip", "compression_opts": 4}
_DEMO_NAME = re.compile(r"^demo_(\d+)$")


class DemoFormatError(UserError, ValueError):
    """A demonstration file is missing something, truncated or mis-shaped.

    The message starts with ``<file>: data/<demo>/<key>:`` so the culprit is obvious.
    """

    def __init__(self, path, message: str, demo: str | None = None, key: str | None = None, *,
                 file_level: bool = False):
        self.path, self.demo, self.key, self.problem = str(path), demo, key, message
        if file_level:
            super().__init__(f"{path}: {message}")
            return
        where = "data" if demo is None else f"data/{demo}"
        if key:
            where = f"{where}/{key}"
        super().__init__(f"{path}: {where}: {message}")


def demo_sort_key(name: str) -> int:
    match = _DEMO_NAME.match(name)
    return int(match.group(1)) if match else 1 << 62


def _decode(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO" and value.shape == ():
        return _decode(value[()])
    return value


def instruction_from_problem_info(problem_info: Mapping) -> str:
    text = problem_info["language_instruction"]
    if isinstance(text, (list, tuple)):  # LIBERO's dataset_utils joins it
        text = "".join(text)
    return str(text).strip().strip('"')


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """robosuite's ``quat2axisangle`` (xyzw quaternion -> axis * angle), vectorised."""
    q = np.asarray(quat_xyzw, dtype=np.float64)
    w = np.clip(q[..., 3], -1.0, 1.0)
    den = np.sqrt(np.maximum(1.0 - w * w, 0.0))
    angle = 2.0 * np.arccos(w)
    safe = den > 1e-12
    scale = np.where(safe, angle / np.where(safe, den, 1.0), 0.0)
    return q[..., :3] * scale[..., None]


# --------------------------------------------------------------------------- writing
def write_data_attrs(data_group, *, instruction: str, problem_name: str, bddl_file: str,
                     env_args: Mapping, extra: Mapping | None = None) -> None:
    """The ``data`` attributes of the official layout (plus ours in ``extra``)."""
    data_group.attrs["env_name"] = problem_name
    data_group.attrs["problem_info"] = json.dumps(
        {"problem_name": problem_name, "domain_name": "bddl", "language_instruction": instruction}
    )
    data_group.attrs["macros_image_convention"] = "opengl"
    data_group.attrs["bddl_file_name"] = str(bddl_file)
    data_group.attrs["env_args"] = json.dumps(dict(env_args))
    for key, value in (extra or {}).items():
        data_group.attrs[key] = value


def write_demo(data_group, name: str, demo: Mapping, *, attrs: Mapping | None = None,
               compress_images: bool = True):
    """Write one demonstration group ``data/<name>``.

    ``demo`` holds ``actions, states, rewards, dones, robot_states`` and ``obs`` (a mapping
    of obs key -> array); image keys get chunked gzip compression. ``attrs`` go on the group;
    ``num_samples`` is set from the length.
    """
    group = data_group.create_group(name)
    for key in DEMO_KEYS + OPTIONAL_DEMO_KEYS:
        if key in demo:
            group.create_dataset(key, data=np.asarray(demo[key]))
    obs_group = group.create_group("obs")
    for key, value in demo.get("obs", {}).items():
        write_obs(obs_group, key, value, compress_images=compress_images)
    group.attrs["num_samples"] = len(demo["actions"])
    for key, value in (attrs or {}).items():
        group.attrs[key] = value
    return group


def write_strided_images(obs_group, key: str, frames, length: int, stride: int):
    """Write image rows 0, s, 2s, ... of a (length, H, W, 3) dataset; the rest stay unwritten.

    ``frames`` is (ceil(length / stride), H, W, 3): the rendered steps in order.
    """
    frames = np.asarray(frames)
    expected = len(range(0, length, stride))
    if stride < 1 or len(frames) != expected:
        raise ValueError(f"{key}: {len(frames)} frames for length {length} and stride {stride}; expected {expected}")
    dataset = obs_group.create_dataset(key, shape=(length, *frames.shape[1:]), dtype=frames.dtype,
                                       chunks=(1, *frames.shape[1:]), fillvalue=0, **IMAGE_COMPRESSION)
    for row, t in enumerate(range(0, length, stride)):
        dataset[t] = frames[row]
    return dataset


def image_frames(length: int, stride: int) -> np.ndarray:
    """The rendered steps 0, s, 2s, ... < length of a demo (all steps when s = 1)."""
    return np.arange(0, length, stride, dtype=np.int64)


def last_image_frame(length: int, stride: int) -> int:
    """The last rendered step of a demo of ``length`` steps."""
    return ((length - 1) // stride) * stride


def write_obs(obs_group, key: str, value, *, compress_images: bool = True):
    value = np.asarray(value)
    if key in IMAGE_KEYS and compress_images:
        chunks = (1,) + value.shape[1:] if value.shape[0] else None
        return obs_group.create_dataset(key, data=value, chunks=chunks, **IMAGE_COMPRESSION)
    return obs_group.create_dataset(key, data=value)


# --------------------------------------------------------------------------- reading
class DemoFile:
    """Read-only access to one demonstration file (official LIBERO or ours).

    >>> with DemoFile(path) as f:            # doctest: +SKIP
    ...     f.validate()
    ...     actions = f.read("demo_0", ["actions"])["actions"]

    Opening checks only that the file is HDF5 with a ``data`` group; :meth:`validate` checks
    the whole layout (``deep=True`` also reads every byte, to catch damaged chunks).
    """

    def __init__(self, path):
        import h5py

        self.path = Path(path)
        if not self.path.exists():
            raise DemoFormatError(self.path, "no such file", file_level=True)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as error:
            raise DemoFormatError(self.path, f"not a readable HDF5 file (truncated or damaged?): {error}",
                                  file_level=True) from None
        if "data" not in self._file:
            self.close()
            raise DemoFormatError(self.path, "missing group 'data' (not a LIBERO demonstration file)",
                                  file_level=True)
        self.data = self._file["data"]

    # ------------------------------------------------------------------ basics
    def close(self):
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _attr(self, name: str):
        if name not in self.data.attrs:
            raise DemoFormatError(self.path, f"missing attribute {name!r}")
        return _decode(self.data.attrs[name])

    def _json_attr(self, name: str) -> dict:
        try:
            value = json.loads(self._attr(name))
        except (TypeError, json.JSONDecodeError) as error:
            raise DemoFormatError(self.path, f"attribute {name!r} is not valid JSON ({error})") from None
        if not isinstance(value, dict):
            raise DemoFormatError(self.path, f"attribute {name!r} must be a JSON object")
        return value

    @property
    def problem_info(self) -> dict:
        return self._json_attr("problem_info")

    @property
    def env_args(self) -> dict:
        return self._json_attr("env_args")

    @property
    def bddl_file_name(self) -> str:
        return str(self._attr("bddl_file_name"))

    @property
    def instruction(self) -> str:
        info = self.problem_info
        if "language_instruction" not in info:
            raise DemoFormatError(self.path, "attribute 'problem_info' has no 'language_instruction'")
        return instruction_from_problem_info(info)

    @property
    def is_ours(self) -> bool:
        return "clad_lite_format" in self.data.attrs

    @property
    def obs_convention(self) -> str:
        return str(_decode(self.data.attrs.get("obs_convention", OBS_AFTER_ACTION)))

    @property
    def images_rendered(self) -> bool:
        """Ours: False between generation pass 1 and pass 2. Official files: always True."""
        return bool(self.data.attrs.get("images_rendered", True))

    @property
    def image_stride(self) -> int:
        """Images exist at steps 0, s, 2s, ... (ours may render every s-th step; official: 1)."""
        stride = int(self.data.attrs.get("image_stride", 1))
        if stride < 1:
            raise DemoFormatError(self.path, f"attribute 'image_stride' must be >= 1, got {stride}")
        return stride

    @property
    def render_revision(self) -> int | None:
        """Ours: how pass 2 rendered the images (``clad_lite.demos.generate.RENDER_REVISION``; 1 when the
        attribute is absent: files made before it). Official files, whose images were not rendered by us: None."""
        return int(self.data.attrs.get("render_revision", 1)) if self.is_ours else None

    def image_frames(self, demo: str) -> np.ndarray:
        """The steps of ``demo`` whose images were rendered (int64, increasing)."""
        return image_frames(self.length(demo), self.image_stride)

    @property
    def attrs(self) -> dict:
        return {k: _decode(v) for k, v in self.data.attrs.items()}

    @property
    def demos(self) -> list[str]:
        """Demo group names in numeric order (demo_0, demo_1, ..., demo_10)."""
        names = [name for name in self.data if _DEMO_NAME.match(name)]
        return sorted(names, key=demo_sort_key)

    def group(self, demo: str):
        if demo not in self.data:
            raise DemoFormatError(self.path, "no such demo", demo)
        return self.data[demo]

    def length(self, demo: str) -> int:
        return int(self._dataset(demo, "actions").shape[0])

    def lengths(self) -> dict[str, int]:
        return {demo: self.length(demo) for demo in self.demos}

    def obs_keys(self, demo: str | None = None) -> list[str]:
        demo = demo or self.demos[0]
        group = self.group(demo)
        return sorted(group["obs"].keys()) if "obs" in group else []

    def image_keys(self, demo: str | None = None) -> list[str]:
        return [key for key in self.obs_keys(demo) if key in IMAGE_KEYS]

    def image_size(self) -> tuple[int, int] | None:
        for demo in self.demos:
            keys = self.image_keys(demo)
            if keys:
                return tuple(int(n) for n in self._dataset(demo, "obs/" + keys[0]).shape[1:3])
        return None

    def _dataset(self, demo: str, key: str):
        group = self.group(demo)
        if key not in group:
            raise DemoFormatError(self.path, "missing", demo, key)
        return group[key]

    def dataset(self, demo: str, key: str):
        """The h5py dataset ``data/<demo>/<key>`` (key like ``actions`` or ``obs/ee_pos``)."""
        return self._dataset(demo, key)

    def read(self, demo: str, keys: Iterable[str], frames=None) -> dict[str, np.ndarray]:
        """Read ``keys`` of one demo into NumPy (optionally only the given frame indices)."""
        out = {}
        for key in keys:
            dataset = self._dataset(demo, key)
            try:
                out[key] = dataset[()] if frames is None else _take(dataset, frames)
            except IndexError as error:
                raise DemoFormatError(self.path, f"cannot read data: {error}", demo, key) from None
            except (OSError, ValueError) as error:
                raise DemoFormatError(self.path, f"cannot read data (truncated or damaged?): {error}", demo, key) from None
        return out

    # ------------------------------------------------------------------ validation
    def validate(self, *, require_images: bool | None = None, require: Iterable[str] = (),
                 deep: bool = False) -> FileSummary:
        """Check the layout; return a :class:`FileSummary` or raise :class:`DemoFormatError`.

        Args:
            require_images: None = images must be there unless this is one of our files
                between pass 1 and pass 2 (``images_rendered`` False).
            require: more keys every demo must have (e.g. ``["obs/joint_vel"]``).
            deep: also read every dataset in full (slow on big files; catches damaged bytes).
        """
        instruction = self.instruction
        _ = (self.env_args, self.bddl_file_name)  # present and parseable, or raise
        demos = self.demos
        if not demos:
            raise DemoFormatError(self.path, "no demo_<i> groups")
        if require_images is None:
            require_images = self.images_rendered
        required = set(require)
        if self.is_ours:
            required.add("obs/" + JOINT_VEL_KEY)
        image_shape = None
        lengths = {}
        for demo in demos:
            group = self.group(demo)
            if not hasattr(group, "keys"):
                raise DemoFormatError(self.path, "is not a group", demo)
            T = self._check_shape(demo, "actions", (None, ACTION_DIM))
            if T == 0:
                raise DemoFormatError(self.path, "empty demonstration (0 steps)", demo, "actions")
            self._check_shape(demo, "states", (T, None), ndim=2)
            self._check_shape(demo, "rewards", (T,))
            self._check_shape(demo, "dones", (T,))
            self._check_shape(demo, "robot_states", (T, ROBOT_STATE_DIM))
            if "obs" not in group:
                raise DemoFormatError(self.path, "missing", demo, "obs")
            for key, width in {**LOWDIM_OBS, **EXTRA_OBS}.items():
                if f"obs/{key}" in group or key in LOWDIM_OBS or f"obs/{key}" in required:
                    self._check_shape(demo, f"obs/{key}", (T, width))
            for key in IMAGE_KEYS:
                if f"obs/{key}" not in group:
                    if require_images or f"obs/{key}" in required:
                        raise DemoFormatError(self.path, "missing (images not rendered?)", demo, f"obs/{key}")
                    continue
                shape = self._check_shape(demo, f"obs/{key}", (T, None, None, 3), full=True)
                dataset = group[f"obs/{key}"]
                if dataset.dtype != np.uint8:
                    raise DemoFormatError(self.path, f"dtype {dataset.dtype}, expected uint8", demo, f"obs/{key}")
                if image_shape is None:
                    image_shape = shape[1:3]
                elif shape[1:3] != image_shape:
                    raise DemoFormatError(
                        self.path, f"image size {shape[1:3]} differs from {image_shape} elsewhere in the file",
                        demo, f"obs/{key}")
            for key in required:
                if key not in group:
                    raise DemoFormatError(self.path, "missing", demo, key)
            if deep:
                self._read_all(demo)
            lengths[demo] = T
        return FileSummary(
            path=str(self.path), instruction=instruction, lengths=lengths,
            image_size=image_shape, obs_keys=self.obs_keys(demos[0]), demo_keys=sorted(self.group(demos[0]).keys()),
            ours=self.is_ours, obs_convention=self.obs_convention, images_rendered=image_shape is not None,
        )

    def _check_shape(self, demo: str, key: str, expected: tuple, ndim: int | None = None, full: bool = False):
        dataset = self._dataset(demo, key)
        shape = tuple(dataset.shape)
        ndim = len(expected) if ndim is None else ndim
        if len(shape) != ndim:
            raise DemoFormatError(self.path, f"shape {shape}, expected {_fmt(expected)}", demo, key)
        others_ok = all(want is None or got == want for got, want in zip(shape[1:], expected[1:]))
        if others_ok and expected[0] is not None and shape[0] != expected[0]:
            raise DemoFormatError(
                self.path, f"has {shape[0]} steps but actions has {expected[0]} (truncated demo?)", demo, key)
        if not others_ok:
            raise DemoFormatError(self.path, f"shape {shape}, expected {_fmt(expected)}", demo, key)
        return shape if full else shape[0]

    def _read_all(self, demo: str):
        group = self.group(demo)
        keys = []
        group.visititems(lambda name, obj: keys.append(name) if hasattr(obj, "dtype") else None)
        for key in keys:
            dataset = group[key]
            try:
                for start in range(0, max(1, dataset.shape[0] if dataset.shape else 1), 64):
                    dataset[start:start + 64] if dataset.shape else dataset[()]
            except (OSError, ValueError) as error:
                raise DemoFormatError(self.path, f"cannot read data (truncated or damaged?): {error}", demo, key) from None


def _take(dataset, frames) -> np.ndarray:
    """Fancy-index an h5py dataset with possibly repeated, unsorted frame indices."""
    frames = np.asarray(frames, dtype=np.int64)
    unique, inverse = np.unique(frames, return_inverse=True)
    if len(unique) and (unique[0] < 0 or unique[-1] >= dataset.shape[0]):
        raise IndexError(f"frames {unique[0]}..{unique[-1]} out of range for {dataset.shape[0]} steps")
    # h5py's list indexing is ~100x slower than integer reads (31 ms vs 0.3 ms for 3 frames)
    if len(unique) <= 16:
        block = np.stack([dataset[int(i)] for i in unique]) if len(unique) else dataset[0:0]
        return block[inverse]
    return dataset[int(unique[0]):int(unique[-1]) + 1][unique - unique[0]][inverse]


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


class FileSummary(dict):
    """What :meth:`DemoFile.validate` found (a dict with attribute access)."""

    __getattr__ = dict.__getitem__

    @property
    def num_demos(self) -> int:
        return len(self["lengths"])


def validate_file(path, **kwargs) -> FileSummary:
    """Open and validate one file; raises :class:`DemoFormatError` naming file, demo and key."""
    with DemoFile(path) as demo_file:
        return demo_file.validate(**kwargs)


def find_demo_files(paths: Iterable) -> list[Path]:
    """Expand directories into their ``*.hdf5`` / ``*.h5`` files (sorted); keep files as given."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".hdf5", ".h5") and not p.name.startswith("."))
            if not found:
                raise UserError(f"{path}: no .hdf5 files in this directory")
            files.extend(found)
        else:
            files.append(path)
    return files


def find_task_file(data_dir, instruction: str) -> Path | None:
    """The demonstration file of ``data_dir`` whose instruction is ``instruction`` (None if there is none)."""
    for path in find_demo_files([data_dir]):
        with DemoFile(path) as f:
            if f.instruction == instruction:
                return path
    return None
