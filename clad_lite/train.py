"""``python -m clad_lite train``: the training loop of both stages, with exact resumption and DDP.

::

    python -m clad_lite train --stage 1 --profile cpu --out runs/clad
    python -m clad_lite train --stage 2 --profile cpu --clad runs/clad --out runs/policy
    python -m clad_lite train --stage 1 --profile cpu --set clad.attention=self --out runs/clad_self
    python -m clad_lite train --stage 2 --profile cpu --set policy.foresight=none --out runs/policy_only
    python -m clad_lite train --out runs/clad --resume            # after a crash / kill -9
    torchrun --nproc_per_node 4 -m clad_lite train --stage 1 --profile paper --out runs/clad

**Stage 1** trains ``CLaD`` (``clad_lite.clad``): loss eq. 19, then ``update_ema()`` (eq. 14)
after every optimizer step. **Stage 2** trains ``ForesightPolicy`` (``clad_lite.policy``,
eq. 22) on the foresights of the frozen stage-1 CLaD loaded from ``--clad RUN_DIR`` (its
``last.pt``, or a checkpoint file); the CLaD section of the profile is then the stage-1 run's.
``--set policy.foresight=none`` (the "policy only" baseline) needs no CLaD. Ablations are
``--set`` overrides (see ``clad_lite.configuration_clad.ABLATIONS``).

**Data**: ``--data DIR`` (default ``profile.data.path``) holds LIBERO-layout HDF5 files and
the embedding cache ``DIR/embeddings/<hash>/`` written by ``python -m clad_lite embed``
(``--cache`` picks one folder when there are several). Training reads cached embeddings only:
:class:`~clad_lite.demos.windows.WindowDataset` windows whose camera keys hold the frozen
embeddings, mapped to the models' batch by :func:`model_batch`.

**Optimisation**: AdamW (weight decay on matrices only), linear warmup + cosine decay
(``clad_lite.schedule``), gradient-norm clipping, bf16 autocast on CUDA (float32 on CPU),
optional ``--compile`` (``torch.compile``), optional weight EMA (``stageN.ema_decay``, torch's
``AveragedModel``; saved beside the raw weights). ``batch_size`` is the *global* batch: with DDP
each of the W processes takes ``batch_size / W`` samples of it.

**Exact resumption**: the sampler has no iterator state. Sample k of the run (k = step * B + j)
is ``randperm(N, seed = data seed + epoch)[k mod N]`` with epoch = k // N, so the batch of a
step is a function of (seed, step) only. A checkpoint holds the model (the CLaD EMA targets
are part of its ``state_dict``), the weight EMA when there is one, the optimizer, the scheduler, the step, every process's
torch / CUDA / numpy / python RNG states and the sampler position; it is written to a
temporary file and renamed (``os.replace``), so a run killed at any moment (SIGKILL included)
leaves only complete checkpoints. ``--resume`` continues from the newest of them
(:func:`newest_checkpoint`: ``last.pt``, or a numbered file a kill left ``last.pt`` behind) and, on CPU with
the same number of threads and processes, ends with bitwise the same weights as an
uninterrupted run (``tests/test_train.py`` checks it).

**RUN_DIR** (written by rank 0 only): ``config.json`` (the full profile after overrides),
``run.json`` (stage, data, cache, encoder hash, stage-1 checkpoint, world size),
``train_log.csv`` (step, loss components, grad_norm, lr, wall_time), ``loss_curve.png``,
``ckpt_XXXXXX.pt`` every ``checkpoint_every`` steps and at the end, ``last.pt`` (a hard link
to the newest). Load a finished run with :func:`load_checkpoint` / :func:`load_stage1`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
import sys
import time
import typing
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_FORMAT = "clad_lite/train-checkpoint/v1"
LAST = "last.pt"
LOG_NAME = "train_log.csv"
CURVE_NAME = "loss_curve.png"
STAGE1_LOSS_KEYS = ("loss", "latent", "recon", "latent_proprio", "latent_semantic", "recon_proprio",
                    "recon_semantic")
STAGE2_LOSS_KEYS = ("loss",)


# =========================================================================== batch adapter
def model_batch(window_batch: dict, cameras, device=None) -> dict:
    """A collated :class:`WindowDataset` batch (with embeddings) -> the batch of CLaD / the policy.

    =====================  ==========================================  =================
    model key              window key(s)                               shape
    =====================  ==========================================  =================
    ``proprio_past``       ``proprio_prev``                            (B, D_p)
    ``proprio``            ``proprio``                                 (B, D_p)
    ``proprio_future``     ``proprio_next``                            (B, D_p)
    ``vision_past``        ``<cam>_prev`` of each camera, concatenated (B, n_cam * E)
    ``vision``             ``<cam>``                                   (B, n_cam * E)
    ``vision_future``      ``<cam>_next``                              (B, n_cam * E)
    ``language``           ``instruction_emb``                         (B, E)
    ``actions_past``       ``actions_past``                            (B, tau, 7)
    ``actions``            ``actions``                                 (B, tau, 7)
    =====================  ==========================================  =================

    Cameras are concatenated in the order of ``cameras`` (``profile.data.cameras``). Tensors
    are moved to ``device`` when given.
    """
    def vision(suffix: str) -> torch.Tensor:
        return torch.cat([window_batch[f"{camera}{suffix}"].float() for camera in cameras], dim=-1)

    batch = {
        "proprio_past": window_batch["proprio_prev"], "proprio": window_batch["proprio"],
        "proprio_future": window_batch["proprio_next"],
        "vision_past": vision("_prev"), "vision": vision(""), "vision_future": vision("_next"),
        "language": window_batch["instruction_emb"],
        "actions_past": window_batch["actions_past"], "actions": window_batch["actions"],
    }
    if device is not None:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    return batch


NOISY_OBSERVATION_KEYS = ("proprio_past", "proprio", "vision_past", "vision")


def jitter_observations(batch: dict, scale: float, generator: torch.Generator | None = None) -> dict:
    """``batch`` with Gaussian noise on its observations (``policy.obs_noise``; stage-2 augmentation).

    Each of ``NOISY_OBSERVATION_KEYS`` (B, D) gets ``scale * std_b(x) * N(0, I)``, the std taken per
    feature over the batch, so normalised proprio and raw embeddings are perturbed alike relative to
    how much they vary. Language, actions and the future are left as they are. ``scale = 0`` returns
    ``batch`` itself.
    """
    if scale == 0:
        return batch
    noisy = dict(batch)
    for key in NOISY_OBSERVATION_KEYS:
        x = batch[key].float()
        spread = x.std(dim=0, keepdim=True) if len(x) > 1 else torch.zeros_like(x[:1])
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
        noisy[key] = (x + scale * spread * noise).to(batch[key].dtype)
    return noisy


# =========================================================================== sampler
class StepBatchSampler(torch.utils.data.Sampler):
    """Deterministic batches: this rank's share of the global batch of steps ``start..end-1``.

    Sample k of the run (k = step * global_batch + j) is ``perm_e[k mod N]`` with
    e = k // N and ``perm_e = randperm(N, generator seeded with seed + e)``: the position is a
    function of (seed, step), so resuming needs nothing but the step. Rank r of W takes
    j in [r * B/W, (r+1) * B/W).
    """

    def __init__(self, n: int, global_batch: int, seed: int, start_step: int, end_step: int,
                 rank: int = 0, world_size: int = 1):
        if n <= 0:
            raise ValueError("the data set is empty")
        if global_batch % world_size:
            raise ValueError(f"batch_size={global_batch} is not divisible by the {world_size} processes")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.start_step, self.end_step = start_step, end_step
        self.rank, self.local_batch = rank, global_batch // world_size
        self._perms: dict[int, torch.Tensor] = {}

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=generator)
        return self._perms[epoch]

    def indices(self, step: int) -> list[int]:
        """Dataset indices of this rank at (0-based) step ``step``."""
        first = step * self.global_batch + self.rank * self.local_batch
        return [int(self.permutation(k // self.n)[k % self.n]) for k in range(first, first + self.local_batch)]

    def __iter__(self):
        for step in range(self.start_step, self.end_step):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)


# =========================================================================== data
@dataclass
class TrainingData:
    dataset: torch.utils.data.Dataset
    data_dir: str | None = None
    cache_dir: str | None = None
    encoder_hash: str | None = None
    extra: dict = field(default_factory=dict)  # more of what a run must remember of its data (run.json "data")


# extra demonstration sets inside the data folder (own files, own cache; not the paper), read by both
# training stages when their count is > 0: data.recovery_demos (clad_lite.expert.recovery) and
# data.dagger_demos (clad_lite.expert.dagger)
RECOVERY_FOLDER = "recovery"
DAGGER_FOLDER = "dagger"
EXTRA_SETS = {RECOVERY_FOLDER: "recovery_demos", DAGGER_FOLDER: "dagger_demos"}  # folder -> DataConfig count


def extra_sets(data_config) -> list[str]:
    """The extra sets (folder names, ``EXTRA_SETS``) a data configuration asks for, in a fixed order."""
    return [folder for folder, count in EXTRA_SETS.items() if getattr(data_config, count)]


def find_cache_dir(data_dir: Path, embed_dim: int, cameras) -> Path:
    """The embedding-cache folder under ``data_dir/embeddings`` for this profile (newest if several)."""
    from clad_lite.cli import UserError
    from clad_lite.encoders.cache import CACHE_FOLDER, INDEX_NAME

    root = data_dir / CACHE_FOLDER
    candidates = sorted(root.glob(f"*/{INDEX_NAME}"), key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
    if not candidates:
        raise UserError(f"no embedding cache in {root}: run python -m clad_lite embed --data {data_dir} --encoder CKPT")
    fitting = []
    for index_path in candidates:
        try:
            index = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if int(index.get("embed_dim", -1)) == embed_dim and set(cameras) <= set(index.get("cameras", ())):
            fitting.append(index_path.parent)
    if not fitting:
        raise UserError(f"no embedding cache in {root} has embed_dim={embed_dim} and cameras {list(cameras)} "
                        "(the profile's encoder.embed_dim / data.cameras); embed with a matching encoder or pass --cache")
    if len(fitting) > 1:
        print(f"note: {len(fitting)} embedding caches fit; using the newest, {fitting[0]} (choose with --cache)",
              file=sys.stderr)
    return fitting[0]


def load_training_data(profile, data_dir=None, cache_dir=None) -> TrainingData:
    """WindowDataset over ``data_dir`` with every embedding of the cache held in memory (with
    ``data.vision_source = "sim_state"``: simulator states instead, see clad_lite.state_oracle)."""
    from clad_lite.cli import UserError
    from clad_lite.demos.windows import ArrayEmbeddings, WindowDataset
    from clad_lite.state_oracle import SIM_STATE, load_state_training_data

    if profile.data.vision_source == SIM_STATE:
        return load_state_training_data(profile, data_dir)
    data_dir = Path(data_dir if data_dir is not None else profile.data.path)
    if not data_dir.is_dir():
        raise UserError(f"data directory not found: {data_dir} (generate demonstrations with python -m clad_lite "
                        "generate, then python -m clad_lite embed; or pass --data)")
    cameras = tuple(profile.data.cameras)
    cache_dir = Path(cache_dir) if cache_dir is not None else find_cache_dir(data_dir, profile.encoder.embed_dim, cameras)
    files, arrays, encoder_hash, text = _cached_embeddings(profile, data_dir, cache_dir)
    extra = {}
    for folder in extra_sets(profile.data):  # recovery / dagger sets, embedded by the same encoder
        count = EXTRA_SETS[folder]
        set_dir = data_dir / folder
        if not set_dir.is_dir():
            raise UserError(f"data.{count} = {getattr(profile.data, count)}, but {set_dir} does not exist: "
                            "run python -m clad_lite pipeline with the same --set to generate and embed it")
        set_cache = find_cache_dir(set_dir, profile.encoder.embed_dim, cameras)
        more_files, more_arrays, set_hash, _ = _cached_embeddings(profile, set_dir, set_cache)
        if set_hash != encoder_hash:
            raise UserError(f"{set_cache} was embedded by encoder {set_hash[:16]}, {cache_dir} by "
                            f"{encoder_hash[:16]}: embed {set_dir} with the same encoder")
        files, arrays = files + more_files, {**arrays, **more_arrays}
        extra.update({f"{folder}_dir": str(set_dir), f"{folder}_cache_dir": str(set_cache),
                      f"{folder}_files": len(more_files)})
    try:
        dataset = WindowDataset(files, tau=profile.clad.horizon, proprio=profile.data.proprio, cameras=cameras,
                                embeddings=ArrayEmbeddings(arrays), text_embeddings=text,
                                future=profile.policy.chunk_length)
    except (KeyError, ValueError) as error:
        raise UserError(f"cannot build training windows from {data_dir}: {error}") from error
    return TrainingData(dataset, str(data_dir), str(cache_dir), encoder_hash, extra)


def _cached_embeddings(profile, data_dir: Path, cache_dir: Path):
    """The demonstration files of ``data_dir`` and every embedding of them from the cache in
    ``cache_dir``: (files, {(file name, demo, camera): (T, D) array}, encoder hash, text lookup)."""
    from clad_lite.cli import UserError
    from clad_lite.demos import hdf5 as H
    from clad_lite.encoders.cache import EmbeddingCache, StaleCacheError

    cameras = tuple(profile.data.cameras)
    try:
        cache = EmbeddingCache(cache_dir)
    except StaleCacheError as error:
        raise UserError(str(error)) from error
    with cache:
        if cache.embed_dim != profile.encoder.embed_dim:
            raise UserError(f"cache {cache_dir} has embed_dim={cache.embed_dim}, the profile's encoder.embed_dim "
                            f"is {profile.encoder.embed_dim}")
        missing = [c for c in cameras if c not in cache.cameras]
        if missing:
            raise UserError(f"cache {cache_dir} has no embeddings of cameras {missing}")
        files = H.find_demo_files([data_dir])
        stems = {Path(p).stem: Path(p) for p in files}
        not_cached = sorted(set(stems) - set(cache.files))
        if not_cached:
            raise UserError(f"cache {cache_dir} lacks {not_cached}: re-run python -m clad_lite embed --data {data_dir}")
        store_dtype = np.float16 if cache.index.get("dtype", "float16") == "float16" else np.float32
        arrays = {}
        for stem, path in stems.items():
            with H.DemoFile(path) as demo_file:
                lengths = demo_file.lengths()
            cached_demos = set(cache.demos(stem))
            for demo, length in lengths.items():
                if demo not in cached_demos:
                    raise UserError(f"cache {cache_dir} has no {stem}/{demo}: re-run python -m clad_lite embed")
                for camera in cameras:
                    frames = cache.frames(stem, demo, camera)
                    if len(frames) != length:
                        raise UserError(f"cache {cache_dir}: {stem}/{demo}/{camera} has {len(frames)} frames, the data "
                                        f"{length}: re-run python -m clad_lite embed --force")
                    arrays[(path.name, demo, camera)] = frames.astype(store_dtype)
        # the instruction embeddings, held in memory past the cache's closing
        text_table = {instruction: cache.text(instruction) for instruction in cache.instructions()}
    return files, arrays, cache.encoder_hash, text_table.__getitem__


# =========================================================================== config I/O
def profile_from_dict(data: dict):
    """Rebuild a ``Profile`` from ``Profile.to_dict()`` (e.g. a run's ``config.json``).

    A key this code does not know (a checkpoint written by a newer clad_lite, e.g. one with
    ``policy.prediction``) is an error, not silently dropped: dropping it would rebuild a different
    model, e.g. read an x0-predicting network as a noise predictor, and roll out garbage.
    """
    from clad_lite.config import ConfigError, Profile

    sections = {}
    for f in dataclasses.fields(Profile):
        if f.name == "name":
            continue
        cls = typing.get_type_hints(Profile)[f.name]
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(data[f.name]) - set(hints))
        if unknown:
            raise ConfigError(f"config keys {', '.join(f'{f.name}.{k}' for k in unknown)} are unknown to this "
                             "clad_lite (written by another version?); run it with the version that wrote it")
        sections[f.name] = cls(**{key: tuple(value) if typing.get_origin(hints[key]) is tuple else value
                                  for key, value in data[f.name].items()})
    return Profile(data["name"], **sections)


def _diff(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    norm = lambda x: list(x) if isinstance(x, tuple) else x  # noqa: E731
    return [] if norm(a) == norm(b) else [f"{prefix[:-1]}: {norm(a)!r} -> {norm(b)!r}"]


# =========================================================================== checkpoints
def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                       float(np_state[4])),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _point_last(run_dir: Path, checkpoint: Path) -> None:
    """Make ``last.pt`` the newest checkpoint, atomically (a hard link; a copy where links fail)."""
    tmp = run_dir / f".{LAST}.{os.getpid()}.tmp"
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(checkpoint, tmp)
    except OSError:
        import shutil

        shutil.copyfile(checkpoint, tmp)
    os.replace(tmp, run_dir / LAST)


def _numbered_step(path: Path) -> int:
    return int(path.stem[len("ckpt_"):])


def newest_checkpoint(run_dir) -> Path | None:
    """The newest complete checkpoint of ``run_dir``, or None when it has none.

    Normally ``last.pt``. A checkpoint is saved as ``ckpt_XXXXXX.pt`` first and ``last.pt`` is
    re-pointed after it, so a kill between the two leaves ``last.pt`` one checkpoint behind (or
    absent): then the newest numbered file is the one to resume from.
    """
    run_dir = Path(run_dir)
    last = run_dir / LAST
    numbered = [p for p in run_dir.glob("ckpt_*.pt") if p.stem[len("ckpt_"):].isdigit()]
    if not numbered:
        return last if last.exists() else None
    top = max(numbered, key=_numbered_step)
    if not last.exists():
        return top
    if os.path.samefile(last, top):
        return last
    last_step = int(torch.load(last, map_location="cpu", weights_only=True, mmap=True)["step"])
    return top if _numbered_step(top) > last_step else last


def load_checkpoint(path, map_location="cpu") -> dict:
    """A training checkpoint (``RUN_DIR`` -> its :func:`newest_checkpoint`, or a ``.pt`` file)."""
    path = Path(path)
    if path.is_dir():
        path = newest_checkpoint(path) or path / LAST  # (the missing last.pt names the error)
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a clad_lite training checkpoint")
    checkpoint["path"] = str(path)
    return checkpoint


def checkpoint_weights(checkpoint: dict, weights: str = "auto") -> tuple[dict, str]:
    """(model state dict, "ema" | "raw") of a checkpoint.

    ``weights``: "auto" | "ema" | "raw", as :func:`~clad_lite.configuration_clad.resolve_weights`
    decides (the EMA is there when the run had ``stageN.ema_decay`` > 0).
    """
    from clad_lite.configuration_clad import resolve_weights

    ema = checkpoint.get("ema")
    try:
        which = resolve_weights(weights, ema is not None)
    except ValueError as error:
        raise ValueError(f"{checkpoint.get('path', 'the checkpoint')}: {error}") from error
    if which == "raw":
        return checkpoint["model"], "raw"
    # AveragedModel's state dict: the averaged module under "module." and its update count
    return {k[len("module."):]: v for k, v in ema.items() if k.startswith("module.")}, "ema"


def load_stage1(path, map_location="cpu"):
    """The frozen CLaD of a stage-1 run (``RUN_DIR`` or checkpoint file) and its checkpoint dict."""
    from clad_lite.clad import CLaD
    from clad_lite.configuration_clad import CLaDConfig

    checkpoint = load_checkpoint(path, map_location)
    if checkpoint["stage"] != 1:
        raise ValueError(f"{checkpoint['path']} is a stage-{checkpoint['stage']} checkpoint, not stage 1")
    clad = CLaD(CLaDConfig(**checkpoint["config"]["clad"]))
    clad.load_state_dict(checkpoint_weights(checkpoint, "auto")[0])  # the weight EMA when the run kept one
    return clad.freeze(), checkpoint


# =========================================================================== the run
@dataclass
class TrainResult:
    model: torch.nn.Module          # the trained model (unwrapped, on its device)
    step: int                       # optimizer steps done
    run_dir: Path
    written: list = field(default_factory=list)  # files this process wrote (empty on ranks > 0)
    seconds: float = 0.0            # wall time of this process's loop
    steps_done_here: int = 0        # steps this process ran (after a resume: fewer than ``step``)
    last_log: dict = field(default_factory=dict)
    ema: torch.nn.Module | None = None  # the weight EMA of ``model`` (``ema_decay`` > 0), else None


class _Writer:
    """Every file of the run goes through here; ranks > 0 write nothing."""

    def __init__(self, run_dir: Path, main: bool):
        self.run_dir, self.main, self.written = run_dir, main, []

    def json(self, name: str, obj) -> None:
        if self.main:
            path = self.run_dir / name
            tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(obj, indent=2, default=str))
            os.replace(tmp, path)
            self.written.append(str(path))

    def checkpoint(self, obj, step: int) -> None:
        if self.main:
            path = self.run_dir / f"ckpt_{step:06d}.pt"
            atomic_save(obj, path)
            _point_last(self.run_dir, path)
            self.written += [str(path), str(self.run_dir / LAST)]


class _CsvLog:
    def __init__(self, path: Path, columns: list[str], resume_step: int | None, main: bool):
        self.path, self.columns, self.main, self.handle = path, columns, main, None
        if not main:
            return
        rows = []
        if resume_step is not None and path.exists():  # keep complete rows up to the checkpoint
            with open(path, newline="") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header == columns:
                    for row in reader:
                        try:
                            [float(v) for v in row]  # a complete, parseable row (not cut by a kill)
                            if len(row) == len(columns) and int(row[0]) <= resume_step:
                                rows.append(row)
                        except ValueError:
                            continue
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", newline="") as handle:
            csv.writer(handle).writerows([columns, *rows])
        os.replace(tmp, path)
        self.handle = open(path, "a", newline="")
        self.writer = csv.writer(self.handle)

    def write(self, row: dict) -> None:
        if self.handle is not None:
            self.writer.writerow([_fmt(row[c]) for c in self.columns])
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def _fmt(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def plot_log(run_dir) -> Path | None:
    """``loss_curve.png`` from ``train_log.csv``: every loss component (log scale) and the lr."""
    run_dir = Path(run_dir)
    path = run_dir / LOG_NAME
    if not path.exists():
        return None
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    # a bare Figure (no pyplot): drawing it neither needs nor switches a backend, so training
    # from a notebook leaves its inline figures alone
    from matplotlib.figure import Figure

    steps = [int(r["step"]) for r in rows]
    loss_keys = [k for k in rows[0] if k not in ("step", "lr", "wall_time", "grad_norm", "mask_ratio")]
    fig = Figure(figsize=(7, 5.5))
    ax, ax_lr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for key in loss_keys:
        values = [float(r[key]) for r in rows]
        ax.plot(steps, values, label=key, linewidth=2.0 if key == "loss" else 1.0)
    if all(float(r[k]) > 0 for r in rows for k in loss_keys):
        ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    ax.set_title(run_dir.name)
    ax_lr.plot(steps, [float(r["lr"]) for r in rows], color="gray")
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    out = run_dir / CURVE_NAME
    tmp = run_dir / f".{CURVE_NAME}.{os.getpid()}.tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out)
    return out


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun / spawn."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(profile, stage: int, out, *, data_dir=None, cache_dir=None, clad=None, resume: bool = False,
          compile: bool = False, workers: int | None = None, progress: bool = True, device=None,
          data: TrainingData | None = None, overrides: list[str] | None = None) -> TrainResult:
    """Train stage 1 (CLaD) or stage 2 (policy) into ``out``; see the module docstring.

    ``data`` replaces the HDF5 + cache data set by any ``TrainingData`` whose dataset yields
    window dicts with embeddings. ``clad`` (stage 2): stage-1 run directory or checkpoint.
    Under torchrun (``WORLD_SIZE`` > 1) every process calls this; rank 0 writes the files.
    """
    from clad_lite.cli import UserError

    if stage not in (1, 2):
        raise UserError(f"--stage must be 1 or 2, got {stage}")
    rank, world, local_rank = _distributed()
    main = rank == 0
    if device is None:
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    run_dir = Path(out)
    train_cfg = profile.stage1 if stage == 1 else profile.stage2

    # ---------------------------------------------------------------- resume bookkeeping
    checkpoint = None
    newest = newest_checkpoint(run_dir)
    if newest is not None:
        if not resume:
            raise UserError(f"{run_dir} already holds a run ({newest.name}); pass --resume to continue it or choose another --out")
        checkpoint = load_checkpoint(newest)
        if checkpoint["stage"] != stage:
            raise UserError(f"{run_dir} holds a stage-{checkpoint['stage']} run, not stage {stage}")
        if checkpoint["world_size"] != world:
            print(f"warning: resuming a {checkpoint['world_size']}-process run with {world} processes: "
                  "the data order is kept but the run is not bitwise reproducible", file=sys.stderr)
    elif resume and main:
        print(f"note: no {LAST} in {run_dir} yet; starting from step 0", file=sys.stderr)

    # ---------------------------------------------------------------- frozen CLaD (stage 2)
    frozen_clad, clad_checkpoint_path = None, None
    if stage == 2 and profile.policy.uses_clad:
        if clad is None:
            raise UserError(f"stage 2 with policy.foresight={profile.policy.foresight!r} needs --clad RUN_DIR_OF_STAGE1 "
                            "(or --set policy.foresight=none)")
        try:
            frozen_clad, clad_ckpt = load_stage1(clad)
        except (FileNotFoundError, ValueError, KeyError) as error:
            raise UserError(f"--clad {clad}: {error}") from error
        # name the numbered file, not last.pt (which moves on if the stage-1 run is continued)
        numbered = Path(clad_ckpt["path"]).parent / f"ckpt_{clad_ckpt['step']:06d}.pt"
        clad_checkpoint_path = str((numbered if numbered.exists() else Path(clad_ckpt["path"])).resolve())
        if clad_ckpt["step"] < clad_ckpt["config"]["stage1"]["steps"] and main:
            print(f"warning: --clad {clad} is at step {clad_ckpt['step']} of {clad_ckpt['config']['stage1']['steps']}",
                  file=sys.stderr)
        c, p = frozen_clad.config, profile.policy
        mismatch = [f"{name}: clad {getattr(c, name)} vs policy {getattr(p, name)}"
                    for name in ("proprio_dim", "vision_dim", "language_dim", "action_dim", "horizon")
                    if getattr(c, name) != getattr(p, name)]
        if c.hidden_dim != p.foresight_dim:
            mismatch.append(f"clad.hidden_dim {c.hidden_dim} vs policy.foresight_dim {p.foresight_dim}")
        if mismatch:
            raise UserError(f"the stage-1 CLaD of {clad} does not fit this policy: {'; '.join(mismatch)}")
        if any(o.strip().startswith("clad.") for o in overrides or ()):
            raise UserError("clad.* settings are fixed by the stage-1 run in stage 2; set them when training stage 1")
        profile = dataclasses.replace(profile, clad=c)
        frozen_clad.to(device)

    if checkpoint is not None:
        # through profile_from_dict: fields added since the run was saved take their defaults
        changed = _diff(profile_from_dict(checkpoint["config"]).to_dict(), profile.to_dict())
        if changed:
            raise UserError(f"--resume with another configuration than {run_dir}/config.json: {'; '.join(changed)}")

    # ---------------------------------------------------------------- data
    if data is None:
        data = load_training_data(profile, data_dir, cache_dir)
    if frozen_clad is not None:
        stage1_hash = clad_ckpt.get("data", {}).get("encoder_hash")
        if stage1_hash and data.encoder_hash and stage1_hash != data.encoder_hash:
            raise UserError(f"the stage-1 run used embeddings of encoder {stage1_hash[:16]}, this data cache is "
                            f"{data.encoder_hash[:16]}: use the same encoder for both stages")
    n = len(data.dataset)
    if train_cfg.batch_size % world:
        raise UserError(f"batch_size={train_cfg.batch_size} is not divisible by the {world} processes")

    # ---------------------------------------------------------------- model, optimizer
    torch.manual_seed(train_cfg.seed)  # the same initial weights in every process
    if stage == 1:
        from clad_lite.clad import CLaD

        model = CLaD(profile.clad)
        loss_keys = STAGE1_LOSS_KEYS
    else:
        from clad_lite.policy import ForesightPolicy

        model = ForesightPolicy(profile.policy)
        loss_keys = STAGE2_LOSS_KEYS
    model.to(device).train()
    optimizer = torch.optim.AdamW(_param_groups(model, train_cfg.weight_decay), lr=train_cfg.lr,
                                  betas=(0.9, 0.999), fused=device.type == "cuda")
    from clad_lite.schedule import make_scheduler

    scheduler = make_scheduler(optimizer, train_cfg.warmup_steps, train_cfg.steps)
    ema = None
    if train_cfg.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        # theta_ema <- decay * theta_ema + (1 - decay) * theta; the first update copies theta
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(train_cfg.ema_decay), use_buffers=True)
    start, elapsed = 0, 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start, elapsed = int(checkpoint["step"]), float(checkpoint["elapsed"])
        rng = checkpoint["rng"]
        _set_rng_state(rng[rank] if rank < len(rng) else rng[0])
    else:
        # a different random stream per process (masks, diffusion noise), reproducible per seed
        torch.manual_seed(train_cfg.seed + 1 + rank)
        np.random.seed(train_cfg.seed + 1 + rank)
        random.seed(train_cfg.seed + 1 + rank)

    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # stage 1: the mask token / action encoder go unused at mask ratio 0 / 1
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=stage == 1)
    if compile:
        net = torch.compile(net)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else nullcontext

    # ---------------------------------------------------------------- files
    writer = _Writer(run_dir, main)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob(".*.tmp*"):
            stale.unlink(missing_ok=True)
    writer.json("config.json", profile.to_dict())
    run_info = {"stage": stage, "data": {"data_dir": data.data_dir, "cache_dir": data.cache_dir,
                                         "encoder_hash": data.encoder_hash, "windows": n, **data.extra},
                "clad_checkpoint": clad_checkpoint_path, "world_size": world, "device": str(device),
                "torch": torch.__version__, "compile": bool(compile)}
    writer.json("run.json", run_info)
    extra_cols = ["grad_norm", "lr"] + (["mask_ratio"] if stage == 1 else []) + ["wall_time"]
    log = _CsvLog(run_dir / LOG_NAME, ["step", *loss_keys, *extra_cols], start if checkpoint is not None else None, main)

    # ---------------------------------------------------------------- data loader
    sampler = StepBatchSampler(n, train_cfg.batch_size, profile.data.seed + train_cfg.seed, start, train_cfg.steps,
                               rank, world)
    workers = profile.data.workers if workers is None else workers
    loader = torch.utils.data.DataLoader(
        data.dataset, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=False, generator=torch.Generator().manual_seed(0))  # keeps the global RNG untouched

    def save(step: int) -> None:
        rng_states = [_rng_state()]
        if world > 1:
            import torch.distributed as dist

            rng_states = [None] * world
            dist.all_gather_object(rng_states, _rng_state())
        writer.checkpoint({
            "format": CHECKPOINT_FORMAT, "stage": stage, "step": step, "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_states,
            "sampler": {"seed": sampler.seed, "position": step * train_cfg.batch_size, "n": n,
                        "global_batch": train_cfg.batch_size},
            "config": profile.to_dict(), "elapsed": elapsed + (time.perf_counter() - t0), "world_size": world,
            "clad_checkpoint": clad_checkpoint_path, "data": run_info["data"],
        }, step)

    # ---------------------------------------------------------------- loop
    from tqdm.auto import tqdm

    bar = tqdm(total=train_cfg.steps, initial=start, disable=not (main and progress), desc=f"stage {stage}",
               unit="step", dynamic_ncols=True, file=sys.stderr)
    t0 = time.perf_counter()
    sums, count, mask_ratio, last_log = None, 0, 0.0, {}
    trainable = [p for p in model.parameters() if p.requires_grad]
    step = start
    for step_index, window_batch in zip(range(start, train_cfg.steps), loader):
        batch = model_batch(window_batch, profile.data.cameras, device)
        with autocast():
            if stage == 1:
                # = forward(batch, progress=step_index / steps); a python float that takes few values
                mask_ratio = model.config.mask_ratio_at(step_index / train_cfg.steps, training=True)
                outputs = net(batch, mask_ratio=mask_ratio)
                losses = [outputs[k] for k in loss_keys]
            else:
                batch = jitter_observations(batch, profile.policy.obs_noise)  # 0: unchanged
                foresight = None
                if frozen_clad is not None:
                    with torch.no_grad():
                        f = frozen_clad.foresight(batch)
                    foresight = (f.proprio.float(), f.semantic.float())
                losses = [net(batch, foresight=foresight)]
        optimizer.zero_grad(set_to_none=True)
        losses[0].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, train_cfg.grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        if stage == 1:
            model.update_ema()  # eq. 14
        if ema is not None:
            ema.update_parameters(model)
        step = step_index + 1
        values = torch.stack([*(v.detach().float() for v in losses), grad_norm.detach().float()])
        sums = values if sums is None else sums + values
        count += 1
        bar.update(1)
        if step % train_cfg.log_every == 0 or step == train_cfg.steps:
            if world > 1:
                import torch.distributed as dist

                dist.all_reduce(sums)
                sums /= world
            means = (sums / count).tolist()
            last_log = {"step": step, **dict(zip(loss_keys, means[:-1])), "grad_norm": means[-1], "lr": lr,
                        "mask_ratio": float(mask_ratio), "wall_time": elapsed + time.perf_counter() - t0}
            log.write(last_log)
            bar.set_postfix(loss=f"{means[0]:.4f}", lr=f"{lr:.2e}")
            sums, count = None, 0
        if step % train_cfg.checkpoint_every == 0 or step == train_cfg.steps:
            save(step)
    bar.close()
    log.close()
    seconds = time.perf_counter() - t0
    if checkpoint is not None and start >= train_cfg.steps and main:
        print(f"note: {run_dir} is already complete ({start} steps)", file=sys.stderr)
    if main:
        plot_log(run_dir)
        writer.written.append(str(run_dir / CURVE_NAME))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(model, step, run_dir, writer.written, seconds, step - start, last_log,
                       ema.module if ema is not None else None)


# =========================================================================== CLI
def run(args) -> int:
    from clad_lite.cli import UserError
    from clad_lite.config import ConfigError, apply_overrides, get_profile

    if args.threads:
        torch.set_num_threads(args.threads)
    run_dir = Path(args.out)
    saved, info_path = run_dir / "config.json", run_dir / "run.json"
    resuming = args.resume and saved.exists()
    try:
        # --resume: the run's own configuration (and data), unless --profile names another one
        base = profile_from_dict(json.loads(saved.read_text())) if resuming and args.profile is None \
            else get_profile(args.profile)
        profile = apply_overrides(base, args.set or [])
    except ConfigError as error:
        raise UserError(str(error)) from error
    info = json.loads(info_path.read_text()) if resuming and info_path.exists() else {}
    data_dir = args.data if args.data is not None else info.get("data", {}).get("data_dir")
    cache_dir = args.cache if args.cache is not None else info.get("data", {}).get("cache_dir")
    stage = args.stage
    if stage is None:
        if not (args.resume and newest_checkpoint(run_dir) is not None):
            raise UserError("--stage 1|2 is required (it may be omitted only with --resume of an existing run)")
        stage = load_checkpoint(run_dir)["stage"]
    clad = args.clad if args.clad is not None else info.get("clad_checkpoint")
    result = train(profile, stage, run_dir, data_dir=data_dir, cache_dir=cache_dir, clad=clad, resume=args.resume,
                   compile=args.compile, workers=args.workers, progress=not args.no_progress, overrides=args.set)
    if result.written:  # rank 0
        rate = result.steps_done_here / result.seconds if result.seconds > 0 else float("nan")
        print(json.dumps({"run_dir": str(run_dir), "stage": stage, "step": result.step,
                          "steps_this_run": result.steps_done_here, "seconds": round(result.seconds, 2),
                          "steps_per_s": round(rate, 2), "last_log": result.last_log}, indent=2))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train stage 1 (CLaD) or stage 2 (the foresight policy) on cached embeddings",
        description="Train CLaD (stage 1) or the foresight-conditioned diffusion policy (stage 2). "
                    "Resumable (--resume), multi-GPU with torchrun.")
    parser.add_argument("--stage", type=int, choices=(1, 2), help="1 = CLaD, 2 = policy")
    parser.add_argument("--profile", default=None, help="ci | cpu | paper (default: $CLAD_PROFILE, else cpu)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override one profile value, e.g. stage1.steps=100, policy.foresight=none (repeatable)")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--data", default=None, help="directory of HDF5 demonstrations + embedding cache "
                                                     "(default: the profile's data.path)")
    parser.add_argument("--cache", default=None, help="embedding-cache folder (default: the one under DATA/embeddings)")
    parser.add_argument("--clad", default=None, help="stage 2: the stage-1 run directory (or checkpoint file)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: data.workers)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


__all__ = ["train", "model_batch", "jitter_observations", "StepBatchSampler", "load_training_data", "load_checkpoint", "load_stage1",
           "checkpoint_weights",
           "plot_log", "profile_from_dict", "TrainResult", "TrainingData", "register"]
