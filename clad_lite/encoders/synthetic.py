"""Tiny synthetic demonstrations in the LIBERO HDF5 layout, for tests and CI notebooks.

``write_synthetic_demos(dir, n_tasks=4, demos_per_task=6, length=12, size=32)`` writes one file
per task. In task k a block moves along direction k over the demonstration (so the
instruction is visible only in the *change* between frames - what DecisionNCE-T learns);
the block's colour and the background are random per demo, so a single frame says little.
The wrist camera sees a zoomed, shifted view of the same scene. Frames are stored upside
down, like LIBERO's. Files: ``{dir}/synthetic_task{k}_demo.hdf5``.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

DIRECTIONS = [(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)]
NAMES = ["right", "left", "down", "up", "down and to the right", "up and to the left",
         "down and to the left", "up and to the right"]


def synthetic_instruction(task: int) -> str:
    return f"push the block {NAMES[task]}"


def _render(size: int, centre, colour, background, rng) -> np.ndarray:
    image = np.empty((size, size, 3), np.float32)
    image[:] = background
    image += rng.normal(0, 6, image.shape)
    half = max(2, size // 8)
    r, c = int(round(centre[0])), int(round(centre[1]))
    image[max(0, r - half):r + half, max(0, c - half):c + half] = colour
    return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_demos(data_dir, n_tasks: int = 4, demos_per_task: int = 6, length: int = 12,
                          size: int = 32, seed: int = 0) -> list[Path]:
    if not 1 <= n_tasks <= len(DIRECTIONS):
        raise ValueError(f"n_tasks must be in [1, {len(DIRECTIONS)}]")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for task in range(n_tasks):
        path = data_dir / f"synthetic_task{task}_demo.hdf5"
        with h5py.File(path, "w") as f:
            group = f.create_group("data")
            group.attrs["problem_info"] = json.dumps({"language_instruction": synthetic_instruction(task),
                                                      "problem_name": f"synthetic_{task}"})
            group.attrs["env_args"] = json.dumps({"env_name": "synthetic"})
            dr, dc = DIRECTIONS[task]
            for d in range(demos_per_task):
                colour = rng.uniform(60, 255, 3)
                background = rng.uniform(0, 120, 3)
                travel = size * rng.uniform(0.35, 0.5)
                start = np.array([size / 2 - dr * travel / 2, size / 2 - dc * travel / 2]) + rng.normal(0, 1.5, 2)
                agent, wrist = [], []
                for t in range(length):
                    centre = start + np.array([dr, dc]) * travel * t / (length - 1)
                    frame = _render(size, centre, colour, background, rng)
                    agent.append(frame)
                    zoom = np.kron(frame[size // 4: 3 * size // 4, size // 4: 3 * size // 4], np.ones((2, 2, 1)))
                    wrist.append(zoom.astype(np.uint8))
                demo = group.create_group(f"demo_{d}")
                obs = demo.create_group("obs")
                obs.create_dataset("agentview_rgb", data=np.stack(agent)[:, ::-1])  # stored upside down
                obs.create_dataset("eye_in_hand_rgb", data=np.stack(wrist)[:, ::-1])
                demo.create_dataset("actions", data=np.zeros((length, 7), np.float32))
                demo.attrs["num_samples"] = length
        paths.append(path)
    return paths
