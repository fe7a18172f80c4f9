"""Does the frozen encoder see where things are? Linear probes from its embeddings to object positions.

``python -m clad_lite position-probe --data DIR [--tasks 0-9] [--json OUT]``

A policy that closes its gripper centimetres away from the object (the grasp log of ``eval``,
``clad_lite.grasp_log``) either was not told where the object is, or was told and did not act
on it. This asks the first question of the policy's vision input, the frozen encoder's cached
embeddings of both cameras, on the demonstrations themselves:

    x        = [e_agentview(t) ; e_wrist(t)]           (2E,)  what the models read (eq. 5, 20)
    y_objects = xy of every movable object at t        (2K,)  LIBERO ``objects_dict``, from states[t]
    y_offset  = xy of target(t) - hand(t)              (2,)   target: the first object the demo lifts

over the rendered steps of each demonstration *before its first grasp* (the objects still stand
where the scene's placement put them, and the hand is on its way to the target). A ridge probe per
task, with its penalty chosen by leave-one-out cross-validation on the training demos, is fitted on
the first ``1 - holdout`` of the demos and scored on the rest:

    rms_cm      = sqrt(mean over held-out steps of |y_hat - y|^2)   per object (2-D), in cm
    baseline_cm = the same for a constant guess, the training mean

so a probe that learned nothing scores its baseline. ``near_offset`` repeats the offset probe on the
steps where the hand is within ``NEAR_M`` of the target: the last approach, where a grasp is made
or missed.

    y_fixtures = xy of every fixture (a stove, a caddy, a cabinet)   (2F,)  where the demo's reset put it

Fixtures have no joint, so the states do not hold them: each demo's own reset (its ``env_seed``) placed
them, about +-1 cm, and nothing moves them after. Their probe asks whether the images show that small
shift (the demos of ``render_revision`` 1 did not: their fixtures stood where the rendering process had
put them; ``clad_lite.demos.generate``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from clad_lite.cli import UserError
from clad_lite.demos import hdf5 as H

LIFT_M = 0.02  # an object counts as lifted once it stands this much above its height at the demo's start
NEAR_M = 0.10  # the "last approach": hand within this distance of the target
CAMERAS = ("agentview_rgb", "eye_in_hand_rgb")
ALPHAS = tuple(np.logspace(-3, 3, 13))


def demo_targets(env, states: np.ndarray, actions: np.ndarray, frames: np.ndarray) -> dict | None:
    """Positions along one demo, from its recorded states restored in ``env`` (a ``LiberoEnv``).

    Returns ``{"target": name, "frames": (n,) steps before the first grasp, "objects": (n, K, 2)
    xy of the objects in sorted-name order, "offset": (n, 2) target - hand xy, "names": [K]}``, or
    None when no object is lifted in the demo (nothing to locate).
    """
    positions, hands = [], []
    for t in frames:
        obs = env.set_sim_state(states[t])
        now = env.object_positions()
        positions.append(now)
        hands.append(np.asarray(obs["robot0_eef_pos"], np.float64))
    names = sorted(positions[0])
    heights = np.array([[p[n][2] for n in names] for p in positions])  # (n_frames, K)
    lifted = np.argwhere(heights - heights[0] > LIFT_M)
    if len(lifted) == 0:
        return None
    lift_row, target = lifted[np.argmin(lifted[:, 0])]  # the first object to rise, at the first frame it has
    # the grasp that lifted it: the last close (command turns > 0) before that frame
    closing = np.flatnonzero((actions[1:, -1] > 0) & (actions[:-1, -1] <= 0)) + 1
    closing = closing[closing <= frames[lift_row]]
    grasp_t = int(closing[-1]) if len(closing) else int(frames[lift_row])
    keep = np.flatnonzero(frames < grasp_t)
    objects = np.array([[positions[i][n][:2] for n in names] for i in keep]).reshape(len(keep), len(names), 2)
    target_xy = objects[:, target]
    offset = target_xy - np.array([hands[i][:2] for i in keep]).reshape(len(keep), 2)
    return {"target": names[target], "frames": frames[keep], "objects": objects, "offset": offset, "names": names}


def demo_fixtures(env, env_seed: int) -> dict[str, np.ndarray]:
    """``{name: (2,) xy}`` of the fixtures where the demo's own reset (``env_seed``) placed them."""
    env.reset(seed=int(env_seed))
    return {name: np.asarray(xyz[:2], np.float64) for name, xyz in env.fixture_positions().items()}


def fit_probe(x: np.ndarray, y: np.ndarray, test: np.ndarray) -> dict:
    """Ridge probe x (N, D) -> y (N, K, 2), fitted where ``test`` is False, scored where it is True.

    Returns ``rms_cm`` and ``baseline_cm`` (the training mean's error), each averaged over the K points,
    and ``n_train`` / ``n_test``.
    """
    from clad_lite.analysis import linear_probe_regression

    n, k = y.shape[0], y.shape[1]
    flat = y.reshape(n, 2 * k)
    fit = linear_probe_regression(x[~test], flat[~test], x[test], flat[test], alpha=ALPHAS, return_predictions=True)
    error = (fit["predictions"] - flat[test]).reshape(-1, k, 2)
    guess = (flat[~test].mean(0) - flat[test]).reshape(-1, k, 2)
    rms = lambda e: float(np.sqrt((e ** 2).sum(-1).mean(0)).mean() * 100)
    return {"rms_cm": round(rms(error), 2), "baseline_cm": round(rms(guess), 2),
            "n_train": int((~test).sum()), "n_test": int(test.sum())}


def probe_task(env, demo_file: H.DemoFile, cache, holdout: float = 0.2) -> dict:
    """The probes of one task: both cameras, each camera alone, and the last approach (see the module);
    the fixtures too when the task has some and every demo records its ``env_seed``."""
    rows = []  # (targets found, embeddings (n, 2E), fixtures placed or None) per demo that lifts something
    for demo in demo_file.demos:
        record = demo_file.read(demo, ["states", "actions"])
        found = demo_targets(env, record["states"], record["actions"], demo_file.image_frames(demo))
        if found is None:
            continue
        env_seed = demo_file.group(demo).attrs.get("env_seed")
        placed = demo_fixtures(env, env_seed) if env_seed is not None else None
        embeddings = [cache.frames(demo_file.path, demo, camera)[found["frames"]] for camera in CAMERAS]
        rows.append((found, np.concatenate(embeddings, axis=1), placed))
    if len(rows) < 5:
        raise UserError(f"{demo_file.path}: only {len(rows)} demos lift an object before their end; the probe needs 5")
    n_test = max(1, int(round(holdout * len(rows))))
    demo_index = np.concatenate([np.full(len(f["frames"]), i) for i, (f, _, _) in enumerate(rows)])
    test = demo_index >= len(rows) - n_test
    x = np.concatenate([e for _, e, _ in rows])
    objects = np.concatenate([f["objects"] for f, _, _ in rows])
    offset = np.concatenate([f["offset"] for f, _, _ in rows])[:, None]
    width = x.shape[1] // len(CAMERAS)
    result = {"instruction": demo_file.instruction, "objects": rows[0][0]["names"],
              "targets": sorted({f["target"] for f, _, _ in rows}), "demos": len(rows), "test_demos": n_test}
    targets = {"objects": objects, "offset": offset}
    if all(placed for _, _, placed in rows):  # a task with fixtures, every demo with its env_seed
        names = sorted(rows[0][2])
        targets["fixtures"] = np.concatenate([np.repeat(np.array([placed[n] for n in names])[None],   # (n, F, 2)
                                                        len(f["frames"]), axis=0) for f, _, placed in rows])
        result["fixtures"] = names
    for name, columns in (("both", slice(None)), ("agentview", slice(0, width)), ("wrist", slice(width, None))):
        result[name] = {key: fit_probe(x[:, columns], y, test) for key, y in targets.items()}
    near = np.linalg.norm(offset[:, 0], axis=1) < NEAR_M
    if near[test].sum() >= 5 and near[~test].sum() >= 20:
        result["near_offset"] = fit_probe(x[near], offset[near], test[near])
    return result


def position_probe(data_dir, tasks=None, cache_dir: str | None = None, suite: str = "libero_10",
                   progress: bool = True) -> dict:
    """Run :func:`probe_task` on each task of ``data_dir``; ``{"tasks": {id: result}, "cache": ..., "data": ...}``."""
    from tqdm import tqdm

    from clad_lite.config import get_profile
    from clad_lite.encoders.cache import EmbeddingCache
    from clad_lite.sim import LiberoEnv, suite_tasks
    from clad_lite.train import find_cache_dir

    data_dir = Path(data_dir)
    # the cache training would read: the active profile's embedding width and both cameras
    cache = EmbeddingCache(cache_dir or find_cache_dir(data_dir, get_profile().encoder.embed_dim, CAMERAS))
    tasks = list(range(len(suite_tasks(suite)))) if tasks is None else list(tasks)
    from clad_lite.provenance import git_sha

    out = {"data": str(data_dir), "cache": str(cache.path), "encoder_hash": cache.encoder_hash, "git_sha": git_sha(),
           "lift_m": LIFT_M, "near_m": NEAR_M, "tasks": {}}
    for task_id in tqdm(tasks, desc="position probe", unit="task", disable=not progress):
        with LiberoEnv(suite, task_id, render=False, fast_reset=True) as env:
            env.reset(seed=0)
            path = H.find_task_file(data_dir, env.instruction)
            if path is None:
                raise UserError(f"{data_dir}: no demonstrations of {suite} task {task_id} ({env.instruction!r})")
            with H.DemoFile(path) as demo_file:
                out["tasks"][str(task_id)] = probe_task(env, demo_file, cache)
    cache.close()
    return out


def format_table(result: dict) -> str:
    """Markdown: per task, the probes' RMS errors against their baselines (cm)."""
    lines = ["| task | objects: both / agentview / wrist (baseline) | hand-to-target: both / agentview / wrist (baseline) "
             "| last 10 cm (baseline) | fixtures: both / agentview / wrist (baseline) |", "|---|---|---|---|---|"]
    for task_id, r in result["tasks"].items():
        cells = []
        for key in ("objects", "offset"):
            cells.append(" / ".join(f"{r[c][key]['rms_cm']:.1f}" for c in ("both", "agentview", "wrist"))
                         + f" ({r['both'][key]['baseline_cm']:.1f})")
        near = r.get("near_offset")
        cells.append(f"{near['rms_cm']:.1f} ({near['baseline_cm']:.1f})" if near else "-")
        cells.append(" / ".join(f"{r[c]['fixtures']['rms_cm']:.2f}" for c in ("both", "agentview", "wrist"))
                     + f" ({r['both']['fixtures']['baseline_cm']:.2f})" if "fixtures" in r["both"] else "-")
        lines.append(f"| {task_id} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "position-probe", help="linear probes: do the frozen encoder's embeddings locate the objects?",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="demonstrations folder with an embedding cache (embed)")
    parser.add_argument("--cache", default=None, help="embedding cache folder (default: the newest that fits the profile, as train picks)")
    parser.add_argument("--tasks", default=None, help="task ids, e.g. 0-9 or 1,5 (default: all)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=_main)


def _main(args) -> int:
    from clad_lite.demos.generate import parse_tasks

    tasks = parse_tasks(args.tasks) if args.tasks else None
    result = position_probe(args.data, tasks, cache_dir=args.cache, progress=not args.no_progress)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**result, "command": " ".join(["python -m clad_lite", *sys.argv[1:]])},
                                              indent=1))
    return 0
