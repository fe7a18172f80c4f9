"""A first look at LIBERO-LONG: tasks, cameras, the action space, proprioception, a clip.

Used by ``notebooks/00_libero_tour.ipynb`` and by ``python -m clad_lite tour --out DIR``,
which writes the same figure and clip to disk (the README's first command runs it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from clad_lite.sim import ACTION_DIM, ACTION_NAMES, LiberoEnv, settle, suite_tasks, upright

CAMERA_TITLES = {"agentview": "agentview", "robot0_eye_in_hand": "wrist (eye in hand)"}
# robosuite observation keys that make up the robot's proprioception
PROPRIO_KEYS = ("robot0_joint_pos", "robot0_joint_vel", "robot0_gripper_qpos", "robot0_gripper_qvel",
                "robot0_eef_pos", "robot0_eef_quat")


def init_state_frames(suite: str = "libero_10", tasks=None, image_size: int = 128, init_index: int = 0,
                      settle_steps: int = 0) -> dict[int, dict[str, np.ndarray]]:
    """Render every camera at fixed init state ``init_index`` of each task.

    Returns ``{task_id: {camera: (H, W, 3) uint8}}``, upright for display.
    """
    tasks = range(len(suite_tasks(suite))) if tasks is None else tasks
    frames = {}
    for task_id in tqdm(list(tasks), desc="init states", leave=False):
        with LiberoEnv(suite, task_id, render=True, camera_obs=False, image_size=image_size) as env:
            env.reset_to_init_state(init_index)
            if settle_steps:
                settle(env, settle_steps)
            frames[task_id] = {camera: upright(image) for camera, image in env.render_cameras().items()}
    return frames


def task_grid_figure(frames: dict[int, dict[str, np.ndarray]], suite: str = "libero_10"):
    """Two rows per camera, one column per task, titled with the instruction (wrapped)."""
    import textwrap

    import matplotlib.pyplot as plt

    tasks = suite_tasks(suite)
    task_ids = sorted(frames)
    cameras = list(next(iter(frames.values())))
    fig, axes = plt.subplots(len(cameras), len(task_ids), figsize=(2.1 * len(task_ids), 2.4 * len(cameras) + 0.9),
                             squeeze=False)
    for col, task_id in enumerate(task_ids):
        for row, camera in enumerate(cameras):
            ax = axes[row, col]
            ax.imshow(frames[task_id][camera])
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(CAMERA_TITLES.get(camera, camera), fontsize=9)
        title = "\n".join(textwrap.wrap(tasks[task_id].instruction, 24)[:4])
        axes[0, col].set_title(f"{task_id}: {title}", fontsize=7, loc="left")
    fig.tight_layout()
    return fig


def spaces_table(env: LiberoEnv, obs: dict) -> dict:
    """The action space and the proprioceptive keys of a LIBERO environment, with shapes."""
    low, high = env.robosuite_env.action_spec
    return {
        "action": [{"index": i, "name": ACTION_NAMES[i], "low": float(low[i]), "high": float(high[i])}
                   for i in range(ACTION_DIM)],
        "proprio": {key: list(np.shape(obs[key])) for key in PROPRIO_KEYS},
    }


def random_action_clip(suite: str = "libero_10", task_id: int = 0, steps: int = 40, seed: int = 0,
                       image_size: int = 128, scale: float = 0.5) -> tuple[np.ndarray, dict]:
    """Smoothed random actions from init state 0; returns upright agentview frames (T, H, W, 3)
    and the spaces table. Rendering is the cost (~40 ms per frame), so keep ``steps`` small."""
    rng = np.random.default_rng(seed)
    with LiberoEnv(suite, task_id, render=True, camera_obs=False, image_size=image_size, cameras=("agentview",)) as env:
        obs = env.reset_to_init_state(0)
        spaces = spaces_table(env, obs)
        frames, action = [], np.zeros(ACTION_DIM)
        for _ in range(steps):
            # a random walk in action space looks like motion rather than vibration
            action = np.clip(0.8 * action + 0.2 * rng.uniform(-1, 1, ACTION_DIM) * scale * 4, -1, 1)
            env.step(action)
            frames.append(upright(env.render_cameras()["agentview"]))
    return np.stack(frames), spaces


def write_video(frames: np.ndarray, path: str | Path, fps: int = 20) -> Path:
    """Write (T, H, W, 3) uint8 frames to an mp4 (H.264 through imageio-ffmpeg)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(path, list(frames), fps=fps, macro_block_size=1)
    return path


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = suite_tasks(args.suite)
    frames = init_state_frames(args.suite, image_size=args.image_size)
    fig = task_grid_figure(frames, args.suite)
    fig.savefig(out / "init_states.png", dpi=110)
    clip, spaces = random_action_clip(args.suite, args.clip_task, steps=args.clip_steps, image_size=args.image_size)
    video = write_video(clip, out / f"random_actions_task{args.clip_task}.mp4")
    summary = {"suite": args.suite, "tasks": [{"task_id": t.task_id, "instruction": t.instruction} for t in tasks],
               **spaces, "figure": str(out / "init_states.png"), "video": str(video)}
    (out / "tour.json").write_text(json.dumps(summary, indent=2))
    print(f"{args.suite}: {len(tasks)} tasks")
    for t in tasks:
        print(f"  {t.task_id}  {t.instruction}")
    print(f"wrote {out / 'init_states.png'}, {video}, {out / 'tour.json'}")
    return 0


def register(subparsers):
    parser = subparsers.add_parser("tour", help="render every task's init state and a random-action clip")
    parser.add_argument("--suite", default="libero_10")
    parser.add_argument("--out", default="runs/tour")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--clip-task", type=int, default=0)
    parser.add_argument("--clip-steps", type=int, default=40)
    parser.set_defaults(func=run)
