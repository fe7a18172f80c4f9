"""Stage 2: the diffusion policy guided by latent foresight (eq. 20-22).

Shapes: B batch, D_p / D_v / D_l observation widths, H = foresight_dim (CLaD's hidden_dim),
O = obs_dim, W = hidden_dim of the epsilon-network, tau = horizon, A = action_dim (7),
L = chunk_length = tau + extra_actions (tau, the paper, unless ``config.extra_actions`` > 0).

    o_p = e_p(p^t),  o_s = e_s(s_v^t, s_l)           (B, O)     eq. 20
    g_p = FiLM(zhat_p, o_p),  g_s = FiLM(zhat_s, o_s)  (B, H)    eq. 21 (obs gives scale, shift)
    c   = [g_p; g_s] | g_p | g_s | [o_p; o_s]           by ``config.foresight`` (figure 3)
          (+ [; e_a(a^{t-tau:t})] with ``config.past_actions``, not the paper)
    eps_theta(a_k, k, c): [flatten(a_k) ; emb(k) ; c] -> Linear -> n_blocks x MLPResNetBlock
                          -> LN -> GELU -> Linear -> (B, L, A)                            eq. 22
          (``config.cond_injection="every_block"``, not the paper: each block also FiLMs its
          normalised input by [emb(k) ; c])
    L_policy = ||eps - eps_theta(sqrt(abar_k) a_0 + sqrt(1 - abar_k) eps, k, c)||^2       eq. 22

e_s has its own (trainable) FiLM(v, l), like CLaD's semantic state; CLaD itself is frozen in
stage 2 and only supplies the foresights (pass them in, or pass the CLaD and let the policy
call ``clad.foresight`` under ``torch.no_grad``). The policy-only baseline
(``foresight="none"``) never needs a CLaD.

Batch keys: ``proprio`` (B, D_p), ``vision`` (B, D_v), ``language`` (B, D_l),
``actions`` (B, L, A) = a^{t:t+L} in [-1, 1] (training only), plus CLaD's
``FORESIGHT_BATCH_KEYS`` / ``actions_past`` when the policy has to compute foresights.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from clad_lite.clad import CLaD, Foresight
from clad_lite.configuration_clad import PolicyConfig
from clad_lite.ddpm import DDPM
from clad_lite.layers import FiLM, MLP, MLPResNetBlock, SinusoidalEmbedding

POLICY_BATCH_KEYS = ("proprio", "vision", "language", "actions")


class EpsilonNetwork(nn.Module):
    """MLP-ResNet noise predictor: a_k (B, L, A), k (B,), cond (B, C) -> eps (B, L, A)."""

    def __init__(self, config: PolicyConfig, cond_dim: int):
        super().__init__()
        c = config
        self.chunk_length, self.action_dim = c.chunk_length, c.action_dim
        W = c.hidden_dim
        self.time_embed = nn.Sequential(SinusoidalEmbedding(c.time_embed_dim),
                                        MLP(c.time_embed_dim, 2 * c.time_embed_dim, c.time_embed_dim))
        self.input = nn.Linear(c.chunk_length * c.action_dim + c.time_embed_dim + cond_dim, W)
        # "every_block" (not the paper): [emb(k) ; c] also FiLMs each block (PolicyConfig.cond_injection)
        block_cond_dim = c.time_embed_dim + cond_dim if c.cond_injection == "every_block" else 0
        self.blocks = nn.ModuleList(MLPResNetBlock(W, c.mlp_ratio, c.dropout, block_cond_dim)
                                    for _ in range(c.n_blocks))
        self.output = nn.Sequential(nn.LayerNorm(W), nn.GELU(), nn.Linear(W, c.chunk_length * c.action_dim))

    def forward(self, noisy_actions: torch.Tensor, k: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        step_and_cond = torch.cat([self.time_embed(k).to(cond.dtype), cond], dim=-1)   # (B, T + C)
        x = self.input(torch.cat([rearrange(noisy_actions, "b t a -> b (t a)"), step_and_cond], dim=-1))
        for block in self.blocks:
            x = block(x, step_and_cond)   # the blocks of "input" ignore it (no FiLM)
        x = self.output(x)
        return rearrange(x, "b (t a) -> b t a", t=self.chunk_length)


class ForesightPolicy(nn.Module):
    """Diffusion policy over action chunks a^{t:t+L}, conditioned on latent foresight.

    ``loss(batch, foresight=None, clad=None)`` -> scalar eq. 22 loss (float32);
    ``sample_actions(obs, foresight=None, clad=None, generator=None, num_samples=1)`` -> (B, L, A)
    in [-1, 1] (the mean of ``num_samples`` draws); a rollout executes the first tau of the L.
    Foresights come either as a ``Foresight`` / (zhat_p, zhat_s) pair of (B, H) tensors or
    from a frozen ``clad`` evaluated on the batch; ignored when ``foresight="none"``.
    """

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = c = config
        # observation encoders (eq. 20)
        self.e_p = MLP(c.proprio_dim, c.obs_hidden_dim, c.obs_dim, c.obs_layers)
        self.semantic_film = FiLM(c.vision_dim, c.language_dim)
        self.e_s = MLP(c.vision_dim, c.obs_hidden_dim, c.obs_dim, c.obs_layers)
        # observation-modulated foresights (eq. 21)
        if c.foresight in ("both", "proprio"):
            self.film_p = FiLM(c.foresight_dim, c.obs_dim)
        if c.foresight in ("both", "semantic"):
            self.film_s = FiLM(c.foresight_dim, c.obs_dim)
        cond_dim = {"both": 2 * c.foresight_dim, "proprio": c.foresight_dim,
                    "semantic": c.foresight_dim, "none": 2 * c.obs_dim}[c.foresight]
        if c.past_actions:  # e_a(a^{t-tau:t}) appended to the condition (not the paper; see PolicyConfig)
            self.e_a = MLP(c.horizon * c.action_dim, c.obs_hidden_dim, c.obs_dim, c.obs_layers)
            cond_dim += c.obs_dim
        self.eps_net = EpsilonNetwork(c, cond_dim)                                    # eq. 22
        self.ddpm = DDPM(c.diffusion_steps, c.schedule, clip_sample=c.clip_sample, prediction=c.prediction)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------- conditioning
    def encode_observation(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 20: o_p = e_p(p^t), o_s = e_s(FiLM(v^t, l)), each (B, O)."""
        o_p = self.e_p(obs["proprio"])
        o_s = self.e_s(self.semantic_film(obs["vision"], obs["language"]))
        return o_p, o_s

    def _normalize(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.foresight_norm == "rms":
            return z * torch.rsqrt(z.float().pow(2).mean(dim=-1, keepdim=True) + 1e-6).to(z.dtype)
        return z

    def _resolve_foresight(self, obs: dict, foresight, clad: CLaD | None):
        if foresight is not None:
            return foresight[0], foresight[1]
        if clad is None:
            raise ValueError(f"foresight={self.config.foresight!r} needs foresights or a CLaD")
        was_training = clad.training
        clad.eval()
        with torch.no_grad():                       # CLaD is frozen in stage 2
            result = clad.foresight(obs)
        clad.train(was_training)
        return result.proprio.detach(), result.semantic.detach()

    def condition(self, obs: dict, foresight: Foresight | tuple | None = None,
                  clad: CLaD | None = None) -> torch.Tensor:
        """The epsilon-network's condition c (B, C) (eq. 21 and figure-3 variants)."""
        o_p, o_s = self.encode_observation(obs)
        mode = self.config.foresight
        if mode == "none":
            parts = [o_p, o_s]
        else:
            zhat_p, zhat_s = self._resolve_foresight(obs, foresight, clad)
            parts = []
            if mode in ("both", "proprio"):
                parts.append(self.film_p(self._normalize(zhat_p), o_p))              # eq. 21
            if mode in ("both", "semantic"):
                parts.append(self.film_s(self._normalize(zhat_s), o_s))
        if self.config.past_actions:
            if "actions_past" not in obs:
                raise KeyError("policy.past_actions=True needs obs['actions_past'] (B, tau, A)")
            parts.append(self.e_a(rearrange(obs["actions_past"], "b t a -> b (t a)")))
        return torch.cat(parts, dim=-1)

    # ----------------------------------------------------------- train / act
    def loss(self, batch: dict, foresight: Foresight | tuple | None = None,
             clad: CLaD | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Eq. 22 on ``batch['actions']`` (B, L, A); float32 scalar."""
        expected = (self.config.chunk_length, self.config.action_dim)
        if tuple(batch["actions"].shape[1:]) != expected:
            raise ValueError(f"batch['actions'] has shape {tuple(batch['actions'].shape)}, the policy predicts chunks of "
                             f"{expected} (horizon {self.config.horizon} + extra_actions {self.config.extra_actions})")
        cond = self.condition(batch, foresight, clad)
        return self.ddpm.loss(lambda a_k, k: self.eps_net(a_k, k, cond), batch["actions"],
                              generator=generator)

    forward = loss

    @torch.no_grad()
    def sample_actions(self, obs: dict, foresight: Foresight | tuple | None = None,
                       clad: CLaD | None = None,
                       generator: torch.Generator | None = None,
                       num_samples: int = 1, sampler: str = "ddpm",
                       num_inference_steps: int | None = None) -> torch.Tensor:
        """Reverse diffusion (eq. 3) from N(0, I) -> action chunk (B, L, A) in [-1, 1].

        ``sampler="ddim"`` (not the paper) replaces the T ancestral steps by ``num_inference_steps``
        deterministic DDIM steps (``DDPM.sample``): the same trained network, no noise after x_T.

        ``num_samples`` = N > 1 draws N chunks per observation in one batched pass (B * N) and
        returns their mean: an estimate of E[a^{t:t+tau} | c] instead of one draw. Not the paper's
        (which executes one sample); it trades the policy's multimodality for lower variance,
        which suits a unimodal (scripted) demonstrator: with N = 1 every executed chunk carries
        the spread of the learned distribution, e.g. a gripper command that crosses 0.
        """
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f"num_samples={num_samples!r}: must be an int >= 1")
        cond = self.condition(obs, foresight, clad)
        batch = cond.shape[0]
        if num_samples > 1:
            cond = cond.repeat_interleave(num_samples, dim=0)                # (B * N, C)
        shape = (cond.shape[0], self.config.chunk_length, self.config.action_dim)
        actions = self.ddpm.sample(lambda a_k, k: self.eps_net(a_k, k, cond), shape,
                                   device=cond.device, generator=generator, sampler=sampler,
                                   num_inference_steps=num_inference_steps)
        if num_samples > 1:
            actions = rearrange(actions, "(b n) t a -> b n t a", b=batch).mean(dim=1)
        return actions.float().clamp(-1.0, 1.0)


def count_policy_parameters(config: PolicyConfig) -> int:
    """Trainable parameters of a ForesightPolicy for ``config`` (CLaD not included), on 'meta'."""
    with torch.device("meta"):
        model = ForesightPolicy(config)
    return model.num_parameters()


__all__ = ["ForesightPolicy", "EpsilonNetwork", "count_policy_parameters", "POLICY_BATCH_KEYS"]
