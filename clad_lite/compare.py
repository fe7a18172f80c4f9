"""Paired comparison of two evaluations rolled out from the same initial states.

Two ``eval`` runs with the same suite, tasks and init states give *paired* outcomes: episode i of
task t starts from the same LIBERO init state in both, so the question "is B better than A?" is
answered by the discordant pairs only (episodes one variant solves and the other does not), not by
two independent binomials. At 100 rollouts per variant this is what separates a real 10-point gain
from the ≈ 8-point spread between training runs::

    python -m clad_lite compare runs/a/eval_policy runs/b/eval_policy [--json out.json]

For n pairs with ``both`` solved by both, ``only_a`` by A alone and ``only_b`` by B alone:

* difference  θ = (only_b - only_a) / n  (B's success rate minus A's);
* exact McNemar test: under "no difference", only_b ~ Binomial(only_a + only_b, 1/2);
* 95% interval for θ: Newcombe's (1998, method 10) square-and-add interval for paired proportions,
  two Wilson intervals combined with the pairs' continuity-corrected correlation φ (with φ = 0 it
  is the unpaired square-and-add interval).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from scipy.stats import binomtest

from clad_lite.evaluate import EPISODES_NAME, RESULTS_NAME, Z95, _user_error, read_episode_log, wilson_interval

# protocol settings that describe *how* an evaluation ran; printed when A and B differ
_SETTING_KEYS = ("checkpoint", "step", "max_steps", "query_every", "temporal_ensembling", "start_actions",
                 "weights", "gripper_hysteresis", "action_samples", "sampler", "sampling_steps", "init_states")


def _protocol_settings(results: dict) -> dict:
    """results.json's protocol, with the sampler that files from before ``eval --sampler`` used: DDPM's
    ancestral steps, all of the policy's diffusion steps."""
    protocol = dict(results.get("protocol", {}))
    if "sampler" not in protocol:
        protocol["sampler"] = "ddpm"
        protocol["sampling_steps"] = results.get("provenance", {}).get("config", {}).get("policy", {}).get("diffusion_steps")
    return protocol


def newcombe_paired_interval(both: int, only_a: int, only_b: int, neither: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's method-10 interval for p_b - p_a from a paired 2x2 table of counts."""
    n = both + only_a + only_b + neither
    if n <= 0:
        return -1.0, 1.0
    p_b, p_a = (both + only_b) / n, (both + only_a) / n
    l_b, u_b = wilson_interval(both + only_b, n, z)
    l_a, u_a = wilson_interval(both + only_a, n, z)
    # φ: correlation of the two outcomes over pairs, continuity-corrected as Newcombe recommends
    # (0 when a margin is empty or the cross-product excess is within n/2)
    margins = (both + only_b) * (only_a + neither) * (both + only_a) * (only_b + neither)
    excess = both * neither - only_a * only_b
    corrected = excess - n / 2 if excess > n / 2 else (excess if excess < 0 else 0.0)
    phi = corrected / math.sqrt(margins) if margins > 0 else 0.0
    delta = math.sqrt(max((p_b - l_b) ** 2 - 2 * phi * (p_b - l_b) * (u_a - p_a) + (u_a - p_a) ** 2, 0.0))
    epsilon = math.sqrt(max((u_b - p_b) ** 2 - 2 * phi * (u_b - p_b) * (p_a - l_a) + (p_a - l_a) ** 2, 0.0))
    theta = p_b - p_a
    return max(-1.0, theta - delta), min(1.0, theta + epsilon)


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value (1.0 without discordant pairs)."""
    discordant = only_a + only_b
    return 1.0 if discordant == 0 else float(binomtest(only_b, discordant, 0.5).pvalue)


def paired_counts(pairs: list[tuple[bool, bool]]) -> dict:
    """(success in A, success in B) per pair -> counts, difference, interval and p-value."""
    both = sum(a and b for a, b in pairs)
    only_a = sum(a and not b for a, b in pairs)
    only_b = sum(b and not a for a, b in pairs)
    n = len(pairs)
    neither = n - both - only_a - only_b
    lo, hi = newcombe_paired_interval(both, only_a, only_b, neither)
    return {"pairs": n, "a": both + only_a, "b": both + only_b, "both": both, "only_a": only_a, "only_b": only_b,
            "difference": (only_b - only_a) / n if n else None, "ci95": [lo, hi],
            "mcnemar_p": mcnemar_exact_p(only_a, only_b)}


def recorded_outcomes(results: dict) -> dict[tuple[int, int], bool]:
    """results.json -> ``{(task_id, episode): success}`` from ``per_task[i]["episode_success"]``; tasks
    whose per-episode successes were not recorded contribute nothing."""
    return {(int(task["task_id"]), episode): bool(success) for task in results.get("per_task", [])
            for episode, success in enumerate(task.get("episode_success") or [])}


def same_init_states(results_a: dict, results_b: dict) -> bool:
    """Whether two evaluations started their episodes from the same states (``protocol.init_states``),
    the condition for pairing their episodes by (task, episode)."""
    return results_a.get("protocol", {}).get("init_states") == results_b.get("protocol", {}).get("init_states")


def load_evaluation(path) -> tuple[dict, list[dict]]:
    """An eval directory or a results.json file -> (results, episode records).

    The records come from the directory's episodes.jsonl when it is there, else from the per-episode
    successes that results.json keeps (``per_task[i]["episode_success"]``), so committed results files
    (``figures/results/*.json``) pair without their run folders.
    """
    path = Path(path)
    results_path = path if path.suffix == ".json" else path / RESULTS_NAME
    if not results_path.is_file():
        raise _user_error(f"{results_path} not found: pass an evaluation directory written by "
                          "`python -m clad_lite eval` or its results.json")
    try:
        results = json.loads(results_path.read_text())
    except json.JSONDecodeError as error:
        raise _user_error(f"{results_path} is not valid JSON ({error})") from None
    episodes_path = results_path.parent / EPISODES_NAME
    if path.suffix != ".json" and episodes_path.is_file():
        records = read_episode_log(episodes_path, repair=False)
    else:
        records = [{"task_id": task, "episode": episode, "success": success}
                   for (task, episode), success in recorded_outcomes(results).items()]
    if not records:
        raise _user_error(f"no episode outcomes in {results_path.parent}: neither {EPISODES_NAME} nor per-episode "
                          "successes in results.json (written by evaluations before they were recorded)")
    return results, records


def _flat_config(config: dict) -> dict:
    """``{"policy": {"prediction": "sample"}}`` -> ``{"policy.prediction": "sample"}`` (one level of sections)."""
    return {f"{section}.{key}": value for section, values in config.items() if isinstance(values, dict)
            for key, value in values.items()}


def compare(path_a, path_b) -> dict:
    """Pair the episodes of two evaluations by (task, episode) and compare them, per task and pooled."""
    results_a, records_a = load_evaluation(path_a)
    results_b, records_b = load_evaluation(path_b)
    if results_a.get("suite") != results_b.get("suite"):
        raise _user_error(f"different suites: {path_a} is {results_a.get('suite')!r}, {path_b} is {results_b.get('suite')!r}")
    if not same_init_states(results_a, results_b):
        init_a, init_b = (r.get("protocol", {}).get("init_states") for r in (results_a, results_b))
        raise _user_error(f"the evaluations start from different states, so their episodes do not pair:\n"
                          f"  {path_a}: {init_a}\n  {path_b}: {init_b}")
    outcome_a = {(int(r["task_id"]), int(r["episode"])): bool(r["success"]) for r in records_a}
    outcome_b = {(int(r["task_id"]), int(r["episode"])): bool(r["success"]) for r in records_b}
    keys = sorted(outcome_a.keys() & outcome_b.keys())
    if not keys:
        raise _user_error(f"no episode (task, index) is in both {path_a} and {path_b}")
    per_task = []
    for task in sorted({t for t, _ in keys}):
        pairs = [(outcome_a[k], outcome_b[k]) for k in keys if k[0] == task]
        per_task.append({"task_id": task, **paired_counts(pairs)})
    pooled = paired_counts([(outcome_a[k], outcome_b[k]) for k in keys])
    settings_a, settings_b = (_protocol_settings(r) for r in (results_a, results_b))
    differences = {key: [settings_a.get(key), settings_b.get(key)] for key in _SETTING_KEYS
                   if settings_a.get(key) != settings_b.get(key)}
    # and how the two policies were made: the profile values (section.key) that differ
    config_a, config_b = (_flat_config(r.get("provenance", {}).get("config", {})) for r in (results_a, results_b))
    differences |= {key: [config_a.get(key), config_b.get(key)] for key in sorted(config_a.keys() | config_b.keys())
                    if key != "eval.action_samples" and config_a.get(key) != config_b.get(key)}
    return {"a": str(path_a), "b": str(path_b), "suite": results_a.get("suite"), "per_task": per_task, "pooled": pooled,
            "unpaired_episodes": {"a": len(outcome_a) - len(keys), "b": len(outcome_b) - len(keys)},
            "settings_that_differ": differences}


def format_comparison(report: dict) -> str:
    """A :func:`compare` report as a markdown table (reads as plain text in a terminal too)."""
    from clad_lite.reports import markdown_table

    def row(label, c):
        lo, hi = c["ci95"]
        return [label, c["pairs"], c["a"], c["b"], c["only_a"], c["only_b"],
                f"{100 * c['difference']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]", f"{c['mcnemar_p']:.3f}"]

    headers = ["task", "pairs", "A", "B", "only A", "only B", "B - A, points [95% CI]", "McNemar p"]
    rows = [row(str(t["task_id"]), t) for t in report["per_task"]] + [row("**all**", report["pooled"])]
    lines = [f"A = `{report['a']}`  ", f"B = `{report['b']}`"]
    lines += [f"* {key}: A `{value_a!r}`, B `{value_b!r}`" for key, (value_a, value_b) in report["settings_that_differ"].items()]
    unpaired = report["unpaired_episodes"]
    if unpaired["a"] or unpaired["b"]:
        lines.append(f"* left out (no partner): {unpaired['a']} episodes of A, {unpaired['b']} of B")
    return "\n".join(lines) + "\n\n" + markdown_table(headers, rows)


def run(args) -> int:
    report = compare(args.a, args.b)
    print(format_comparison(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="paired comparison of two evaluations from the same init states (exact McNemar)",
        description="Pair two evaluations' episodes by (task, episode): success counts, B - A with Newcombe's "
                    "paired 95%% interval and the exact McNemar p-value, per task and pooled.")
    parser.add_argument("a", help="evaluation directory A (holds results.json and episodes.jsonl)")
    parser.add_argument("b", help="evaluation directory B")
    parser.add_argument("--json", default=None, help="also write the report as JSON to this path")
    parser.set_defaults(func=run)


__all__ = ["compare", "format_comparison", "load_evaluation", "mcnemar_exact_p", "newcombe_paired_interval",
           "paired_counts", "register"]
