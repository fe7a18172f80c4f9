"""Figures and small measurements for the notebooks (one clearly separated section per notebook).

Shapes: B windows, N_p / N_s proprio / semantic tokens, tau action tokens, H hidden width,
h attention heads, A = 7 action dimensions. Attention weights come from
``CLaD.attention_maps`` (``clad_lite.layers.record_attention``); rows sum to 1 over keys.
matplotlib is imported inside the figure functions, so the measurements run without it.
"""

from __future__ import annotations

import torch

# ========================================================================================
# notebooks 02-03: transition embedding (eq. 5-8) and cross-modal dynamics (eq. 9-10)
# ========================================================================================


def relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    """mean_i ||a_i - b_i|| / ||a_i|| over the first dimension: (B, ...) x2 -> float."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    return ((a - b).norm(dim=1) / a.norm(dim=1).clamp_min(1e-12)).mean().item()


def transition_key_labels(modality: str, n_state: int, tau: int) -> list[str]:
    """Key-token names of eq. 7-8: the n_state past-state tokens, then the tau action tokens.

    ``modality`` is "p" or "s": ["p1(t-τ)", ..., "a(t-6)", ..., "a(t-1)"].
    """
    return [f"{modality}{i + 1}(t-τ)" for i in range(n_state)] + [f"a(t-{tau - j})" for j in range(tau)]


def cross_modal_labels(attention: str, n_p: int, n_s: int) -> tuple[list[str], list[str]]:
    """(query labels, key labels) of eq. 9 for an attention mode ("p_queries_s", "s_queries_p", "self")."""
    zp = [f"z_p{i + 1}" for i in range(n_p)]
    zs = [f"z_s{i + 1}" for i in range(n_s)]
    if attention == "p_queries_s":
        return zp, zs
    if attention == "s_queries_p":
        return zs, zp
    return zp + zs, zp + zs


def key_mass(weights: torch.Tensor, n_state: int) -> dict[str, torch.Tensor]:
    """Split attention (..., n_state + tau) into the mass on past-state keys and on action keys.

    Returns {"state": (...), "actions": (...)}; the two add up to 1.
    """
    return {"state": weights[..., :n_state].sum(-1), "actions": weights[..., n_state:].sum(-1)}


@torch.no_grad()
def masked_fraction(model, actions: torch.Tensor, mask_ratio: float, draws: int = 20,
                    seed: int = 0) -> tuple[float, torch.Tensor]:
    """Measure how many action tokens ``model.encode_actions`` replaced by the mask token.

    actions (B, tau, A). A token counts as replaced when it equals mask_token + position
    (eq. 7-8's learnable token). Returns (fraction over draws x B x tau, mask of the first
    draw (B, tau) bool).
    """
    B = actions.shape[0]
    reference = (model.mask_token + model.action_pos)[0]                       # (tau, H)
    generator = torch.Generator().manual_seed(seed)
    masks = []
    for _ in range(draws):
        tokens = model.encode_actions(actions, B, mask_ratio, actions.device, generator)
        masks.append((tokens - reference).abs().amax(-1) == 0)                   # (B, tau)
    masks = torch.stack(masks)
    return masks.float().mean().item(), masks[0]


@torch.no_grad()
def action_dependence(model, batch: dict, other_actions: torch.Tensor, mask_ratio: float,
                      draws: int = 10, seed: int = 0) -> dict[str, float]:
    """How much the transition embeddings move when a^{t-tau:t} is replaced by other actions.

    The same mask draw is used for both action sets (same generator seed), so only the
    actions differ. other_actions (B, tau, A). Returns the mean ``relative_change`` of z_p
    and z_s (eq. 7-8) over ``draws`` mask draws: {"z_p": float, "z_s": float}.
    """
    other = dict(batch, actions_past=other_actions)
    out = {"z_p": 0.0, "z_s": 0.0}
    for d in range(draws):
        z_p, z_s = model.transitions(batch, mask_ratio, torch.Generator().manual_seed(seed + d))
        w_p, w_s = model.transitions(other, mask_ratio, torch.Generator().manual_seed(seed + d))
        out["z_p"] += relative_change(z_p, w_p) / draws
        out["z_s"] += relative_change(z_s, w_s) / draws
    return out


@torch.no_grad()
def swap_sensitivity(model, batch: dict, permutation: torch.Tensor | None = None) -> dict[str, float]:
    """How much z_dyn (eq. 10) changes when one modality's transition comes from another window.

    z_p, z_s (eq. 7-8) are computed once (no masking); then z_p (resp. z_s) of window i is
    replaced by that of window ``permutation[i]`` (default: the batch rolled by half) while
    the other modality stays, and z_dyn is recomputed through eq. 9-10. Returns the mean
    ``relative_change`` of z_dyn: {"proprio": float, "semantic": float}.
    """
    z_p, z_s = model.transitions(batch, 0.0)
    if permutation is None:
        permutation = torch.roll(torch.arange(z_p.shape[0]), z_p.shape[0] // 2)

    def z_dyn(p, s):
        return model.pool(model.cross_modal_attention(p, s))

    base = z_dyn(z_p, z_s)
    return {"proprio": relative_change(base, z_dyn(z_p[permutation], z_s)),
            "semantic": relative_change(base, z_dyn(z_p, z_s[permutation]))}


def partners_within(groups: torch.Tensor) -> torch.Tensor:
    """A permutation (B,) pairing each window with another of the same group (e.g. demonstration).

    groups (B,) int: window i gets the window half a group further on (rolled within its
    group), so partners share the group but are as far apart in time as the group allows.
    """
    permutation = torch.arange(len(groups))
    for group in groups.unique():
        rows = (groups == group).nonzero().flatten()
        permutation[rows] = rows.roll(len(rows) // 2)
    return permutation


def demo_windows(dataset, demo_index: int) -> list[int]:
    """Indices of every window of demonstration ``demo_index`` of a ``WindowDataset``, in time order."""
    index = dataset._index                                   # (windows, 2) = (demo, t)
    rows = (index[:, 0] == demo_index).nonzero()[0]
    return [int(i) for i in rows[index[rows, 1].argsort()]]


# ---------------------------------------------------------------------------- figures
def attention_heatmap(ax, weights: torch.Tensor, query_labels: list[str], key_labels: list[str],
                      title: str = "", split: int | None = None, vmax: float | None = None,
                      annotate: bool = True):
    """Draw one attention map (N queries, M keys) on ``ax``; rows sum to 1.

    ``split``: draw a vertical line before key ``split`` (e.g. between past-state and action
    keys). Returns the image (for a colour bar).
    """
    w = weights.detach().float().cpu()
    image = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=vmax if vmax is not None else max(w.max().item(), 1e-6),
                      aspect="auto")
    ax.set_xticks(range(len(key_labels)), key_labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(query_labels)), query_labels, fontsize=7)
    if split is not None:
        ax.axvline(split - 0.5, color="w", lw=2)
    if annotate and w.numel() <= 120:
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="k" if w[i, j] > 0.6 * (vmax or w.max().item()) else "w")
    ax.set_title(title, fontsize=9)
    return image


def window_figure(images: dict[str, torch.Tensor], proprio: torch.Tensor, t: int, tau: int,
                  actions_past: torch.Tensor, title: str = "", steps=None):
    """One real window: camera frames at t-tau, t, t+tau, the proprio trajectory, a^{t-tau:t}.

    images: {"t-τ": (3, H, W) uint8, "t": ..., "t+τ": ...}; proprio (T, D_p) of the whole
    demonstration (normalised); actions_past (tau, A) in [-1, 1]. ``t`` is a time step of the
    demonstration; ``steps`` (T,) are the time steps of the rows of ``proprio`` (default 0..T-1;
    with an image stride s the windows, and so the rows, exist only at every s-th step).
    """
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 2.8))
    grid = fig.add_gridspec(1, 6, width_ratios=[1, 1, 1, 0.2, 2.6, 1.6])
    for k, (name, image) in enumerate(images.items()):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(image.permute(1, 2, 0).cpu().numpy())
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(grid[0, 4])
    x = range(len(proprio)) if steps is None else [int(step) for step in steps]
    ax.plot(x, proprio[:, :7].cpu().numpy(), lw=0.8)
    for when, style in ((t - tau, ":"), (t, "-"), (t + tau, "--")):
        ax.axvline(when, color="k", ls=style, lw=1)
    ax.axvspan(t - tau, t, color="C1", alpha=0.2, label=r"$a^{t-\tau:t}$")
    ax.set_xlabel("step")
    ax.set_title("joint angles (normalised); lines: t-τ, t, t+τ", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax = fig.add_subplot(grid[0, 5])
    image = ax.imshow(actions_past.T.cpu().numpy(), cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
    ax.set_yticks(range(7), ["x", "y", "z", "rx", "ry", "rz", "grip"], fontsize=7)
    ax.set_xticks(range(tau), [f"t-{tau - j}" for j in range(tau)], fontsize=7, rotation=60)
    ax.set_title(r"$a^{t-\tau:t}$ (normalised)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.08)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def tokens_figure(panels: dict[str, torch.Tensor], title: str = ""):
    """Token matrices side by side: {name: (N, H)} (e.g. P^t, S^t, the action tokens)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 2.3))
    for ax, (name, tokens) in zip(axes, panels.items()):
        t = tokens.detach().float().cpu()
        bound = t.abs().max().item()
        image = ax.imshow(t, cmap="coolwarm", vmin=-bound, vmax=bound, aspect="auto")
        ax.set_title(f"{name}  {tuple(t.shape)}", fontsize=9)
        ax.set_xlabel("H", fontsize=8)
        ax.set_yticks(range(t.shape[0]), [str(i + 1) for i in range(t.shape[0])], fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.05)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def transition_attention_figure(maps: dict[str, dict[str, torch.Tensor]], n_p: int, n_s: int, tau: int,
                                block: int = 0, per_head: bool = False):
    """Eq. 7-8 attention maps (queries: current-state tokens; keys: past-state then action tokens).

    maps: {label: CLaD.attention_maps(...)}, each averaged over windows (block ``block``).
    ``per_head=False``: one row per model, columns eq. 7 and eq. 8, heads averaged.
    ``per_head=True``: the first model only, rows eq. 7 and eq. 8, one column per head.
    A white line separates the past-state keys from the action keys.
    """
    import matplotlib.pyplot as plt

    panels = []                                         # (row, col, weights (n, n + tau), modality, title)
    for row, (label, m) in enumerate(maps.items()):
        for col, (key, mod) in enumerate((("transition_p", "p"), ("transition_s", "s"))):
            eq = "7" if mod == "p" else "8"
            w = m[key][:, block].mean(dim=0)                                        # (heads, n, n + tau)
            if per_head:
                panels += [(col, h, w[h], mod, f"{label}: eq. {eq}, head {h + 1}") for h in range(w.shape[0])]
            else:
                panels.append((row, col, w.mean(0), mod, f"{label}: eq. {eq}, queries {mod.upper()}" + r"$^t$"))
        if per_head:
            break
    rows, cols = max(p[0] for p in panels) + 1, max(p[1] for p in panels) + 1
    vmax = max(p[2].max().item() for p in panels)                 # one colour scale for every panel
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols if not per_head else 3.3 * cols, 2.3 * rows + 0.5),
                             squeeze=False)
    for row, col, w, mod, title in panels:
        n = n_p if mod == "p" else n_s
        image = attention_heatmap(axes[row, col], w, [f"{mod}{i + 1}(t)" for i in range(n)],
                                  transition_key_labels(mod, n, tau), title, split=n, vmax=vmax,
                                  annotate=not per_head)
        fig.colorbar(image, ax=axes[row, col], fraction=0.04)
    fig.tight_layout()
    return fig


def cross_modal_figure(maps: dict[str, dict[str, torch.Tensor]], modes: dict[str, str], n_p: int, n_s: int,
                       block: int = 0):
    """Eq. 9 attention maps, one panel per model: maps {label: attention_maps}, modes {label: attention}.

    Each map is averaged over windows and heads; "self" maps get lines between the z_p and
    z_s blocks.
    """
    import matplotlib.pyplot as plt

    n = len(maps)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.2 * rows), squeeze=False)
    for ax, (label, m) in zip(axes.flat, maps.items()):
        mode = modes[label]
        q, k = cross_modal_labels(mode, n_p, n_s)
        w = m["cross_modal"][:, block].mean(dim=(0, 1))
        title = label if mode in label else f"{label}\n({mode})"
        image = attention_heatmap(ax, w, q, k, title, split=n_p if mode == "self" else None)
        if mode == "self":
            ax.axhline(n_p - 0.5, color="w", lw=2)
        fig.colorbar(image, ax=ax, fraction=0.04)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("eq. 9: who attends to whom (rows: queries, columns: keys; mean over windows and heads)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def pool_figure(maps: dict[str, dict[str, torch.Tensor]], modes: dict[str, str], n_p: int, n_s: int):
    """Eq. 10 pooling weights of q_out over the output tokens of eq. 9, one panel per model.

    Bars: mean over windows, one colour per head (pool weights (B, heads, N_k)); the black
    step is the head average, the dotted line a uniform 1/N_k.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(3.6 * len(maps), 2.6), squeeze=False)
    for ax, (label, m) in zip(axes[0], maps.items()):
        mode = modes[label]
        labels = cross_modal_labels(mode, n_p, n_s)[0]
        w = m["pool"].mean(0)                                                     # (heads, N_k)
        heads, N = w.shape
        width = 0.8 / heads
        for h in range(heads):
            ax.bar(torch.arange(N) + (h - (heads - 1) / 2) * width, w[h], width, alpha=0.6, label=f"head {h + 1}")
        ax.step(torch.arange(N + 1) - 0.5, torch.cat([w.mean(0), w.mean(0)[-1:]]), where="post", color="k",
                lw=1.2, label="mean")
        ax.axhline(1 / N, color="k", ls=":", lw=0.8)
        ax.set_xticks(range(N), labels, fontsize=7, rotation=45)
        ax.set_title(label if mode in label else f"{label} ({mode})", fontsize=9)
        ax.set_ylim(0, max(2.0 / N, 1.15 * w.max().item()))
    axes[0, 0].set_ylabel("pool weight of q_out")
    axes[0, -1].legend(fontsize=6)
    fig.suptitle("eq. 10: z_dyn = Pool(q_out, tokens of eq. 9)", fontsize=10)
    fig.tight_layout()
    return fig


def masking_figure(ratios: list[float], replaced: list[float], dependence: dict[str, list[float]]):
    """Left: measured replaced fraction vs r (the diagonal = exact). Right: relative change
    of z_p, z_s when the actions are swapped, vs r (dependence: {"z_p": [...], "z_s": [...]})."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
    ax1.plot([0, 1], [0, 1], color="0.7", ls="--", label="= r")
    ax1.plot(ratios, replaced, "o-", label="measured")
    ax1.set_xlabel("mask ratio r")
    ax1.set_ylabel("action tokens replaced")
    ax1.legend(fontsize=8)
    for key, values in dependence.items():
        ax2.plot(ratios, values, "o-", label=key)
    ax2.set_xlabel("mask ratio r")
    ax2.set_ylabel("relative change when the\nactions come from other windows")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig
