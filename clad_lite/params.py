"""``python -m clad_lite params --config NAME [--json]``: parameter counts of a model preset.

Counts, as the paper's sec. 5.1 splits them (VLM 0.1B + CLaD 0.33B + policy 0.23B = 0.66B):

* ``clad``   - trainable parameters of stage 1 (eq. 5-19). The EMA target copies of f_p, f_s
               and the FiLM (eq. 14-16) are EXCLUDED: they are not trained, and the paper's
               0.33B only adds up without them.
* ``policy`` - trainable parameters of stage 2 (eq. 20-22), without the frozen CLaD.
* ``vlm``    - the frozen vision-language encoder, counted separately because it is frozen.
               If ``clad_lite.encoders`` provides ``frozen_encoder_parameters(name) -> int``
               (the encoder of that preset, counted from its module), that number is used.
               Otherwise, for ``paper``: 102,007,137 = OpenAI CLIP RN50 (the DecisionNCE
               backbone), counted by building CLIP's own ``model.py`` (clip-anytorch 2.6.0)
               with the RN50 hyper-parameters on the meta device (visual 38,316,896 + text
               63,690,241); the paper rounds it to 0.1B. For other presets without that hook
               it is ``null`` (unknown) and left out of ``total``.
* ``total``  - vlm + clad + policy.

Models are built on the ``meta`` device, so even the paper preset costs no memory.
"""

from __future__ import annotations

import json

from clad_lite.cli import UserError

# OpenAI CLIP RN50 (DecisionNCE's backbone), counted as described in the module docstring.
CLIP_RN50_PARAMETERS = 102_007_137


def vlm_parameters(name: str) -> tuple[int | None, str]:
    """(count or None, how it was obtained) for the frozen encoder of preset ``name``."""
    try:
        from clad_lite.encoders import frozen_encoder_parameters  # optional hook
    except ImportError:
        frozen_encoder_parameters = None
    if frozen_encoder_parameters is not None:
        count = frozen_encoder_parameters(name)
        if count is not None:
            return int(count), "counted from clad_lite.encoders"
    if name == "paper":
        return CLIP_RN50_PARAMETERS, "CLIP RN50 (DecisionNCE backbone), counted from CLIP's model.py"
    return None, "unknown: the in-house encoder does not report its size"


def parameter_counts(name: str) -> dict:
    """{"vlm", "clad", "policy", "total"} for ``MODEL_PRESETS[name]`` (EMA copies excluded)."""
    from clad_lite.clad import count_clad_parameters
    from clad_lite.configuration_clad import MODEL_PRESETS
    from clad_lite.policy import count_policy_parameters

    if name not in MODEL_PRESETS:
        raise UserError(f"unknown config {name!r}; expected one of {', '.join(MODEL_PRESETS)}")
    clad_config, policy_config = MODEL_PRESETS[name]
    vlm, _ = vlm_parameters(name)
    clad = count_clad_parameters(clad_config)
    policy = count_policy_parameters(policy_config)
    return {"vlm": vlm, "clad": clad, "policy": policy, "total": (vlm or 0) + clad + policy}


def _human(count: int | None) -> str:
    if count is None:
        return "unknown"
    return f"{count:>13,}  ({count / 1e9:.3f}B)" if count >= 1e8 else f"{count:>13,}  ({count / 1e6:.2f}M)"


def run(args) -> int:
    counts = parameter_counts(args.config)
    if args.json:
        print(json.dumps(counts))
        return 0
    _, vlm_source = vlm_parameters(args.config)
    print(f"parameters of the '{args.config}' models (trainable; EMA target copies excluded)")
    print(f"  vlm     {_human(counts['vlm'])}   frozen; {vlm_source}")
    print(f"  clad    {_human(counts['clad'])}   stage 1 (eq. 5-19)")
    print(f"  policy  {_human(counts['policy'])}   stage 2 (eq. 20-22), CLaD not included")
    print(f"  total   {_human(counts['total'])}" + ("   (vlm unknown, not included)" if counts["vlm"] is None else ""))
    if args.config == "paper":
        print("  paper:  vlm 0.1B, clad 0.33B, policy 0.23B, total 0.66B (sec. 5.1)")
    return 0


def register(subparsers) -> None:
    from clad_lite.configuration_clad import MODEL_PRESETS

    parser = subparsers.add_parser(
        "params", help="parameter counts (vlm, clad, policy, total) of a model preset",
        description="Trainable parameter counts of a model preset; the EMA target copies are excluded, "
                    "the frozen VLM is counted separately (see clad_lite/params.py).")
    parser.add_argument("--config", default="paper", metavar="NAME",
                        help=f"model preset: {', '.join(MODEL_PRESETS)} (default: paper)")
    parser.add_argument("--json", action="store_true",
                        help='print {"vlm": ..., "clad": ..., "policy": ..., "total": ...}')
    parser.set_defaults(func=run)
