"""CLaD, stage 1: cross-modal latent dynamics and grounded latent foresight (eq. 5-19).

Shapes: B batch, D_p = proprio_dim, D_v = vision_dim, D_l = language_dim, H = hidden_dim,
N_p / N_s proprio / semantic tokens, tau = horizon, A = action_dim (7).

Batch (a dict of tensors; one sample = one time t of one demonstration):

    proprio_past   (B, D_p)     p^{t-tau}
    proprio        (B, D_p)     p^t
    proprio_future (B, D_p)     p^{t+tau}        (training only)
    vision_past    (B, D_v)     v^{t-tau}   frozen image embeddings, cameras concatenated
    vision         (B, D_v)     v^t
    vision_future  (B, D_v)     v^{t+tau}        (training only)
    language       (B, D_l)     l           frozen instruction embedding
    actions_past   (B, tau, A)  a^{t-tau:t} the tau actions that led from p^{t-tau} to p^t
                                (optional in ``foresight``: missing = every token masked)

Forward pass (``CLaD.forward``; ``CLaD.foresight`` is the same without targets):

    s = FiLM(v, l)                                         semantic state (sec. 4.1)
    P^t, P^{t-tau} = f_p(p^t), f_p(p^{t-tau})  (B, N_p, H)  eq. 5
    S^t, S^{t-tau} = f_s(s^t), f_s(s^{t-tau})  (B, N_s, H)  eq. 6
    A = f_a(a^{t-tau:t}) + pos                 (B, tau, H)  tokens replaced by a learnable
                                                           mask token with prob. r
    z_p = CrossAttn(P^t, [P^{t-tau}; A])       (B, N_p, H)  eq. 7
    z_s = CrossAttn(S^t, [S^{t-tau}; A])       (B, N_s, H)  eq. 8
    z   = CrossAttn(z_p, z_s)                  (B, N_p, H)  eq. 9 ("p_queries_s")
    z_dyn = Pool(q_out, z)                     (B, H)       eq. 10
    zhat_p, zhat_s = g_p(z_dyn), g_s(z_dyn)    (B, H)       eq. 11-13
    zbar_p = mean_tokens f_p^target(p^{t+tau})                  eq. 15 (EMA, no grad)
    zbar_s = mean_tokens f_s^target(FiLM^target(v^{t+tau}, l))  eq. 16 (EMA, no grad)
    L_latent = ||zhat_p/|zhat_p| - zbar_p/|zbar_p|||^2 + (same for s)   eq. 17, each in [0, 4]
    L_recon  = MSE(h_p(zhat_p), p^{t+tau}) + MSE(h_s(zhat_s), s^{t+tau})  eq. 18
    L = L_latent + lambda_recon * L_recon                                 eq. 19

Readings of the paper made here (it gives no code for them):
* Target token reduction: f^target returns N x H tokens while the foresight is one H-vector
  (g: R^H -> R^H, eq. 11-12), so the target is the mean of the target encoder's tokens.
* Eq. 18 writes a norm; we use the mean squared error (a per-element mean, so that D_p = 16
  and D_v = 2048 are on the same scale). The semantic target s^{t+tau} is the EMA FiLM's
  output FiLM^target(v^{t+tau}, l) (eq. 16's s^{t+tau}), detached; config
  ``recon_semantic_target="vision"`` reconstructs the raw frozen embedding v^{t+tau} instead.
* Masking: each action token is independently replaced with probability r (Bernoulli), in
  training only; see ``CLaDConfig.mask_ratio_at`` for the table-7 schedules.
* Ablation "self" (table 5): symmetric self-attention over [z_p; z_s] (with a learned
  modality embedding), pooled over all N_p + N_s tokens.

Losses are computed in float32 so the model is safe under bf16 autocast.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from clad_lite.configuration_clad import CLaDConfig
from clad_lite.layers import (
    MLP,
    AttentionPool,
    CrossAttentionStack,
    FiLM,
    record_attention,
)

CLAD_BATCH_KEYS = ("proprio_past", "proprio", "proprio_future", "vision_past", "vision",
                   "vision_future", "language", "actions_past")
FORESIGHT_BATCH_KEYS = ("proprio_past", "proprio", "vision_past", "vision", "language")


class Foresight(NamedTuple):
    """Outputs of ``CLaD.foresight``: zhat_p, zhat_s (eq. 11-12) and z_dyn (eq. 10), (B, H) each."""

    proprio: torch.Tensor
    semantic: torch.Tensor
    z_dyn: torch.Tensor


class TokenEncoder(nn.Module):
    """MLP encoder of a state into tokens (eq. 5-6): (B, D) -> (B, N, H)."""

    def __init__(self, in_dim: int, hidden_dim: int, n_tokens: int, width: int, layers: int):
        super().__init__()
        self.n_tokens = n_tokens
        self.mlp = MLP(in_dim, width, n_tokens * hidden_dim, layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.mlp(x), "b (n h) -> b n h", n=self.n_tokens)


def l2_latent_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 17 for one modality: ||p/|p| - t/|t|||^2 per sample, (B, H) x2 -> (B,) in [0, 4]."""
    prediction = F.normalize(prediction.float(), dim=-1, eps=1e-6)
    target = F.normalize(target.float(), dim=-1, eps=1e-6)
    return (prediction - target).pow(2).sum(dim=-1)


class CLaD(nn.Module):
    """Cross-modal latent dynamics model (stage 1).

    ``forward(batch, progress=None)`` -> dict of scalar losses ``loss``, ``latent``,
    ``recon``, ``latent_proprio``, ``latent_semantic``, ``recon_proprio``,
    ``recon_semantic`` and tensors ``foresight_proprio``, ``foresight_semantic``,
    ``z_dyn`` (B, H), ``mask_ratio`` (float). Call ``update_ema()`` after each optimiser step.
    """

    def __init__(self, config: CLaDConfig):
        super().__init__()
        self.config = c = config
        H = c.hidden_dim
        # semantic state s = FiLM(v, l) (sec. 4.1), and the encoders of eq. 5-6
        self.film = FiLM(c.vision_dim, c.language_dim)
        self.f_p = TokenEncoder(c.proprio_dim, H, c.n_proprio_tokens, c.encoder_hidden_dim, c.encoder_layers)
        self.f_s = TokenEncoder(c.vision_dim, H, c.n_semantic_tokens, c.encoder_hidden_dim, c.encoder_layers)
        # action encoder f_a, one token per action, time position, learnable mask token
        self.f_a = MLP(c.action_dim, c.encoder_hidden_dim, H, c.encoder_layers)
        self.action_pos = nn.Parameter(torch.randn(1, c.horizon, H) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(1, 1, H) * 0.02)
        # transition embeddings (eq. 7-8)
        block = dict(dim=H, n_heads=c.n_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout)
        self.transition_p = CrossAttentionStack(depth=c.transition_depth, **block)
        self.transition_s = CrossAttentionStack(depth=c.transition_depth, **block)
        # cross-modal attention (eq. 9) and pooling (eq. 10)
        if c.attention == "self":
            self.modality_embed = nn.Parameter(torch.randn(2, H) * 0.02)
        self.cross_modal = CrossAttentionStack(depth=c.cross_depth, cross=c.attention != "self", **block)
        self.pool = AttentionPool(H, c.n_heads, c.dropout)
        # foresight heads (eq. 11-12) and reconstruction decoders (eq. 18)
        self.g_p = MLP(H, c.head_hidden_dim, H, c.head_layers)
        self.g_s = MLP(H, c.head_hidden_dim, H, c.head_layers)
        self.h_p = MLP(H, c.head_hidden_dim, c.proprio_dim, c.head_layers)
        self.h_s = MLP(H, c.head_hidden_dim, c.vision_dim, c.head_layers)
        # EMA target encoders (eq. 14-16): copies that never receive gradients
        self.f_p_target = copy.deepcopy(self.f_p).requires_grad_(False)
        self.f_s_target = copy.deepcopy(self.f_s).requires_grad_(False)
        self.film_target = copy.deepcopy(self.film).requires_grad_(False)

    # ------------------------------------------------------------------ EMA (eq. 14)
    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) module pairs updated by ``update_ema``."""
        return [(self.f_p, self.f_p_target), (self.f_s, self.f_s_target),
                (self.film, self.film_target)]

    @torch.no_grad()
    def update_ema(self, momentum: float | None = None) -> None:
        """theta_target <- m * theta_target + (1 - m) * theta  (eq. 14)."""
        m = self.config.ema_momentum if momentum is None else momentum
        for online, target in self.ema_pairs():
            for p_online, p_target in zip(online.parameters(), target.parameters()):
                p_target.mul_(m).add_(p_online.detach(), alpha=1.0 - m)

    def target_parameter_names(self) -> set[str]:
        prefixes = ("f_p_target.", "f_s_target.", "film_target.")
        return {name for name, _ in self.named_parameters() if name.startswith(prefixes)}

    def num_parameters(self, include_targets: bool = False) -> int:
        """Parameter count; the EMA target copies are excluded by default (as in the paper)."""
        skip = set() if include_targets else self.target_parameter_names()
        return sum(p.numel() for name, p in self.named_parameters() if name not in skip)

    def freeze(self) -> "CLaD":
        """Stage 2: no gradients, eval mode (no masking, no dropout). Returns self."""
        self.requires_grad_(False)
        return self.eval()

    # --------------------------------------------------------------- building blocks
    def semantic_state(self, vision: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
        """s = FiLM(v, l): (B, D_v), (B, D_l) -> (B, D_v)."""
        return self.film(vision, language)

    def encode_actions(self, actions: torch.Tensor | None, batch_size: int, mask_ratio: float,
                       device, generator: torch.Generator | None = None) -> torch.Tensor:
        """a^{t-tau:t} (B, tau, A) or None -> tokens (B, tau, H) with masked tokens replaced.

        Each token is replaced by the learnable mask token with probability ``mask_ratio``;
        ``actions=None`` or ``mask_ratio >= 1`` masks all of them (the output then does not
        depend on the actions at all).
        """
        H, tau = self.config.hidden_dim, self.config.horizon
        mask_tokens = self.mask_token.expand(batch_size, tau, H)
        if actions is None or mask_ratio >= 1.0:
            tokens = mask_tokens
        else:
            tokens = self.f_a(actions)
            if mask_ratio > 0.0:
                draw = torch.rand((batch_size, tau, 1), generator=generator,
                                  device=generator.device if generator is not None else device)
                masked = draw.to(device) < mask_ratio
                tokens = torch.where(masked, mask_tokens.to(tokens.dtype), tokens)
        return tokens + self.action_pos

    def transitions(self, batch: dict, mask_ratio: float,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 5-8: transition embeddings z_p (B, N_p, H) and z_s (B, N_s, H)."""
        language = batch["language"]
        s_now = self.semantic_state(batch["vision"], language)
        s_past = self.semantic_state(batch["vision_past"], language)
        p_now, p_past = self.f_p(batch["proprio"]), self.f_p(batch["proprio_past"])    # eq. 5
        s_now, s_past = self.f_s(s_now), self.f_s(s_past)                              # eq. 6
        B = p_now.shape[0]
        actions = self.encode_actions(batch.get("actions_past"), B, mask_ratio, p_now.device, generator)
        z_p = self.transition_p(p_now, torch.cat([p_past, actions], dim=1))            # eq. 7
        z_s = self.transition_s(s_now, torch.cat([s_past, actions], dim=1))            # eq. 8
        return z_p, z_s

    def cross_modal_attention(self, z_p: torch.Tensor, z_s: torch.Tensor) -> torch.Tensor:
        """Eq. 9: (B, N_p, H), (B, N_s, H) -> tokens whose count depends on the direction.

        "p_queries_s" -> (B, N_p, H) (the paper), "s_queries_p" -> (B, N_s, H),
        "self" -> (B, N_p + N_s, H) symmetric self-attention.
        """
        mode = self.config.attention
        if mode == "p_queries_s":
            return self.cross_modal(z_p, z_s)
        if mode == "s_queries_p":
            return self.cross_modal(z_s, z_p)
        tokens = torch.cat([z_p + self.modality_embed[0], z_s + self.modality_embed[1]], dim=1)
        return self.cross_modal(tokens)

    def dynamics(self, batch: dict, mask_ratio: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Eq. 5-10: batch -> z_dyn (B, H)."""
        z_p, z_s = self.transitions(batch, mask_ratio, generator)
        return self.pool(self.cross_modal_attention(z_p, z_s))                        # eq. 10

    @torch.no_grad()
    def attention_maps(self, batch: dict, mask_ratio: float = 0.0,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The softmax weights of every attention of eq. 7-10 on ``batch`` (for figures).

        Runs ``dynamics`` under ``clad_lite.layers.record_attention`` and returns

            transition_p  (B, transition_depth, heads, N_p, N_p + tau)  eq. 7: keys [P^{t-tau}; A]
            transition_s  (B, transition_depth, heads, N_s, N_s + tau)  eq. 8: keys [S^{t-tau}; A]
            cross_modal   (B, cross_depth, heads, N_q, N_k)             eq. 9: p_queries_s: N_p x N_s,
                          s_queries_p: N_s x N_p, self: (N_p + N_s) x (N_p + N_s), [z_p; z_s] order
            pool          (B, heads, N_k)                               eq. 10: q_out over those tokens
            z_dyn         (B, H)                                        the output, for convenience

        Every row of weights sums to 1 over its keys. Outputs of the model are unchanged.
        """
        with record_attention(self) as record:
            z_dyn = self.dynamics(batch, mask_ratio, generator)

        def stack(prefix: str, depth: int) -> torch.Tensor:
            return torch.stack([record[f"{prefix}.blocks.{i}.attn"] for i in range(depth)], dim=1)

        c = self.config
        return {"transition_p": stack("transition_p", c.transition_depth),
                "transition_s": stack("transition_s", c.transition_depth),
                "cross_modal": stack("cross_modal", c.cross_depth),
                "pool": record["pool.attn"][:, :, 0], "z_dyn": z_dyn}

    def foresight(self, batch: dict, mask_ratio: float | None = None,
                  generator: torch.Generator | None = None) -> Foresight:
        """Latent foresights zhat_p, zhat_s (B, H) (eq. 11-13) and z_dyn (B, H).

        Needs the ``FORESIGHT_BATCH_KEYS`` and optionally ``actions_past`` (at the start of
        an episode, pass the current state as the past one and no actions). The mask ratio
        defaults to the inference one, ``config.mask_ratio_at(training=False)``.
        """
        if mask_ratio is None:
            mask_ratio = self.config.mask_ratio_at(training=False)
        z_dyn = self.dynamics(batch, mask_ratio, generator)
        return Foresight(self.g_p(z_dyn), self.g_s(z_dyn), z_dyn)                       # eq. 11-13

    @torch.no_grad()
    def targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eq. 15-16 with the EMA encoders: zbar_p, zbar_s (B, H) and s^{t+tau} (B, D_v)."""
        s_future = self.film_target(batch["vision_future"], batch["language"])
        zbar_p = self.f_p_target(batch["proprio_future"]).mean(dim=1)                 # eq. 15
        zbar_s = self.f_s_target(s_future).mean(dim=1)                                # eq. 16
        return zbar_p.detach(), zbar_s.detach(), s_future.detach()

    # ------------------------------------------------------------------- training
    def forward(self, batch: dict, progress: float | None = None,
                mask_ratio: float | None = None,
                generator: torch.Generator | None = None) -> dict:
        """Stage-1 losses (eq. 17-19) on a batch with all ``CLAD_BATCH_KEYS``.

        ``progress`` in [0, 1] is the fraction of training done (for the mask curriculum);
        ``mask_ratio`` overrides the schedule.
        """
        c = self.config
        if mask_ratio is None:
            mask_ratio = c.mask_ratio_at(progress, training=self.training)
        z_dyn = self.dynamics(batch, mask_ratio, generator)
        zhat_p, zhat_s = self.g_p(z_dyn), self.g_s(z_dyn)                             # eq. 11-12
        zbar_p, zbar_s, s_future = self.targets(batch)                                # eq. 15-16
        latent_p = l2_latent_loss(zhat_p, zbar_p).mean()                              # eq. 17
        latent_s = l2_latent_loss(zhat_s, zbar_s).mean()
        recon_target_s = s_future if c.recon_semantic_target == "film_target" else batch["vision_future"]
        recon_p = F.mse_loss(self.h_p(zhat_p).float(), batch["proprio_future"].float())   # eq. 18
        recon_s = F.mse_loss(self.h_s(zhat_s).float(), recon_target_s.detach().float())
        latent, recon = latent_p + latent_s, recon_p + recon_s
        return {
            "loss": latent + c.lambda_recon * recon,                                  # eq. 19
            "latent": latent, "recon": recon,
            "latent_proprio": latent_p, "latent_semantic": latent_s,
            "recon_proprio": recon_p, "recon_semantic": recon_s,
            "foresight_proprio": zhat_p, "foresight_semantic": zhat_s, "z_dyn": z_dyn,
            "mask_ratio": float(mask_ratio),
        }


def make_dummy_batch(config, batch_size: int, generator: torch.Generator | None = None,
                     device=None) -> dict:
    """A random batch with every key of stage 1 and stage 2, for shape checks and demos.

    ``config`` is a ``CLaDConfig`` or ``PolicyConfig`` (same observation fields). States and
    embeddings ~ N(0, 1); ``actions_past`` (B, tau, A) and ``actions`` (B, L, A) ~ U(-1, 1), L the
    policy's ``chunk_length`` (tau for a ``CLaDConfig``).
    """
    B, tau, A = batch_size, config.horizon, config.action_dim

    def normal(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    def uniform(*shape):
        return (torch.rand(*shape, generator=generator) * 2 - 1).to(device)

    batch = {}
    for when in ("_past", "", "_future"):
        batch["proprio" + when] = normal(B, config.proprio_dim)
        batch["vision" + when] = normal(B, config.vision_dim)
    batch["language"] = normal(B, config.language_dim)
    batch["actions_past"] = uniform(B, tau, A)
    batch["actions"] = uniform(B, getattr(config, "chunk_length", tau), A)
    return batch


def count_clad_parameters(config: CLaDConfig) -> int:
    """Trainable parameters of a CLaD for ``config`` (EMA targets excluded), built on 'meta'."""
    with torch.device("meta"):
        model = CLaD(config)
    return model.num_parameters(include_targets=False)


__all__ = ["CLaD", "Foresight", "l2_latent_loss", "count_clad_parameters", "make_dummy_batch", "CLAD_BATCH_KEYS",
           "FORESIGHT_BATCH_KEYS"]
