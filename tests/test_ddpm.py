"""DDPM (eq. 1-4): schedules and steps against diffusers, eq. 3, and a 2-D toy fit."""


import pytest
import torch
from torch import nn

from clad_lite.toy import eight_gaussian_centers, eight_gaussians, mode_quality
from clad_lite.ddpm import DDPM
from clad_lite.layers import MLP, SinusoidalEmbedding

diffusers = pytest.importorskip("diffusers")

DIFFUSERS_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def reference(num_steps, schedule, clip_sample=True):
    return diffusers.DDPMScheduler(num_train_timesteps=num_steps,
                                   beta_schedule=DIFFUSERS_SCHEDULE[schedule],
                                   clip_sample=clip_sample, clip_sample_range=1.0,
                                   prediction_type="epsilon", variance_type="fixed_small")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("num_steps", [25, 100])
def test_schedule_matches_diffusers(schedule, num_steps):
    ours, ref = DDPM(num_steps, schedule), reference(num_steps, schedule)
    assert ours.betas.shape == ours.alphas_cumprod.shape == (num_steps,)
    torch.testing.assert_close(ours.betas, ref.betas.float(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod.float(), rtol=1e-6, atol=1e-7)


def test_schedule_shapes_and_caps():
    linear, cosine = DDPM(1000, "linear"), DDPM(25, "cosine")
    assert linear.betas[0].item() == pytest.approx(1e-4) and linear.betas[-1].item() == pytest.approx(0.02)
    assert cosine.betas.max().item() <= 0.999 + 1e-7
    assert torch.all(cosine.alphas_cumprod[1:] < cosine.alphas_cumprod[:-1])
    assert cosine.alphas_cumprod[-1].item() < 1e-3          # x_T is (nearly) pure noise
    with pytest.raises(ValueError, match="schedule"):
        DDPM(10, "quadratic")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("clip_sample", [True, False])
def test_step_matches_diffusers(schedule, clip_sample):
    T = 25
    ours, ref = DDPM(T, schedule, clip_sample=clip_sample), reference(T, schedule, clip_sample)
    gen = torch.Generator().manual_seed(0)
    x_t, eps = 1.5 * torch.randn(4, 6, 7, generator=gen), torch.randn(4, 6, 7, generator=gen)
    for t in (T - 1, 12, 1, 0):
        expected = ref.step(eps, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
        got = ours.step(eps, t, x_t, generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("clip_sample", [True, False])
def test_sample_prediction_matches_diffusers(clip_sample):
    """prediction="sample": the network's x_0 turned into the implied noise gives diffusers' step for
    prediction_type="sample"; the loss compares x_0, and an x_0 oracle has zero loss."""
    T = 25
    ours = DDPM(T, "cosine", clip_sample=clip_sample, prediction="sample")
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=clip_sample,
                                  clip_sample_range=1.0, prediction_type="sample", variance_type="fixed_small")
    gen = torch.Generator().manual_seed(0)
    x_t, x0_pred = 1.5 * torch.randn(4, 6, 7, generator=gen), torch.randn(4, 6, 7, generator=gen)
    for t in (T - 1, 12, 1, 0):
        steps = torch.full((4,), t)
        expected = ref.step(x0_pred, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
        got = ours.step(ours.to_eps(x0_pred, x_t, steps), t, x_t, generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    x0 = torch.rand(8, 3) * 2 - 1
    assert ours.loss(lambda x, k: x0, x0).item() == 0.0
    assert ours.loss(lambda x, k: torch.zeros_like(x), x0).item() == pytest.approx(x0.pow(2).mean().item())
    # sampling with a model that always says x0 ends at x0 (clipped into [-1, 1])
    out = ours.sample(lambda x, k: x0.expand_as(x), (8, 3), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="prediction"):
        DDPM(T, prediction="velocity")


def test_step_without_clipping_is_eq3():
    ddpm = DDPM(25, "cosine", clip_sample=False)
    gen = torch.Generator().manual_seed(1)
    x_t, eps, z = (torch.randn(3, 5, generator=gen) for _ in range(3))
    for t in (24, 10, 3):
        alpha, abar, beta = ddpm.alphas[t], ddpm.alphas_cumprod[t], ddpm.betas[t]
        sigma = ((1 - ddpm.alphas_cumprod[t - 1]) / (1 - abar) * beta).sqrt()
        eq3 = (x_t - beta / (1 - abar).sqrt() * eps) / alpha.sqrt() + sigma * z
        torch.testing.assert_close(ddpm.step(eps, t, x_t, noise=z), eq3, rtol=1e-5, atol=1e-5)


def test_forward_noising_and_loss():
    ddpm = DDPM(25)
    x0, noise = torch.randn(8, 3), torch.randn(8, 3)
    t = torch.arange(8)
    abar = ddpm.alphas_cumprod[t][:, None]
    torch.testing.assert_close(ddpm.q_sample(x0, t, noise), abar.sqrt() * x0 + (1 - abar).sqrt() * noise)
    # a model that predicts the true noise has zero loss; loss is float32 even for bf16 data
    gen = torch.Generator().manual_seed(0)

    def oracle(x_t, k):
        a = ddpm.alphas_cumprod[k][:, None]
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    assert ddpm.loss(oracle, x0, generator=gen).item() < 1e-8
    assert ddpm.loss(lambda x, k: torch.zeros_like(x), x0.bfloat16()).dtype == torch.float32


class ToyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = SinusoidalEmbedding(32)
        self.mlp = MLP(2 + 32, 128, 2, layers=3)

    def forward(self, x, t):
        return self.mlp(torch.cat([x, self.embed(t)], dim=-1))


def test_ddpm_fits_eight_gaussians():
    """Train on 8 Gaussians (radius 0.8, std 0.05) and measure the samples.

    Quality: >= 80% of samples within 0.2 (4 std) of a mode, and every mode holds 5%-20% of
    the samples (1/8 = 12.5%). An untrained network fails both (checked too).
    """
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    centers = eight_gaussian_centers(0.8)

    def data(n):
        return eight_gaussians(n, radius=0.8, std=0.05, generator=gen)[0]

    def quality(net):
        x = ddpm.sample(net, (2000, 2), generator=torch.Generator().manual_seed(1))
        q = mode_quality(x, centers, std=0.05, n_sigma=4.0)  # within 0.2 of a mode
        return q["near"], q["min_share"], q["max_share"]

    ddpm, net = DDPM(50, "cosine"), ToyNet()
    untrained = quality(net)
    assert not (untrained[0] >= 0.8 and untrained[1] >= 0.05)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(3000):
        loss = ddpm.loss(net, data(256), generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    close, smallest, largest = quality(net)
    assert close >= 0.8, close
    assert 0.05 <= smallest and largest <= 0.2, (smallest, largest)


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("num_inference_steps", [25, 5])
def test_ddim_sampling_matches_diffusers(prediction, num_inference_steps):
    """sampler="ddim": the same timesteps and every deterministic step as diffusers' DDIMScheduler
    (eta = 0, "trailing" spacing, clipped x_0), for both network outputs and a subset of the steps."""
    T = 25
    ours = DDPM(T, "cosine", prediction=prediction)
    ref = diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                                  clip_sample_range=1.0, prediction_type=prediction, timestep_spacing="trailing")
    ref.set_timesteps(num_inference_steps)
    assert ours.inference_timesteps(num_inference_steps) == ref.timesteps.tolist()
    assert ours.inference_timesteps()[0] == T - 1 and ours.inference_timesteps(5)[-1] == 4

    weight = torch.randn(7, 7, generator=torch.Generator().manual_seed(3))
    model = lambda x, k: torch.tanh(x @ weight) * (1 + k.float().view(-1, 1, 1) / T)   # any smooth function of (x_t, k)
    got = ours.sample(model, (4, 6, 7), generator=torch.Generator().manual_seed(0), sampler="ddim",
                      num_inference_steps=num_inference_steps)
    x = torch.randn((4, 6, 7), generator=torch.Generator().manual_seed(0))
    for t in ref.timesteps:
        x = ref.step(model(x, torch.full((4,), int(t))), int(t), x, eta=0.0).prev_sample
    torch.testing.assert_close(got, x, rtol=1e-4, atol=1e-4)


def test_ddim_is_deterministic_given_x_T_and_checks_its_arguments():
    ours = DDPM(25, "cosine", prediction="sample")
    model = lambda x, k: 0.5 * torch.sin(3 * x)
    draw = lambda seed: ours.sample(model, (3, 6, 7), generator=torch.Generator().manual_seed(seed), sampler="ddim")
    torch.testing.assert_close(draw(0), draw(0))
    assert not torch.allclose(draw(0), draw(1))          # the chunk is still a function of x_T
    # one DDIM step from pure noise with an x_0 oracle lands on x_0
    x0 = torch.rand(3, 6, 7) * 2 - 1
    out = ours.sample(lambda x, k: x0, (3, 6, 7), generator=torch.Generator().manual_seed(2), sampler="ddim",
                      num_inference_steps=1)
    torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="sampler"):
        ours.sample(model, (1, 6, 7), sampler="euler")
    with pytest.raises(ValueError, match="num_inference_steps"):
        ours.sample(model, (1, 6, 7), sampler="ddim", num_inference_steps=26)
    with pytest.raises(ValueError, match="needs sampler='ddim'"):
        ours.sample(model, (1, 6, 7), num_inference_steps=5)
