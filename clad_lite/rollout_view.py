"""One LIBERO rollout, recorded query by query, with CLaD's foresight decoded next to the true future.

::

    from clad_lite.rollout_view import record_rollout, foresight_errors, plot_foresight

    rec = record_rollout("runs/pipeline_ci/policy", task_id=0, max_steps=60)
    rec.frames[q]            # what the cameras saw at query q (agentview | wrist, upright)
    rec.p_pred[q]            # h_p(zhat_p^{t+tau}): CLaD's proprio foresight, decoded (eq. 18's decoder)
    rec.p_true[q]            # p^{t+tau}, observed tau steps later in the same rollout (NaN past the end)
    foresight_errors(rec)    # mean squared error of the prediction vs the "no change" guess p^t

The episode is run by :class:`clad_lite.evaluate.Agent` itself (the same encoder, CLaD, policy,
history and edge rules as ``python -m clad_lite eval``), through its ``observer`` hook: at each
query step t the hook receives the rendered frames, p^t, v^t, l and the foresights
(zhat_p, zhat_s) the policy was conditioned on. Nothing about the rollout changes: the hook only
reads. After the episode the foresights go through CLaD's reconstruction heads (eq. 18):

* proprio: ``p_pred = h_p(zhat_p)`` vs ``p_true = p^{t+tau}`` (normalised units, the ones h_p was
  trained in); the baseline is ``p_now = p^t`` (predict no motion);
* semantic: ``s_pred = h_s(zhat_s)`` vs ``s_true`` = the training target of h_s for v^{t+tau}
  (``FiLM^target(v^{t+tau}, l)``, or v^{t+tau} itself with ``recon_semantic_target="vision"``);
  baseline ``s_now`` = the same map of v^t.

Queries whose t + tau lies beyond the episode's last step have no true future (NaN rows, masked
out by :func:`foresight_errors`). Policy-only runs have no CLaD: ``p_pred`` / ``s_pred`` are None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PROPRIO_NAMES = {  # the normalised proprio layouts of clad_lite.demos.windows.PROPRIO_MODES
    "paper": [f"joint {i}" for i in range(7)] + ["gripper 0", "gripper 1"] + [f"joint vel {i}" for i in range(7)],
    "authors_code": ["gripper 0", "gripper 1", "eef x", "eef y", "eef z", "quat x", "quat y", "quat z", "quat w"],
    "no_joint_vel": [f"joint {i}" for i in range(7)] + ["gripper 0", "gripper 1"],
}


@dataclass
class RolloutRecord:
    """Per-query data of one rollout (Q queries; arrays indexed by query q, at policy step ``steps[q]``)."""

    task_id: int
    episode: int
    instruction: str
    tau: int
    steps: np.ndarray                 # (Q,) policy step t of each query
    frames: np.ndarray                # (Q, H, W * cameras, 3) uint8, upright, cameras side by side
    p_now: np.ndarray                 # (Q, D_p) p^t (normalised)
    p_true: np.ndarray                # (Q, D_p) p^{t+tau}, NaN where the episode ended first
    p_pred: np.ndarray | None         # (Q, D_p) h_p(zhat_p), None for a policy-only run
    s_now: np.ndarray | None = None   # (Q, D_s) h_s's target for v^t
    s_true: np.ndarray | None = None  # (Q, D_s) h_s's target for v^{t+tau}, NaN where unknown
    s_pred: np.ndarray | None = None  # (Q, D_s) h_s(zhat_s)
    proprio: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # (T, D_p) every step
    chunks: np.ndarray | None = None  # (Q, tau, 7) the normalised action chunks the policy sampled
    episode_record: dict = field(default_factory=dict)  # Agent.rollout's record (success, steps, timing, ...)
    proprio_names: list = field(default_factory=list)

    @property
    def has_future(self) -> np.ndarray:
        """(Q,) bool: the episode lasted until t + tau, so p^{t+tau} is known."""
        return np.isfinite(self.p_true).all(axis=1)


def rollout_spec(run_dir, *, suite: str = "libero_10", max_steps: int | None = None, warmup_steps: int | None = None,
                 seed: int | None = None, encoder: str | None = None, fast_reset: bool = False,
                 device: str | None = "cpu", start_actions: str = "noop", action_samples: int | None = None) -> dict:
    """The :class:`~clad_lite.evaluate.Agent` spec of a stage-2 run with the run's eval settings (as ``evaluate``)."""
    from clad_lite.evaluate import load_run
    from clad_lite.train import profile_from_dict

    base = load_run(run_dir, encoder=encoder)
    profile = profile_from_dict(base["config"])
    ev = profile.eval
    return dict(base, suite=suite, max_steps=int(ev.max_steps if max_steps is None else max_steps),
                warmup_steps=int(ev.warmup_steps if warmup_steps is None else warmup_steps),
                query_every=profile.policy.horizon, ensemble=False, start_actions=start_actions,
                seed=int(ev.seed if seed is None else seed), fast_reset=bool(fast_reset), device=device,
                action_samples=int(ev.action_samples if action_samples is None else action_samples), video_dir=None)


def record_rollout(run_dir=None, task_id: int = 0, episode: int = 0, *, agent=None, **settings) -> RolloutRecord:
    """Roll out one episode of a stage-2 run and record every query (see the module docstring).

    ``run_dir``: a stage-2 run (or checkpoint); ``settings`` go to :func:`rollout_spec`
    (``max_steps``, ``fast_reset``, ``seed``, ...). Or pass a ready ``agent``
    (:class:`~clad_lite.evaluate.Agent`) to reuse its loaded models across tasks. The episode
    seed is the evaluation's (``episode_seed(seed, task, episode)``), so with the same settings
    the rollout is the one ``evaluate`` ran.
    """
    import torch

    from clad_lite.evaluate import Agent
    from clad_lite.sim import task_info

    if agent is None:
        if run_dir is None:
            raise ValueError("pass run_dir or agent")
        agent = Agent(rollout_spec(run_dir, **settings))
    elif settings:
        raise ValueError(f"settings {sorted(settings)} apply only when building the agent from run_dir")
    queries: list[dict] = []
    history: list = []

    def observer(*, t, frames, proprio, history: list, vision, language, foresight, chunk):
        image = np.concatenate([frames[c][::-1] for c in agent.env_cameras], axis=1)
        queries.append({"t": t, "frame": image, "proprio": np.array(proprio), "vision": np.array(vision),
                        "language": np.array(language), "chunk": np.array(chunk),
                        "foresight": None if foresight is None else tuple(f.detach().cpu() for f in foresight)})
        observer.history = history  # the same list object to the end of the episode

    observer.history = history
    previous, agent.observer = agent.observer, observer
    try:
        episode_record = agent.rollout({"task_id": int(task_id), "episode": int(episode), "video": False})
    finally:
        agent.observer = previous
    if not queries:
        raise RuntimeError("the rollout made no query (max_steps = 0?)")
    proprio = np.stack(observer.history).astype(np.float32)
    tau = agent.tau
    steps = np.array([q["t"] for q in queries])
    p_now = np.stack([q["proprio"] for q in queries]).astype(np.float32)
    p_true = np.stack([proprio[t + tau] if t + tau < len(proprio) else np.full(proprio.shape[1], np.nan, np.float32)
                       for t in steps])
    record = RolloutRecord(task_id=int(task_id), episode=int(episode),
                           instruction=task_info(agent.spec["suite"], int(task_id)).instruction, tau=tau, steps=steps,
                           frames=np.stack([q["frame"] for q in queries]), p_now=p_now, p_true=p_true, p_pred=None,
                           proprio=proprio, chunks=np.stack([q["chunk"] for q in queries]),
                           episode_record=episode_record,
                           proprio_names=PROPRIO_NAMES.get(agent.profile.data.proprio, []))
    clad = agent.clad
    if clad is None:
        return record
    with torch.no_grad():
        device = next(clad.parameters()).device
        zhat_p = torch.cat([q["foresight"][0] for q in queries]).to(device)
        zhat_s = torch.cat([q["foresight"][1] for q in queries]).to(device)
        record.p_pred = clad.h_p(zhat_p).float().cpu().numpy()                          # eq. 18's decoders
        record.s_pred = clad.h_s(zhat_s).float().cpu().numpy()
        vision = torch.as_tensor(np.stack([q["vision"] for q in queries]), device=device)
        language = torch.as_tensor(np.stack([q["language"] for q in queries]), device=device)
        if clad.config.recon_semantic_target == "film_target":
            s_now = clad.film_target(vision, language).float().cpu().numpy()
        else:
            s_now = vision.float().cpu().numpy()
    by_step = {int(t): i for i, t in enumerate(steps)}
    record.s_now = s_now
    record.s_true = np.stack([s_now[by_step[int(t) + tau]] if int(t) + tau in by_step
                              else np.full(s_now.shape[1], np.nan, np.float32) for t in steps])
    return record


def foresight_errors(record: RolloutRecord) -> dict:
    """Mean squared errors over the queries with a known future: foresight vs "no change".

    ``proprio``: MSE(h_p(zhat_p), p^{t+tau}) and ``proprio_no_change``: MSE(p^t, p^{t+tau}); the same
    per dimension (``*_per_dim``); ``semantic`` / ``semantic_no_change`` likewise for h_s (when the
    next query exists); ``queries``: how many queries were scored.
    """
    if record.p_pred is None:
        raise ValueError("a policy-only run has no foresight to decode")
    known = record.has_future
    if not known.any():
        raise ValueError("no query has a known future (the episode is shorter than tau after the first query)")
    truth = record.p_true[known]
    out = {"queries": int(known.sum()),
           "proprio": float(((record.p_pred[known] - truth) ** 2).mean()),
           "proprio_no_change": float(((record.p_now[known] - truth) ** 2).mean()),
           "proprio_per_dim": ((record.p_pred[known] - truth) ** 2).mean(axis=0),
           "proprio_no_change_per_dim": ((record.p_now[known] - truth) ** 2).mean(axis=0)}
    if record.s_true is not None:
        s_known = np.isfinite(record.s_true).all(axis=1)
        if s_known.any():
            s_truth = record.s_true[s_known]
            out["semantic"] = float(((record.s_pred[s_known] - s_truth) ** 2).mean())
            out["semantic_no_change"] = float(((record.s_now[s_known] - s_truth) ** 2).mean())
            out["semantic_queries"] = int(s_known.sum())
    return out


def plot_foresight(record: RolloutRecord, query: int, dims=(0, 1, 2, 7, 8), axes=None):
    """Left: the frame at ``query``; right: p^t, h_p(zhat_p) and the true p^{t+tau} on ``dims``.

    Also draws the whole episode's proprio on those dims (thin lines) with the query step marked.
    Returns the figure (the widget of notebook 06 calls this on every slider move).
    """
    import matplotlib.pyplot as plt

    dims = list(dims)
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.4), gridspec_kw={"width_ratios": [1.3, 1.2, 1.6]})
    fig = axes[0].figure
    q = int(query)
    t = int(record.steps[q])
    names = [record.proprio_names[d] if d < len(record.proprio_names) else f"dim {d}" for d in dims]
    axes[0].imshow(record.frames[q])
    axes[0].set_title(f"task {record.task_id}, query {q}: t = {t}", fontsize=9)
    axes[0].axis("off")

    x = np.arange(len(dims))
    ax = axes[1]
    ax.plot(x, record.p_now[q, dims], "s", color="gray", label="p^t (no change)")
    if record.p_pred is not None:
        ax.plot(x, record.p_pred[q, dims], "o", color="C1", label="h_p(ẑ_p): predicted p^{t+τ}")
    if record.has_future[q]:
        ax.plot(x, record.p_true[q, dims], "x", color="C0", markersize=9, mew=2, label="true p^{t+τ}")
    else:
        ax.set_title("(episode ended before t+τ)", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, fontsize=8)
    ax.set_ylabel("normalised")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    ax = axes[2]
    T = np.arange(len(record.proprio))
    for i, d in enumerate(dims):
        color = f"C{i}"
        ax.plot(T, record.proprio[:, d], color=color, lw=1, label=names[i])
        if record.p_pred is not None:
            ax.plot(record.steps + record.tau, record.p_pred[:, d], "o", color=color, markersize=3, alpha=0.6)
            ax.plot([t + record.tau], [record.p_pred[q, d]], "o", color=color, markersize=8, mfc="none", mew=1.5)
    ax.axvline(t, color="k", lw=0.8)
    ax.axvline(t + record.tau, color="k", lw=0.8, ls="--")
    ax.set_xlabel("policy step (line: observed p; dots: h_p(ẑ_p) placed at t+τ)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


__all__ = ["PROPRIO_NAMES", "RolloutRecord", "foresight_errors", "plot_foresight", "record_rollout", "rollout_spec"]
