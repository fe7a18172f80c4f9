"""Small analysis tools for notebooks 04-05: collapse metrics, linear probes, policy chunks, plots.

Shapes: N samples (windows), D feature width, H = CLaD hidden_dim, tau = horizon, A = 7.

**Representation collapse** (paper sec. 4.2: "a critical challenge in latent space prediction")
is measured on a matrix of embeddings ``x`` (N, D):

* :func:`effective_rank` - ``exp(entropy(sigma / sum sigma))`` of the singular values of the
  centred matrix (Roy & Vetterli 2007): 1 when all samples lie on a line, D when the variance is
  spread evenly over all D directions. A *complete* collapse (one constant output) has no
  variance at all: :func:`representation_stats` then reports ``total_std ~ 0``.
* :func:`representation_stats` - per-dimension standard deviation (of the raw and of the
  L2-normalised embeddings; for directions spread evenly on the unit sphere the latter is
  ~ 1/sqrt(D), for a collapsed one ~ 0, as in SimSiam's figure 2) and the effective rank.

**Grounding / drift** (sec. 5.3, table 4) is measured with linear probes fitted on the training
demonstrations and scored on held-out ones: :func:`linear_probe_regression` (ridge, R^2, e.g.
z_dyn -> p^{t+tau}) and :func:`linear_probe_classification` (logistic regression, accuracy,
e.g. z_dyn -> task id).

:func:`collect_stage1_outputs` runs a (frozen) CLaD over windows and returns every quantity of
eq. 10-17 per window; :func:`evaluate_policy` does the same for a stage-2 policy (sampled action
chunks and a fixed-noise denoising loss). The ``plot_*`` functions return matplotlib figures.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

# --------------------------------------------------------------------------- collapse metrics


def _as_float64(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x.detach().cpu() if torch.is_tensor(x) else x), dtype=torch.float64)


def singular_spectrum(x) -> torch.Tensor:
    """Singular values of the centred ``x`` (N, D), divided by their sum: (min(N, D),), sums to 1.

    An all-constant ``x`` (zero spectrum) returns zeros.
    """
    x = _as_float64(x)
    if x.ndim != 2:
        raise ValueError(f"expected a (N, D) matrix, got shape {tuple(x.shape)}")
    s = torch.linalg.svdvals(x - x.mean(dim=0, keepdim=True))
    total = s.sum()
    return s / total if total > 0 else torch.zeros_like(s)


def effective_rank(x, eps: float = 1e-12) -> float:
    """Entropy effective rank of ``x`` (N, D): exp(-sum p_i log p_i), p = normalised singular values.

    In [1, min(N, D)]: e.g. k orthogonal directions of equal variance give k. Returns 0.0 for a
    matrix without any variance (every row the same: complete collapse).
    """
    p = singular_spectrum(x)
    if p.sum() == 0:
        return 0.0
    p = p[p > eps]
    return float(torch.exp(-(p * p.log()).sum()))


def representation_stats(x) -> dict:
    """Collapse statistics of embeddings ``x`` (N, D) -> dict of floats.

    ``effective_rank``; ``mean_std`` (mean over dimensions of the per-dimension std of x);
    ``total_std`` (sqrt of the total variance: the spread of x as a whole);
    ``normalized_std`` (mean per-dimension std of the L2-normalised rows: ~ 1/sqrt(D) for
    directions spread over the sphere, -> 0 when all rows point the same way);
    ``uniform_std`` = 1/sqrt(D), the reference for ``normalized_std``; ``dim`` = D.
    """
    x = _as_float64(x)
    z = torch.nn.functional.normalize(x, dim=1, eps=1e-12)
    D = x.shape[1]
    return {
        "effective_rank": effective_rank(x),
        "mean_std": float(x.std(dim=0).mean()),
        "total_std": float(x.var(dim=0).sum().sqrt()),
        "normalized_std": float(z.std(dim=0).mean()),
        "uniform_std": 1.0 / math.sqrt(D),
        "dim": D,
    }


# --------------------------------------------------------------------------- linear probes


def linear_probe_regression(x_train, y_train, x_test, y_test, alpha: float | Sequence[float] = 1.0,
                            return_predictions: bool = False) -> dict:
    """Ridge regression probe: features (N, D) -> targets (N, K), fitted on train, scored on test.

    Features are standardised with the training mean / std. ``alpha``: the ridge penalty, or a
    sequence of them to choose from by leave-one-out cross-validation on the training set
    (``sklearn.linear_model.RidgeCV``; the choice is returned as ``alpha``). Returns ``r2``
    (coefficient of determination on the test set, averaged uniformly over the K target
    dimensions that vary in the test set; 1 = perfect, 0 = no better than the test mean, < 0
    worse), ``mse`` (test mean squared error), ``r2_per_dim`` (K,) and, if asked, ``predictions``
    (N_test, K).
    """
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.preprocessing import StandardScaler

    x_train, x_test = _as_float64(x_train).numpy(), _as_float64(x_test).numpy()
    y_train, y_test = _as_float64(y_train).numpy(), _as_float64(y_test).numpy()
    if y_train.ndim == 1:
        y_train, y_test = y_train[:, None], y_test[:, None]
    scaler = StandardScaler().fit(x_train)
    ridge = Ridge(alpha=alpha) if np.isscalar(alpha) else RidgeCV(alphas=tuple(alpha))
    model = ridge.fit(scaler.transform(x_train), y_train)
    pred = model.predict(scaler.transform(x_test))
    residual = ((y_test - pred) ** 2).sum(axis=0)
    spread = ((y_test - y_test.mean(axis=0)) ** 2).sum(axis=0)
    varies = spread > 1e-12 * len(y_test)
    r2_per_dim = np.where(varies, 1.0 - residual / np.where(varies, spread, 1.0), np.nan)
    out = {"r2": float(np.nanmean(r2_per_dim)) if varies.any() else float("nan"),
           "mse": float(((y_test - pred) ** 2).mean()), "r2_per_dim": r2_per_dim,
           "alpha": float(getattr(model, "alpha_", alpha))}
    if return_predictions:
        out["predictions"] = pred
    return out


def linear_probe_classification(x_train, y_train, x_test, y_test, C: float = 1.0) -> dict:
    """Logistic-regression probe: features (N, D) -> integer labels (N,); returns test ``accuracy``
    and ``chance`` (the accuracy of always answering the most frequent training label)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x_train, x_test = _as_float64(x_train).numpy(), _as_float64(x_test).numpy()
    y_train, y_test = np.asarray(y_train).astype(int), np.asarray(y_test).astype(int)
    labels, counts = np.unique(y_train, return_counts=True)
    chance = float((y_test == labels[counts.argmax()]).mean())
    if len(labels) < 2:
        return {"accuracy": chance, "chance": chance}
    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(C=C, max_iter=2000).fit(scaler.transform(x_train), y_train)
    return {"accuracy": float((model.predict(scaler.transform(x_test)) == y_test).mean()), "chance": chance}


# --------------------------------------------------------------------------- windows


def action_predictability(path, holdout_every: int = 5, k: int = 5, velocities: bool = True) -> dict:
    """How far a demonstrator's arm actions are a function of the state, in one demo file.

    Behaviour cloning assumes they are: a policy sees the state, not how long the demonstrator has
    been in its current motion. Measured without any learned model: a k-nearest-neighbour
    regression (scikit-learn) from the scene state [qpos; qvel] (``state_oracle.scene_state``,
    standardised on the fitting demos) to the 6 arm dimensions of the action, fitted on every
    demo i with ``i % holdout_every != 0`` and scored on the others (leave-demos-out).

    ``velocities=False`` keeps only the positions qpos (``state_oracle.find_position_width``): the
    gap between the two says how much of the action the velocities, the echo of the last actions,
    give away (a shortcut a cloned policy can copy instead of reading the scene).

    Returns ``{"r2", "mse", "train_steps", "test_steps", "demos"}``: R^2 = 1 - SSE / SST of the
    held-out actions against their fitting-set mean (1 = the state fixes the action, 0 = it says
    nothing).
    """
    from sklearn.neighbors import KNeighborsRegressor

    from clad_lite.demos import hdf5 as H
    from clad_lite.state_oracle import file_position_width, scene_state

    with H.DemoFile(path) as f:
        demos = [f.read(demo, ["states", "actions"]) for demo in f.demos]
        width = None if velocities else file_position_width(f)
    if len(demos) < 2 or holdout_every < 2:
        raise ValueError(f"{path}: needs >= 2 demos and holdout_every >= 2, got {len(demos)} demos, "
                         f"holdout_every={holdout_every}")
    if not velocities and width is None:
        raise ValueError(f"{path}: the joint velocities sit nowhere in the states (or the file has none), "
                         "so qpos cannot be told apart")
    held_out = [i % holdout_every == 0 for i in range(len(demos))]

    def stack(test: bool):
        chosen = [d for d, h in zip(demos, held_out) if h == test]
        return (np.concatenate([scene_state(d["states"])[:, :width] for d in chosen]),
                np.concatenate([np.asarray(d["actions"], dtype=np.float64)[:, :6] for d in chosen]))

    (x_fit, y_fit), (x_test, y_test) = stack(False), stack(True)
    mean, std = x_fit.mean(0), x_fit.std(0)
    std = np.where(std > 1e-6, std, 1.0)
    model = KNeighborsRegressor(n_neighbors=k).fit((x_fit - mean) / std, y_fit)
    error = model.predict((x_test - mean) / std) - y_test
    sse, sst = float((error ** 2).sum()), float(((y_test - y_fit.mean(0)) ** 2).sum())
    return {"r2": 1.0 - sse / max(sst, 1e-12), "mse": float((error ** 2).mean()),
            "train_steps": len(x_fit), "test_steps": len(x_test), "demos": len(demos)}


def action_predictability_table(data_dir, holdout_every: int = 5, k: int = 5) -> dict:
    """:func:`action_predictability` of every demo file in ``data_dir``, from [qpos; qvel] and from
    qpos alone: ``{"data", "holdout_every", "k", "rows": [{"file", "instruction", "demos",
    "test_steps", "r2_state", "r2_positions"}]}``."""
    from clad_lite.demos import hdf5 as H

    files = H.find_demo_files([Path(data_dir)])
    rows = []
    for path in files:
        with H.DemoFile(path) as f:
            instruction = f.instruction
        full = action_predictability(path, holdout_every, k)
        positions = action_predictability(path, holdout_every, k, velocities=False)
        rows.append({"file": Path(path).name, "instruction": instruction, "demos": full["demos"],
                     "test_steps": full["test_steps"], "r2_state": full["r2"], "r2_positions": positions["r2"]})
    return {"data": str(data_dir), "holdout_every": holdout_every, "k": k, "rows": rows}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "action-predictability", help="how far the scene state, with and without velocities, fixes the demos' actions",
        description="Leave-demos-out k-NN R^2 of each demo file's arm actions from the scene state [qpos; qvel] "
                    "and from qpos alone (analysis.action_predictability).")
    parser.add_argument("--data", required=True, help="demonstrations folder (files with states and joint velocities)")
    parser.add_argument("--holdout-every", type=int, default=5, help="hold out every n-th demo (default 5)")
    parser.add_argument("-k", type=int, default=5, help="neighbours (default 5)")
    parser.add_argument("--json", default=None, help="write the table here")
    parser.set_defaults(func=_predictability_main)


def _predictability_main(args) -> int:
    import json
    import sys

    from clad_lite.provenance import git_sha

    result = action_predictability_table(args.data, args.holdout_every, args.k)
    print(f"{'task':64s} {'[qpos; qvel]':>12s} {'qpos':>6s}")
    for row in result["rows"]:
        print(f"{row['instruction'][:64]:64s} {row['r2_state']:12.3f} {row['r2_positions']:6.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**result, "git_sha": git_sha(),
                                               "command": " ".join(["python -m clad_lite", *sys.argv[1:]])}, indent=1))
    return 0


def window_table(dataset) -> dict:
    """Per-window bookkeeping of a ``WindowDataset`` (or a ``Subset`` of one): numpy arrays (N,)
    ``demo_index``, ``t`` and ``task_id``, in the dataset's order (read without touching the
    embeddings)."""
    indices = None
    while isinstance(dataset, torch.utils.data.Subset):
        sub = np.asarray(dataset.indices)
        indices = sub if indices is None else sub[indices]
        dataset = dataset.dataset
    index = np.asarray(dataset._index)  # (N, 2): (demo index, t)
    if indices is not None:
        index = index[indices]
    tasks = np.asarray(dataset._task)
    return {"demo_index": index[:, 0], "t": index[:, 1], "task_id": tasks[index[:, 0]]}


def split_by_demo(dataset, holdout_per_task: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Train / held-out window indices (int64 arrays) of ``dataset``, split by *demonstration*.

    The last ``holdout_per_task`` demonstrations of every task are held out, so no held-out
    window shares a trajectory with a training window (neighbouring windows of one demo are
    nearly identical: a split by window would leak).
    """
    table = window_table(dataset)
    held = set()
    for task in np.unique(table["task_id"]):
        demos = np.unique(table["demo_index"][table["task_id"] == task])
        if len(demos) <= holdout_per_task:
            raise ValueError(f"task {task} has {len(demos)} demonstrations: cannot hold out {holdout_per_task}")
        held.update(demos[-holdout_per_task:].tolist())
    is_held = np.isin(table["demo_index"], sorted(held))
    return np.flatnonzero(~is_held), np.flatnonzero(is_held)


def iterate_batches(dataset, cameras, indices=None, batch_size: int = 256, device=None):
    """Yield ``(model_batch, window_batch)`` over ``dataset`` windows ``indices`` (default all),
    in order; ``model_batch`` has the keys of ``clad_lite.train.model_batch``."""
    from clad_lite.train import model_batch

    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    collate = torch.utils.data.default_collate
    for start in range(0, len(indices), batch_size):
        window = collate([dataset[int(i)] for i in indices[start:start + batch_size]])
        yield model_batch(window, cameras, device), window


# --------------------------------------------------------------------------- stage 1


@torch.no_grad()
def collect_stage1_outputs(clad, dataset, cameras=None, indices=None, batch_size: int = 256) -> dict:
    """Run ``clad`` (eval mode, inference mask ratio) over windows; all outputs on the CPU.

    ``dataset``: a ``WindowDataset`` (then ``cameras`` is needed) or windows already
    materialised with :func:`materialize`.

    Returns a dict of tensors, N = number of windows:

    ==========================  ========  =================================================
    ``z_dyn``                   (N, H)    eq. 10
    ``foresight_proprio``       (N, H)    zhat_p, eq. 11
    ``foresight_semantic``      (N, H)    zhat_s, eq. 12
    ``target_proprio``          (N, H)    zbar_p, eq. 15 (EMA target encoder)
    ``target_semantic``         (N, H)    zbar_s, eq. 16
    ``latent_proprio``          (N,)      eq. 17 per window, in [0, 4]
    ``latent_semantic``         (N,)
    ``recon_proprio``           (N,)      eq. 18 per window (MSE of h_p(zhat_p) vs p^{t+tau})
    ``proprio`` / ``proprio_future``  (N, D_p)  p^t and p^{t+tau} (normalised)
    ``task_id``, ``demo_index``, ``t``  (N,) int64
    ==========================  ========  =================================================
    """
    from clad_lite.clad import l2_latent_loss

    was_training = clad.training
    clad.eval()
    parts: dict[str, list] = {}
    if isinstance(dataset, dict):  # already materialised windows (see ``materialize``)
        n = len(dataset["proprio"])
        rows = torch.arange(n) if indices is None else torch.as_tensor(np.asarray(indices))
        source = ((_select(dataset, rows[i:i + batch_size]),) * 2 for i in range(0, len(rows), batch_size))
    else:
        source = iterate_batches(dataset, cameras, indices, batch_size)
    for batch, window in source:
        f = clad.foresight(batch)
        zbar_p, zbar_s, _ = clad.targets(batch)
        out = {
            "z_dyn": f.z_dyn, "foresight_proprio": f.proprio, "foresight_semantic": f.semantic,
            "target_proprio": zbar_p, "target_semantic": zbar_s,
            "latent_proprio": l2_latent_loss(f.proprio, zbar_p),
            "latent_semantic": l2_latent_loss(f.semantic, zbar_s),
            "recon_proprio": (clad.h_p(f.proprio) - batch["proprio_future"]).pow(2).mean(dim=-1),
            "proprio": batch["proprio"], "proprio_future": batch["proprio_future"],
            "task_id": window["task_id"], "demo_index": window["demo_index"], "t": window["t"],
        }
        for key, value in out.items():
            parts.setdefault(key, []).append(value.detach().float() if value.is_floating_point() else value)
    clad.train(was_training)
    return {key: torch.cat(values) for key, values in parts.items()}


def stage1_metrics(outputs: dict, train_mask, test_mask) -> dict:
    """The collapse / grounding numbers of one CLaD from :func:`collect_stage1_outputs` -> floats.

    ``train_mask`` / ``test_mask``: boolean arrays (N,) (or index arrays) selecting the windows
    the probes are fitted / scored on; the other statistics use the held-out windows.

    Keys: ``erank_<x>`` and ``std_<x>`` (effective rank and ``normalized_std`` of x =
    z_dyn, foresight_p, foresight_s, target_p, target_s), ``latent`` (mean eq. 17 loss, both
    modalities, in [0, 8]), ``probe_future_r2`` (z_dyn -> p^{t+tau}),
    ``probe_delta_r2`` (z_dyn -> p^{t+tau} - p^t: the *change* of state, which the current
    state alone does not give away) and ``probe_task_acc`` (z_dyn -> task id).
    """
    test = outputs["task_id"].new_zeros(len(outputs["task_id"]), dtype=torch.bool)
    test[torch.as_tensor(test_mask)] = True
    train = test.clone().zero_()
    train[torch.as_tensor(train_mask)] = True
    names = {"z_dyn": "z_dyn", "foresight_p": "foresight_proprio", "foresight_s": "foresight_semantic",
             "target_p": "target_proprio", "target_s": "target_semantic"}
    metrics = {}
    for short, key in names.items():
        stats = representation_stats(outputs[key][test])
        metrics[f"erank_{short}"] = stats["effective_rank"]
        metrics[f"std_{short}"] = stats["normalized_std"]
    metrics["uniform_std"] = 1.0 / math.sqrt(outputs["z_dyn"].shape[1])
    metrics["latent"] = float((outputs["latent_proprio"][test] + outputs["latent_semantic"][test]).mean())
    metrics["recon_proprio"] = float(outputs["recon_proprio"][test].mean())
    z = outputs["z_dyn"]
    future, delta = outputs["proprio_future"], outputs["proprio_future"] - outputs["proprio"]
    metrics["probe_future_r2"] = linear_probe_regression(z[train], future[train], z[test], future[test])["r2"]
    metrics["probe_delta_r2"] = linear_probe_regression(z[train], delta[train], z[test], delta[test])["r2"]
    metrics["probe_task_acc"] = linear_probe_classification(z[train], outputs["task_id"][train], z[test],
                                                            outputs["task_id"][test])["accuracy"]
    return metrics


# --------------------------------------------------------------------------- stage-1 variants


def materialize(dataset, cameras, indices=None, batch_size: int = 512) -> dict:
    """All windows ``indices`` of ``dataset`` as one model batch held in memory: {key: (N, ...)}.

    Keys of ``clad_lite.train.model_batch`` plus ``task_id``, ``demo_index``, ``t`` (N,) int64.
    Cheap for the ``ci`` profile (about 1,000 windows); subsample ``indices`` for larger ones.
    """
    parts: dict[str, list] = {}
    for batch, window in iterate_batches(dataset, cameras, indices, batch_size):
        batch = {**batch, "task_id": window["task_id"], "demo_index": window["demo_index"], "t": window["t"]}
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)
    return {key: torch.cat(values) for key, values in parts.items()}


def _select(batches: dict, index: torch.Tensor) -> dict:
    return {key: value[index] for key, value in batches.items()}


def clad_variant_losses(clad, batch: dict, mask_ratio: float, stop_gradient: bool = True) -> dict:
    """Stage-1 losses of ``clad`` on ``batch``; ``stop_gradient=False`` is the "no target network" reading.

    ``stop_gradient=True`` is exactly ``clad(batch, mask_ratio=mask_ratio)`` (eq. 17-19 with the EMA
    targets of eq. 15-16, computed without gradient). ``stop_gradient=False`` replaces the targets by
    the *online* encoders with the gradient flowing into them: zbar_p = mean f_p(p^{t+tau}),
    zbar_s = mean f_s(FiLM(v^{t+tau}, l)); the semantic reconstruction target is that (detached)
    FiLM output. Returns the dict of ``CLaD.forward``'s losses (``loss``, ``latent``, ``recon``, ...).
    """
    from clad_lite.clad import l2_latent_loss

    if stop_gradient:
        return clad(batch, mask_ratio=mask_ratio)
    c = clad.config
    z_dyn = clad.dynamics(batch, mask_ratio)
    zhat_p, zhat_s = clad.g_p(z_dyn), clad.g_s(z_dyn)
    s_future = clad.semantic_state(batch["vision_future"], batch["language"])
    zbar_p = clad.f_p(batch["proprio_future"]).mean(dim=1)
    zbar_s = clad.f_s(s_future).mean(dim=1)
    latent_p, latent_s = l2_latent_loss(zhat_p, zbar_p).mean(), l2_latent_loss(zhat_s, zbar_s).mean()
    recon_target_s = s_future if c.recon_semantic_target == "film_target" else batch["vision_future"]
    recon_p = torch.nn.functional.mse_loss(clad.h_p(zhat_p), batch["proprio_future"])
    recon_s = torch.nn.functional.mse_loss(clad.h_s(zhat_s), recon_target_s.detach())
    latent, recon = latent_p + latent_s, recon_p + recon_s
    return {"loss": latent + c.lambda_recon * recon, "latent": latent, "recon": recon,
            "latent_proprio": latent_p, "latent_semantic": latent_s, "recon_proprio": recon_p,
            "recon_semantic": recon_s, "foresight_proprio": zhat_p, "foresight_semantic": zhat_s, "z_dyn": z_dyn}


def train_clad_variant(config, batches: dict, train_cfg, *, stop_gradient: bool = True, eval_batch: dict | None = None,
                       eval_every: int = 25, progress: bool = False, desc: str = "variant"):
    """Train a CLaD of ``config`` on in-memory windows ``batches`` (from :func:`materialize`).

    The loop of ``clad_lite.train`` in miniature, on tensors (no files, no DataLoader): AdamW with
    weight decay on matrices, warmup + cosine (``train_cfg``: a ``TrainConfig`` - steps, batch_size,
    lr, weight_decay, warmup_steps, grad_clip, seed), gradient clipping, ``update_ema()`` after every
    step (momentum ``config.ema_momentum``; 0 makes the target a copy of the online encoder).
    ``stop_gradient=False``: see :func:`clad_variant_losses`.

    Every ``eval_every`` steps (and at 0 and the end) the collapse statistics of ``eval_batch``
    are recorded. Returns ``(model, history)``, ``history`` a dict of lists: ``step`` and the
    losses of every step; ``eval_step``, ``erank_<x>``, ``std_<x>`` for x in z_dyn,
    foresight_p, foresight_s, target_p, target_s, and ``eval_latent``.
    """
    from tqdm.auto import tqdm

    from clad_lite.clad import CLaD
    from clad_lite.schedule import make_scheduler

    torch.manual_seed(train_cfg.seed)
    model = CLaD(config).train()
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train_cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=train_cfg.lr)
    scheduler = make_scheduler(optimizer, train_cfg.warmup_steps, train_cfg.steps)
    generator = torch.Generator().manual_seed(train_cfg.seed)
    n = len(batches["proprio"])
    history: dict[str, list] = {}

    def record_eval(step: int) -> None:
        if eval_batch is None:
            return
        model.eval()
        with torch.no_grad():
            out = clad_variant_losses(model, eval_batch, 0.0, stop_gradient=True)
            zbar_p, zbar_s, _ = model.targets(eval_batch)
            if not stop_gradient:  # the targets this variant trains against are the online encoders
                s_future = model.semantic_state(eval_batch["vision_future"], eval_batch["language"])
                zbar_p, zbar_s = model.f_p(eval_batch["proprio_future"]).mean(1), model.f_s(s_future).mean(1)
            from clad_lite.clad import l2_latent_loss
            latent = l2_latent_loss(out["foresight_proprio"], zbar_p) + l2_latent_loss(out["foresight_semantic"], zbar_s)
        model.train()
        history.setdefault("eval_step", []).append(step)
        history.setdefault("eval_latent", []).append(float(latent.mean()))
        for short, value in (("z_dyn", out["z_dyn"]), ("foresight_p", out["foresight_proprio"]),
                             ("foresight_s", out["foresight_semantic"]), ("target_p", zbar_p), ("target_s", zbar_s)):
            stats = representation_stats(value)
            history.setdefault(f"erank_{short}", []).append(stats["effective_rank"])
            history.setdefault(f"std_{short}", []).append(stats["normalized_std"])

    record_eval(0)
    for step in tqdm(range(train_cfg.steps), desc=desc, disable=not progress, leave=False):
        index = torch.randint(0, n, (train_cfg.batch_size,), generator=generator)
        mask_ratio = config.mask_ratio_at(step / train_cfg.steps, training=True)
        losses = clad_variant_losses(model, _select(batches, index), mask_ratio, stop_gradient)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], train_cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        model.update_ema()                                                    # eq. 14
        history.setdefault("step", []).append(step + 1)
        for key in ("loss", "latent", "recon", "recon_proprio", "recon_semantic"):
            history.setdefault(key, []).append(float(losses[key].detach()))
        if (step + 1) % eval_every == 0 or step + 1 == train_cfg.steps:
            record_eval(step + 1)
    return model.eval(), history


def plot_variant_histories(histories: dict, keys=("latent", "erank_foresight_p", "erank_foresight_s", "erank_z_dyn"),
                           smooth: int = 10):
    """Training curves of several variants: one panel per key (loss keys are smoothed over
    ``smooth`` steps; ``erank_*`` / ``std_*`` / ``eval_*`` are drawn at their evaluation steps)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.0 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, h in histories.items():
            if key not in h:
                continue
            if key.startswith(("erank_", "std_", "eval_")):
                ax.plot(h["eval_step"], h[key], marker=".", label=name)
            else:
                values = np.asarray(h[key])
                k = max(1, min(smooth, len(values)))
                ax.plot(np.asarray(h["step"])[k - 1:], np.convolve(values, np.ones(k) / k, mode="valid"), label=name)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- training logs


def read_train_log(run_dir) -> dict[str, np.ndarray]:
    """``RUN_DIR/train_log.csv`` -> {column: float array (rows,)} (``step`` included)."""
    path = Path(run_dir)
    path = path / "train_log.csv" if path.is_dir() else path
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} has no rows yet")
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def plot_train_logs(logs: dict, keys=("loss",), title: str | None = None, logy: bool = False):
    """One panel per key in ``keys``; one line per run. ``logs``: {run name: read_train_log(...)}."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, log in logs.items():
            if key in log:
                ax.plot(log["step"], log[key], label=name, marker="." if len(log["step"]) < 30 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if logy:
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- stage-1 plots


def plot_variant_metrics(metrics: dict, groups=None):
    """Bar charts comparing CLaD variants. ``metrics``: {variant: stage1_metrics(...)}.

    ``groups``: [(panel title, [metric keys], reference line or None)], default: effective
    ranks, normalised stds (with the 1/sqrt(H) line), latent loss, probes.
    """
    import matplotlib.pyplot as plt

    names = list(metrics)
    first = metrics[names[0]]
    if groups is None:
        groups = [
            ("effective rank (of H dims)", ["erank_z_dyn", "erank_foresight_p", "erank_foresight_s",
                                            "erank_target_p", "erank_target_s"], None),
            ("std of L2-normalised rows", ["std_z_dyn", "std_foresight_p", "std_foresight_s",
                                          "std_target_p", "std_target_s"], first.get("uniform_std")),
            ("latent loss eq. 17 (held out)", ["latent"], None),
            ("linear probes from z_dyn (held out)", ["probe_future_r2", "probe_delta_r2", "probe_task_acc"], None),
        ]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 3.6), squeeze=False)
    width = 0.8 / len(names)
    for ax, (title, keys, ref) in zip(axes[0], groups):
        x = np.arange(len(keys))
        for i, name in enumerate(names):
            values = [metrics[name][k] for k in keys]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name)
        if ref is not None:
            ax.axhline(ref, color="k", ls=":", lw=1, label="1/√H (spread evenly)")
        ax.set_xticks(x)
        ax.set_xticklabels([k.replace("erank_", "").replace("std_", "").replace("probe_", "") for k in keys],
                           rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles2, labels2 = axes[0][1].get_legend_handles_labels()
    extra = [(h, l) for h, l in zip(handles2, labels2) if l not in labels]
    fig.legend(handles + [h for h, _ in extra], labels + [l for _, l in extra], loc="upper center",
               ncol=len(labels) + len(extra), fontsize=8, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def plot_spectra(outputs: dict, keys=("z_dyn", "foresight_proprio", "foresight_semantic"), mask=None):
    """Normalised singular-value spectra (log scale), one panel per key, one line per variant.

    ``outputs``: {variant: collect_stage1_outputs(...)}; ``mask`` selects windows (default all).
    A collapsed representation puts (almost) all its mass in the first few values.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, out in outputs.items():
            x = out[key] if mask is None else out[key][torch.as_tensor(mask)]
            spectrum = singular_spectrum(x).numpy()
            ax.semilogy(np.arange(1, len(spectrum) + 1), np.maximum(spectrum, 1e-8),
                        marker=".", label=f"{name} (erank {effective_rank(x):.1f})")
        ax.set_title(f"{key}: singular values / sum")
        ax.set_xlabel("index")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_embedding_2d(outputs: dict, key: str = "z_dyn", mask=None, color: str = "task_id"):
    """2-D PCA of ``outputs[variant][key]`` per variant (the paper's figure 4 uses UMAP),
    coloured by ``color`` ("task_id" or "t"). PCA is fitted per variant on the selected windows."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(outputs), figsize=(3.8 * len(outputs), 3.4), squeeze=False)
    for ax, (name, out) in zip(axes[0], outputs.items()):
        sel = torch.ones(len(out[key]), dtype=torch.bool) if mask is None else torch.as_tensor(mask)
        x = _as_float64(out[key][sel])
        x = x - x.mean(0)
        _, s, v = torch.linalg.svd(x, full_matrices=False)
        xy = (x @ v[:2].T).numpy()
        c = out[color][sel].numpy()
        points = ax.scatter(xy[:, 0], xy[:, 1], c=c, s=4, cmap="viridis" if color == "t" else "tab10")
        share = (s[:2] ** 2).sum() / (s ** 2).sum() if (s ** 2).sum() > 0 else torch.tensor(0.0)
        ax.set_title(f"{name}: PC1-2 hold {share:.0%}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(points, ax=axes[0].tolist(), label=color, shrink=0.8)
    return fig


# --------------------------------------------------------------------------- stage 2


@torch.no_grad()
def evaluate_policy(policy, dataset, cameras, indices, clad=None, seed: int = 0, batch_size: int = 256) -> dict:
    """Offline evaluation of a stage-2 policy on windows ``indices`` (not a success rate).

    Returns a dict of CPU tensors: ``sampled`` (N, tau, A) action chunks from reverse diffusion,
    ``demo`` (N, tau, A) the demonstration's chunk a^{t:t+tau} (both normalised to [-1, 1]),
    ``chunk_mse`` (N,) mean squared error between the two, ``denoise`` (N,) the eq. 22 loss per
    window at a fixed diffusion step k and noise per window (seeded, identical for every policy
    evaluated with the same ``seed``: a paired comparison), ``k`` (N,).
    ``clad`` is the frozen stage-1 model (needed unless ``policy.config.foresight == "none"``).
    """
    was_training = policy.training
    policy.eval()
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list] = {}
    T = policy.ddpm.num_steps
    for batch, _ in iterate_batches(dataset, cameras, indices, batch_size):
        clad_arg = clad if policy.config.uses_clad else None
        cond = policy.condition(batch, clad=clad_arg)
        a0 = batch["actions"]
        k = torch.randint(0, T, (len(a0),), generator=generator)
        noise = torch.randn(a0.shape, generator=generator)
        noisy = policy.ddpm.q_sample(a0, k, noise)
        denoise = (policy.eps_net(noisy, k, cond) - policy.ddpm.target(a0, noise)).pow(2).mean(dim=(1, 2))
        sampled = policy.sample_actions(batch, clad=clad_arg, generator=generator)
        for key, value in {"sampled": sampled, "demo": a0, "denoise": denoise, "k": k,
                           "chunk_mse": (sampled - a0).pow(2).mean(dim=(1, 2))}.items():
            parts.setdefault(key, []).append(value.float() if value.is_floating_point() else value)
    policy.train(was_training)
    return {key: torch.cat(values) for key, values in parts.items()}


ACTION_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")


def plot_action_chunks(demo, predictions: dict, rows=None, action_names=ACTION_NAMES):
    """Action chunks over the tau steps: one row per window, one column per action dimension.

    ``demo`` (N, tau, A) demonstration chunks; ``predictions``: {label: (N, tau, A)} sampled
    chunks; ``rows``: which windows to draw (default the first 3).
    """
    import matplotlib.pyplot as plt

    demo = _as_float64(demo).numpy()
    rows = list(range(min(3, len(demo)))) if rows is None else list(rows)
    A = demo.shape[-1]
    fig, axes = plt.subplots(len(rows), A, figsize=(1.9 * A, 1.7 * len(rows)), sharex=True, sharey=True,
                             squeeze=False)
    steps = np.arange(demo.shape[1])
    for r, i in enumerate(rows):
        for a in range(A):
            ax = axes[r][a]
            ax.plot(steps, demo[i, :, a], "k-o", ms=3, lw=1.5, label="demonstration")
            for label, pred in predictions.items():
                ax.plot(steps, _as_float64(pred).numpy()[i, :, a], "--.", ms=3, lw=1, label=label)
            ax.set_ylim(-1.1, 1.1)
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title(action_names[a] if a < len(action_names) else f"a{a}", fontsize=9)
            if a == 0:
                ax.set_ylabel(f"window {i}", fontsize=8)
    for a in range(A):
        axes[-1][a].set_xlabel("step in chunk")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, 1.02))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


__all__ = [
    "ACTION_NAMES",
    "clad_variant_losses",
    "collect_stage1_outputs",
    "effective_rank",
    "evaluate_policy",
    "iterate_batches",
    "linear_probe_classification",
    "linear_probe_regression",
    "materialize",
    "plot_action_chunks",
    "plot_embedding_2d",
    "plot_spectra",
    "plot_train_logs",
    "plot_variant_histories",
    "plot_variant_metrics",
    "read_train_log",
    "representation_stats",
    "singular_spectrum",
    "split_by_demo",
    "stage1_metrics",
    "train_clad_variant",
    "window_table",
]
