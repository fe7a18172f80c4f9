"""``python -m clad_lite expert-eval``: success rate of the scripted expert on fixed init states.

    python -m clad_lite expert-eval --suite libero_10 --tasks 0-9 --episodes 50 --json OUT.json

Each episode: reset to init state i (i < episodes), 15 settling no-op steps, then the expert
acts until ``check_success()`` holds, the plan ends, or the LIBERO step budget (520 steps for
libero_10, settling included) runs out. Physics only, no rendering. Each task also sums the
expert's grasps (``clad_lite.grasp_log``): the reference for a policy's ``reports.grasp_table``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .primitives import MOTIONS

SETTLE = 15


def parse_tasks(spec: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def run_episode(env, init_index: int, seed: int, max_steps: int,
                motion: str = "min_jerk") -> tuple[bool, int, list[dict]]:
    """One evaluation episode; returns (success, length in steps including settling, grasps).

    ``grasps``: each close of the gripper (``clad_lite.grasp_log``), the reference for a policy's
    grasp table. ``seed`` also places the fixtures at the reset (``LiberoEnv.reset_to_init_state``).
    """
    from clad_lite.grasp_log import GraspLog
    from clad_lite.sim import settle

    from . import make_expert

    env.reset_to_init_state(init_index, seed)
    obs = settle(env, SETTLE)
    expert = make_expert(env, np.random.default_rng(seed), motion)
    grasps = GraspLog(env.object_positions)
    steps, success = SETTLE, False
    while steps < max_steps:
        action = expert.act(obs)
        obs, _, _, _ = env.step(action)
        grasps.step(steps, action[-1], obs["robot0_eef_pos"])
        steps += 1
        if env.check_success():
            success = True
            break
        if expert.done:
            break
    return success, steps, grasps.finish(steps)


def eval_task(suite: str, task_id: int, indices: list[int], seed: int, progress=None,
              motion: str = "min_jerk") -> list[tuple[int, bool, int, list[dict]]]:
    from clad_lite.sim import MAX_EPISODE_STEPS, LiberoEnv

    env = LiberoEnv(suite, task_id, render=False, fast_reset=True)  # bitwise a hard reset, seconds faster
    try:
        results = []
        for i in indices:
            ok, n, grasps = run_episode(env, i, seed * 100_003 + task_id * 1000 + i, MAX_EPISODE_STEPS[suite], motion)
            results.append((i, ok, n, grasps))
            if progress is not None:
                progress(1)
        return results
    finally:
        env.close()


def _worker(job):
    suite, task_id, indices, seed, motion = job
    return task_id, eval_task(suite, task_id, indices, seed, motion=motion)


def summarize(per_task: dict[int, list[tuple[int, bool, int, list[dict]]]], suite: str) -> dict:
    from clad_lite.grasp_log import grasp_counts
    from clad_lite.sim import task_info

    out = {}
    for t in sorted(per_task):
        rows = sorted(per_task[t], key=lambda row: row[0])
        succ = [n for _, ok, n, _ in rows if ok]
        out[str(t)] = {
            "task": task_info(suite, t).name,
            "attempts": len(rows),
            "successes": len(succ),
            "rate": len(succ) / max(len(rows), 1),
            "mean_length": float(np.mean([n for _, _, n, _ in rows])) if rows else None,
            "mean_success_length": float(np.mean(succ)) if succ else None,
            "failed_init_states": [i for i, ok, _, _ in rows if not ok],
            "grasps": grasp_counts([{"grasps": g} for *_, g in rows]),
        }
    return out


def print_table(summary: dict) -> None:
    print(f"{'task':>4}  {'succ':>9}  {'rate':>6}  {'len':>5}  name")
    tot_s = tot_a = 0
    for t, r in summary.items():
        tot_s += r["successes"]
        tot_a += r["attempts"]
        print(f"{t:>4}  {r['successes']:>4}/{r['attempts']:<4}  {r['rate']:>6.1%}  {r['mean_length']:>5.0f}  {r['task']}")
    if tot_a:
        print(f" all  {tot_s:>4}/{tot_a:<4}  {tot_s / tot_a:>6.1%}")


def main(args) -> int:
    from tqdm import tqdm

    tasks = parse_tasks(args.tasks)
    indices = list(range(args.start, args.start + args.episodes))
    per_task: dict[int, list] = {}
    t0 = time.time()
    with tqdm(total=len(tasks) * len(indices), desc="expert-eval", unit="ep") as bar:
        if args.workers > 1:
            from clad_lite.sim import spawn_context

            # split each task's init states into chunks so that workers stay busy
            chunks = max(1, min(len(indices), -(-args.workers * 2 // len(tasks))))
            jobs = [(args.suite, t, indices[k::chunks], args.seed, args.motion) for t in tasks for k in range(chunks)]
            jobs = [j for j in jobs if j[2]]
            with spawn_context().Pool(args.workers) as pool:
                for t, rows in pool.imap_unordered(_worker, jobs):
                    per_task.setdefault(t, []).extend(rows)
                    bar.update(len(rows))
        else:
            for t in tasks:
                per_task[t] = eval_task(args.suite, t, indices, args.seed, progress=bar.update, motion=args.motion)
    summary = summarize(per_task, args.suite)
    print_table(summary)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {"suite": args.suite, "episodes": args.episodes, "start": args.start, "seed": args.seed,
                   "motion": args.motion,
                   "seconds": round(time.time() - t0, 1), "tasks": summary}
        Path(args.json).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("expert-eval", help="success rate of the scripted expert on LIBERO's fixed init states",
                              description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="libero_10")
    p.add_argument("--tasks", default="0-9", help="task ids, e.g. '0-9' or '0,2,5'")
    p.add_argument("--episodes", type=int, default=50, help="number of init states per task (from --start)")
    p.add_argument("--start", type=int, default=0, help="first init state index")
    p.add_argument("--seed", type=int, default=0, help="seed of the expert's randomisation")
    p.add_argument("--workers", type=int, default=1, help="parallel simulator processes (spawn)")
    p.add_argument("--motion", choices=MOTIONS, default="min_jerk",
                   help="how the expert moves: min-jerk carrots in time (default) or Markovian state feedback")
    p.add_argument("--json", default=None, help="write per-task results to this JSON file")
    p.set_defaults(func=main)
