"""Embedding cache: frozen-encoder embeddings of every frame and instruction, computed once.

``python -m clad_lite embed --data DIR --encoder SPEC`` (or ``embed_directory``) encodes every
frame of every camera of every demonstration in ``DIR`` and every instruction, and stores
them next to the data, keyed by the encoder's hash:

    DIR/embeddings/<hash[:16]>/cache.json        index: format, encoder_hash, encoder_spec,
                                                 embed_dim, cameras, files {stem: {...}}
    DIR/embeddings/<hash[:16]>/<stem>.hdf5       one per data file <stem>.hdf5:
        {demo_i}/{camera_key}   (T, E) float16 (or float32) per-frame embeddings, in the
                                 data's frame order; camera_key = agentview_rgb,
                                 eye_in_hand_rgb (the HDF5 obs keys); rows of steps
                                 without an image (files with an image stride) are NaN
        text                    (n_instructions, E) float32: every instruction of DIR
        attrs                   format, encoder_hash, embed_dim, cameras, instruction (this
                                 file's), instructions (rows of ``text``, JSON),
                                 source (data file name), source_fingerprint (size,
                                 mtime_ns and demo lengths of the data file, JSON)

A second run reuses a file whose encoder hash, cameras and source fingerprint match; a
changed encoder has another hash (another folder, so encoders never mix), a changed data file
another fingerprint (recomputed). Each file is written to a temporary name and renamed, so
an interrupted run leaves no half-written cache.

Reading (what the training-window dataset uses)::

    cache = EmbeddingCache(cache_dir, expected_hash=encoder.hash())   # StaleCacheError if not
    cache.files                          # data-file stems
    cache.demos(file)                    # ["demo_0", ...]
    cache.frames(file, demo, camera)     # (T, E) float32; file = stem, name or path
    cache.instruction(file)              # that file's instruction
    cache.text(instruction)              # (E,) float32
    cache.embed_dim, cache.encoder_hash, cache.cameras

``open_cache(data_dir, encoder)`` = ``embed_directory`` (if needed) + ``EmbeddingCache``.
The online path (``encoder.encode_images`` every step, e.g. with augmentation) needs no cache.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

CACHE_FORMAT = "clad_lite/embedding-cache/v1"
CACHE_FOLDER = "embeddings"
INDEX_NAME = "cache.json"


class StaleCacheError(ValueError):
    """The cache was made by another encoder (or is not a cache)."""


def cache_dir_for(data_dir: str | os.PathLike, encoder_hash: str) -> Path:
    return Path(data_dir) / CACHE_FOLDER / encoder_hash[:16]


def _stem(file) -> str:
    return Path(str(file)).stem


def _source_fingerprint(demo_file) -> str:
    return json.dumps({**demo_file.fingerprint(), "lengths": demo_file.lengths}, sort_keys=True)


def _file_is_fresh(path: Path, encoder_hash: str, cameras, fingerprint: str, instructions) -> bool:
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            attrs = f.attrs
            return (attrs.get("format") == CACHE_FORMAT and attrs.get("encoder_hash") == encoder_hash
                    and attrs.get("source_fingerprint") == fingerprint
                    and set(cameras) <= set(json.loads(attrs.get("cameras", "[]")))
                    and json.loads(attrs.get("instructions", "[]")) == list(instructions))
    except (OSError, ValueError):
        return False


def _atomic_h5(path: Path):
    handle, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return tmp


def embed_directory(data_dir: str | os.PathLike, encoder, cameras=("agentview_rgb", "eye_in_hand_rgb"),
                    batch_size: int = 64, dtype: str = "float16", force: bool = False,
                    progress: bool = False) -> dict:
    """Compute (or reuse) the cache of ``data_dir`` for ``encoder`` (a FrozenEncoder or a spec).

    Returns {"cache_dir", "encoder_hash", "computed": [stems], "reused": [stems], "seconds"}.
    """
    from clad_lite.encoders.base import canonical_camera, load_encoder
    from clad_lite.encoders.data import demo_files

    start = time.perf_counter()
    spec = encoder if isinstance(encoder, str) else getattr(encoder, "source", None)
    encoder = load_encoder(encoder)
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    cameras = [canonical_camera(c) for c in cameras]
    files = demo_files(data_dir)
    encoder_hash = encoder.hash()
    folder = cache_dir_for(data_dir, encoder_hash)
    folder.mkdir(parents=True, exist_ok=True)
    instructions = list(dict.fromkeys(f.instruction for f in files))
    text = None
    computed, reused = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(f.lengths) for f in files) * len(cameras), desc="embed", unit="demo-camera",
                   file=sys.stderr)
    for demo_file in files:
        target = folder / f"{demo_file.stem}.hdf5"
        fingerprint = _source_fingerprint(demo_file)
        if not force and _file_is_fresh(target, encoder_hash, cameras, fingerprint, instructions):
            reused.append(demo_file.stem)
            if bar is not None:
                bar.update(len(demo_file.lengths) * len(cameras))
            continue
        if text is None:
            text = encoder.encode_text(instructions).cpu().numpy().astype(np.float32)
        tmp = _atomic_h5(target)
        try:
            with h5py.File(tmp, "w") as out:
                for demo, length in demo_file.lengths.items():
                    group = out.create_group(demo)
                    rendered = demo_file.image_frames(demo)
                    for camera in cameras:
                        rows = []
                        for lo in range(0, len(rendered), batch_size):
                            index = rendered[lo:lo + batch_size]
                            frames = demo_file.frames(demo, camera, slice(int(index[0]), int(index[-1]) + 1,
                                                                          demo_file.image_stride))
                            rows.append(encoder.encode_images(frames, camera=camera).cpu().numpy())
                        # (T, E) rows aligned with the steps; steps without an image (strided
                        # files) are NaN, so using one by mistake cannot go unnoticed
                        table = np.full((length, encoder.embed_dim), np.nan, dtype=dtype)
                        table[rendered] = np.concatenate(rows).astype(dtype)
                        group.create_dataset(camera, data=table)
                        if bar is not None:
                            bar.update(1)
                out.create_dataset("text", data=text)
                out.attrs.update({
                    "format": CACHE_FORMAT, "encoder_hash": encoder_hash, "embed_dim": encoder.embed_dim,
                    "cameras": json.dumps(cameras), "instruction": demo_file.instruction,
                    "instructions": json.dumps(instructions), "source": demo_file.path.name,
                    "source_fingerprint": fingerprint, "dtype": dtype,
                })
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
            demo_file.close()
        computed.append(demo_file.stem)
    if bar is not None:
        bar.close()
    index = {
        "format": CACHE_FORMAT, "encoder_hash": encoder_hash, "encoder_spec": None if spec is None else str(spec),
        "embed_dim": encoder.embed_dim, "cameras": cameras, "dtype": dtype,
        "files": {f.stem: {"source": f.path.name, "instruction": f.instruction, "n_demos": len(f.lengths)}
                  for f in files},
    }
    handle, tmp = tempfile.mkstemp(prefix=INDEX_NAME + ".", suffix=".tmp", dir=folder)
    with os.fdopen(handle, "w") as out:
        json.dump(index, out, indent=2)
    os.replace(tmp, folder / INDEX_NAME)
    return {"cache_dir": str(folder), "encoder_hash": encoder_hash, "computed": computed, "reused": reused,
            "seconds": round(time.perf_counter() - start, 3)}


class EmbeddingCache:
    """Read a cache folder written by ``embed_directory`` (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, expected_hash: str | None = None):
        self.path = Path(path)
        index_path = self.path / INDEX_NAME
        if not index_path.is_file():
            raise StaleCacheError(f"{self.path} is not an embedding cache (no {INDEX_NAME}); "
                                  "run python -m clad_lite embed")
        self.index = json.loads(index_path.read_text())
        if self.index.get("format") != CACHE_FORMAT:
            raise StaleCacheError(f"{self.path}: unknown cache format {self.index.get('format')!r}")
        self.encoder_hash: str = self.index["encoder_hash"]
        if expected_hash is not None and expected_hash != self.encoder_hash:
            raise StaleCacheError(f"{self.path} was computed by encoder {self.encoder_hash[:16]}, not by "
                                  f"{expected_hash[:16]}: re-run python -m clad_lite embed with this encoder")
        self.embed_dim: int = int(self.index["embed_dim"])
        self.cameras: list[str] = list(self.index["cameras"])
        self.files: list[str] = list(self.index["files"])
        self._handles: dict[str, h5py.File] = {}
        self._text: dict[str, np.ndarray] | None = None

    def _open(self, file) -> h5py.File:
        stem = _stem(file)
        if stem not in self.index["files"]:
            raise KeyError(f"{file!r} is not in the cache {self.path} (files: {', '.join(self.files)})")
        if stem not in self._handles:
            handle = h5py.File(self.path / f"{stem}.hdf5", "r")
            if handle.attrs.get("encoder_hash") != self.encoder_hash:
                handle.close()
                raise StaleCacheError(f"{self.path / stem}.hdf5 was computed by another encoder")
            self._handles[stem] = handle
        return self._handles[stem]

    def demos(self, file) -> list[str]:
        return sorted(self._open(file).keys() - {"text"}, key=lambda n: (len(n), n))

    def frames(self, file, demo: str, camera: str) -> np.ndarray:
        """(T, E) float32 embeddings of every frame of ``demo`` seen by ``camera``."""
        from clad_lite.encoders.base import canonical_camera

        return self._open(file)[demo][canonical_camera(camera)][()].astype(np.float32)

    def instruction(self, file) -> str:
        return self.index["files"][_stem(file)]["instruction"]

    def instructions(self) -> list[str]:
        return list(self._text_table())

    def _text_table(self) -> dict[str, np.ndarray]:
        if self._text is None:
            handle = self._open(self.files[0])
            names = json.loads(handle.attrs["instructions"])
            self._text = dict(zip(names, handle["text"][()].astype(np.float32)))
        return self._text

    def text(self, instruction: str) -> np.ndarray:
        """(E,) float32 embedding of an instruction of the cached data set."""
        table = self._text_table()
        if instruction not in table:
            raise KeyError(f"instruction {instruction!r} is not in the cache {self.path}")
        return table[instruction]

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_cache(data_dir: str | os.PathLike, encoder, **kwargs) -> EmbeddingCache:
    """The cache of ``data_dir`` for ``encoder``, computed first where missing or stale."""
    report = embed_directory(data_dir, encoder, **kwargs)
    return EmbeddingCache(report["cache_dir"], expected_hash=report["encoder_hash"])


def run(args) -> int:
    from clad_lite.cli import UserError
    from clad_lite.encoders.base import EncoderLoadError, load_encoder
    from clad_lite.encoders.decision_nce import torch_threads

    try:
        encoder = load_encoder(args.encoder)
    except EncoderLoadError as error:
        raise UserError(str(error)) from error
    with torch_threads(args.threads):
        try:
            report = embed_directory(args.data, encoder, cameras=args.cameras, batch_size=args.batch_size,
                                     dtype=args.dtype, force=args.force, progress=not args.no_progress)
        except (FileNotFoundError, ValueError) as error:
            raise UserError(str(error)) from error
    report["encoder_spec"] = args.encoder
    print(json.dumps(report, indent=2))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "embed", help="cache frozen-encoder embeddings of every frame and instruction of a data set",
        description="Compute per-frame and per-instruction embeddings once; reuse them while the encoder "
                    "and the data are unchanged.")
    parser.add_argument("--data", required=True, help="directory of LIBERO HDF5 demonstration files")
    parser.add_argument("--encoder", required=True,
                        help="DecisionNCE-lite checkpoint, or decisionnce:CKPT[,vocab=VOCAB] for real weights")
    parser.add_argument("--cameras", nargs="+", default=["agentview_rgb", "eye_in_hand_rgb"])
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--force", action="store_true", help="recompute even if a fresh cache exists")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
