"""``python -m clad_lite filmstrip``: a few frames of one demonstration per task file.

    python -m clad_lite filmstrip [PATH...] [--out figures/demo_filmstrip.png] [--frames 6]
        [--demo 0] [--camera agentview_rgb]

One row per file (task, in task-id order), ``--frames`` evenly spaced frames from the first to the last step
of demo ``--demo``, shown upright. A provenance JSON (files, demo, frames, how the data were
generated, package versions) is written next to the image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from clad_lite.cli import UserError
from clad_lite.demos import hdf5 as H
from clad_lite.provenance import git_sha, package_versions

DEFAULT_OUT = "figures/demo_filmstrip.png"


def make_filmstrip(paths, out=DEFAULT_OUT, *, frames: int = 6, demo: int = 0,
                   camera: str = "agentview_rgb") -> Path:
    """Draw the filmstrip; returns the image path (and writes ``<out>.json`` provenance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if frames < 1:
        raise UserError("--frames must be >= 1")
    if camera not in H.IMAGE_KEYS:
        raise UserError(f"--camera must be one of {', '.join(H.IMAGE_KEYS)}")
    files = H.find_demo_files(paths)
    rows = []
    for path in files:
        with H.DemoFile(path) as f:
            f.validate(require=[f"obs/{camera}"], require_images=True)
            demos = f.demos
            if demo >= len(demos):
                raise UserError(f"{path}: has {len(demos)} demos, no demo index {demo}")
            name = demos[demo]
            T = f.length(name)
            rendered = f.image_frames(name)  # every step, or every s-th of a strided file
            steps = rendered[np.unique(np.linspace(0, len(rendered) - 1, frames).round().astype(int))]
            images = f.read(name, [f"obs/{camera}"], frames=steps)[f"obs/{camera}"]
            attrs = f.attrs
            rows.append({"file": str(path), "demo": name, "steps": steps.tolist(), "length": T,
                         "instruction": f.instruction,
                         "task_id": int(attrs["task_id"]) if "task_id" in attrs else None,
                         "generator": json.loads(attrs["generator"]) if "generator" in attrs else None,
                         "images": images[:, ::-1]})
    rows.sort(key=lambda row: (row["task_id"] is None, row["task_id"] if row["task_id"] is not None else 0))
    cols = max(len(r["steps"]) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.7 * cols, 1.95 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(row["steps"]):
                ax.imshow(row["images"][c])
                ax.set_xlabel(f"t={row['steps'][c]}", fontsize=7, labelpad=1)
            else:
                ax.axis("off")
        label = f"task {row['task_id']}: " if row["task_id"] is not None else ""
        axes[r][0].text(0, 1.04, f"{label}{row['instruction']} ({row['demo']}, T={row['length']})",
                        transform=axes[r][0].transAxes, ha="left", va="bottom", fontsize=8, clip_on=False)
    height = fig.get_figheight()
    fig.suptitle(f"one demonstration per task ({camera}, upright)", fontsize=9, y=1 - 0.08 / height)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.25 / height, top=1 - 0.55 / height,
                        wspace=0.04, hspace=0.35)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    provenance = {
        "figure": str(out), "command": "python -m clad_lite filmstrip", "camera": camera,
        "rows": [{k: v for k, v in row.items() if k != "images"} for row in rows],
        "versions": package_versions(("clad_lite", "h5py", "numpy", "matplotlib")), "git_sha": git_sha(),
    }
    out.with_suffix(".json").write_text(json.dumps(provenance, indent=1))
    return out


def register(subparsers) -> None:
    parser = subparsers.add_parser("filmstrip", help="filmstrip of one demonstration per task file",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", metavar="PATH", default=["data/libero_10"],
                        help="HDF5 files or directories (default data/libero_10)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--demo", type=int, default=0, help="demo index within each file")
    parser.add_argument("--camera", default="agentview_rgb", choices=H.IMAGE_KEYS)
    parser.set_defaults(func=_main)


def _main(args) -> int:
    for path in args.paths:
        if not os.path.exists(path):
            raise UserError(f"{path}: no such file or directory")
    out = make_filmstrip(args.paths, args.out, frames=args.frames, demo=args.demo, camera=args.camera)
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0
