"""``python -m clad_lite eval``: LIBERO rollouts of a trained policy, resumable, with 95% Wilson intervals.

::

    python -m clad_lite eval --ckpt runs/policy --suite libero_10 --out evals/policy            # ‡ protocol
    python -m clad_lite eval --ckpt runs/policy --protocol top3 --out evals/policy_top3          # † protocol
    python -m clad_lite eval --ckpt runs/policy --tasks 0-4 --episodes 10 --workers 2 --videos 1 --out evals/x

**The standard protocol** (DESIGN.md, "LIBERO conventions"), per task and episode i:
``np.random.seed(episode seed)``, reset, load fixed init state i, ``eval.warmup_steps`` no-op
steps with the gripper open (not counted in the step budget, as in OpenVLA / LeRobot), then at
most ``eval.max_steps`` policy steps (520 for libero_10); success = ``env.check_success()``
after any step. The episode seed is a function of (``eval.seed``, task, episode) only, and so
is the policy's ``torch.Generator``: a rollout does not depend on which worker ran it.

**The online loop** (policy step t = 0 right after the warm-up). The policy is queried every
``query_every`` = τ = 6 steps and its chunk (τ actions) runs open-loop. Cameras are rendered
only on query steps (rendering, not physics, is the cost; video episodes render every step).
At a query step t:

* the current camera images (the data's cameras and image size, as stored: upside down) go
  through the frozen encoder (rounded through the embedding cache's dtype, float16 by
  default, exactly as training saw them) -> v^t; the instruction embedding l comes from the
  training cache (the same numbers training used), else from the encoder;
* proprio p^t (``data.proprio`` layout) is normalised with the data's ``norm_stats.json``;
* CLaD gets p^{t-τ}, v^{t-τ} and the τ executed (normalised) actions a^{t-τ:t}. For t < τ the
  training edge rule of ``clad_lite.demos.windows`` applies: frames before the start clamp to
  the first one (at t = 0: the current state is the past state) and actions before the start
  are the no-op ``[0,0,0,0,0,0,-1]`` - which is also what the robot did in the warm-up.
  ``start_actions="mask"`` omits them instead (every action token masked), as
  ``CLaD.foresight``'s docstring suggests;
* the policy samples a chunk (B = 1) with the episode's generator; actions are un-normalised
  (``Normalizer.unnormalize_actions``) and clipped to [-1, 1] before ``env.step``.

**Resets**: upstream LIBERO rebuilds the MjSim on every reset (``hard_reset=True``), about 5-9 s
per episode on this CPU machine; that is the default. ``--fast-reset`` skips the rebuild (about
10 ms): the fixed init state overwrites the whole [time, qpos, qvel] state, and ``LiberoEnv``
also clears the grippers' integrated command, which only a rebuild cleared before, so a fast reset
gives bitwise the trajectory of a hard one whatever ran before it in the process
(``tests/test_sim.py``). In evaluations made before that fix (results without
``protocol.gripper_reset``) an episode's fingers started from the previous episode's command, so
their fast-reset rollouts depended on the order of a worker's episodes. Results record ``fast_reset``.

Policy-only runs (``policy.foresight=none``) skip CLaD. **Temporal ensembling** (``--ensemble``,
ACT's rule): query every ``--query-every`` steps (default 1 with ``--ensemble``; τ must be a
multiple of it) and execute the weighted mean of every chunk that covers the step, weight
``exp(-m * i)`` with i = 0 the oldest (m = 0.01, as ACT). Without ``--ensemble`` the newest chunk is used.
**Gripper latch** (``--gripper-hysteresis h``): the Panda gripper already acts on the *sign* of its
command (robosuite's ``PandaGripper.format_action``), so a regressed command that dips from +0.4 to
-0.01 for one step opens the hand. The latch executes a held ±1 that flips only once the command
passes ``h`` on the other side (h = 0: the plain sign, but then also fed back as ±1 history, as in
the demos); off by default (the paper executes the raw chunk).

**Partial progress**: after every step each BDDL goal predicate of the task is evaluated
(``LiberoEnv.goal_status``, about 0.1 ms against ~30 ms of physics); an episode records which
held at the end (``goals_final``) and which ever held (``goals_reached``), and ``per_task.goals``
counts them, so a failure that put one of two objects in the basket is told from one that
grasped nothing (``clad_lite.reports.goal_table``). Each episode also logs its **grasps**
(``clad_lite.grasp_log``): at every close of the gripper, the nearest movable object, the hand's
offset from it, and whether the object rose 1 cm within 20 steps; ``per_task.grasps`` sums them
(``clad_lite.reports.grasp_table``), so a missed grasp is told from a dropped or misplaced object.

**Resumption**: every finished episode is appended to ``OUT/episodes.jsonl`` at once (one line,
flushed and fsynced) by the parent process. A rerun with the same ``--out`` reads it, drops a
partial last line (a kill during the write) and duplicates, and runs only the missing
(task, episode) pairs; ``OUT/eval_config.json`` pins the settings, and a rerun with other
settings is refused. Workers are ``spawn`` processes (never fork after a GL context exists),
each with one torch thread; in-process rollouts (``--workers 1``) also use one, since the thread
count changes the networks' rounding and so the outcomes of closed-loop rollouts.

**Protocols** (``--protocol``):

* ``single`` (‡): ``--episodes`` (default ``eval.episodes_per_task``; the paper: 50) rollouts per
  task from one checkpoint (``--ckpt RUN_DIR`` -> its ``last.pt``, or a checkpoint file).
* ``top3`` (†): every numbered checkpoint ``ckpt_XXXXXX.pt`` of the run is evaluated with
  ``--episodes`` (default 20) rollouts per task into ``OUT/ckpt_XXXXXX/``; the 3 with the highest
  average success are kept (ties: the later step). Per task, ``successes`` / ``episodes`` pool
  the 3 checkpoints' rollouts (so ``rate`` is the mean of their rates and ``ci95`` the Wilson
  interval of the pooled 60 rollouts - an approximation, since checkpoints differ), and
  ``average`` is the mean of the 3 averages. ``protocol.checkpoints`` lists every checkpoint
  with its average and whether it was selected. Note: as in the paper, selecting on the
  evaluation rollouts themselves is optimistic.

**OUT**: ``results.json`` (schema below), ``episodes.jsonl``, ``eval_config.json``,
``videos/task{T}_ep{E}_{success|failure}.mp4`` (the first ``--videos`` episodes of each task,
agentview | wrist, upright, 20 fps)::

    {"suite", "profile", "protocol": {...}, "episodes_per_task",
     "per_task": [{"task_id", "instruction", "successes", "episodes", "rate", "ci95": [lo, hi],
                   "goals": [{"predicate", "reached", "final", "episodes"}],
                   "grasps": {"episodes", "grasps", "held", "by_object": {name: {"grasps", "held",
                                                                                "median_distance"}}}}],
     "average", "provenance": {"git_sha", "config", "seed", "data", "encoder", "versions", "device", ...},
     "timing": {...}}
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clad_lite.configuration_clad import WEIGHTS, resolve_weights
from clad_lite.ddpm import SAMPLERS
from clad_lite.grasp_log import GraspLog, grasp_counts
from clad_lite.state_oracle import SIM_STATE, StateObservation

EPISODES_NAME = "episodes.jsonl"
RESULTS_NAME = "results.json"
CONFIG_NAME = "eval_config.json"
VIDEO_FOLDER = "videos"
PROTOCOLS = ("single", "top3")
TOP_K = 3
TOP3_EPISODES = 20
ENSEMBLE_M = 0.01  # ACT's temporal-ensembling weight exp(-m * i)
VIDEO_FPS = 20
Z95 = 1.959963984540054


# =========================================================================== statistics
def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default); (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must be in [0, n={n}]")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # k = 0 and k = n have exact ends (0 and 1); the formula leaves rounding residue there (3e-18)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def episode_seed(seed: int, task_id: int, episode: int) -> int:
    """A 31-bit seed that depends on (seed, task, episode) only (env and policy RNG)."""
    return int(np.random.SeedSequence([int(seed), int(task_id), int(episode)]).generate_state(1)[0] & 0x7FFFFFFF)


def parse_tasks(text: str | Iterable[int] | None) -> list[int] | None:
    """``"0-9"``, ``"0,2,5"``, ``"0-3,7"`` or an iterable of ints -> sorted distinct list."""
    if text is None:
        return None
    if not isinstance(text, str):
        return sorted({int(t) for t in text})
    tasks: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            tasks.update(range(int(lo), int(hi) + 1) if dash else [int(lo)])
        except ValueError:
            raise ValueError(f"bad task list {text!r}; expected e.g. 0-9 or 0,2,5") from None
    return sorted(tasks)


# =========================================================================== bookkeeping
def read_episode_log(path: Path, repair: bool = True) -> list[dict]:
    """Complete records of a JSONL episode log, first occurrence of each (task_id, episode).

    A last line without its newline (the process was killed while writing it) is dropped and,
    with ``repair``, cut off the file so that the next append starts on a clean line.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete_end = data.rfind(b"\n") + 1
    if repair and complete_end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(complete_end)
    records, seen = [], set()
    for line in data[:complete_end].splitlines():
        try:
            record = json.loads(line)
            key = (int(record["task_id"]), int(record["episode"]))
        except (ValueError, KeyError, TypeError):
            continue  # a damaged line: that episode runs again
        if key not in seen:
            seen.add(key)
            records.append(record)
    return records


class EpisodeLog:
    """Append-only JSONL of finished episodes; one writer (the parent process)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records = read_episode_log(self.path)
        self.done = {(int(r["task_id"]), int(r["episode"])) for r in self.records}

    def append(self, record: dict) -> None:
        key = (int(record["task_id"]), int(record["episode"]))
        if key in self.done:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, default=_json_default) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.done.add(key)
        self.records.append(record)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_jobs(jobs: list[dict], log: EpisodeLog, rollout: Callable[[dict], dict] | None = None, *,
             workers: int = 1, spec: dict | None = None, progress: bool = True) -> None:
    """Run the ``jobs`` (dicts with ``task_id`` and ``episode``) that ``log`` lacks; append each result.

    ``rollout(job) -> record`` runs in this process (``workers=1`` or a test's fake); otherwise
    ``workers`` spawn processes build an :class:`Agent` from ``spec`` and run ``_worker_rollout``.
    """
    pending = [j for j in jobs if (int(j["task_id"]), int(j["episode"])) not in log.done]
    if not pending:
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), disable=not progress, desc="eval",
               unit="episode", dynamic_ncols=True, file=sys.stderr)
    successes = sum(bool(r.get("success")) for r in log.records)

    def record_one(record: dict) -> None:
        nonlocal successes
        log.append(record)
        successes += bool(record["success"])
        bar.update(1)
        bar.set_postfix(success=f"{successes}/{len(log.done)}")

    try:
        if rollout is not None or workers <= 1:
            import torch

            # one torch thread, as in the workers: the thread count changes float rounding in the networks,
            # and a rollout is chaotic enough that it changes outcomes, so --workers must not
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            if rollout is None:
                agent = Agent(spec)
                rollout = agent.rollout
            try:
                for job in pending:
                    record_one(rollout(job))
            finally:
                torch.set_num_threads(threads)
                if rollout is not None and hasattr(getattr(rollout, "__self__", None), "close"):
                    rollout.__self__.close()
        else:
            from clad_lite.sim import select_gl_backend, spawn_context

            select_gl_backend()  # probe once; workers inherit MUJOCO_GL through the environment
            context = spawn_context()
            with context.Pool(min(workers, len(pending)), initializer=_worker_init, initargs=(spec,)) as pool:
                for record in pool.imap_unordered(_worker_rollout, pending, chunksize=1):
                    record_one(record)
    finally:
        bar.close()


_AGENT = None


def _worker_init(spec: dict) -> None:
    global _AGENT
    import torch

    torch.set_num_threads(1)
    _AGENT = Agent(spec)


def _worker_rollout(job: dict) -> dict:
    return _AGENT.rollout(job)


# =========================================================================== loading a run
def _user_error(message: str):
    from clad_lite.cli import UserError

    return UserError(message)


def resolve_checkpoint(path) -> tuple[Path, Path]:
    """``RUN_DIR`` or a checkpoint file -> (run dir, checkpoint file)."""
    path = Path(path)
    if not path.exists():
        raise _user_error(f"run directory or checkpoint not found: {path}")
    if path.is_dir():
        run_dir, ckpt = path, path / "last.pt"
        if not ckpt.exists():
            numbered = sorted(path.glob("ckpt_*.pt"))
            if not numbered:
                raise _user_error(f"{path} holds no checkpoint (last.pt / ckpt_*.pt): is it a training run directory?")
            ckpt = numbered[-1]
    else:
        run_dir, ckpt = path.parent, path
    if not (run_dir / "config.json").is_file():
        raise _user_error(f"{run_dir} has no config.json: not a clad_lite training run")
    return run_dir, ckpt


def numbered_checkpoints(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir).glob("ckpt_[0-9]*.pt"))


def _find_norm_stats(data_dir: Path | None, proprio: str) -> tuple[dict, str]:
    from clad_lite.demos.windows import STATS_FILE, Normalizer

    if data_dir is None:
        raise _user_error("the run does not record its data directory (run.json data.data_dir); "
                          "cannot find norm_stats.json")
    path = Path(data_dir) / STATS_FILE
    if path.is_file():
        stats = json.loads(path.read_text())
    else:
        from clad_lite.demos import hdf5 as H
        from clad_lite.demos.windows import load_or_compute_norm_stats

        try:
            files = H.find_demo_files([data_dir]) if Path(data_dir).is_dir() else []
        except Exception:  # noqa: BLE001 - a UserError for an empty folder
            files = []
        if not files:
            raise _user_error(f"normalisation statistics not found: {path} (and no data in {data_dir} to compute them)")
        stats = load_or_compute_norm_stats(files)
        path = Path(files[0]).resolve().parent / STATS_FILE
    try:
        Normalizer(stats, proprio)
    except (ValueError, KeyError) as error:
        raise _user_error(f"{path}: {error}") from error
    return stats, str(path)


def _cache_info(cache_dir: str | None) -> dict:
    if not cache_dir:
        return {}
    index = Path(cache_dir) / "cache.json"
    if not index.is_file():
        return {}
    try:
        return json.loads(index.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def load_run(ckpt_path, encoder: str | None = None, need_encoder: bool = True) -> dict:
    """Everything a rollout needs to know about a stage-2 run, as a picklable spec (paths, dicts)."""
    from clad_lite.train import load_checkpoint, profile_from_dict

    run_dir, ckpt = resolve_checkpoint(ckpt_path)
    try:
        checkpoint = load_checkpoint(ckpt)
    except (OSError, ValueError, RuntimeError) as error:
        raise _user_error(f"cannot load checkpoint {ckpt}: {error}") from error
    if checkpoint["stage"] != 2:
        raise _user_error(f"{ckpt} is a stage-{checkpoint['stage']} (CLaD) checkpoint; evaluate a stage-2 policy run")
    try:
        profile = profile_from_dict(checkpoint["config"])
    except ValueError as error:
        raise _user_error(f"{ckpt}: {error}") from error
    run_info = {}
    if (run_dir / "run.json").is_file():
        run_info = json.loads((run_dir / "run.json").read_text())
    data = checkpoint.get("data") or run_info.get("data") or {}
    clad_checkpoint = checkpoint.get("clad_checkpoint") or run_info.get("clad_checkpoint")
    if profile.policy.uses_clad and not (clad_checkpoint and Path(clad_checkpoint).exists()):
        raise _user_error(f"the policy of {ckpt} needs its stage-1 CLaD, recorded as {clad_checkpoint!r}, "
                          "which does not exist")
    stats, stats_path = _find_norm_stats(Path(data["data_dir"]) if data.get("data_dir") else None, profile.data.proprio)
    state_stats = None
    if profile.data.vision_source == SIM_STATE:  # the privileged-state oracle reads no images
        need_encoder = False
        state_stats = data.get("state_stats")  # train records them (clad_lite.state_oracle.load_state_training_data)
        if not state_stats:
            raise _user_error(f"{ckpt} is a data.vision_source=sim_state run without its state statistics "
                              "(run.json data.state_stats): it was not trained by clad_lite train")
    cache = _cache_info(data.get("cache_dir"))
    encoder_hash = data.get("encoder_hash") or cache.get("encoder_hash")
    spec = encoder or cache.get("encoder_spec") or profile.encoder.spec
    if need_encoder:
        if not spec:
            raise _user_error(f"the run's embedding cache {data.get('cache_dir')!r} does not name its encoder: "
                              "pass --encoder SPEC (a DecisionNCE-lite checkpoint or decisionnce:CKPT)")
        from clad_lite.encoders.base import parse_spec

        if not Path(parse_spec(str(spec))[1]).is_file():
            raise _user_error(f"encoder checkpoint not found: {spec} (pass --encoder SPEC)")
    return {
        "run_dir": str(run_dir.resolve()), "checkpoint": str(Path(ckpt).resolve()), "step": int(checkpoint["step"]),
        "config": checkpoint["config"], "profile": profile.name, "clad_checkpoint": clad_checkpoint,
        "norm_stats": stats, "norm_stats_path": stats_path, "data": data, "cache_dir": data.get("cache_dir"),
        "cache_dtype": cache.get("dtype", "float16"), "encoder_spec": str(spec) if spec else None,
        "encoder_hash": encoder_hash, "has_ema": checkpoint.get("ema") is not None,
        "state_stats": state_stats,
    }


# =========================================================================== the agent
class Agent:
    """The frozen encoder + CLaD + policy of a run, rolling out episodes in the simulator.

    ``spec``: :func:`load_run`'s dict plus the rollout settings (``suite``, ``max_steps``,
    ``warmup_steps``, ``query_every``, ``ensemble``, ``start_actions``, ``seed``, ``videos``,
    ``video_dir``, ``device``). ``rollout(job)`` runs one episode and returns its record.
    """

    def __init__(self, spec: dict):
        import torch

        from clad_lite.demos.windows import Normalizer
        from clad_lite.policy import ForesightPolicy
        from clad_lite.train import checkpoint_weights, load_checkpoint, load_stage1, profile_from_dict

        self.spec = spec
        self.device = torch.device(spec.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.profile = profile = profile_from_dict(spec["config"])
        checkpoint = load_checkpoint(spec["checkpoint"])
        self.policy = ForesightPolicy(profile.policy)
        state, self.weights = checkpoint_weights(checkpoint, spec.get("weights", "auto"))
        self.policy.load_state_dict(state)
        self.policy.to(self.device).eval()
        self.clad = None
        if profile.policy.uses_clad:
            self.clad, _ = load_stage1(spec["clad_checkpoint"])
            self.clad.to(self.device)
        self.normalizer = Normalizer(spec["norm_stats"], profile.data.proprio)
        self.tau = profile.policy.horizon
        self.query_every = int(spec.get("query_every") or self.tau)
        self.cameras = tuple(profile.data.cameras)
        from clad_lite.demos import hdf5 as H

        to_env = {v: k for k, v in H.CAMERA_KEYS.items()}
        self.env_cameras = tuple(to_env[c] for c in self.cameras)
        self.state_observation = None
        if profile.data.vision_source == SIM_STATE:
            self.state_observation = StateObservation(spec["state_stats"], profile.policy.vision_dim,
                                                      profile.policy.language_dim, self.cameras,
                                                      velocities=profile.data.oracle_velocities)
            self.encoder = None
        else:
            self.encoder = self._load_encoder(spec)
        self.cache_dtype = np.float16 if spec.get("cache_dtype", "float16") == "float16" else np.float32
        self._text: dict[str, np.ndarray] = {}
        self.noop = self.normalizer.normalize_actions(_noop()).astype(np.float32)
        # optional hook (``clad_lite.rollout_view.record_rollout``): called in this process at every query
        # step as observer(t=, frames=, proprio=, history=, vision=, language=, foresight=, chunk=), history
        # being the episode's (growing) list of normalised proprio, one per step; None in evaluations
        self.observer = None
        self.last_foresight = None  # the (zhat_p, zhat_s) of the latest query (None for policy-only runs)
        self.gripper = float(_noop()[-1])  # the gripper latch (``to_env``): open, reset at every episode's start

    def _load_encoder(self, spec: dict):
        from clad_lite.encoders.base import EncoderLoadError, load_encoder

        try:
            encoder = load_encoder(spec["encoder_spec"], device=self.device)
        except EncoderLoadError as error:
            raise _user_error(str(error)) from error
        expected = spec.get("encoder_hash")
        if expected and encoder.hash() != expected and not spec.get("ignore_encoder_hash"):
            raise _user_error(f"encoder {spec['encoder_spec']} has hash {encoder.hash()[:16]}, but the run was trained "
                              f"on embeddings of {expected[:16]}: pass the run's encoder with --encoder")
        return encoder

    def close(self) -> None:
        """Nothing to free: environments are shared per process (``close_environments``)."""

    # ---------------------------------------------------------------- helpers
    def env(self, task_id: int):
        """The task's environment, shared by every Agent of this process (building one takes seconds)."""
        from clad_lite.sim import cached_env

        horizon = max(int(self.spec["max_steps"]) + int(self.spec["warmup_steps"]) + 10, 1000)
        env = cached_env(self.spec["suite"], task_id, render=True, camera_obs=False, cameras=self.env_cameras,
                         image_size=self.profile.data.image_size, horizon=horizon)
        # upstream LIBERO rebuilds the MjSim on every reset (hard_reset=True, seconds on CPU); the fixed init
        # state then overwrites the whole [time, qpos, qvel] state and LiberoEnv clears the grippers' command,
        # so fast_reset (no rebuild) starts from the same state, bitwise. Fixtures (a stove, a cabinet) have no
        # joint in that state: every reset, fast or not, places them afresh from NumPy's global RNG (about
        # +-1 cm), which rollout()'s reset seeds with the episode seed, so they repeat in every evaluation
        env.fast_reset = bool(self.spec.get("fast_reset", False))
        return env

    def language(self, instruction: str) -> np.ndarray:
        if self.state_observation is not None:
            return self.state_observation.language(instruction)
        if instruction not in self._text:
            vector = None
            cache_dir = self.spec.get("cache_dir")
            if cache_dir and Path(cache_dir, "cache.json").is_file():
                from clad_lite.encoders.cache import EmbeddingCache

                try:
                    with EmbeddingCache(cache_dir) as cache:
                        vector = cache.text(instruction)
                except (KeyError, IndexError, OSError, ValueError):  # not in the cache, or an empty one
                    vector = None
            if vector is None:
                vector = self.encoder.encode_text([instruction])[0].cpu().numpy()
            self._text[instruction] = np.asarray(vector, np.float32)
        return self._text[instruction]

    def proprio(self, env, obs) -> np.ndarray:
        from clad_lite.demos.generate import _proprio
        from clad_lite.demos.windows import PROPRIO_MODES

        values = _proprio(env, obs)
        raw = np.concatenate([np.asarray(values[key.split("/")[-1]], np.float64)
                              for key, _ in PROPRIO_MODES[self.profile.data.proprio]])
        return self.normalizer.normalize_proprio(raw).astype(np.float32)

    def vision(self, frames: dict) -> np.ndarray:
        parts = [self.encoder.encode_images(frames[env_cam][None], camera=cam)[0].cpu().numpy()
                 for env_cam, cam in zip(self.env_cameras, self.cameras)]
        # the training cache stores float16: round the same way
        return np.concatenate(parts).astype(self.cache_dtype).astype(np.float32)

    def plan(self, t: int, proprio: list, vision: dict, executed: list, language: np.ndarray, generator) -> np.ndarray:
        """A normalised chunk (L, 7) at policy step t, from the history; L = τ + policy.extra_actions, of
        which the rollout executes the first τ (the next query replaces the chunk)."""
        import torch

        tau = self.tau
        past = max(t - tau, 0)
        as_t = lambda x: torch.as_tensor(np.asarray(x, np.float32))[None].to(self.device)
        batch = {"proprio": as_t(proprio[t]), "proprio_past": as_t(proprio[past]),
                 "vision": as_t(vision[t]), "vision_past": as_t(vision[past]), "language": as_t(language)}
        if t >= tau or self.spec.get("start_actions", "noop") == "noop":
            batch["actions_past"] = as_t(np.stack([executed[k] if k >= 0 else self.noop for k in range(t - tau, t)]))
        foresight = None
        with torch.no_grad():
            if self.clad is not None:
                f = self.clad.foresight(batch)
                foresight = (f.proprio.float(), f.semantic.float())
            self.last_foresight = foresight
            chunk = self.policy.sample_actions(batch, foresight=foresight, generator=generator,
                                               num_samples=int(self.spec.get("action_samples") or 1),
                                               sampler=self.spec.get("sampler") or "ddpm",
                                               num_inference_steps=self.spec.get("sampling_steps"))
        return chunk[0].float().cpu().numpy()

    def choose(self, t: int, chunks: list[tuple[int, np.ndarray]]) -> np.ndarray:
        live = [(s, c) for s, c in chunks if s <= t < s + len(c)]
        if not self.spec.get("ensemble"):
            s, c = live[-1]
            return c[t - s]
        weights = np.exp(-ENSEMBLE_M * np.arange(len(live)))  # i = 0: the oldest chunk
        actions = np.stack([c[t - s] for s, c in live])
        return (weights[:, None] * actions).sum(0) / weights.sum()

    def to_env(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A chosen normalised action (7,) -> (the normalised action kept as history, the env's action (7,)).

        With ``gripper_hysteresis`` h the gripper command becomes the latch ``self.gripper`` (±1; -1,
        open, at the start of an episode): it flips to +1 when the command exceeds h and to -1 when it
        falls below -h, and holds otherwise. The demos only ever command ±1, so the latched action is
        also what CLaD reads as the past.
        """
        raw = self.normalizer.unnormalize_actions(action)
        h = self.spec.get("gripper_hysteresis")
        if h is not None:
            command = float(raw[-1])
            if command > h:
                self.gripper = 1.0
            elif command < -h:
                self.gripper = -1.0
            raw[-1] = self.gripper  # raw is a fresh array (unnormalize_actions computes a new one)
            action = self.normalizer.normalize_actions(raw).astype(np.float32)
        return action, np.clip(raw, -1.0, 1.0).astype(np.float32)

    # ---------------------------------------------------------------- an episode
    def begin_episode(self, instruction: str, seed: int) -> Episode:
        """A fresh episode's history: the gripper latch opens and the sampler's generator is seeded."""
        import torch

        self.gripper = float(_noop()[-1])  # the latch of ``to_env`` starts open, as the warm-up leaves the hand
        return Episode(instruction=instruction, language=self.language(instruction),
                       generator=torch.Generator(device=self.device).manual_seed(seed))

    def act(self, episode: Episode, env, obs) -> tuple[np.ndarray, dict | None]:
        """The env action (7,) of the episode's next step from ``obs``, and the camera frames rendered for
        it (None on steps that render nothing). Queries the policy every ``query_every`` steps (renders the
        cameras, encodes them, samples a chunk) and records the step in ``episode``; the caller steps the
        environment (``rollout``, or ``clad_lite.expert.dagger``'s hand-over policy)."""
        e, t = episode, episode.t
        e.proprio.append(self.proprio(env, obs))
        frames = None
        if t % self.query_every == 0:
            if self.state_observation is None or self.observer is not None:
                frames = env.render_cameras()
                e.renders += 1
            tick = time.perf_counter()
            if self.state_observation is None:
                e.vision[t] = self.vision(frames)
            else:  # the oracle: the true simulator state instead of the encoded cameras
                e.vision[t] = self.state_observation.vision(e.instruction, env.get_sim_state())
            e.chunks.append((t, self.plan(t, e.proprio, e.vision, e.executed, e.language, e.generator)))
            e.model_seconds += time.perf_counter() - tick
            e.queries += 1
            if self.observer is not None:
                self.observer(t=t, frames=frames, proprio=e.proprio[t], history=e.proprio, vision=e.vision[t],
                              language=e.language, foresight=self.last_foresight, chunk=e.chunks[-1][1])
            e.vision.pop(t - self.tau - self.query_every, None)  # keep what CLaD still needs
            e.chunks = [(s, c) for s, c in e.chunks if s + len(c) > t]
        action, env_action = self.to_env(self.choose(t, e.chunks).astype(np.float32))
        e.executed.append(action)
        e.t += 1
        return env_action, frames

    def rollout(self, job: dict) -> dict:
        from clad_lite.sim import task_info

        task_id, episode = int(job["task_id"]), int(job["episode"])
        spec = self.spec
        seed = episode_seed(spec["seed"], task_id, episode)
        start = time.perf_counter()
        env = self.env(task_id)
        build_seconds = time.perf_counter() - start
        start = time.perf_counter()
        if spec.get("start_demos"):  # the imitation check: the first state of training demo ``episode``
            obs = env.reset_to_state(demo_start_states(spec["start_demos"], spec["suite"], task_id)[episode], seed)
        else:
            obs = env.reset_to_init_state(episode, seed)
        reset_seconds = time.perf_counter() - start
        noop = _noop()
        for _ in range(int(spec["warmup_steps"])):
            obs, _, _, _ = env.step(noop)
        history = self.begin_episode(task_info(spec["suite"], task_id).instruction, seed)
        video = job.get("video", False)
        frames_out = [] if video else None
        success = False
        # how far a failure got: each BDDL goal predicate now and whether it ever held after a step
        goals = env.goal_status()
        goals_reached = [False] * len(goals)
        grasps = GraspLog(env.object_positions)  # where each close landed and whether the object rose
        while history.t < int(spec["max_steps"]):
            env_action, frames = self.act(history, env, obs)
            if video:
                if frames is None:
                    frames = env.render_cameras()
                    history.renders += 1
                frames_out.append(np.concatenate([frames[c][::-1] for c in self.env_cameras], axis=1))
            obs, _, _, _ = env.step(env_action)
            grasps.step(history.t - 1, env_action[-1], obs["robot0_eef_pos"])
            goals = env.goal_status()
            goals_reached = [r or g for r, g in zip(goals_reached, goals)]
            if env.check_success():
                success = True
                break
        t = history.t
        seconds = time.perf_counter() - start
        loop_seconds = seconds - reset_seconds
        env_steps = t + int(spec["warmup_steps"])
        video_path = None
        if video and frames_out:
            video_path = write_video(Path(spec["video_dir"]) / f"task{task_id:02d}_ep{episode:03d}_"
                                     f"{'success' if success else 'failure'}.mp4", frames_out)
        return {"task_id": task_id, "episode": episode, "init_state": episode, "success": bool(success),
                "steps": t, "env_steps": env_steps, "queries": history.queries, "renders": history.renders,
                "seed": seed, "seconds": round(seconds, 3), "model_seconds": round(history.model_seconds, 3),
                "env_build_seconds": round(build_seconds, 3), "reset_seconds": round(reset_seconds, 3),
                "env_steps_per_s": round(env_steps / loop_seconds, 2) if loop_seconds > 0 else None,
                "goals": list(env.goal_names), "goals_final": list(goals), "goals_reached": goals_reached,
                "grasps": grasps.finish(t), "video": str(video_path) if video_path else None, "checkpoint_step": spec.get("step"),
                "pid": os.getpid()}


@dataclass
class Episode:
    """What one episode's queries read and its counters (``Agent.begin_episode`` / ``Agent.act``).

    ``proprio``: one normalised (P,) vector per step so far; ``vision``: {query step: (V,) embedding},
    only those CLaD still reads; ``executed``: the normalised (7,) actions taken; ``chunks``: the live
    (first step, (L, 7) chunk) pairs; ``t``: the next step's index.
    """

    instruction: str
    language: np.ndarray
    generator: object  # torch.Generator of the action sampler
    t: int = 0
    proprio: list = field(default_factory=list)
    vision: dict = field(default_factory=dict)
    executed: list = field(default_factory=list)
    chunks: list = field(default_factory=list)
    queries: int = 0
    renders: int = 0
    model_seconds: float = 0.0


@functools.lru_cache(maxsize=16)
def demo_start_states(data_dir: str, suite: str, task_id: int) -> np.ndarray:
    """(n_demos, S) first recorded states of the demonstrations of one task in ``data_dir``, in demo order.

    What ``--start-from-demos DATA`` starts episode i from instead of LIBERO's fixed init state i: a
    policy that fails from its own training starts fails at imitation, not at generalisation.
    """
    from clad_lite.demos import hdf5 as H
    from clad_lite.sim import task_info

    instruction = task_info(suite, task_id).instruction
    path = H.find_task_file(data_dir, instruction)
    if path is None:
        raise _user_error(f"no demonstrations of {suite} task {task_id} ({instruction!r}) in {data_dir}")
    with H.DemoFile(path) as f:
        return np.stack([np.asarray(f.read(d, ["states"])["states"][0]) for d in f.demos])


def close_environments() -> None:
    """Close this process's cached simulator environment (see ``clad_lite.sim.cached_env``)."""
    from clad_lite.sim import close_cached_envs

    close_cached_envs()



def _noop() -> np.ndarray:
    from clad_lite.sim import NOOP_ACTION

    return NOOP_ACTION.copy()


def write_video(path: Path, frames: list[np.ndarray], fps: int = VIDEO_FPS) -> Path:
    """Write RGB uint8 frames (H, W, 3) to an H.264 mp4 atomically (temporary name, then rename)."""
    import imageio_ffmpeg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    pad_h, pad_w = h % 2, w % 2  # yuv420p needs even sides
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    writer = imageio_ffmpeg.write_frames(str(tmp), (w + pad_w, h + pad_h), fps=fps, codec="libx264",
                                         pix_fmt_out="yuv420p", macro_block_size=1, quality=7)
    writer.send(None)
    for frame in frames:
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        writer.send(np.ascontiguousarray(frame, dtype=np.uint8))
    writer.close()
    os.replace(tmp, path)
    return path


# =========================================================================== results
def summarise(records: list[dict], tasks: list[int], suite: str) -> tuple[list[dict], float]:
    """Per-task successes / episodes / rate / Wilson ci95 / ``episode_success`` (0/1 of episode 0, 1, ...,
    so that two evaluations from the same init states pair: ``clad_lite.compare``) and the average
    over tasks."""
    from clad_lite.sim import task_info

    per_task = []
    for task_id in tasks:
        mine = sorted((r for r in records if int(r["task_id"]) == task_id), key=lambda r: int(r["episode"]))
        n, k = len(mine), sum(bool(r["success"]) for r in mine)
        lo, hi = wilson_interval(k, n)
        row = {"task_id": task_id, "instruction": task_info(suite, task_id).instruction, "successes": k,
               "episodes": n, "rate": k / n if n else None, "ci95": [lo, hi]}
        if [int(r["episode"]) for r in mine] == list(range(n)):
            row["episode_success"] = [int(bool(r["success"])) for r in mine]
        if goals := goal_counts(mine):
            row["goals"] = goals
        if grasps := grasp_counts(mine):
            row["grasps"] = grasps
        per_task.append(row)
    rates = [t["rate"] for t in per_task if t["rate"] is not None]
    return per_task, (float(np.mean(rates)) if rates else None)


def goal_counts(records: list[dict]) -> list[dict]:
    """Per BDDL goal predicate of one task's episodes: in how many it ``reached`` (held after some
    step) and ``final`` (held at the end), ``[{"predicate", "reached", "final", "episodes"}]``.
    Empty when the records predate goal tracking (or disagree on the predicates)."""
    if not records or not all(r.get("goals") for r in records) or len({tuple(r["goals"]) for r in records}) != 1:
        return []
    return [{"predicate": name, "reached": sum(bool(r["goals_reached"][i]) for r in records),
             "final": sum(bool(r["goals_final"][i]) for r in records), "episodes": len(records)}
            for i, name in enumerate(records[0]["goals"])]


def _timing(records: list[dict]) -> dict:
    if not records:
        return {}
    steps = sum(r.get("env_steps", 0) for r in records)
    seconds = sum(r.get("seconds", 0.0) for r in records)
    resets = sum(r.get("reset_seconds", 0.0) for r in records)
    return {"episodes": len(records), "env_steps": steps, "episode_seconds": round(seconds, 2),
            "reset_seconds": round(resets, 2),
            "env_steps_per_s_per_worker": round(steps / (seconds - resets), 2) if seconds > resets else None,
            "model_seconds": round(sum(r.get("model_seconds", 0.0) for r in records), 2),
            "renders": sum(r.get("renders", 0) for r in records)}


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    os.replace(tmp, path)


def _settings_identity(settings: dict) -> dict:
    keys = ("checkpoint", "suite", "max_steps", "warmup_steps", "query_every", "ensemble", "start_actions", "seed",
            "encoder_hash", "fast_reset", "gripper_reset", "weights", "gripper_hysteresis", "action_samples",
            "start_demos", "sampler", "sampling_steps")
    identity = {k: settings.get(k) for k in keys}
    # options absent from evaluations written before they existed: left out at their neutral value
    for key, neutral in (("gripper_hysteresis", None), ("action_samples", 1), ("start_demos", None),
                         ("sampler", "ddpm"), ("sampling_steps", None)):
        if identity[key] in (neutral, None):
            identity.pop(key)
    return identity


def _used_weights(spec: dict, weights: str) -> str:
    """"ema" | "raw": what ``weights`` ("auto" | "ema" | "raw") picks from this run's checkpoint."""
    try:
        return resolve_weights(weights, spec["has_ema"])
    except ValueError as error:
        raise _user_error(f"--weights {weights}: {spec['checkpoint']}: {error}") from error


def _evaluate_one(spec: dict, out: Path, tasks: list[int], episodes: int, workers: int, videos: int,
                  progress: bool, rollout=None) -> dict:
    """Evaluate one checkpoint into ``out`` (resumable); returns summary pieces."""
    out.mkdir(parents=True, exist_ok=True)
    identity = _settings_identity(spec)
    config_path = out / CONFIG_NAME
    if config_path.exists():
        saved = json.loads(config_path.read_text())
        saved.setdefault("weights", "raw")  # written before runs could keep a weight EMA
        if saved != identity:
            changed = [f"{k}: {saved.get(k)!r} -> {identity.get(k)!r}" for k in identity if saved.get(k) != identity.get(k)]
            raise _user_error(f"{out} holds an evaluation with other settings ({'; '.join(changed)}); "
                              "choose another --out")
    else:
        _write_json(config_path, identity)
    spec = dict(spec, video_dir=str(out / VIDEO_FOLDER))
    jobs = [{"task_id": t, "episode": e, "video": e < videos} for t in tasks for e in range(episodes)]
    log = EpisodeLog(out / EPISODES_NAME)
    start = time.perf_counter()
    run_jobs(jobs, log, rollout, workers=workers, spec=spec, progress=progress)
    wall = time.perf_counter() - start
    wanted = {(j["task_id"], j["episode"]) for j in jobs}
    records = [r for r in log.records if (int(r["task_id"]), int(r["episode"])) in wanted]
    per_task, average = summarise(records, tasks, spec["suite"])
    timing = dict(_timing(records), wall_seconds_this_call=round(wall, 2), workers=workers)
    return {"per_task": per_task, "average": average, "timing": timing, "records": len(records)}


def _file_digest(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def evaluate(run_dir, out, *, suite="libero_10", tasks=None, episodes=None, workers=None, videos=None,
             protocol="single", seed=None, progress=True, encoder=None, max_steps=None, warmup_steps=None,
             query_every=None, ensemble=False, start_actions="noop", fast_reset=False, device=None,
             weights="auto", gripper_hysteresis=None, action_samples=None, start_from_demos=None,
             sampler="ddpm", sampling_steps=None, rollout=None) -> dict:
    """Evaluate a stage-2 run (``RUN_DIR`` or checkpoint file) on LIBERO; writes and returns results.json.

    ``None`` values fall back to the run's profile's ``EvalConfig`` (``episodes``: 20 for
    ``protocol="top3"``). Extra keyword arguments beyond the common API: ``encoder`` (spec;
    default: the one recorded in the run's embedding cache), ``max_steps`` / ``warmup_steps`` /
    ``query_every``, ``ensemble`` (temporal ensembling), ``start_actions`` ("noop" | "mask"),
    ``fast_reset`` (no MjSim rebuild per episode; see ``Agent.env``), ``gripper_hysteresis`` (None,
    the raw command, or a latch threshold in [0, 1); see ``Agent.to_env``), ``action_samples`` (chunks
    drawn per query and averaged; default ``eval.action_samples``, 1 = one draw as in the paper; see
    ``ForesightPolicy.sample_actions``), ``start_from_demos`` (a demonstrations folder: episode i starts
    from the first state of its demo i instead of LIBERO's init state i, the imitation check; see
    ``demo_start_states``), ``sampler`` ("ddpm", the paper's ancestral sampling, or "ddim", deterministic
    steps, not the paper) with ``sampling_steps`` (DDIM's step count; None = all of the policy's T;
    see ``DDPM.sample``), ``device``, ``weights``
    ("auto": the weight EMA when the run kept one, else the raw weights; "ema"; "raw"), and ``rollout`` (a fake ``job -> record`` function, for tests of the bookkeeping).
    """
    from clad_lite.provenance import device_description, git_sha
    from clad_lite.sim import MAX_EPISODE_STEPS, SUITES, suite_tasks
    from clad_lite.train import profile_from_dict

    code_sha = git_sha()  # the commit of the code this process runs: read now, not after an hour of rollouts
    if protocol not in PROTOCOLS:
        raise _user_error(f"--protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if suite not in SUITES:
        raise _user_error(f"unknown suite {suite!r}; expected one of {SUITES}")
    if start_actions not in ("noop", "mask"):
        raise _user_error(f"start_actions must be 'noop' or 'mask', got {start_actions!r}")
    if weights not in WEIGHTS:
        raise _user_error(f"--weights must be one of {WEIGHTS}, got {weights!r}")
    if gripper_hysteresis is not None:
        gripper_hysteresis = float(gripper_hysteresis)
        if not 0.0 <= gripper_hysteresis < 1.0:
            raise _user_error(f"--gripper-hysteresis must be in [0, 1), got {gripper_hysteresis}")
    out = Path(out)
    base = load_run(run_dir, encoder=encoder, need_encoder=rollout is None)
    profile = profile_from_dict(base["config"])
    ev = profile.eval
    n_tasks = len(suite_tasks(suite))
    try:
        tasks = parse_tasks(tasks)
    except ValueError as error:
        raise _user_error(str(error)) from error
    tasks = list(range(n_tasks)) if tasks is None else tasks
    bad = [t for t in tasks if not 0 <= t < n_tasks]
    if bad or not tasks:
        raise _user_error(f"tasks {bad or tasks} out of range for {suite} (0..{n_tasks - 1})")
    if episodes is None:
        episodes = TOP3_EPISODES if protocol == "top3" else ev.episodes_per_task
    if not 1 <= int(episodes) <= 50:
        raise _user_error(f"--episodes must be in 1..50 (LIBERO has 50 fixed init states per task), got {episodes}")
    episodes = int(episodes)
    workers = int(ev.workers if workers is None else workers)
    videos = int(ev.videos_per_task if videos is None else videos)
    seed = int(ev.seed if seed is None else seed)
    if max_steps is None:
        # the profile's budget (520 = libero_10's); for other suites their own standard budget
        max_steps = ev.max_steps if suite == "libero_10" or ev.max_steps != 520 else MAX_EPISODE_STEPS[suite]
    tau = profile.policy.horizon
    query_every = int(query_every or (1 if ensemble else tau))
    if query_every < 1 or tau % query_every:
        raise _user_error(f"--query-every must divide τ = {tau}, got {query_every}")
    action_samples = int(ev.action_samples if action_samples is None else action_samples)
    if action_samples < 1:
        raise _user_error(f"--action-samples must be >= 1, got {action_samples}")
    if sampler not in SAMPLERS:
        raise _user_error(f"--sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampling_steps is not None:
        sampling_steps = int(sampling_steps)
        if sampler != "ddim" or not 1 <= sampling_steps <= profile.policy.diffusion_steps:
            raise _user_error(f"--sampling-steps needs --sampler ddim and a value in 1..{profile.policy.diffusion_steps} "
                              f"(the policy's diffusion steps), got {sampling_steps} with --sampler {sampler}")
        if sampling_steps == profile.policy.diffusion_steps:
            sampling_steps = None  # all steps: the same evaluation as leaving it out
    start_demos = None
    if start_from_demos is not None:
        start_demos = str(Path(start_from_demos).resolve())
        for task_id in tasks:
            n_demos = len(demo_start_states(start_demos, suite, task_id))
            if n_demos < episodes:
                raise _user_error(f"--start-from-demos {start_from_demos}: task {task_id} has {n_demos} demos, "
                                  f"fewer than --episodes {episodes}")
    settings = {"suite": suite, "max_steps": int(max_steps),
                "warmup_steps": int(ev.warmup_steps if warmup_steps is None else warmup_steps),
                "query_every": query_every, "ensemble": bool(ensemble), "start_actions": start_actions, "seed": seed,
                "fast_reset": bool(fast_reset), "gripper_hysteresis": gripper_hysteresis,
                # resets clear the grippers' command (LiberoEnv._reset): an evaluation begun before is not resumed
                "gripper_reset": True,
                "action_samples": action_samples, "start_demos": start_demos, "device": device,
                "sampler": sampler, "sampling_steps": sampling_steps}

    if protocol == "single":
        spec = dict(base, **settings, weights=_used_weights(base, weights))
        result = _evaluate_one(spec, out, tasks, episodes, workers, videos, progress, rollout)
        per_task, average, timing = result["per_task"], result["average"], result["timing"]
        protocol_info = {"name": "single", "symbol": "‡", "description": f"{episodes} rollouts per task from one checkpoint",
                         "checkpoint": base["checkpoint"], "step": base["step"]}
    else:
        checkpoints = numbered_checkpoints(Path(base["run_dir"]))
        if not checkpoints:
            raise _user_error(f"{base['run_dir']} has no numbered checkpoints ckpt_XXXXXX.pt for --protocol top3")
        if len(checkpoints) < TOP_K:
            print(f"warning: {base['run_dir']} has {len(checkpoints)} numbered checkpoints (< {TOP_K}); "
                  "averaging all of them", file=sys.stderr)
        evaluated = []
        for ckpt in checkpoints:
            one_run = load_run(ckpt, encoder=encoder, need_encoder=rollout is None)
            spec = dict(one_run, **settings, weights=_used_weights(one_run, weights))
            if progress:
                print(f"checkpoint {ckpt.name}", file=sys.stderr)
            one = _evaluate_one(spec, out / ckpt.stem, tasks, episodes, workers, videos, progress, rollout)
            evaluated.append({"checkpoint": str(ckpt.resolve()), "step": spec["step"], **one})
        ranked = sorted(evaluated, key=lambda e: (e["average"] or 0.0, e["step"]), reverse=True)
        chosen = ranked[:TOP_K]
        per_task = []
        for i, task_id in enumerate(tasks):
            k = sum(e["per_task"][i]["successes"] for e in chosen)
            n = sum(e["per_task"][i]["episodes"] for e in chosen)
            per_task.append({"task_id": task_id, "instruction": chosen[0]["per_task"][i]["instruction"],
                             "successes": k, "episodes": n, "rate": k / n if n else None,
                             "ci95": list(wilson_interval(k, n))})
        average = float(np.mean([e["average"] for e in chosen]))
        protocol_info = {
            "name": "top3", "symbol": "†",
            "description": f"{episodes} rollouts per task from each numbered checkpoint; the {len(chosen)} best "
                           "(by average success) are pooled per task and their averages averaged",
            "checkpoints": [{"checkpoint": e["checkpoint"], "step": e["step"], "average": e["average"],
                             "selected": e in chosen} for e in evaluated],
            "selected_steps": [e["step"] for e in chosen]}
        timing = {"per_checkpoint": {str(e["step"]): e["timing"] for e in evaluated}}
        base = dict(base, checkpoint=[e["checkpoint"] for e in chosen])
    protocol_info.update(max_steps=settings["max_steps"], warmup_steps=settings["warmup_steps"],
                         replan_every=tau, query_every=query_every, temporal_ensembling=bool(ensemble),
                         start_actions=start_actions, fast_reset=bool(fast_reset), weights=spec["weights"],
                         gripper_reset=settings["gripper_reset"],
                         gripper_hysteresis=gripper_hysteresis, action_samples=action_samples,
                         sampler=sampler, sampling_steps=sampling_steps or profile.policy.diffusion_steps,
                         success="env.check_success() after any policy step",
                         init_states="episode i starts from LIBERO's fixed init state i" if start_demos is None
                         else f"episode i starts from the first state of training demo i in {start_demos} "
                              "(imitation check, not the LIBERO protocol)")
    results = {
        "suite": suite, "profile": profile.name, "protocol": protocol_info, "episodes_per_task": episodes,
        "per_task": per_task, "average": average,
        "provenance": {
            "git_sha": code_sha, "config": base["config"], "seed": seed,
            "data": {**{k: v for k, v in base["data"].items() if k != "state_stats"},
                     "norm_stats": base["norm_stats_path"], "vision_source": profile.data.vision_source,
                     **({"state_stats": "run"} if base.get("state_stats") else {})},
            "encoder": {"spec": base["encoder_spec"], "hash": base["encoder_hash"],
                        "kind": profile.encoder.kind, "embed_dim": profile.encoder.embed_dim},
            "versions": _versions(), "device": device_description(),
            "checkpoint": base["checkpoint"], "checkpoint_sha256": _file_digest(base["checkpoint"])
            if isinstance(base["checkpoint"], str) else None,
            "clad_checkpoint": base["clad_checkpoint"], "run_dir": base["run_dir"],
            "gl_backend": os.environ.get("MUJOCO_GL"), "command": " ".join(sys.argv),
        },
        "timing": timing,
    }
    validate_results(results)
    _write_json(out / RESULTS_NAME, results)
    return results


def _versions() -> dict:
    from clad_lite.provenance import package_versions

    return package_versions()


RESULT_KEYS = ("suite", "profile", "protocol", "episodes_per_task", "per_task", "average", "provenance")
TASK_KEYS = ("task_id", "instruction", "successes", "episodes", "rate", "ci95")
PROVENANCE_KEYS = ("git_sha", "config", "seed", "data", "encoder", "versions", "device")


def validate_results(results: dict) -> None:
    """Raise ``ValueError`` unless ``results`` follows the results.json schema."""
    missing = [k for k in RESULT_KEYS if k not in results]
    missing += [f"provenance.{k}" for k in PROVENANCE_KEYS if k not in results.get("provenance", {})]
    if missing:
        raise ValueError(f"results lack {missing}")
    for task in results["per_task"]:
        lost = [k for k in TASK_KEYS if k not in task]
        if lost:
            raise ValueError(f"per_task entry {task.get('task_id')} lacks {lost}")
        lo, hi = task["ci95"]
        if not (0.0 <= lo <= hi <= 1.0) or not 0 <= task["successes"] <= task["episodes"]:
            raise ValueError(f"per_task entry {task['task_id']} is inconsistent: {task}")
        if task["episodes"] and not lo - 1e-12 <= task["rate"] <= hi + 1e-12:
            raise ValueError(f"rate outside its interval in {task}")
        outcomes = task.get("episode_success")
        if outcomes is not None and (len(outcomes) != task["episodes"] or sum(outcomes) != task["successes"]):
            raise ValueError(f"per_task entry {task['task_id']}: episode_success disagrees with successes/episodes")


# =========================================================================== CLI
def run(args) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = evaluate(args.ckpt, args.out, suite=args.suite, tasks=args.tasks, episodes=args.episodes,
                       workers=args.workers, videos=args.videos, protocol=args.protocol, seed=args.seed,
                       progress=not args.no_progress, encoder=args.encoder, max_steps=args.max_steps,
                       query_every=args.query_every, ensemble=args.ensemble, start_actions=args.start_actions,
                       fast_reset=args.fast_reset, device=args.device, weights=args.weights,
                       gripper_hysteresis=args.gripper_hysteresis, action_samples=args.action_samples,
                       start_from_demos=args.start_from_demos, sampler=args.sampler,
                       sampling_steps=args.sampling_steps)
    rows = [f"{t['task_id']:>4}  {t['successes']:>3}/{t['episodes']:<3} {100 * (t['rate'] or 0):5.1f}%  "
            f"[{100 * t['ci95'][0]:5.1f}, {100 * t['ci95'][1]:5.1f}]  {t['instruction']}" for t in results["per_task"]]
    print(f"{results['suite']} ({results['profile']} profile, protocol {results['protocol']['name']}):")
    print("\n".join(rows))
    average = results["average"]
    print(f"average {100 * average:.1f}%" if average is not None else "average n/a")
    print(f"wrote {Path(args.out) / RESULTS_NAME}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a stage-2 policy run in LIBERO (resumable; Wilson intervals)",
        description="Roll out a trained policy on a LIBERO suite with the standard protocol; "
                    "results.json with 95%% Wilson intervals and provenance.")
    parser.add_argument("--ckpt", required=True, help="stage-2 run directory (its last.pt) or a checkpoint file")
    parser.add_argument("--out", required=True, help="evaluation directory (rerun with the same --out to resume)")
    parser.add_argument("--suite", default="libero_10")
    parser.add_argument("--tasks", default=None, help="task ids, e.g. 0-9 or 0,3,5 (default: all)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="rollouts per task (default: eval.episodes_per_task; 20 with --protocol top3)")
    parser.add_argument("--workers", type=int, default=None, help="simulator processes (default: eval.workers)")
    parser.add_argument("--videos", type=int, default=None, help="mp4 videos per task (default: eval.videos_per_task)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="single",
                        help="single: one checkpoint (paper ‡); top3: every numbered checkpoint, best 3 averaged (†)")
    parser.add_argument("--seed", type=int, default=None, help="evaluation seed (default: eval.seed)")
    parser.add_argument("--encoder", default=None, help="frozen encoder spec (default: the run's embedding cache's)")
    parser.add_argument("--max-steps", type=int, default=None, help="policy steps per episode (default: eval.max_steps)")
    parser.add_argument("--query-every", type=int, default=None, help="query the policy every N steps (default τ)")
    parser.add_argument("--ensemble", action="store_true", help="temporal ensembling of overlapping chunks (ACT)")
    parser.add_argument("--start-actions", choices=("noop", "mask"), default="noop",
                        help="CLaD's past actions before the first step: the no-op (training's edge rule) or masked")
    parser.add_argument("--fast-reset", action="store_true",
                        help="reset without rebuilding the MjSim (upstream LIBERO rebuilds it: seconds per episode on CPU)")
    parser.add_argument("--gripper-hysteresis", type=float, default=None, metavar="H",
                        help="latch the gripper at ±1, flipping only when the command passes ±H (default: off)")
    parser.add_argument("--action-samples", type=int, default=None, metavar="N",
                        help="chunks drawn per query and averaged (default: eval.action_samples; 1 = one draw, the paper)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddpm",
                        help="ddpm: the paper's ancestral sampling (eq. 3); ddim: deterministic DDIM steps (eta = 0)")
    parser.add_argument("--sampling-steps", type=int, default=None, metavar="N",
                        help="DDIM steps per chunk (with --sampler ddim; default: all of policy.diffusion_steps)")
    parser.add_argument("--start-from-demos", default=None, metavar="DATA",
                        help="imitation check: start episode i from the first state of training demo i in DATA "
                             "instead of LIBERO's fixed init state i")
    parser.add_argument("--weights", choices=WEIGHTS, default="auto",
                        help="auto: the weight EMA when the run kept one (stage2.ema_decay > 0), else the raw weights")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in this process (0: leave as is)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


__all__ = [
    "Agent",
    "EpisodeLog",
    "episode_seed",
    "evaluate",
    "load_run",
    "parse_tasks",
    "read_episode_log",
    "register",
    "run_jobs",
    "summarise",
    "validate_results",
    "wilson_interval",
    "write_video",
]
