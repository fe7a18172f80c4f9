"""Configurations of the two CLaD models and their size presets.

``CLaDConfig`` describes stage 1 (the cross-modal latent dynamics model, eq. 5-19) and
``PolicyConfig`` stage 2 (the foresight-conditioned diffusion policy, eq. 20-22). Both are
plain dataclasses that validate themselves in ``__post_init__`` (a bad value raises
``ValueError`` naming the field and the value), so ``dataclasses.replace(cfg, ...)`` is the
way to derive a variant, e.g. an ablation (see ``ABLATIONS`` and ``apply_ablation``).

``MODEL_PRESETS`` maps a size name to a ``(CLaDConfig, PolicyConfig)`` pair:

* ``"ci"``    - tiny, for tests and CI notebooks (frozen-encoder embedding width E = 64);
* ``"cpu"``   - trains in tens of minutes on 2 CPU cores on cached embeddings (E = 256);
* ``"paper"`` - H = 1024, N_p = N_s = 4, tau = 6 and parameter counts that match the
  paper (CLaD 0.33B, policy 0.23B; see ``paper_presets`` for the depth/width reading).

Observation dimensions, shared by every preset: ``proprio_dim = 16`` (joint positions 7 +
gripper joint positions 2 + joint velocities 7, i.e. "joint angles and velocities" as the
paper says; the authors' code used a 9-D [gripper qpos 2, eef pos 3, eef quat 4] vector,
which is one ``dataclasses.replace(cfg, proprio_dim=9)`` away), ``vision_dim = 2 * E``
(agentview + wrist image embeddings, concatenated) and ``language_dim = E``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MASK_SCHEDULES = ("fixed", "action_free", "curriculum")
ATTENTIONS = ("p_queries_s", "s_queries_p", "self")
FORESIGHTS = ("both", "proprio", "semantic", "none")
SCHEDULES = ("linear", "cosine")
RECON_SEMANTIC_TARGETS = ("film_target", "vision")
FORESIGHT_NORMS = ("rms", "none")
PREDICTIONS = ("epsilon", "sample")  # what the DDPM network outputs (clad_lite.ddpm.DDPM reads these)
COND_INJECTIONS = ("input", "every_block")  # where the epsilon-network reads its condition (PolicyConfig)
# which weights of a training checkpoint a model is loaded with (``clad_lite.train.checkpoint_weights``)
WEIGHTS = ("auto", "ema", "raw")


def _check(condition: bool, field: str, value, expectation: str) -> None:
    if not condition:
        raise ValueError(f"{field}={value!r}: {expectation}")


def resolve_weights(weights: str, has_ema: bool) -> str:
    """"ema" | "raw": what ``weights`` picks from a checkpoint that does (not) hold a weight EMA.

    "raw" = the optimised weights; "ema" = their moving average (an error without one);
    "auto" = the EMA when there is one, else the raw weights.
    """
    _check(weights in WEIGHTS, "weights", weights, f"must be one of {WEIGHTS}")
    if weights == "ema" and not has_ema:
        raise ValueError("holds no weight EMA (trained with ema_decay = 0)")
    return "ema" if weights == "ema" or (weights == "auto" and has_ema) else "raw"


def _check_positive_ints(obj, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        _check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
               name, value, "must be a positive int")


def _check_choice(obj, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    _check(value in choices, name, value, f"must be one of {choices}")


@dataclass
class CLaDConfig:
    """Stage 1: cross-modal latent dynamics (paper eq. 5-19).

    Observation sizes
        proprio_dim (D_p), vision_dim (all cameras' frozen image embeddings, concatenated),
        language_dim (frozen instruction embedding), action_dim, horizon (tau).
    Model sizes
        hidden_dim (H) and n_proprio_tokens / n_semantic_tokens (N_p / N_s): f_p and f_s map
        a state to N x H tokens (eq. 5-6). encoder_hidden_dim / encoder_layers: width and
        number of hidden layers of the MLP encoders f_p, f_s and of the action encoder f_a.
        transition_depth: attention blocks in each transition cross-attention (eq. 7-8).
        cross_depth: attention blocks of the cross-modal attention (eq. 9).
        head_hidden_dim / head_layers: the "lightweight" MLPs g_p, g_s (eq. 11-12) and the
        decoders h_p, h_s (eq. 18). n_heads, mlp_ratio, dropout: of every attention block.
    Training switches
        mask_ratio (r), mask_schedule ("fixed": r throughout; "action_free": every action
        token masked, in training and inference; "curriculum": action-free for the first
        ``curriculum_action_free_fraction`` of training, then r), ema_momentum (m, eq. 14),
        lambda_recon (eq. 19), attention ("p_queries_s" = the paper's eq. 9, "s_queries_p",
        "self" = symmetric self-attention over both token sets; table 5),
        recon_semantic_target: what h_s reconstructs (eq. 18): "film_target" = the EMA FiLM's
        s^{t+tau} = FiLM_target(v^{t+tau}, l) (the s^{t+tau} of eq. 16), or "vision" = the raw
        frozen embedding v^{t+tau}. Both are detached.
    """

    proprio_dim: int = 16
    vision_dim: int = 128
    language_dim: int = 64
    hidden_dim: int = 32
    n_proprio_tokens: int = 4
    n_semantic_tokens: int = 4
    action_dim: int = 7
    horizon: int = 6
    n_heads: int = 4
    encoder_hidden_dim: int = 64
    encoder_layers: int = 1
    transition_depth: int = 1
    cross_depth: int = 1
    head_hidden_dim: int = 64
    head_layers: int = 1
    mlp_ratio: int = 4
    dropout: float = 0.0
    mask_ratio: float = 0.3
    mask_schedule: str = "fixed"
    curriculum_action_free_fraction: float = 0.2
    ema_momentum: float = 0.995
    lambda_recon: float = 0.1
    attention: str = "p_queries_s"
    recon_semantic_target: str = "film_target"

    def __post_init__(self) -> None:
        _check_positive_ints(self, (
            "proprio_dim", "vision_dim", "language_dim", "hidden_dim", "n_proprio_tokens",
            "n_semantic_tokens", "action_dim", "horizon", "n_heads", "encoder_hidden_dim",
            "encoder_layers", "transition_depth", "cross_depth", "head_hidden_dim",
            "head_layers", "mlp_ratio"))
        _check(self.hidden_dim % self.n_heads == 0, "hidden_dim", self.hidden_dim,
               f"must be divisible by n_heads={self.n_heads}")
        _check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        _check(0.0 <= self.mask_ratio <= 1.0, "mask_ratio", self.mask_ratio, "must be in [0, 1]")
        _check_choice(self, "mask_schedule", MASK_SCHEDULES)
        _check(0.0 <= self.curriculum_action_free_fraction <= 1.0,
               "curriculum_action_free_fraction", self.curriculum_action_free_fraction,
               "must be in [0, 1]")
        _check(0.0 <= self.ema_momentum <= 1.0, "ema_momentum", self.ema_momentum,
               "must be in [0, 1]")
        _check(self.lambda_recon >= 0.0, "lambda_recon", self.lambda_recon, "must be >= 0")
        _check_choice(self, "attention", ATTENTIONS)
        _check_choice(self, "recon_semantic_target", RECON_SEMANTIC_TARGETS)

    def mask_ratio_at(self, progress: float | None = None, training: bool = True) -> float:
        """Fraction of action tokens to replace by the mask token (table 7 switches).

        ``progress`` is the fraction of stage-1 training done, in [0, 1] (only the
        curriculum needs it; ``None`` counts as the end of training). In inference
        (``training=False``) actions are never masked, except for an action-free model,
        whose action encoder never saw an action.
        """
        if self.mask_schedule == "action_free":
            return 1.0
        if not training:
            return 0.0
        if self.mask_schedule == "curriculum":
            if progress is not None and progress < self.curriculum_action_free_fraction:
                return 1.0
        return self.mask_ratio


@dataclass
class PolicyConfig:
    """Stage 2: the diffusion policy guided by latent foresight (paper eq. 20-22).

    foresight: which foresights condition the epsilon-network (figure 3):
        "both" -> [g_p ; g_s] (the paper), "proprio" -> g_p, "semantic" -> g_s,
        "none" -> the encoded observations [o_p ; o_s] ("Policy only", no CLaD at all).
    foresight_dim: width of the foresights, = the CLaD's hidden_dim H.
    obs_dim / obs_hidden_dim / obs_layers: output width, hidden width and hidden layers of
        the observation encoders e_p, e_s (eq. 20).
    hidden_dim / n_blocks / mlp_ratio / dropout: the MLP-ResNet epsilon-network (as in the
        authors' code): input projection to hidden_dim, n_blocks residual blocks
        LN -> Linear(hidden, mlp_ratio*hidden) -> GELU -> Linear(., hidden), output Linear.
    time_embed_dim: sinusoidal width of the diffusion-step embedding.
    foresight_norm: "rms" rescales each foresight to unit RMS before the FiLM of eq. 21
        (CLaD's latent loss only fixes the direction of z-hat, not its length); "none" feeds
        it as is.
    diffusion_steps / schedule / clip_sample: the DDPM (eq. 1-4; the authors' code used 25
        steps, cosine schedule, predictions of a_0 clipped to [-1, 1]).
    prediction: "epsilon" (eq. 22, the paper) or "sample": the network outputs the clean chunk
        a^{t:t+tau} and is trained with ||a - a_theta(a_k, k, c)||^2 (diffusers' prediction_type).
    past_actions: also condition the epsilon-network on the executed actions a^{t-tau:t},
        encoded by an MLP e_a to obs_dim and appended to c (not the paper, whose policy reads
        them only through CLaD's foresight, eq. 7-8). A scripted demonstrator's action depends on
        where it is in its current motion, which the state shows only after the arm has moved;
        the past actions show it at once.
    obs_noise: stage-2 training only: add Gaussian noise of std obs_noise x (each feature's std over the
        batch) to the observations CLaD and the policy read (proprio and vision, now and at t - tau;
        not the language), so that the policy also sees observations near, not only on, the
        demonstrations' (not the paper; 0 turns it off). Rollouts drift off the demos' states, and
        cached embeddings of a frozen encoder allow no image augmentation.
    cond_injection: where the condition [emb(k) ; c] enters the epsilon-network. "input" (the
        authors' code): concatenated to the noisy chunk before the input projection only.
        "every_block" (not the paper): also a FiLM of each residual block's normalised input,
        as Diffusion Policy (Chi et al., 2023) conditions every block, so that c is not
        diluted through the depth of the network.
    extra_actions: the epsilon-network predicts the chunk a^{t:t+tau+extra_actions} and a rollout
        executes its first tau actions (Diffusion Policy's prediction horizon T_p > action horizon
        T_a; not the paper, whose chunk is exactly the tau executed actions, eq. 22): the network
        is trained on where the motion goes after the executed part, which ties consecutive chunks
        together. 0 (the default) is the paper. ``chunk_length`` = tau + extra_actions.
    """

    proprio_dim: int = 16
    vision_dim: int = 128
    language_dim: int = 64
    action_dim: int = 7
    horizon: int = 6
    foresight: str = "both"
    foresight_dim: int = 32
    foresight_norm: str = "rms"
    obs_dim: int = 32
    obs_hidden_dim: int = 64
    obs_layers: int = 1
    hidden_dim: int = 64
    n_blocks: int = 2
    mlp_ratio: int = 4
    dropout: float = 0.0
    time_embed_dim: int = 32
    diffusion_steps: int = 25
    schedule: str = "cosine"
    clip_sample: bool = True
    past_actions: bool = False
    prediction: str = "epsilon"
    obs_noise: float = 0.0
    cond_injection: str = "input"
    extra_actions: int = 0

    def __post_init__(self) -> None:
        _check(isinstance(self.past_actions, bool), "past_actions", self.past_actions, "must be a bool")
        _check(isinstance(self.extra_actions, int) and not isinstance(self.extra_actions, bool)
               and self.extra_actions >= 0, "extra_actions", self.extra_actions, "must be an int >= 0")
        _check(isinstance(self.obs_noise, (int, float)) and 0.0 <= self.obs_noise <= 1.0, "obs_noise",
               self.obs_noise, "must be a number in [0, 1]")
        _check_positive_ints(self, (
            "proprio_dim", "vision_dim", "language_dim", "action_dim", "horizon",
            "foresight_dim", "obs_dim", "obs_hidden_dim", "obs_layers", "hidden_dim",
            "n_blocks", "mlp_ratio", "time_embed_dim", "diffusion_steps"))
        _check(self.time_embed_dim % 2 == 0, "time_embed_dim", self.time_embed_dim,
               "must be even")
        _check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        _check_choice(self, "foresight", FORESIGHTS)
        _check_choice(self, "foresight_norm", FORESIGHT_NORMS)
        _check_choice(self, "schedule", SCHEDULES)
        _check_choice(self, "prediction", PREDICTIONS)
        _check_choice(self, "cond_injection", COND_INJECTIONS)
        _check(isinstance(self.clip_sample, bool), "clip_sample", self.clip_sample,
               "must be a bool")

    @property
    def uses_clad(self) -> bool:
        """False for the "Policy only" baseline, which needs no stage-1 model."""
        return self.foresight != "none"

    @property
    def chunk_length(self) -> int:
        """Actions per predicted chunk: the tau executed ones plus ``extra_actions``."""
        return self.horizon + self.extra_actions


def _observation_dims(embed_dim: int) -> dict:
    return dict(proprio_dim=16, vision_dim=2 * embed_dim, language_dim=embed_dim)


def ci_presets() -> tuple[CLaDConfig, PolicyConfig]:
    """Tiny models for tests and CI (E = 64): ~0.1M (CLaD) and ~0.2M (policy) parameters."""
    obs = _observation_dims(64)
    clad = CLaDConfig(**obs, hidden_dim=32, n_proprio_tokens=4, n_semantic_tokens=4,
                      n_heads=4, encoder_hidden_dim=64, encoder_layers=1,
                      transition_depth=1, cross_depth=1, head_hidden_dim=64, head_layers=1)
    policy = PolicyConfig(**obs, foresight_dim=32, obs_dim=32, obs_hidden_dim=64,
                          hidden_dim=128, n_blocks=2, time_embed_dim=32)
    return clad, policy


def cpu_presets() -> tuple[CLaDConfig, PolicyConfig]:
    """Small models for 2 CPU cores on cached embeddings (E = 256): ~2.3M + ~2.2M parameters."""
    obs = _observation_dims(256)
    clad = CLaDConfig(**obs, hidden_dim=128, n_proprio_tokens=4, n_semantic_tokens=4,
                      n_heads=4, encoder_hidden_dim=256, encoder_layers=1,
                      transition_depth=2, cross_depth=2, head_hidden_dim=256, head_layers=1)
    policy = PolicyConfig(**obs, foresight_dim=128, obs_dim=128, obs_hidden_dim=256,
                          hidden_dim=256, n_blocks=3, time_embed_dim=64)
    return clad, policy


def paper_presets() -> tuple[CLaDConfig, PolicyConfig]:
    """Paper scale: H = 1024, N_p = N_s = 4, tau = 6, E = 1024 (DecisionNCE RN50).

    The paper gives H, N_p, N_s, tau and the totals (VLM 0.1B frozen, CLaD 0.33B, policy
    0.23B) but no depths. This reading reproduces the totals (``python -m clad_lite params
    --config paper``; trainable parameters, EMA target copies excluded):

    CLaD: 330.8M (paper 0.33B). Every attention block is a pre-LN transformer block at
    H = 1024 with a 4x MLP and 16 heads of 64: 12.6M parameters (4H^2 attention + 8H^2
    MLP). ``transition_depth = 8`` (eq. 7 and eq. 8 get 8 cross-attention blocks each) and
    ``cross_depth = 8`` (eq. 9) give the three attention stages equal depth: 3 x 100.8M =
    302.4M. The other 28.4M: MLP encoders with one 1024-wide hidden layer, f_p 16 -> 1024 ->
    4 x 1024 (4.2M), f_s 2048 -> 1024 -> 4 x 1024 (6.3M), f_a 7 -> 1024 -> 1024 (1.1M); the
    FiLM 1024 -> 2 x 2048 (4.2M); the attention pooling (4.2M); the "lightweight" heads with
    one 1024-wide hidden layer, g_p and g_s (2.1M each), h_p (1.1M) and h_s (3.1M). With H
    fixed by the paper, depth is the only free knob; an even split over the three attention
    stages is the least opinionated reading (any split with 24 blocks gives the same count).

    Policy: 219.2M (paper 0.23B, -4.7%). The authors' code used an MLP-ResNet epsilon-network
    (Octo/IDQL style: residual LN -> Linear(W, 4W) -> GELU -> Linear(4W, W) blocks, 8W^2
    each). W = 2048 and 6 blocks hold 201.4M; the input projection of [noisy chunk 6 x 7 ;
    step embedding 256 ; condition 2 x 1024] to 2048 adds 4.8M, the observation encoders
    e_p (1.1M) and e_s with its own FiLM(v, l) (3.1M + 4.2M) and the two foresight FiLMs of
    eq. 21 (2.1M each) the rest. A 7th block would overshoot (252.8M, +10%).
    """
    obs = _observation_dims(1024)
    clad = CLaDConfig(**obs, hidden_dim=1024, n_proprio_tokens=4, n_semantic_tokens=4,
                      n_heads=16, encoder_hidden_dim=1024, encoder_layers=1,
                      transition_depth=8, cross_depth=8, head_hidden_dim=1024, head_layers=1)
    policy = PolicyConfig(**obs, foresight_dim=1024, obs_dim=1024, obs_hidden_dim=1024,
                          hidden_dim=2048, n_blocks=6, time_embed_dim=256)
    return clad, policy


MODEL_PRESETS: dict[str, tuple[CLaDConfig, PolicyConfig]] = {
    "ci": ci_presets(),
    "cpu": cpu_presets(),
    "paper": paper_presets(),
}

# Every ablation the paper reports, as overrides of (CLaD config, policy config).
ABLATIONS: dict[str, tuple[dict, dict]] = {
    "clad": ({}, {}),                                             # the paper's model
    "policy_only": ({}, {"foresight": "none"}),                   # figure 3
    "clad_p": ({}, {"foresight": "proprio"}),                     # figure 3
    "clad_s": ({}, {"foresight": "semantic"}),                    # figure 3
    "s_queries_p": ({"attention": "s_queries_p"}, {}),            # table 5
    "self_attention": ({"attention": "self"}, {}),                # table 5
    "no_recon": ({"lambda_recon": 0.0}, {}),                      # table 4
    "action_free": ({"mask_schedule": "action_free"}, {}),        # table 7
    "heavy_mask": ({"mask_schedule": "fixed", "mask_ratio": 0.9}, {}),  # table 7
    "curriculum": ({"mask_schedule": "curriculum", "mask_ratio": 0.3}, {}),  # table 7
}


def apply_ablation(clad: CLaDConfig, policy: PolicyConfig,
                   name: str) -> tuple[CLaDConfig, PolicyConfig]:
    """Return copies of ``(clad, policy)`` with the overrides of ablation ``name``."""
    if name not in ABLATIONS:
        raise ValueError(f"ablation={name!r}: must be one of {tuple(ABLATIONS)}")
    clad_overrides, policy_overrides = ABLATIONS[name]
    return dataclasses.replace(clad, **clad_overrides), dataclasses.replace(policy, **policy_overrides)


def get_model_presets(name: str) -> tuple[CLaDConfig, PolicyConfig]:
    """Fresh copies of the preset ``name`` (so callers may mutate them)."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"config={name!r}: must be one of {tuple(MODEL_PRESETS)}")
    clad, policy = MODEL_PRESETS[name]
    return dataclasses.replace(clad), dataclasses.replace(policy)
