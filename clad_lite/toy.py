"""2-D toys for ``notebooks/01_ddpm_from_scratch.ipynb``: DDPM (eq. 1-4) on data you can plot.

Two problems, one DDPM (``clad_lite.ddpm``):

* **8 Gaussians** - x_0 in R^2 from a mixture of 8 Gaussians on a circle. An unconditional
  epsilon-network eps_theta(x_t, t) is trained with eq. 2 and sampled with eq. 3; the
  samples are scored by how many land within 3 sigma of a mode and how many modes get some.
* **Point robot around an obstacle** - a *conditional* data set in the style of a diffusion
  policy (sec. 2.2, eq. 4): the observation o is the robot's 2-D start position, the action
  a^{t:t+tau} is a chunk of tau = 6 2-D waypoints that reach a goal above a round obstacle,
  passing it on the left in half of the demonstrations and on the right in the other half.
  eps_theta(a_k, k, o) learns both modes; an MSE regressor o -> a learns their mean, which
  runs into the obstacle.

Shapes: B batch, D data width (2), tau chunk length, C condition width (2). Everything is
seeded: the same ``ToyConfig`` gives the same data, networks and numbers on the same machine.
Sizes come from the run profile (``ToyConfig.for_profile``; ``CLAD_PROFILE`` = ci / cpu / paper).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from clad_lite.ddpm import DDPM
from clad_lite.layers import MLP, MLPResNetBlock, SinusoidalEmbedding

# ----------------------------------------------------------------------------------------
# sizes


@dataclass(frozen=True)
class ToyConfig:
    """Every size and count of the notebook's toys; ``for_profile`` picks one by name.

    ``*_steps`` are optimizer steps; ``diffusion_steps`` / ``policy_diffusion_steps`` are T.
    """

    name: str = "cpu"
    seed: int = 0
    # 8 Gaussians
    diffusion_steps: int = 50          # T for the toy
    schedule: str = "cosine"
    n_data: int = 4000                 # size of the fixed training set
    hidden_dim: int = 128
    n_blocks: int = 3                  # MLPResNetBlocks of the epsilon-network
    time_embed_dim: int = 32
    train_steps: int = 3000
    batch_size: int = 256
    lr: float = 2e-3
    n_samples: int = 2000              # samples drawn for the quality numbers
    # point robot (conditional policy)
    horizon: int = 6                   # tau, as in CLaD's policy
    policy_diffusion_steps: int = 25   # T of CLaD's policy
    n_demos: int = 1000
    policy_steps: int = 3000
    regressor_steps: int = 1500

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", int) and field.name != "seed" and not (isinstance(value, int) and value > 0):
                raise ValueError(f"ToyConfig.{field.name} must be a positive int, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"ToyConfig.lr must be > 0, got {self.lr!r}")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"ToyConfig.seed must be an int >= 0, got {self.seed!r}")
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"ToyConfig.schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        if self.time_embed_dim % 2:
            raise ValueError(f"ToyConfig.time_embed_dim must be even, got {self.time_embed_dim}")
        if self.batch_size > self.n_data or self.batch_size > self.n_demos:
            raise ValueError(f"ToyConfig.batch_size={self.batch_size} exceeds n_data / n_demos")

    @classmethod
    def for_profile(cls, name: str | None = None) -> ToyConfig:
        """The sizes for profile ``name`` (default: ``$CLAD_PROFILE``, else ``cpu``).

        ci: seconds (a few hundred steps, the notebook runs in well under 90 s on 2 cores);
        cpu: a few minutes of training, cleaner samples; paper: twice the cpu steps.
        """
        from clad_lite.config import DEFAULT_PROFILE, ENV_VAR, PROFILE_NAMES

        if name is None:
            name = os.environ.get(ENV_VAR, "").strip() or DEFAULT_PROFILE
        if name not in PROFILE_NAMES:
            raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILE_NAMES)}")
        if name == "ci":
            return cls(name="ci", n_data=2000, hidden_dim=64, n_blocks=2, train_steps=1500, lr=5e-3,
                       n_samples=1000, n_demos=500, policy_steps=600, regressor_steps=300)
        if name == "cpu":
            return cls(name="cpu")
        return cls(name="paper", train_steps=6000, policy_steps=6000, regressor_steps=3000)


# ----------------------------------------------------------------------------------------
# data set 1: 8 Gaussians


def eight_gaussian_centers(radius: float = 0.8) -> torch.Tensor:
    """(8, 2) mode centres, evenly spaced on a circle of ``radius``."""
    angles = torch.arange(8, dtype=torch.float32) * math.pi / 4
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


def eight_gaussians(n: int, radius: float = 0.8, std: float = 0.05,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples x_0 (n, 2) of the 8-Gaussian mixture (equal weights) and their mode (n,) int64.

    With radius 0.8 and std 0.05 all data lie inside [-1, 1]^2, DDPM's clipping range.
    """
    centers = eight_gaussian_centers(radius)
    mode = torch.randint(0, 8, (n,), generator=generator)
    return centers[mode] + std * torch.randn(n, 2, generator=generator), mode


def mode_quality(samples: torch.Tensor, centers: torch.Tensor, std: float,
                 n_sigma: float = 3.0) -> dict:
    """How well (n, 2) ``samples`` match a mixture with (K, 2) ``centers`` and ``std``.

    * ``near``: fraction of samples within ``n_sigma * std`` of their nearest centre
      (for the true data: P(chi_2 < 3) = 1 - exp(-4.5) = 98.9%);
    * ``shares`` (K,): fraction of all samples that are near each mode (ideal: near / K);
    * ``covered``: modes holding at least a quarter of their fair share, 0.25 / K.
    """
    dist, mode = torch.cdist(samples.float(), centers).min(dim=1)
    near = dist < n_sigma * std
    shares = torch.bincount(mode[near], minlength=len(centers)).float() / len(samples)
    return {"near": near.float().mean().item(), "shares": shares,
            "covered": int((shares >= 0.25 / len(centers)).sum()),
            "min_share": shares.min().item(), "max_share": shares.max().item()}


# ----------------------------------------------------------------------------------------
# data set 2: a point robot that goes around an obstacle (conditional, two modes)


@dataclass(frozen=True)
class ObstacleTask:
    """A round obstacle between the robot's start (below it) and the goal (above it).

    Observations o = start position (x0, y0), x0 in ``start_x``, y0 in ``start_y``. A
    demonstration is a quadratic Bezier curve start -> goal whose control point is at
    (side * detour, 0), side = -1 (left) or +1 (right) with probability 1/2 each; the chunk
    is its tau waypoints at u = 1/tau, ..., 1 (absolute positions, all inside [-1, 1]).
    """

    center: tuple[float, float] = (0.0, 0.0)
    radius: float = 0.25
    goal: tuple[float, float] = (0.0, 0.85)
    start_x: tuple[float, float] = (-0.3, 0.3)
    start_y: tuple[float, float] = (-0.9, -0.75)
    detour: float = 1.0                # |x| of the Bezier control point
    detour_jitter: float = 0.1         # std of the control point, per demonstration
    waypoint_noise: float = 0.01       # std added to every waypoint

    def sample_obs(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 2) start positions, uniform in the start box."""
        u = torch.rand(n, 2, generator=generator)
        low = torch.tensor([self.start_x[0], self.start_y[0]])
        high = torch.tensor([self.start_x[1], self.start_y[1]])
        return low + u * (high - low)

    def chunks(self, obs: torch.Tensor, control_x: torch.Tensor, horizon: int) -> torch.Tensor:
        """Bezier waypoints: obs (n, 2), control_x (n,) -> (n, tau, 2)."""
        u = torch.arange(1, horizon + 1, dtype=torch.float32)[None, :, None] / horizon     # (1, tau, 1)
        control = torch.stack([control_x, torch.full_like(control_x, self.center[1])], dim=-1)
        goal = torch.tensor(self.goal)
        return ((1 - u) ** 2 * obs[:, None] + 2 * u * (1 - u) * control[:, None]
                + u ** 2 * goal[None, None])

    def mode_chunks(self, obs: torch.Tensor, horizon: int) -> torch.Tensor:
        """The two noise-free chunks per observation: (n, 2) -> (n, 2 modes [left, right], tau, 2)."""
        ones = torch.ones(len(obs))
        return torch.stack([self.chunks(obs, -self.detour * ones, horizon),
                            self.chunks(obs, self.detour * ones, horizon)], dim=1)

    def demonstrations(self, n: int, horizon: int = 6,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """n demonstrations: ``obs`` (n, 2), ``actions`` (n, tau, 2), ``side`` (n,) in {-1, +1}."""
        obs = self.sample_obs(n, generator)
        side = torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
        control_x = side * (self.detour + self.detour_jitter * torch.randn(n, generator=generator))
        actions = self.chunks(obs, control_x, horizon)
        actions = actions + self.waypoint_noise * torch.randn(actions.shape, generator=generator)
        return {"obs": obs, "actions": actions.clamp(-1, 1), "side": side}

    def paths(self, obs: torch.Tensor, chunks: torch.Tensor, per_segment: int = 10) -> torch.Tensor:
        """Dense polyline start -> waypoints: (n, 2), (n, tau, 2) -> (n, tau * per_segment + 1, 2)."""
        points = torch.cat([obs[:, None], chunks], dim=1)                                   # (n, tau+1, 2)
        w = torch.linspace(0, 1, per_segment + 1)[:-1][None, None, :, None]
        dense = points[:, :-1, None] * (1 - w) + points[:, 1:, None] * w                  # (n, tau, s, 2)
        return torch.cat([dense.flatten(1, 2), points[:, -1:]], dim=1)

    def score(self, obs: torch.Tensor, chunks: torch.Tensor) -> dict:
        """Grade chunks (n, tau, 2) for observations (n, 2).

        * ``collision``: the polyline start -> waypoints enters the obstacle;
        * ``left`` / ``right``: collision-free and passing left / right of the obstacle
          (sign of x - centre_x where the path is closest to the obstacle);
        * ``mode_error``: mean distance (per waypoint) to the nearer noise-free mode chunk;
        * ``goal_error``: mean distance of the last waypoint to the goal.
        """
        path = self.paths(obs, chunks)
        offset = path - torch.tensor(self.center)
        dist = offset.norm(dim=-1)                                                       # (n, P)
        closest = dist.argmin(dim=1)
        collision = dist.min(dim=1).values < self.radius
        side_x = offset[torch.arange(len(path)), closest, 0]
        modes = self.mode_chunks(obs, chunks.shape[1])                                   # (n, 2, tau, 2)
        err = (chunks[:, None] - modes).norm(dim=-1).mean(dim=-1).min(dim=1).values
        goal_err = (chunks[:, -1] - torch.tensor(self.goal)).norm(dim=-1)
        return {"collision": collision.float().mean().item(),
                "left": ((side_x < 0) & ~collision).float().mean().item(),
                "right": ((side_x > 0) & ~collision).float().mean().item(),
                "mode_error": err.mean().item(), "goal_error": goal_err.mean().item()}


# ----------------------------------------------------------------------------------------
# networks


class ToyEpsNet(nn.Module):
    """eps_theta(x_t, t[, cond]): x_t (B, *S), t (B,) int, cond (B, C) -> eps (B, *S).

    [flatten(x_t) ; MLP(sin-emb(t)) ; cond] -> Linear -> n_blocks x MLPResNetBlock -> LN ->
    GELU -> Linear: the same layout as the policy's ``EpsilonNetwork``, small. S is any
    sample shape: (2,) for points, (tau, 2) for action chunks (``data_dim`` = prod(S)).
    """

    def __init__(self, data_dim: int, cond_dim: int = 0, hidden_dim: int = 128, n_blocks: int = 3,
                 time_embed_dim: int = 32):
        super().__init__()
        self.cond_dim = cond_dim
        self.time_embed = nn.Sequential(SinusoidalEmbedding(time_embed_dim),
                                        MLP(time_embed_dim, 2 * time_embed_dim, time_embed_dim))
        self.input = nn.Linear(data_dim + time_embed_dim + cond_dim, hidden_dim)
        self.blocks = nn.Sequential(*(MLPResNetBlock(hidden_dim) for _ in range(n_blocks)))
        self.output = nn.Sequential(nn.LayerNorm(hidden_dim), nn.GELU(), nn.Linear(hidden_dim, data_dim))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        parts = [x_t.flatten(1), self.time_embed(t)]
        if self.cond_dim:
            if cond is None:
                raise ValueError("this network is conditional: pass cond (B, C)")
            parts.append(cond)
        return self.output(self.blocks(self.input(torch.cat(parts, dim=-1)))).reshape(x_t.shape)


class ChunkRegressor(nn.Module):
    """The non-generative baseline: cond (B, C) -> one chunk (B, *S), trained with MSE."""

    def __init__(self, cond_dim: int, out_shape: tuple[int, ...], hidden_dim: int = 128, n_blocks: int = 3):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = nn.Sequential(nn.Linear(cond_dim, hidden_dim),
                                 *(MLPResNetBlock(hidden_dim) for _ in range(n_blocks)),
                                 nn.LayerNorm(hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, math.prod(self.out_shape)))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.net(cond).reshape(len(cond), *self.out_shape)


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with its own seed, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def toy_eps_net(config: ToyConfig, data_dim: int = 2, cond_dim: int = 0) -> ToyEpsNet:
    """A ToyEpsNet of the config's sizes, initialised from ``config.seed``."""
    return _seeded(config.seed, lambda: ToyEpsNet(data_dim, cond_dim, config.hidden_dim,
                                                  config.n_blocks, config.time_embed_dim))


def chunk_regressor(config: ToyConfig, cond_dim: int = 2) -> ChunkRegressor:
    """The MSE baseline for (tau, 2) chunks, initialised from ``config.seed``."""
    return _seeded(config.seed, lambda: ChunkRegressor(cond_dim, (config.horizon, 2),
                                                       config.hidden_dim, config.n_blocks))


# ----------------------------------------------------------------------------------------
# training and sampling


def _optimizer(model: nn.Module, lr: float, steps: int):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # cosine decay to 5% of lr: the last steps average out the noise of eq. 2's estimate
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0.05 * lr)
    return opt, sched


def train_eps_model(net: nn.Module, ddpm: DDPM, data: torch.Tensor, cond: torch.Tensor | None = None, *,
                    steps: int, batch_size: int, lr: float, seed: int = 0, desc: str = "DDPM",
                    progress: bool = True) -> list[float]:
    """Minimise eq. 2 (eq. 4 with ``cond``) on a fixed data set; returns the loss per step.

    data (N, *S) are the x_0 (or a_0), cond (N, C) their observations. Each step draws a
    batch, t ~ U{0..T-1}, eps ~ N(0, I), forms x_t by eq. 1 and regresses eps (``DDPM.loss``).
    """
    gen = torch.Generator().manual_seed(seed)
    opt, sched = _optimizer(net, lr, steps)
    net.train()
    losses = []
    for _ in trange(steps, desc=desc, leave=False, disable=not progress, mininterval=1.0):
        idx = torch.randint(0, len(data), (batch_size,), generator=gen)
        if cond is None:
            model = net
        else:
            def model(x_t, t, o=cond[idx]):        # bind o_t: eps_theta(a_k, k, o_t)
                return net(x_t, t, o)
        loss = ddpm.loss(model, data[idx], generator=gen)          # eq. 2 / eq. 4
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    net.eval()
    return losses


def train_regressor(model: ChunkRegressor, cond: torch.Tensor, targets: torch.Tensor, *, steps: int,
                    batch_size: int, lr: float, seed: int = 0, progress: bool = True) -> list[float]:
    """Plain behaviour cloning: minimise ||f(o) - a||^2 over the demonstrations; loss per step."""
    gen = torch.Generator().manual_seed(seed)
    opt, sched = _optimizer(model, lr, steps)
    model.train()
    losses = []
    for _ in trange(steps, desc="MSE regressor", leave=False, disable=not progress, mininterval=1.0):
        idx = torch.randint(0, len(cond), (batch_size,), generator=gen)
        loss = F.mse_loss(model(cond[idx]), targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def loss_per_step(ddpm: DDPM, net: nn.Module, data: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Eq. 2 evaluated at every t separately on data (N, *S): (T,) mean squared error.

    The average over t is what training minimises; the curve shows where the error lives.
    """
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(data.shape, generator=gen)
    losses = []
    for t in range(ddpm.num_steps):
        steps = torch.full((len(data),), t, dtype=torch.long)
        eps = net(ddpm.q_sample(data, steps, noise), steps)          # eq. 1, then eps_theta
        losses.append(F.mse_loss(eps, noise))
    return torch.stack(losses)


@torch.no_grad()
def reverse_trajectory(ddpm: DDPM, net: nn.Module, shape: tuple[int, ...], cond: torch.Tensor | None = None,
                       seed: int = 0) -> torch.Tensor:
    """Ancestral sampling that keeps every step: (T + 1, *shape), index i holds x_{T-i}.

    Row 0 is x_T ~ N(0, I), row T is the sample x_0. Same random numbers as
    ``ddpm.sample(..., generator=torch.Generator().manual_seed(seed))``.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    xs = [x]
    for t in reversed(range(ddpm.num_steps)):
        steps = torch.full((shape[0],), t, dtype=torch.long)
        eps = net(x, steps) if cond is None else net(x, steps, cond)
        x = ddpm.step(eps, steps, x, generator=gen)                # eq. 3
        xs.append(x)
    return torch.stack(xs)


@torch.no_grad()
def sample_chunks(ddpm: DDPM, net: nn.Module, obs: torch.Tensor, n_per_obs: int, horizon: int,
                  seed: int = 0) -> torch.Tensor:
    """n_per_obs chunks for each observation: obs (M, C) -> (M, n_per_obs, tau, 2)."""
    cond = obs.repeat_interleave(n_per_obs, dim=0)
    gen = torch.Generator().manual_seed(seed)
    chunks = ddpm.sample(lambda a, k: net(a, k, cond), (len(cond), horizon, 2), generator=gen)
    return chunks.reshape(len(obs), n_per_obs, horizon, 2)


# ----------------------------------------------------------------------------------------
# figures (matplotlib is imported on use)


def _square(ax, lim: float = 1.2):
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def forward_process_figure(ddpm: DDPM, x0: torch.Tensor, steps: tuple[int, ...], seed: int = 0):
    """Scatter q(x_t | x_0) (eq. 1) of the same points x0 (n, 2) at several t, one panel each."""
    import matplotlib.pyplot as plt

    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=gen)          # one eps per point, shared by all t
    fig, axes = plt.subplots(1, len(steps), figsize=(2.3 * len(steps), 2.6))
    for ax, t in zip(axes, steps):
        x_t = ddpm.q_sample(x0, torch.full((len(x0),), t), noise)
        ax.scatter(x_t[:, 0], x_t[:, 1], s=2, alpha=0.5, c="C0")
        _square(ax, 2.5)
        ax.set_title(f"t = {t}\n" + r"$\bar\alpha_t$" + f" = {ddpm.alphas_cumprod[t]:.3f}", fontsize=9)
    fig.suptitle(r"forward process (eq. 1): $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$",
                 fontsize=10)
    fig.tight_layout()
    return fig


def samples_figure(data: torch.Tensor, samples: dict[str, torch.Tensor], centers: torch.Tensor, std: float,
                   n_sigma: float = 3.0):
    """Data beside each named set of samples (n, 2); the n_sigma circles around every mode."""
    import matplotlib.pyplot as plt

    panels = {"data": data, **samples}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.2))
    for ax, (title, points) in zip(axes, panels.items()):
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.4, c="C0" if title == "data" else "C1")
        for c in centers:
            ax.add_patch(plt.Circle(c.tolist(), n_sigma * std, fill=False, lw=0.8, color="k", alpha=0.6))
        if title != "data":
            q = mode_quality(points, centers, std, n_sigma)
            title = f"{title}\n{q['near']:.0%} within {n_sigma:g}σ, {q['covered']}/{len(centers)} modes"
        ax.set_title(title, fontsize=9)
        _square(ax, 1.3)
    fig.tight_layout()
    return fig


def reverse_trajectory_figure(trajectory: torch.Tensor, ddpm: DDPM, panels: int = 6, n_paths: int = 6):
    """Snapshots of x_t along the reverse process (T+1, n, 2), then a few full paths."""
    import matplotlib.pyplot as plt

    T = ddpm.num_steps
    # t = T ... 0, denser near t = 0 where the modes form
    ts = sorted({round(T * f) for f in torch.linspace(1, 0, panels).pow(2).tolist()}, reverse=True)
    rows = [T - t for t in ts]
    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(2.3 * (len(rows) + 1), 2.6))
    for ax, row in zip(axes, rows):
        x = trajectory[row]
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, c="C1")
        zoom = T - row <= T // 5                       # the last steps, where the modes form
        _square(ax, 1.3 if zoom else 2.5)
        ax.set_title(f"x_{T - row}" + (" (zoomed in)" if zoom else ""), fontsize=9)
    ax = axes[-1]
    for i in range(n_paths):
        path = trajectory[:, i]
        ax.plot(path[:, 0], path[:, 1], lw=0.6, alpha=0.7)
        ax.scatter(path[-1, 0], path[-1, 1], s=10, c="k", zorder=3)
    _square(ax, 2.5)
    ax.set_title(f"{n_paths} paths x_T → x_0", fontsize=9)
    fig.suptitle("reverse process (eq. 3), starting from N(0, I)", fontsize=10)
    fig.tight_layout()
    return fig


def policy_figure(task: ObstacleTask, demos: dict[str, torch.Tensor], test_obs: torch.Tensor,
                  diffusion_chunks: torch.Tensor, regressor_chunks: torch.Tensor, n_demos: int = 60):
    """Left: demonstrations. Then one panel per test observation: diffusion samples
    (M, n, tau, 2) coloured by the side they pass (blue left, green right, orange through the
    obstacle), the regressor's chunk (M, tau, 2) dashed red."""
    import matplotlib.pyplot as plt

    def scene(ax):
        ax.add_patch(plt.Circle(task.center, task.radius, color="0.6"))
        ax.scatter(*task.goal, marker="*", s=120, c="gold", edgecolor="k", zorder=7)
        _square(ax, 1.05)

    def draw(ax, obs, chunk, **kwargs):
        path = torch.cat([obs[None], chunk])
        ax.plot(path[:, 0], path[:, 1], **kwargs)

    fig, axes = plt.subplots(1, len(test_obs) + 1, figsize=(3.0 * (len(test_obs) + 1), 3.3))
    scene(axes[0])
    for i in range(min(n_demos, len(demos["obs"]))):
        side = demos["side"][i].item()
        draw(axes[0], demos["obs"][i], demos["actions"][i], lw=0.7, alpha=0.6,
             color="C0" if side < 0 else "C2", marker=".", ms=3)
    axes[0].set_title(f"{n_demos} demonstrations\n(τ = {demos['actions'].shape[1]} waypoints)", fontsize=9)
    for ax, obs, chunks, reg in zip(axes[1:], test_obs, diffusion_chunks, regressor_chunks):
        scene(ax)
        score = task.score(obs.expand(len(chunks), 2), chunks)
        for chunk in chunks:
            s = task.score(obs[None], chunk[None])
            color = "C1" if s["collision"] else ("C0" if s["left"] else "C2")
            draw(ax, obs, chunk, lw=0.7, alpha=0.5, color=color, marker=".", ms=3)
        draw(ax, obs, reg, lw=2.2, color="red", ls="--", marker="o", ms=4, zorder=5)
        ax.scatter(*obs.tolist(), s=40, c="k", zorder=6)
        ax.set_title(f"o = ({obs[0]:+.2f}, {obs[1]:+.2f})\nDDPM: {score['left']:.0%} L / "
                     f"{score['right']:.0%} R / {score['collision']:.0%} hit", fontsize=8)
    axes[1].plot([], [], color="red", ls="--", lw=2, label="MSE regressor")
    axes[1].plot([], [], color="C0", label="DDPM, left")
    axes[1].plot([], [], color="C2", label="DDPM, right")
    axes[1].plot([], [], color="C1", label="DDPM, hits obstacle")
    axes[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
