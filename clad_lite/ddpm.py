"""DDPM, written out by hand (paper sec. 2.1, eq. 1-4; Ho et al. 2020).

Notation: T = ``num_steps``, beta_t the variance schedule, alpha_t = 1 - beta_t,
alpha-bar_t = prod_{i<=t} alpha_i (``alphas_cumprod``). Steps are 0-indexed, t in [0, T).

* forward noising, eq. 1:  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps      (``q_sample``)
* training loss, eq. 2/4/22: E ||eps - eps_theta(x_t, t)||^2                 (``loss``)
* reverse step, eq. 3:     x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)
                                     + sigma_t z                               (``step``)
* ancestral sampling from x_T ~ N(0, I)                                        (``sample``)
* deterministic DDIM steps, eta = 0 (Song et al. 2021, eq. 12; not the paper):
  x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps    (``ddim_step``, ``sample(sampler="ddim")``)

``step`` uses the equivalent "predict x_0, then take the posterior mean" form

    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)        (optionally clipped)
    mu     = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0_hat
             + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t
    sigma_t^2 = (1 - abar_{t-1}) / (1 - abar_t) beta_t           ("fixed small" variance)

which, without clipping, is eq. 3 exactly (tests check it); with clipping it keeps samples
in the data range [-1, 1] as diffusion policies do for actions. Schedules:

* "linear": beta from 1e-4 to 0.02 (the DDPM paper's values, chosen for T = 1000, used as
  they are at any T, like diffusers; at small T they do not reach noise: abar_T = 0.6 at
  T = 50, so prefer "cosine" there, as the policy does);
* "cosine": abar(t) = cos^2((t/T + s) / (1 + s) * pi/2), s = 0.008, beta capped at 0.999
  (Nichol & Dhariwal 2021; diffusers' "squaredcos_cap_v2").

The same numbers as diffusers' ``DDPMScheduler`` (tests compare betas, abar and a step) and, for
DDIM, its ``DDIMScheduler`` with ``timestep_spacing="trailing"`` and eta = 0.

``prediction="sample"`` (diffusers' ``prediction_type="sample"``; not the paper's eq. 2/22) trains the
network to output x_0 itself, ||x_0 - x0_theta(x_t, t)||^2, and sampling turns that into the implied
noise (``to_eps``). The epsilon loss weighs an error d in x_0 by abar_t / (1 - abar_t) (about 170 at the
last of 25 cosine steps), the x_0 loss evenly across t.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from clad_lite.configuration_clad import PREDICTIONS

SAMPLERS = ("ddpm", "ddim")

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _generator_device(generator: torch.Generator | None, device):
    """Draw random numbers where the generator lives (a CPU generator also serves CUDA data)."""
    return generator.device if generator is not None else device


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """(T,) betas spaced linearly from beta_start to beta_end."""
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float32)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """(T,) betas with abar(t) = cos^2(((t/T) + s)/(1 + s) * pi/2), beta capped at max_beta."""
    def abar(t: float) -> float:
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta)
             for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float32)


class DDPM(nn.Module):
    """Denoising diffusion with epsilon prediction.

    Args:
        num_steps: T, the number of diffusion steps (the policy uses 25).
        schedule: "cosine" or "linear".
        clip_sample: clip the predicted x_0 to [-clip_range, clip_range] in ``step``.

    Buffers (moved by ``.to(device)``, not saved in state dicts): ``betas``, ``alphas``,
    ``alphas_cumprod`` (T,), all float32.
    """

    def __init__(self, num_steps: int, schedule: str = "cosine", clip_sample: bool = True,
                 clip_range: float = 1.0, prediction: str = "epsilon"):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction={prediction!r}: must be one of {PREDICTIONS}")
        self.prediction = prediction
        if not (isinstance(num_steps, int) and num_steps > 0):
            raise ValueError(f"num_steps={num_steps!r}: must be a positive int")
        if schedule == "linear":
            betas = linear_betas(num_steps)
        elif schedule == "cosine":
            betas = cosine_betas(num_steps)
        else:
            raise ValueError(f"schedule={schedule!r}: must be 'linear' or 'cosine'")
        self.num_steps = num_steps
        self.schedule = schedule
        self.clip_sample = clip_sample
        self.clip_range = clip_range
        alphas = 1.0 - betas
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas", alphas, persistent=False)
        self.register_buffer("alphas_cumprod", torch.cumprod(alphas, dim=0), persistent=False)

    def extra_repr(self) -> str:
        return (f"num_steps={self.num_steps}, schedule={self.schedule!r}, clip_sample={self.clip_sample}, "
                f"prediction={self.prediction!r}")

    @staticmethod
    def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, 1, ..., 1) broadcastable against ``like``."""
        return values.reshape(values.shape[0], *([1] * (like.dim() - 1)))

    def sample_timesteps(self, batch_size: int, device=None, generator=None) -> torch.Tensor:
        """(B,) int64 steps drawn uniformly from [0, T)."""
        return torch.randint(0, self.num_steps, (batch_size,), generator=generator,
                             device=_generator_device(generator, device)).to(device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Eq. 1: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. x0, noise (B, ...), t (B,)."""
        abar = self._expand(self.alphas_cumprod[t], x0)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def loss(self, eps_model: EpsModel, x0: torch.Tensor, generator=None,
             reduction: str = "mean") -> torch.Tensor:
        """Eq. 2: ||eps - eps_theta(x_t, t)||^2, as a per-element mean (float32).

        ``eps_model(x_t, t)`` maps (B, ...) noisy data and (B,) steps to a (B, ...) noise
        prediction (bind any condition with a lambda/closure).
        """
        t = self.sample_timesteps(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, dtype=x0.dtype, generator=generator,
                            device=_generator_device(generator, x0.device)).to(x0.device)
        output = eps_model(self.q_sample(x0, t, noise), t)
        return F.mse_loss(output.float(), self.target(x0, noise).float(), reduction=reduction)

    def target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output for x_t = q_sample(x0, t, noise): the noise (eq. 2/22)
        or, for prediction="sample", x0 itself."""
        return noise if self.prediction == "epsilon" else x0

    def to_eps(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's output as a noise prediction: itself for "epsilon"; for "sample" (a predicted
        x_0) the noise that eq. 1 implies, eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
        if self.prediction == "epsilon":
            return output
        abar = self._expand(self.alphas_cumprod[t], x_t)
        return (x_t - abar.sqrt() * output) / (1.0 - abar).sqrt()

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert eq. 1 with the predicted noise: x0_hat = (x_t - sqrt(1-abar_t) eps) / sqrt(abar_t)."""
        abar = self._expand(self.alphas_cumprod[t], x_t)
        x0 = (x_t - (1.0 - abar).sqrt() * eps) / abar.sqrt()
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
        return x0

    def posterior_mean_variance(self, x_t: torch.Tensor, t: torch.Tensor,
                                eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of p(x_{t-1} | x_t) with the predicted noise; t (B,) int."""
        abar_t = self._expand(self.alphas_cumprod[t], x_t)
        prev = (t - 1).clamp(min=0)
        abar_prev = torch.where(self._expand(t, x_t) > 0,
                                self._expand(self.alphas_cumprod[prev], x_t),
                                torch.ones_like(abar_t))
        beta_t = 1.0 - abar_t / abar_prev          # = betas[t], recomputed as diffusers does
        alpha_t = 1.0 - beta_t
        x0 = self.predict_x0(x_t, t, eps)
        mean = (abar_prev.sqrt() * beta_t / (1.0 - abar_t)) * x0 \
            + (alpha_t.sqrt() * (1.0 - abar_prev) / (1.0 - abar_t)) * x_t
        variance = ((1.0 - abar_prev) / (1.0 - abar_t) * beta_t).clamp(min=1e-20)
        return mean, variance

    def step(self, eps: torch.Tensor, t: int | torch.Tensor, x_t: torch.Tensor,
             noise: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        """Eq. 3: one ancestral step x_t -> x_{t-1}. No noise is added at t = 0.

        ``noise`` (same shape as x_t) is drawn with ``generator`` if not given:
        ``torch.randn(x_t.shape, generator=generator)`` as diffusers does, so the same
        generator seed gives the same step as ``DDPMScheduler.step``.
        """
        if not torch.is_tensor(t) or t.dim() == 0:
            t = torch.full((x_t.shape[0],), int(t), device=x_t.device, dtype=torch.long)
        mean, variance = self.posterior_mean_variance(x_t, t, eps)
        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype,
                                device=_generator_device(generator, x_t.device)).to(x_t.device)
        nonzero = self._expand((t > 0).to(x_t.dtype), x_t)
        return mean + nonzero * variance.sqrt() * noise

    def ddim_step(self, eps: torch.Tensor, t: int | torch.Tensor, t_prev: int, x_t: torch.Tensor) -> torch.Tensor:
        """One deterministic DDIM step (eta = 0) from step t to step ``t_prev`` < t (-1: to x_0):
        x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps, with abar_{-1} = 1 and x0_hat from
        ``predict_x0`` (clipped like ``step``). No noise is drawn, so a chunk is a function of x_T."""
        if not torch.is_tensor(t) or t.dim() == 0:
            t = torch.full((x_t.shape[0],), int(t), device=x_t.device, dtype=torch.long)
        x0 = self.predict_x0(x_t, t, eps)
        abar_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else torch.ones((), device=x_t.device)
        return abar_prev.sqrt() * x0 + (1.0 - abar_prev).sqrt() * eps

    def inference_timesteps(self, num_inference_steps: int | None = None) -> list[int]:
        """DDIM's steps, from T-1 down, spaced by T / n ("trailing", so the first is pure noise);
        ``None`` = all T steps."""
        n = self.num_steps if num_inference_steps is None else num_inference_steps
        if not (isinstance(n, int) and 1 <= n <= self.num_steps):
            raise ValueError(f"num_inference_steps={num_inference_steps!r}: must be an int in [1, {self.num_steps}]")
        return [int(round(self.num_steps - i * self.num_steps / n)) - 1 for i in range(n)]

    @torch.no_grad()
    def sample(self, eps_model: EpsModel, shape: tuple[int, ...], device=None,
               generator=None, dtype=torch.float32, sampler: str = "ddpm",
               num_inference_steps: int | None = None) -> torch.Tensor:
        """x_T ~ N(0, I), then to x_0 of ``shape``: ``sampler="ddpm"``, T ancestral steps of eq. 3;
        ``"ddim"``, ``num_inference_steps`` deterministic steps (``ddim_step``, all T if None)."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r}: must be one of {SAMPLERS}")
        if sampler == "ddpm" and num_inference_steps not in (None, self.num_steps):
            raise ValueError(f"num_inference_steps={num_inference_steps} needs sampler='ddim' (DDPM takes all {self.num_steps})")
        x = torch.randn(shape, generator=generator, dtype=dtype,
                        device=_generator_device(generator, device)).to(device)
        timesteps = list(reversed(range(self.num_steps))) if sampler == "ddpm" else self.inference_timesteps(num_inference_steps)
        for i, t in enumerate(timesteps):
            steps = torch.full((shape[0],), t, device=x.device, dtype=torch.long)
            eps = self.to_eps(eps_model(x, steps).to(x.dtype), x, steps)
            if sampler == "ddpm":
                x = self.step(eps, steps, x, generator=generator)
            else:
                x = self.ddim_step(eps, steps, timesteps[i + 1] if i + 1 < len(timesteps) else -1, x)
        return x
