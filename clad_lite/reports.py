"""The paper's tables 1-7 and figures 3-9, rebuilt from this project's own results files.

Used by ``notebooks/07_paper_tables.ipynb`` and ``notebooks/08_paper_figures.ipynb``.

House rules (DESIGN.md): every project number comes from a results file of a real run (its
path is printed as the provenance), success rates carry their rollout counts and 95% Wilson
intervals, and the paper's numbers (:mod:`clad_lite.paper_numbers`) only appear in columns
labelled ``paper``. Tables are plain markdown strings (no pandas).

Where results come from (:func:`find_results`): first a committed file
``figures/results/libero_10_<profile>[_<variant>].json``, else the pipeline's evaluation
``<pipeline out>/eval_<run>/results.json``; None when neither exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clad_lite import paper_numbers as P

MISSING = "—"


# =========================================================================== results files
def load_results(path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def find_results(variant: str, profile_name: str, pipeline_out=None, root=None, run: str | None = None
                 ) -> tuple[dict | None, str | None]:
    """(results dict, its path) of ``variant`` ("policy" = CLaD, "policy_only", "no_recon", ...), or (None, None).

    ``run``: the stage-2 run name under the pipeline folder (default ``variant``); its evaluation is
    ``eval_<run>/results.json``. Ablations of stage 1 name their policy ``policy_<variant>`` (a stage-1 run
    and a stage-2 run may not share a folder).
    """
    from clad_lite.config import project_root

    root = Path(root) if root is not None else Path(project_root())
    suffix = "" if variant in ("policy", "clad") else f"_{variant}"
    candidates = [root / "figures" / "results" / f"libero_10_{profile_name}{suffix}.json"]
    if pipeline_out is not None:
        candidates.append(Path(pipeline_out) / f"eval_{run or variant}" / "results.json")
    for path in candidates:
        results = load_results(path)
        if results is not None and results.get("per_task"):
            return results, str(path)
    return None, None


def pooled(results: dict) -> dict:
    """Successes, episodes, rate and Wilson interval pooled over the tasks of a results dict."""
    from clad_lite.evaluate import wilson_interval

    k = sum(int(t["successes"]) for t in results["per_task"])
    n = sum(int(t["episodes"]) for t in results["per_task"])
    lo, hi = wilson_interval(k, n) if n else (0.0, 1.0)
    return {"successes": k, "episodes": n, "rate": k / n if n else float("nan"), "ci95": (lo, hi),
            "tasks": len(results["per_task"])}


def fmt_rate(k: int, n: int, ci=None) -> str:
    """``50.0% [9.5, 90.5] (1/2)``: rate, 95% Wilson interval, successes/rollouts."""
    from clad_lite.evaluate import wilson_interval

    if not n:
        return MISSING
    lo, hi = ci if ci is not None else wilson_interval(k, n)
    return f"{100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] ({k}/{n})"


def markdown_table(headers, rows) -> str:
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _footer(profile_name: str, sources: dict) -> str:
    used = [f"`{name}`: {src}" for name, src in sources.items() if src]
    note = (f"\n\nProject columns: profile **{profile_name}**"
            + (" (a SMALL profile: tiny models, few rollouts - not comparable to the paper)" if profile_name != "paper"
               else "") + ". Intervals: 95% Wilson; (k/n) = successes/rollouts.")
    if used:
        note += " Sources: " + "; ".join(used) + "."
    return note


# =========================================================================== tables
def _task_name(task_id: int) -> str:
    """The paper's short name of a libero_10 task, else its number."""
    return P.TASK_NAMES[task_id] if task_id < len(P.TASK_NAMES) else str(task_id)


def table1(results: dict | None, profile_name: str, source: str | None = None) -> str:
    """Per-task success: the project's CLaD run next to the paper's columns."""
    paper = P.TABLE1
    by_task = {int(t["task_id"]): t for t in (results or {}).get("per_task", [])}
    headers = ["task", f"project CLaD ({profile_name})"] + [f"paper {c}" for c in paper["per_task"]]
    rows = []
    for i, name in enumerate(P.TASK_NAMES):
        t = by_task.get(i)
        mine = fmt_rate(t["successes"], t["episodes"], t.get("ci95")) if t else "not run"
        rows.append([f"{i + 1}. {name}", mine] + [f"{v:.1f}" for v in (col[i] for col in paper["per_task"].values())])
    if results:
        pool = pooled(results)
        avg = fmt_rate(pool["successes"], pool["episodes"], pool["ci95"]) + f" over {pool['tasks']} task(s)"
    else:
        avg = "no project run"
    rows.append(["Avg. SR", avg] + [f"{paper['average'][c]:.1f}" for c in paper["per_task"]])
    return (markdown_table(headers, rows) + _footer(profile_name, {"CLaD": source})
            + "\n\nPaper: † = 20 rollouts x top-3 checkpoints, ‡ = 50 rollouts, one checkpoint (percent).")


def episode_pairs(results_a: dict, results_b: dict) -> list[tuple[bool, bool]] | None:
    """(success in A, success in B) for every episode both results files ran from the same init
    state (``per_task[i]["episode_success"]``), or None when they do not pair: a file without
    per-episode successes, different init states, tasks or episode counts."""
    from clad_lite.compare import recorded_outcomes, same_init_states

    if not same_init_states(results_a, results_b):
        return None
    a, b = recorded_outcomes(results_a), recorded_outcomes(results_b)
    tasks = {int(t["task_id"]) for t in results_a["per_task"]}
    # every task of both files must have its episodes recorded, with the same counts
    if not a or a.keys() != b.keys() or {task for task, _ in a} != tasks:
        return None
    return [(a[key], b[key]) for key in sorted(a)]


def foresight_gain_table(clad: dict, baseline: dict, profile_name: str, sources: dict | None = None) -> str:
    """Per task: CLaD vs the policy-only baseline (same data and budget), and the difference.

    The gain is measured, not assumed: each rate carries its interval, and the pooled difference
    is given with its 95% interval: paired by init state (Newcombe's interval, ``clad_lite.compare``)
    when both files record each episode's success from the same init states, else the
    normal-approximation interval of a difference of two independent proportions.
    """
    a = {int(t["task_id"]): t for t in clad["per_task"]}
    b = {int(t["task_id"]): t for t in baseline["per_task"]}
    rows = []
    for i in sorted(set(a) | set(b)):
        ta, tb = a.get(i), b.get(i)
        diff = (f"{100 * (ta['successes'] / ta['episodes'] - tb['successes'] / tb['episodes']):+.0f}"
                if ta and tb and ta["episodes"] and tb["episodes"] else MISSING)
        rows.append([f"{i + 1}. {_task_name(i)}", fmt_rate(ta["successes"], ta["episodes"], ta.get("ci95")) if ta else "not run",
                     fmt_rate(tb["successes"], tb["episodes"], tb.get("ci95")) if tb else "not run", diff])
    pa, pb = pooled(clad), pooled(baseline)
    d = pa["rate"] - pb["rate"]
    pairs = episode_pairs(baseline, clad)
    if pairs is not None:
        from clad_lite.compare import paired_counts

        (lo, hi), how = paired_counts(pairs)["ci95"], " (paired)"
    else:
        se = float(np.sqrt(pa["rate"] * (1 - pa["rate"]) / max(pa["episodes"], 1)
                           + pb["rate"] * (1 - pb["rate"]) / max(pb["episodes"], 1)))
        (lo, hi), how = (d - 1.96 * se, d + 1.96 * se), ""
    rows.append(["Avg. SR", fmt_rate(pa["successes"], pa["episodes"], pa["ci95"]),
                 fmt_rate(pb["successes"], pb["episodes"], pb["ci95"]),
                 f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{how}"])
    headers = ["task", f"CLaD ({profile_name})", f"policy only ({profile_name})", "difference (points)"]
    return markdown_table(headers, rows) + _footer(profile_name, sources or {})


def committed_runs(profile_name: str, root=None) -> dict[str, tuple[dict, str]]:
    """Every committed evaluation of ``profile_name``: ``{label: (results, path)}`` from
    ``figures/results/libero_10_<profile>*.json`` (files with a ``per_task`` list; the label is
    the file name's tail, ``"main"`` for ``libero_10_<profile>.json``)."""
    from clad_lite.config import project_root

    folder = (Path(root) if root is not None else Path(project_root())) / "figures" / "results"
    stem = f"libero_10_{profile_name}"
    runs = {}
    for path in sorted(folder.glob(f"{stem}*.json")):
        results = load_results(path)
        if results and results.get("per_task") and results.get("profile") == profile_name:
            runs[path.stem[len(stem):].lstrip("_") or "main"] = (results, str(path))
    return runs


def _run_settings(results: dict) -> dict:
    """What a results file says about how its policy was made (from its provenance)."""
    provenance, protocol = results.get("provenance", {}), results.get("protocol", {})
    config = provenance.get("config", {})
    stage2, policy, data = (config.get(section, {}) for section in ("stage2", "policy", "data"))
    return {"foresight": policy.get("foresight", MISSING),
            # the proprioception the models read (clad_lite.demos.windows); files from before the
            # field existed used the paper's joint angles + velocities
            "proprio": data.get("proprio", "paper"),
            # what filled the vision slot (clad_lite.state_oracle) and how far apart the training windows were
            "vision": data.get("vision_source", "encoder"),
            "window_stride": data.get("image_stride"),
            # which scripted expert made the demonstrations (data.expert_motion); files from before the
            # field: the min-jerk expert
            "expert_motion": data.get("expert_motion", "min_jerk"),
            "demos_per_task": data.get("demos_per_task", 50),
            # recovery demonstrations per task added to training (data.recovery_demos; not the paper)
            "recovery_demos": int(data.get("recovery_demos", 0)),
            # on-policy recovery demonstrations per task (data.dagger_demos; not the paper)
            "dagger_demos": int(data.get("dagger_demos", 0)),
            "steps": stage2.get("steps"), "batch": stage2.get("batch_size"),
            "ema_decay": stage2.get("ema_decay", 0.0),
            # evaluations written before weights were recorded used the raw weights
            "weights": protocol.get("weights", "raw"),
            # how each executed chunk was drawn: the mean of N draws (eval --action-samples), and what the
            # denoiser predicts (policy.prediction); files from before either field: one draw of an eps model
            "action_samples": int(protocol.get("action_samples", 1)),
            # DDPM's ancestral steps (the paper; files from before the field) or deterministic DDIM (eval --sampler)
            "sampler": protocol.get("sampler", "ddpm"), "sampling_steps": protocol.get("sampling_steps"),
            "gripper_hysteresis": protocol.get("gripper_hysteresis"),
            # a query every q < tau steps executes only the first q actions of each chunk (eval --query-every)
            "query_every": protocol.get("query_every"),
            "replan_every": protocol.get("replan_every"),
            # ACT's temporal ensembling: the weighted mean of every chunk covering a step (eval --ensemble)
            "ensemble": bool(protocol.get("temporal_ensembling", False)),
            "prediction": policy.get("prediction", "epsilon"),
            # the policy also reads its past actions a^{t-tau:t} (policy.past_actions; not the paper)
            "past_actions": bool(policy.get("past_actions", False)),
            # Gaussian noise on the observations in stage-2 training (policy.obs_noise; not the paper)
            "obs_noise": float(policy.get("obs_noise", 0.0)),
            # the condition also FiLMs every residual block of the epsilon-network (policy.cond_injection)
            "cond_injection": policy.get("cond_injection", "input"),
            # the chunk also predicts actions beyond the tau it executes (policy.extra_actions; not the paper)
            "extra_actions": int(policy.get("extra_actions", 0)), "tau": policy.get("horizon", 6),
            # dropout in the epsilon-network's residual blocks (policy.dropout; the presets have none)
            "dropout": float(policy.get("dropout", 0.0)),
            # the stage-2 seed (initialisation, batch order, noise draws): shown only when it is not the
            # default, so that two trainings of one recipe tell apart
            "stage2_seed": stage2.get("seed"),
            "git": (provenance.get("git_sha") or MISSING)[:7]}


def _ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _vision_label(settings: dict) -> str:
    source = "sim state (oracle)" if settings["vision"] == "sim_state" else settings["vision"]
    stride = settings["window_stride"]
    label = source if stride is None else f"{source} (every {'step' if stride == 1 else f'{_ordinal(stride)} step'})"
    label += f", {settings['expert_motion']}-expert demos" if settings["expert_motion"] != "min_jerk" else ""
    label += f", {settings['demos_per_task']} demos/task" if settings["demos_per_task"] != 50 else ""
    label += f", + {settings['recovery_demos']} recovery demos/task" if settings["recovery_demos"] else ""
    return label + (f", + {settings['dagger_demos']} on-policy (DAgger) demos/task" if settings["dagger_demos"] else "")


def runs_table(runs: dict, profile_name: str) -> str:
    """One row per evaluated run (``{label: (results, source)}``, e.g. :func:`committed_runs`):
    its foresight, proprioception, vision source (the frozen encoder, or the privileged simulator state of
    ``clad_lite.state_oracle``) with the spacing of its training windows, stage-2 budget and weights read from
    the file's provenance, how each chunk was sampled (protocol), the pooled success
    with its Wilson interval and the successes per task. Rows by budget, then foresight."""
    from clad_lite.config import TrainConfig
    from clad_lite.demos.windows import PROPRIO_MODES, proprio_dim

    default_seed = TrainConfig.seed

    rows = []
    for label, (results, _) in runs.items():
        s, pool = _run_settings(results), pooled(results)
        budget = f"{s['steps'] // 1000}K x {s['batch']}" if s["steps"] and s["batch"] else MISSING
        weights = f"EMA {s['ema_decay']:g}" if s["weights"] == "ema" else "raw"
        sampling = ("x0-pred, " if s["prediction"] == "sample" else "") + (
            f"mean of {s['action_samples']} draws" if s["action_samples"] > 1 else "1 draw") + (
            f", DDIM {s['sampling_steps']} steps" if s["sampler"] == "ddim" else "") + (
            f", gripper latch {s['gripper_hysteresis']:g}" if s["gripper_hysteresis"] is not None else "") + (
            f", query every {s['query_every']}" if s["query_every"] not in (None, s["replan_every"]) else "") + (
            ", temporal ensembling" if s["ensemble"] else "")
        per_task = ",".join(str(int(t["successes"])) for t in sorted(results["per_task"], key=lambda t: t["task_id"]))
        rows.append(((s["steps"] or 0, s["foresight"] != "both", label),
                     [f"`{label}`", ("CLaD" if s["foresight"] == "both" else s["foresight"])
                      + (" + past actions" if s["past_actions"] else "")
                      + (f", obs. noise {s['obs_noise']:g}" if s["obs_noise"] else "")
                      + (", FiLM per block" if s["cond_injection"] == "every_block" else "")
                      + (f", chunk {s['tau'] + s['extra_actions']} (first {s['tau']} executed)" if s["extra_actions"] else "")
                      + (f", dropout {s['dropout']:g}" if s["dropout"] else "")
                      + (f", stage-2 seed {s['stage2_seed']}" if s["stage2_seed"] not in (None, default_seed) else ""),
                      f"{s['proprio']} ({proprio_dim(s['proprio'])}-D)" if s["proprio"] in PROPRIO_MODES else s["proprio"],
                      _vision_label(s), budget, weights, sampling,
                      fmt_rate(pool["successes"], pool["episodes"], pool["ci95"]), per_task, s["git"]]))
    headers = ["run", "foresight", "proprio", "vision (windows)", "stage 2 steps x batch", "weights", "sampling", "avg. SR",
               "successes per task (0-9)", "git"]
    body = [row for _, row in sorted(rows, key=lambda r: r[0])]
    return markdown_table(headers, body) + _footer(profile_name, {label: src for label, (_, src) in runs.items()})


def runs_figure(runs: dict, profile_name: str, target: float | None = None):
    """Every evaluated run (``{label: (results, source)}``, e.g. :func:`committed_runs`) as one row:
    pooled success with its 95% Wilson interval and (k/n), best at the top; blue = CLaD, orange = the
    policy-only baseline (other foresight ablations grey); squares = the privileged-state oracle
    (``clad_lite.state_oracle``), circles = the frozen encoder. Vertical lines: the paper's CLaD
    (its scale, labelled as the paper's) and ``target`` (percent) when given."""
    import matplotlib.pyplot as plt

    legend = {"both": ("CLaD", "tab:blue"), "none": ("policy only", "tab:orange")}  # foresight -> (name, colour)
    rows = sorted(((pooled(results), _run_settings(results), label) for label, (results, _) in runs.items()),
                  key=lambda row: (row[0]["rate"], row[2]))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.24 * len(rows)))
    for y, (pool, settings, label) in enumerate(rows):
        rate, (lo, hi) = 100 * pool["rate"], pool["ci95"]
        color = legend.get(settings["foresight"], (None, "tab:gray"))[1]
        ax.errorbar(rate, y, xerr=[[rate - 100 * lo], [100 * hi - rate]], color=color, capsize=2, lw=1,
                    marker="s" if settings["vision"] == "sim_state" else "o", markersize=4)
        ax.text(100 * hi + 1, y, f"{pool['successes']}/{pool['episodes']}", va="center", fontsize=7)
    paper = P.TABLE1["average"]["CLaD‡"]
    ax.axvline(paper, color="k", ls="--", lw=1, label=f"paper CLaD‡ {paper}% (its scale)")
    if target is not None:
        ax.axvline(target, color="tab:red", ls=":", lw=1, label=f"target of the {profile_name!r} profile, {target:g}%")
    ax.set_yticks(range(len(rows)), [label for _, _, label in rows], fontsize=7)
    ax.set_xlim(0, 105)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("average success on libero_10 (%), 95% Wilson interval")
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=name) for name, c in legend.values()]
    handles.append(plt.Line2D([], [], color="tab:gray", marker="s", ls="", label="privileged-state oracle"))
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=7, loc="lower right")
    ax.set_title(f"Every committed {profile_name!r} run ({len(rows)}), best at the top", fontsize=9)
    fig.tight_layout()
    return fig


def goal_table(results: dict, profile_name: str, source: str | None = None) -> str:
    """What limits success, per task: each BDDL goal predicate's count of episodes in which it
    ever held (``reached``) and held at the end (``final``), next to full success (the AND of them).

    Reads ``per_task[].goals`` (``clad_lite.evaluate.goal_counts``); evaluations made before goal
    tracking have none and show a dash.
    """
    rows = []
    for t in sorted(results["per_task"], key=lambda t: t["task_id"]):
        goals = t.get("goals") or []
        cells = [f"{g['predicate']}: {g['reached']}/{g['episodes']} ({g['final']})" for g in goals]
        rows.append([f"{t['task_id'] + 1}. {_task_name(t['task_id'])}", f"{t['successes']}/{t['episodes']}", "; ".join(cells) or MISSING])
    return (markdown_table(["task", "success", "goal predicates: reached/episodes (held at the end)"], rows)
            + _footer(profile_name, {"run": source}))


def _objects_cell(grasps: dict) -> str:
    return "; ".join(f"{name}: {o['held']}/{o['grasps']} held, {1000 * o['median_distance']:.0f} mm"
                     for name, o in grasps.get("by_object", {}).items()) or MISSING


def grasp_table(results: dict, profile_name: str, source: str | None = None, expert: dict | None = None,
                expert_source: str | None = None) -> str:
    """Grasp precision, per task: closes of the gripper, how many lifted the nearest movable object
    by 1 cm (``held``), and per object the median distance from the hand to the object's origin at
    the close (``clad_lite.grasp_log``). Evaluations made before grasp logging show a dash.

    ``expert``: an ``expert-eval --json`` file's contents; adds the scripted expert's closes and
    objects on its init states, the reference (it closes once per object it moves, and on handles)."""
    rows = []
    for t in sorted(results["per_task"], key=lambda t: t["task_id"]):
        grasps = t.get("grasps") or {}
        row = [f"{t['task_id'] + 1}. {_task_name(t['task_id'])}", f"{t['successes']}/{t['episodes']}",
               f"{grasps['held']}/{grasps['grasps']}" if grasps else MISSING, _objects_cell(grasps)]
        if expert is not None:
            reference = (expert.get("tasks", {}).get(str(t["task_id"])) or {})
            ref = reference.get("grasps") or {}
            row += [f"{reference['successes']}/{reference['attempts']}" if reference else MISSING,
                    f"{ref['held']}/{ref['grasps']}" if ref else MISSING, _objects_cell(ref)]
        rows.append(row)
    headers = ["task", "success", "grasps held/closes", "per object: held/closes, median hand-object distance at the close"]
    if expert is not None:
        headers += ["expert success", "expert held/closes", "expert per object"]
    return markdown_table(headers, rows) + _footer(profile_name, {"run": source, "expert": expert_source})


def table2_3(bench_result: dict, params: dict, profile_name: str, avg: dict | None = None) -> str:
    """Tables 2 and 3: the project's measured efficiency (bench) next to the paper's CLaD / baselines."""
    p2, p3 = P.TABLE2, P.TABLE3
    total = bench_result["params"]["total_with_encoder"]
    rows = [
        ["parameters (B), total", f"{total / 1e9:.6f}", f"{p2['CLaD']['params_b']}", f"{p2['OpenVLA']['params_b']}",
         f"{p2['pi0.5']['params_b']}", f"{p3['LBP']['params_b']}", f"{p3['UVA']['params_b']}"],
        ["  CLaD (stage 1, B)", f"{params['clad'] / 1e9:.6f}", f"{P.CLAD_PARAMS_B['clad']}", "", "", "", ""],
        ["  policy (stage 2, B)", f"{params['policy'] / 1e9:.6f}", f"{P.CLAD_PARAMS_B['policy']}", "", "", "", ""],
        ["inference (Hz, executed actions/s)", f"{bench_result['control_hz']:.1f}", f"{p2['CLaD']['inference_hz']}",
         f"{p2['OpenVLA']['inference_hz']}", f"{p2['pi0.5']['inference_hz']}", "", ""],
        ["memory (GB)", f"{bench_result['peak_memory_mb'] / 1024:.3f}", f"{p2['CLaD']['memory_gb']}",
         f"{p2['OpenVLA']['memory_gb']}", f"{p2['pi0.5']['memory_gb']}", "", ""],
        ["planning time (s)", f"{bench_result['planning_latency_ms'] / 1000:.4f}", f"{p3['CLaD']['planning_s']}", "", "",
         f"{p3['LBP']['planning_s']}", f"{p3['UVA']['planning_s']}"],
        ["Avg. SR (%)", avg["text"] if avg else "no project run", f"{p3['CLaD']['avg_sr']}", "93.8", "93.2",
         f"{p3['LBP']['avg_sr']}", f"{p3['UVA']['avg_sr']}"],
    ]
    headers = ["measure", f"project CLaD ({profile_name}, {bench_result['device']})", "paper CLaD", "paper OpenVLA",
               "paper pi0.5", "paper LBP", "paper UVA"]
    note = (f"\n\nProject column: `bench({profile_name!r})` (median of {bench_result['repeats']} runs, batch 1, "
            f"{bench_result['device_description']}; random weights of the preset's sizes) and "
            f"`parameter_counts({profile_name!r})`. Paper: RTX 4090 GPU. Memory on CPU is peak RSS growth.")
    return markdown_table(headers, rows) + note


def ablation_table(rows: dict, paper: dict, profile_name: str, labels: dict | None = None) -> str:
    """Tables 4, 5, 7: ``rows`` = {variant: (results or None, source)}; ``paper`` = {variant: percent}."""
    labels = labels or {}
    out = []
    for variant, (results, _src) in rows.items():
        if results:
            pool = pooled(results)
            mine = fmt_rate(pool["successes"], pool["episodes"], pool["ci95"]) + f" over {pool['tasks']} task(s)"
        else:
            mine = "no project run at this profile"
        p = paper.get(variant)
        out.append([labels.get(variant, variant), mine, MISSING if p is None else f"{p:.1f}"])
    headers = ["variant", f"project avg. success ({profile_name})", "paper avg. SR (%)"]
    return markdown_table(headers, out) + _footer(profile_name, {k: s for k, (_, s) in rows.items()})


def table6(project_long: dict | None = None, profile_name: str = "") -> str:
    """Table 6 (other LIBERO suites): the paper's numbers; no project run exists for the other suites."""
    cols = P.TABLE6["columns"]
    headers = ["method"] + [f"paper {c}" for c in cols] + ["project"]
    rows = [[name] + [f"{v:.1f}" for v in vals] + [MISSING] for name, vals in P.TABLE6["rows"].items()]
    text = "no project run of libero_spatial / libero_object / libero_goal exists yet"
    if project_long:
        pool = pooled(project_long)
        text += f"; libero_10 at {profile_name}: {fmt_rate(pool['successes'], pool['episodes'], pool['ci95'])}"
    rows.append(["CLaD (this project)"] + [MISSING] * len(cols) + [text])
    return markdown_table(headers, rows) + "\n\nPaper: 50 rollouts per task, percent."


# =========================================================================== figure 3
def modality_figure(entries: dict, profile_name: str):
    """Bar chart of average success with Wilson intervals; the paper's values as labelled markers.

    ``entries`` = {"policy_only" | "clad_p" | "clad_s" | "clad": results dict or None}.
    """
    import matplotlib.pyplot as plt

    names = list(entries)
    labels = {"policy_only": "Policy only", "clad_p": "CLaD_p", "clad_s": "CLaD_s", "clad": "CLaD"}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    x = np.arange(len(names))
    for i, name in enumerate(names):
        results = entries[name]
        if results:
            pool = pooled(results)
            rate, (lo, hi) = 100 * pool["rate"], pool["ci95"]
            ax.bar(i - 0.2, rate, 0.4, color="tab:blue", label="project" if i == 0 else None)
            ax.errorbar(i - 0.2, rate, yerr=[[rate - 100 * lo], [100 * hi - rate]], color="k", capsize=4)
            ax.text(i - 0.2, 100 * hi + 2, f"{pool['successes']}/{pool['episodes']}", ha="center", fontsize=8)
        else:
            ax.text(i - 0.2, 3, "not run", ha="center", rotation=90, fontsize=8)
        paper = P.FIGURE3.get(name)
        if paper is not None:
            ax.bar(i + 0.2, paper, 0.4, color="lightgray", edgecolor="k", hatch="//",
                   label="paper (50 rollouts x 10 tasks)" if i == 0 else None)
    ax.set_xticks(x, [labels.get(n, n) for n in names])
    ax.set_ylim(0, 115)
    ax.set_ylabel("average success (%)")
    ax.set_title(f"Figure 3: modality contribution - project at profile {profile_name!r} (95% Wilson) vs paper")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


# =========================================================================== figure 4
def umap_embedding(x, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    import umap

    x = np.asarray(x, dtype=np.float32)
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(x) - 1), min_dist=0.1, random_state=seed, n_jobs=1)
    return reducer.fit_transform(x)


def umap_figure(panels: dict, task_ids, seed: int = 0):
    """``panels`` = {title: z_dyn (N, H)}; one UMAP scatter per panel, coloured by task."""
    import matplotlib.pyplot as plt

    task_ids = np.asarray(task_ids)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
    embeddings = {}
    for ax, (title, z) in zip(axes[0], panels.items()):
        e = umap_embedding(np.asarray(z), seed=seed)
        embeddings[title] = e
        for task in np.unique(task_ids):
            m = task_ids == task
            ax.scatter(e[m, 0], e[m, 1], s=8, label=f"task {int(task) + 1}")
        ax.set_title(title)
        ax.set_xticks([]), ax.set_yticks([])
    axes[0][0].legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    return fig, embeddings


def silhouette(x, labels) -> float:
    """Mean silhouette score (euclidean) of points ``x`` with ``labels``; numpy only."""
    x, labels = np.asarray(x, dtype=np.float64), np.asarray(labels)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    scores = []
    for i in range(len(x)):
        same = labels == labels[i]
        same[i] = False
        if not same.any():
            continue
        a = d[i, same].mean()
        b = min(d[i, labels == other].mean() for other in np.unique(labels) if other != labels[i])
        scores.append((b - a) / max(a, b))
    return float(np.mean(scores))


# =========================================================================== figure 5
def alignment_forward(clad, encoder, batch: dict, camera_index: int = 0, n_cameras: int = 2):
    """f(images (N, 3, h, w) in [0, 1], upright) -> cosine(zhat_s, zbar_s) (N,).

    The image replaces camera ``camera_index``'s current embedding v^t (through the
    differentiable lite encoder); the rest of the window (one sample of ``batch``) is fixed.
    zbar_s, the EMA target embedding of the true future, does not depend on the image.
    """
    import torch
    import torch.nn.functional as F

    one = {k: v[:1] for k, v in batch.items()}
    _, zbar_s, _ = clad.targets(one)
    E = one["vision"].shape[-1] // n_cameras

    def forward(images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        emb = encoder._encode_float_images(images).float()
        parts = list(one["vision"].expand(n, -1).split(E, dim=-1))
        parts[camera_index] = emb
        b = {k: v.expand(n, *v.shape[1:]) for k, v in one.items()}
        b["vision"] = torch.cat(parts, dim=-1)
        semantic = clad.foresight(b, mask_ratio=0.0).semantic
        return F.cosine_similarity(semantic, zbar_s.expand(n, -1), dim=-1)

    return forward


def integrated_gradients(forward, image, steps: int = 32, baseline=None, internal_batch_size: int = 16):
    """captum IntegratedGradients of ``forward`` w.r.t. ``image`` (1, 3, h, w); returns (attribution, delta)."""
    import torch
    from captum.attr import IntegratedGradients

    image = image.detach().float()
    baseline = torch.zeros_like(image) if baseline is None else baseline
    ig = IntegratedGradients(forward)
    with torch.enable_grad():
        attribution, delta = ig.attribute(image, baselines=baseline, n_steps=steps, return_convergence_delta=True,
                                          internal_batch_size=internal_batch_size)
    return attribution.detach(), float(delta.abs().max())


def attribution_figure(frames, attributions, titles):
    """Frames (h, w, 3) uint8 upright with the |IG| heatmap (summed over channels) overlaid."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(frames), figsize=(2.6 * len(frames), 5.4), squeeze=False)
    for j, (frame, attr, title) in enumerate(zip(frames, attributions, titles)):
        heat = np.abs(np.asarray(attr)).sum(axis=0)
        heat = heat / (heat.max() + 1e-12)
        axes[0][j].imshow(frame)
        axes[0][j].set_title(title, fontsize=8)
        axes[1][j].imshow(frame)
        axes[1][j].imshow(heat, cmap="inferno", alpha=0.6)
        for ax in axes[:, j]:
            ax.axis("off")
    axes[1][0].set_title("|IG| overlay", fontsize=8)
    fig.tight_layout()
    return fig


# =========================================================================== figures 6-9
def read_video_frames(path, count: int = 6) -> list[np.ndarray]:
    """``count`` evenly spaced RGB frames (h, w, 3) of an mp4 (imageio-ffmpeg)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in reader]
    if not frames:
        return []
    index = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    return [frames[i] for i in index]


def filmstrip_figure(videos: dict, count: int = 6, title: str = ""):
    """One row per rollout video: ``videos`` = {row label: mp4 path}; success marked in the label."""
    import matplotlib.pyplot as plt

    rows = {label: read_video_frames(path, count) for label, path in videos.items()}
    fig, axes = plt.subplots(len(rows), count, figsize=(2.2 * count, 1.5 * len(rows) + 0.6), squeeze=False)
    for r, (label, frames) in enumerate(rows.items()):
        ok = "success" in Path(videos[label]).name
        for c in range(count):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(frames):
                ax.imshow(frames[c])
        axes[r][0].set_title(("✓ " if ok else "✗ ") + label, fontsize=8, loc="left", color="green" if ok else "red")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig, rows


__all__ = ["load_results", "find_results", "pooled", "fmt_rate", "markdown_table", "table1", "table2_3",
           "ablation_table", "table6", "modality_figure", "umap_embedding", "umap_figure", "silhouette",
           "alignment_forward", "integrated_gradients", "attribution_figure", "read_video_frames",
           "filmstrip_figure"]
