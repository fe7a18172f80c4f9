"""Building blocks shared by CLaD (stage 1) and the foresight policy (stage 2).

Shapes use B = batch, N = query tokens, M = key/value tokens, D = width.

* ``MLP``                 - Linear/GELU stack; the encoders f_p, f_s, f_a, e_p, e_s and the
                            heads g_p, g_s, h_p, h_s.
* ``FiLM``                - x * (1 + gamma(c)) + beta(c) [Perez et al. 2018]; s = FiLM(v, l)
                            (sec. 4.1) and g = FiLM(z-hat, o) (eq. 21).
* ``Attention``           - multi-head attention, queries from x, keys/values from context.
* ``AttentionBlock``      - pre-LN transformer block (attention + MLP); cross-attention when
                            a context is given (eq. 7-9), self-attention otherwise.
* ``AttentionPool``       - learnable-query attention pooling (eq. 10).
* ``record_attention``    - context manager that records the softmax weights of every
                            ``Attention`` call inside a model (off by default; for figures).
* ``SinusoidalEmbedding`` - diffusion-step embedding (eq. 22's k).
* ``MLPResNetBlock``      - residual MLP block of the epsilon-network.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn


class MLP(nn.Module):
    """(..., in_dim) -> (..., out_dim) through ``layers`` hidden layers of width ``hidden_dim``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * layers
        modules: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            modules += [nn.Linear(d_in, d_out), nn.GELU(), nn.Dropout(dropout)]
        modules.append(nn.Linear(dims[-1], out_dim))
        self.net = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FiLM(nn.Module):
    """Feature-wise linear modulation: (B, dim) x, (B, cond_dim) c -> (B, dim).

    ``x * (1 + gamma(c)) + beta(c)``. The projection starts at zero, so a fresh FiLM is the
    identity on x and the condition is learned in.
    """

    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond).chunk(2, dim=-1)
        return x * (1.0 + gamma) + beta


class Attention(nn.Module):
    """Multi-head attention: (B, N, D) queries over (B, M, D) keys/values -> (B, N, D)."""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        assert dim % n_heads == 0, (dim, n_heads)
        self.n_heads = n_heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.n_heads)
        k, v = rearrange(self.kv(context), "b m (two h d) -> two b h m d", two=2, h=self.n_heads)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(rearrange(y, "b h n d -> b n (h d)"))

    def attention_weights(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) of one call: (B, N, D), (B, M, D) -> (B, heads, N, M).

        The weights ``forward`` applies to the values (before attention dropout); each row
        sums to 1 over the M keys.
        """
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.n_heads)
        k = rearrange(self.kv(context), "b m (two h d) -> two b h m d", two=2, h=self.n_heads)[0]
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


class AttentionBlock(nn.Module):
    """Pre-LN transformer block: x (B, N, D), context (B, M, D) or None -> (B, N, D).

    x <- x + Attn(LN(x), LN(context)); x <- x + MLP(LN(x)). With ``context=None`` the block
    is self-attention over x. Output has the queries' token count N whatever M is.
    """

    def __init__(self, dim: int, n_heads: int, mlp_ratio: int = 4, dropout: float = 0.0,
                 cross: bool = True):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = Attention(dim, n_heads, dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio * dim, dim, layers=1, dropout=dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        q = self.norm_q(x)
        if (context is None) != (self.norm_kv is None):
            raise ValueError("a cross-attention block needs a context, a self-attention one none")
        kv = q if context is None else self.norm_kv(context)
        x = x + self.attn(q, kv)
        return x + self.mlp(self.norm_mlp(x))


class CrossAttentionStack(nn.Module):
    """``depth`` AttentionBlocks whose queries are updated while the context stays fixed.

    x (B, N, D), context (B, M, D) (or None when ``cross=False``: self-attention over x)
    -> (B, N, D), followed by a LayerNorm.
    """

    def __init__(self, dim: int, n_heads: int, depth: int, mlp_ratio: int = 4,
                 dropout: float = 0.0, cross: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(AttentionBlock(dim, n_heads, mlp_ratio, dropout, cross)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, context)
        return self.norm(x)


class AttentionPool(nn.Module):
    """Learnable-query attention pooling (eq. 10): (B, N, D) -> (B, D).

    One learned query q_out in R^D attends over the N tokens (Set Transformer's PMA [19]);
    unlike mean/max pooling it can pick the tokens that matter.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)  # q_out
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_heads, dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = repeat(self.query, "1 1 d -> b 1 d", b=tokens.shape[0])
        return rearrange(self.attn(q, self.norm(tokens)), "b 1 d -> b d")


class AttentionRecord(dict):
    """Attention weights recorded by ``record_attention``: {module name: (B, heads, N, M)}.

    Each entry holds the weights of the *last* call of that ``Attention`` module (detached,
    float32); ``calls[name]`` lists every call in order. Names are qualified module names
    of the recorded model, e.g. ``"transition_p.blocks.0.attn"`` or ``"pool.attn"``.
    """

    def __init__(self):
        super().__init__()
        self.calls: dict[str, list[torch.Tensor]] = {}

    def _add(self, name: str, weights: torch.Tensor) -> None:
        weights = weights.detach().float()
        self.calls.setdefault(name, []).append(weights)
        self[name] = weights


@contextmanager
def record_attention(model: nn.Module):
    """Record the softmax weights of every ``Attention`` call inside ``model``.

    ::

        with record_attention(clad) as maps:
            clad.dynamics(batch)
        maps["cross_modal.blocks.0.attn"]    # (B, heads, N_p, N_s)

    Yields an ``AttentionRecord`` filled as the model runs. Recording works through forward
    hooks that recompute the weights from each call's inputs
    (``Attention.attention_weights``), so outputs are unchanged and nothing is recorded
    (or computed) outside the ``with`` block: recording is off by default.
    """
    record = AttentionRecord()
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, Attention):
            def hook(module, args, kwargs, output, name=name):
                with torch.no_grad():
                    record._add(name, module.attention_weights(*args, **kwargs))
            handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


class SinusoidalEmbedding(nn.Module):
    """Diffusion step k (B,) int or float -> (B, dim) sin/cos features (Transformer style)."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        assert dim % 2 == 0, dim
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        angles = k.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class MLPResNetBlock(nn.Module):
    """x + Linear(GELU(Linear(LN(x)))) : (B, D) -> (B, D), hidden width mlp_ratio * D.

    With ``cond_dim`` > 0 the normalised input is FiLM-modulated by a condition (B, cond_dim)
    first: x + MLP(FiLM(LN(x), cond)) (Diffusion Policy's per-block conditioning).
    """

    def __init__(self, dim: int, mlp_ratio: int = 4, dropout: float = 0.0, cond_dim: int = 0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.film = FiLM(dim, cond_dim) if cond_dim > 0 else None
        self.mlp = MLP(dim, mlp_ratio * dim, dim, layers=1, dropout=dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)
        if self.film is not None:
            if cond is None:
                raise ValueError("this MLPResNetBlock was built with cond_dim > 0 and needs a condition")
            h = self.film(h, cond)
        return x + self.mlp(h)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (optionally only those with requires_grad)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
