"""``python -m clad_lite bench --config NAME [--device cpu|cuda] [--json]``: the efficiency figures (tables 2-3).

What is measured, on randomly initialised models of the preset's sizes (weights do not change
the cost) and batch size 1, as in closed-loop control:

* ``params``              - trainable parameters per module: ``clad`` (stage 1, EMA targets
  excluded, as ``python -m clad_lite params``), ``policy`` (stage 2), their top-level
  submodules, and the frozen encoder (``frozen_encoder``, not trainable; the image tower is what
  runs in the control loop, the text tower runs once per episode).
* ``planning_latency_ms`` - stage 1: ``CLaD.foresight`` on one state (the paper's 12 ms).
* ``policy_chunk_ms``     - stage 2: ``ForesightPolicy.sample_actions`` (all DDPM steps) given
  the foresight, for one chunk of τ actions.
* ``encoder_ms``          - the frozen image encoder on the current frame of every camera.
* ``control_loop_ms``     - encoder + CLaD + policy for one query (one chunk).
* ``control_hz``          - executed actions per second = τ / control_loop_ms (the chunk runs
  open-loop; the paper's 25 Hz). The simulator and rendering are not included.
* ``peak_memory_mb``      - CUDA: ``torch.cuda.max_memory_allocated`` over the whole benchmark
  (models + activations). CPU: growth of the process's peak resident set size while building
  the models and running the benchmark (an upper bound that includes allocator slack).

Each latency is the median of ``repeats`` timed runs after ``warmup`` untimed ones, under
``torch.inference_mode``; on CUDA every run is bracketed by ``torch.cuda.synchronize``.

Encoders: ``ci`` / ``cpu`` use DecisionNCE-lite (``clad_lite.encoders.lite``) with random
weights; ``paper`` uses the CLIP RN50 image tower of ``clad_lite.encoders.clip_rn50`` with random
weights (the real DecisionNCE weights cannot be downloaded here; the architecture, hence the
cost, is the same). The output's ``notes`` say so.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import time

from clad_lite.cli import UserError

DEFAULT_REPEATS = {"ci": 30, "cpu": 20, "paper": 10}


def _rss_peak_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _build_encoder(profile, device):
    """(encoder with ``encode_images``, frozen parameter count, note)."""
    import torch

    config = profile.encoder
    if config.kind == "decisionnce":
        from clad_lite.encoders.clip_rn50 import CLIP, CLIPConfig, DecisionNCEEncoder

        torch.manual_seed(0)
        clip = CLIP(CLIPConfig())

        class _NoTokenizer:  # the text tower is not part of the control loop
            vocab_size = clip.vocab_size

        encoder = DecisionNCEEncoder(clip, _NoTokenizer(), digest="random-weights").to(device)
        count = sum(p.numel() for p in clip.parameters())
        note = ("frozen encoder: CLIP RN50 architecture (clad_lite.encoders.clip_rn50) with RANDOM weights; "
                "the real DecisionNCE weights are not available here; the cost is the same")
        return encoder, count, note
    from clad_lite.encoders.lite import DecisionNCELite, LiteEncoder, count_parameters

    torch.manual_seed(0)
    encoder = LiteEncoder(DecisionNCELite(config)).to(device)
    note = (f"frozen encoder: DecisionNCE-lite ({config.widths} x {config.blocks} at {config.image_size} px, "
            f"E={config.embed_dim}) with random weights; its count includes the frozen all-MiniLM-L6-v2 text base, "
            "which runs once per episode, not in the control loop")
    return encoder, count_parameters(config), note


def _timer(device):
    import torch

    def measure(fn, warmup: int, repeats: int) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - start) * 1000.0)
        return statistics.median(times)

    return measure


def _children(module, skip=()) -> dict:
    out = {}
    for name, child in module.named_children():
        if name in skip:
            continue
        count = sum(p.numel() for p in child.parameters())
        if count:
            out[name] = count
    for name, param in module.named_parameters(recurse=False):
        out[name] = param.numel()
    return out


def bench(config_name: str, device: str = "cpu", *, repeats: int | None = None, warmup: int = 3,
          threads: int | None = None) -> dict:
    """Measure the preset ``config_name`` (ci | cpu | paper) on ``device``; returns the JSON dict."""
    import torch

    from clad_lite.clad import CLaD, make_dummy_batch
    from clad_lite.config import ConfigError, get_profile
    from clad_lite.policy import ForesightPolicy
    from clad_lite.provenance import device_description, git_sha, package_versions

    try:
        profile = get_profile(config_name)
    except ConfigError as error:
        raise UserError(str(error)) from error
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise UserError(f"--device must be cpu or cuda, got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA device here")
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    repeats = repeats or DEFAULT_REPEATS.get(config_name, 10)
    measure = _timer(dev)

    rss_before = _rss_peak_mb()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    torch.manual_seed(0)
    clad = CLaD(profile.clad).freeze().to(dev)
    policy = ForesightPolicy(profile.policy).to(dev).eval()
    encoder, encoder_params, encoder_note = _build_encoder(profile, dev)

    generator = torch.Generator().manual_seed(0)
    batch = make_dummy_batch(profile.clad, 1, generator=generator, device=dev)
    size = profile.data.image_size
    cameras = tuple(profile.data.cameras)
    frames = {c: torch.randint(0, 256, (1, size, size, 3), dtype=torch.uint8, generator=generator) for c in cameras}
    sample_generator = torch.Generator(device=dev).manual_seed(0)

    def encode():
        return torch.cat([encoder.encode_images(frames[c], camera=c) for c in cameras], dim=-1)

    def plan():
        return clad.foresight(batch)

    with torch.inference_mode():
        foresight = clad.foresight(batch)
        condition = (foresight.proprio, foresight.semantic)

        def chunk():
            return policy.sample_actions(batch, foresight=condition if profile.policy.uses_clad else None,
                                         generator=sample_generator)

        def control():
            vision = encode()
            step_batch = dict(batch, vision=vision)  # n_cameras x E = vision_dim (checked by the profile)
            f = clad.foresight(step_batch)
            return policy.sample_actions(step_batch, foresight=(f.proprio, f.semantic) if profile.policy.uses_clad
                                         else None, generator=sample_generator)

        planning_ms = measure(plan, warmup, repeats)
        chunk_ms = measure(chunk, warmup, repeats)
        encoder_ms = measure(encode, warmup, repeats)
        control_ms = measure(control, warmup, repeats)

    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(dev) / 2**20
        memory_note = "torch.cuda.max_memory_allocated (models + activations, batch 1)"
    else:
        peak_mb = max(_rss_peak_mb() - rss_before, 0.0)
        memory_note = ("CPU: growth of the process's peak resident set size (ru_maxrss) while building the models "
                       "and running the benchmark; includes allocator slack and first-use library buffers")
    tau = profile.policy.horizon
    clad_count = clad.num_parameters(include_targets=False)
    policy_count = policy.num_parameters()
    targets = {"f_p_target", "f_s_target", "film_target"}
    result = {
        "config": config_name,
        "device": str(dev),
        "device_description": device_description() if dev.type == "cuda" else
        f"{device_description().split(',')[0]}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "params": {
            "clad": clad_count,
            "policy": policy_count,
            "trainable_total": clad_count + policy_count,
            "frozen_encoder": encoder_params,
            "total_with_encoder": clad_count + policy_count + encoder_params,
            "clad_modules": _children(clad, skip=targets),
            "policy_modules": _children(policy),
            "clad_ema_targets_excluded": clad.num_parameters(include_targets=True) - clad_count,
        },
        "peak_memory_mb": round(peak_mb, 1),
        "planning_latency_ms": round(planning_ms, 3),
        "policy_chunk_ms": round(chunk_ms, 3),
        "encoder_ms": round(encoder_ms, 3),
        "control_loop_ms": round(control_ms, 3),
        "control_hz": round(tau * 1000.0 / control_ms, 2),
        "tau": tau,
        "diffusion_steps": profile.policy.diffusion_steps,
        "cameras": list(cameras),
        "image_size": size,
        "batch_size": 1,
        "repeats": repeats,
        "warmup": warmup,
        "statistic": "median",
        "notes": [
            "randomly initialised models of the preset's sizes (weights do not change the cost)",
            encoder_note,
            "control_hz = τ executed actions per (encoder + CLaD + policy) query; simulator and rendering excluded",
            memory_note,
        ],
        "provenance": {"git_sha": git_sha(), "versions": {k: v for k, v in package_versions().items()
                                                          if k in ("python", "torch", "numpy", "clad_lite")}},
    }
    return result


def run(args) -> int:
    result = bench(args.config, args.device, repeats=args.repeats, warmup=args.warmup, threads=args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    p = result["params"]
    print(f"bench {result['config']} on {result['device_description']} (median of {result['repeats']}, batch 1)")
    print(f"  params       CLaD {p['clad']:,}  policy {p['policy']:,}  trainable {p['trainable_total']:,}  "
          f"frozen encoder {p['frozen_encoder']:,}")
    print(f"  planning     {result['planning_latency_ms']:.2f} ms   (CLaD foresight)")
    print(f"  policy chunk {result['policy_chunk_ms']:.2f} ms   ({result['diffusion_steps']} DDPM steps, τ={result['tau']})")
    print(f"  encoder      {result['encoder_ms']:.2f} ms   ({len(result['cameras'])} cameras)")
    print(f"  control      {result['control_loop_ms']:.2f} ms per query -> {result['control_hz']:.1f} Hz")
    print(f"  peak memory  {result['peak_memory_mb']:.1f} MB")
    for note in result["notes"]:
        print(f"  note: {note}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="parameters, memory, planning latency and control rate of a preset",
                                   description="Measure a model preset (random weights): params, peak memory, "
                                               "planning latency, policy chunk time, control Hz.")
    parser.add_argument("--config", required=True, help="ci | cpu | paper")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per figure (default by preset)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.set_defaults(func=run)


__all__ = ["bench", "register"]
