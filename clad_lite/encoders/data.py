"""Demonstration files as the encoder code reads them (LIBERO HDF5 layout).

One HDF5 file per task: ``data/demo_i/obs/{agentview_rgb, eye_in_hand_rgb}`` (T, H, W, 3)
uint8, stored upside down; ``data`` attrs ``problem_info`` = JSON with
``language_instruction``. The metadata (instruction, demo lengths, image stride) comes from
the project's validating reader, :class:`clad_lite.demos.hdf5.DemoFile`; frames are read
here through one h5py handle kept open (the encoder reads many small batches).

Files rendered with an image stride s (:mod:`clad_lite.demos.hdf5`) have images only at
steps 0, s, 2s, ...: :meth:`DemoFile.image_frames` lists them, and clips and embeddings use
only those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from clad_lite.demos import hdf5 as H
from clad_lite.encoders.base import canonical_camera


def _read_file_index(path: Path) -> tuple[str, dict[str, int], int]:
    """(language instruction, {demo name: length T}, image stride) of one LIBERO HDF5 file."""
    with H.DemoFile(path) as f:
        return f.instruction.strip(), f.lengths(), f.image_stride


@dataclass
class DemoFile:
    """One task's demonstration file: its instruction and demo lengths; frames on demand."""

    path: Path
    instruction: str
    lengths: dict[str, int]
    image_stride: int = 1
    _handle: h5py.File | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "DemoFile":
        path = Path(path)
        instruction, lengths, stride = _read_file_index(path)
        return cls(path, instruction, lengths, stride)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def demos(self) -> list[str]:
        return list(self.lengths)

    def image_frames(self, demo: str) -> np.ndarray:
        """The steps of ``demo`` whose images were rendered (all of them unless strided)."""
        return H.image_frames(self.lengths[demo], self.image_stride)

    def frames(self, demo: str, camera: str, index=None) -> np.ndarray:
        """uint8 (n, H, W, 3) frames as stored; ``index`` = sorted int indices, a slice or None (all)."""
        if self._handle is None:
            self._handle = h5py.File(self.path, "r")
        dataset = self._handle["data"][demo]["obs"][canonical_camera(camera)]
        if index is None:
            return dataset[()]
        if isinstance(index, slice):
            return dataset[index]
        index = np.asarray(index)
        unique, inverse = np.unique(index, return_inverse=True)  # h5py needs increasing indices
        return dataset[unique.tolist()][inverse]

    def fingerprint(self) -> dict:
        stat = self.path.stat()
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def demo_files(data_dir: str | os.PathLike) -> list[DemoFile]:
    """Every ``*.hdf5`` demonstration file directly in ``data_dir`` (sorted by name)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory not found: {data_dir}")
    paths = sorted(p for p in data_dir.iterdir() if p.suffix in (".hdf5", ".h5") and p.is_file())
    if not paths:
        raise FileNotFoundError(f"no .hdf5 demonstration files in {data_dir}")
    return [DemoFile.open(p) for p in paths]
