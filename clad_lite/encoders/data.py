"""Demonstration files as the encoder code reads them (LIBERO HDF5 layout).

One HDF5 file per task: ``data/demo_i/obs/{agentview_rgb, eye_in_hand_rgb}`` (T, H, W, 3)
uint8, stored upside down; ``data`` attrs ``problem_info`` = JSON with
``language_instruction``.

>>> SWITCH POINT <<< ``_read_file_index`` is the only function that knows the file layout's
metadata; it reads with h5py directly until the project's official reader
(``clad_lite.demos.hdf5``) exists - then it should call that reader instead. Frames are
read through ``DemoFile.frames`` (h5py datasets, kept open).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from clad_lite.encoders.base import canonical_camera


def _demo_sort_key(name: str):
    suffix = name.rsplit("_", 1)[-1]
    return (0, int(suffix)) if suffix.isdigit() else (1, name)


def _read_file_index(path: Path) -> tuple[str, dict[str, int]]:
    """(language instruction, {demo name: length T}) of one LIBERO HDF5 file.  SWITCH POINT."""
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise ValueError(f"{path}: no 'data' group (not a LIBERO demonstration file)")
        group = f["data"]
        instruction = None
        if "problem_info" in group.attrs:
            info = group.attrs["problem_info"]
            info = info.decode() if isinstance(info, bytes) else str(info)
            instruction = json.loads(info).get("language_instruction")
        if not instruction:
            raise ValueError(f"{path}: data attrs hold no problem_info.language_instruction")
        if isinstance(instruction, list):  # some LIBERO files store it as a list of words / one string
            instruction = " ".join(instruction)
        lengths = {}
        for name in sorted(group.keys(), key=_demo_sort_key):
            if name.startswith("demo"):
                lengths[name] = int(group[name]["obs"]["agentview_rgb"].shape[0])
    return instruction.strip(), lengths


@dataclass
class DemoFile:
    """One task's demonstration file: its instruction and demo lengths; frames on demand."""

    path: Path
    instruction: str
    lengths: dict[str, int]
    _handle: h5py.File | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "DemoFile":
        path = Path(path)
        instruction, lengths = _read_file_index(path)
        return cls(path, instruction, lengths)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def demos(self) -> list[str]:
        return list(self.lengths)

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
