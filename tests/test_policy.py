"""Foresight-conditioned diffusion policy (eq. 20-22): shapes, conditioning, frozen CLaD, overfit."""

import dataclasses

import pytest
import torch

from clad_lite.clad import CLaD, make_dummy_batch
from clad_lite.configuration_clad import ABLATIONS, MODEL_PRESETS, PolicyConfig, apply_ablation, get_model_presets
from clad_lite.policy import ForesightPolicy

CLAD_CFG, POLICY_CFG = MODEL_PRESETS["ci"]
B = 4


def policy(**overrides) -> ForesightPolicy:
    torch.manual_seed(0)
    return ForesightPolicy(dataclasses.replace(POLICY_CFG, **overrides))


def batch(seed=0, batch_size=B):
    return make_dummy_batch(POLICY_CFG, batch_size, torch.Generator().manual_seed(seed))


def foresight(seed=1, batch_size=B):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch_size, POLICY_CFG.foresight_dim, generator=gen),
            torch.randn(batch_size, POLICY_CFG.foresight_dim, generator=gen))


def randomize_films(pol):
    """FiLMs start as the identity; give them weights so that the observation matters."""
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in pol.named_parameters():
            if "film" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return pol


def test_shapes():
    c, pol, b = POLICY_CFG, policy(), batch()
    o_p, o_s = pol.encode_observation(b)                                              # eq. 20
    assert o_p.shape == o_s.shape == (B, c.obs_dim)
    assert pol.condition(b, foresight()).shape == (B, 2 * c.foresight_dim)            # eq. 21
    k = torch.randint(0, c.diffusion_steps, (B,))
    eps = pol.eps_net(b["actions"], k, pol.condition(b, foresight()))                 # eq. 22
    assert eps.shape == (B, c.horizon, c.action_dim)
    loss = pol.loss(b, foresight())
    assert loss.shape == () and loss.dtype == torch.float32
    actions = pol.sample_actions(b, foresight(), generator=torch.Generator().manual_seed(0))
    assert actions.shape == (B, c.horizon, 7)
    assert actions.min() >= -1.0 and actions.max() <= 1.0


@pytest.mark.parametrize("mode, width", [("both", 2), ("proprio", 1), ("semantic", 1), ("none", 2)])
def test_foresight_switches(mode, width):
    pol, b = randomize_films(policy(foresight=mode)), batch()
    f, f_other = foresight(1), foresight(3)
    with torch.no_grad():
        cond = pol.condition(b, f)
        dim = POLICY_CFG.obs_dim if mode == "none" else POLICY_CFG.foresight_dim
        assert cond.shape == (B, width * dim)
        changed_p = not torch.allclose(cond, pol.condition(b, (f_other[0], f[1])))
        changed_s = not torch.allclose(cond, pol.condition(b, (f[0], f_other[1])))
        assert changed_p == (mode in ("both", "proprio"))
        assert changed_s == (mode in ("both", "semantic"))
        # the current observation always shapes the condition (FiLM scale/shift or directly)
        other_obs = dict(b, proprio=b["proprio"] + 1.0, vision=b["vision"] + 1.0)
        assert not torch.allclose(cond, pol.condition(other_obs, f))
    if mode == "none":
        assert pol.loss(b).isfinite()                         # no CLaD, no foresight needed
    else:
        with pytest.raises(ValueError, match="foresight"):
            pol.loss(b)


def test_film_observation_gives_scale_and_shift():
    pol = randomize_films(policy())
    z, o = torch.randn(B, POLICY_CFG.foresight_dim), torch.randn(B, POLICY_CFG.obs_dim)
    gamma, beta = pol.film_p.proj(o).chunk(2, dim=-1)
    torch.testing.assert_close(pol.film_p(z, o), z * (1 + gamma) + beta)


def test_clad_is_frozen_in_stage_2():
    torch.manual_seed(0)
    clad = CLaD(CLAD_CFG).freeze()
    before = {n: p.detach().clone() for n, p in clad.named_parameters()}
    pol, b = policy(), make_dummy_batch(CLAD_CFG, B, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(pol.parameters(), lr=1e-2)
    loss = pol.loss(b, clad=clad)
    loss.backward()
    opt.step()
    assert all(p.grad is None and not p.requires_grad for p in clad.parameters())
    assert all(torch.equal(before[n], p) for n, p in clad.named_parameters())
    assert not clad.training
    assert sum(p.numel() for p in pol.parameters()) == pol.num_parameters()  # CLaD not inside
    actions = pol.sample_actions(b, clad=clad, generator=torch.Generator().manual_seed(0))
    assert actions.shape == (B, CLAD_CFG.horizon, 7)


@pytest.mark.parametrize("name", [n for n, (_, p) in ABLATIONS.items() if p])
def test_policy_ablations_build(name):
    _, policy_config = apply_ablation(*get_model_presets("ci"), name)
    pol = ForesightPolicy(policy_config)
    assert pol.loss(batch(), foresight()).isfinite()


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="foresight='all'"):
        dataclasses.replace(POLICY_CFG, foresight="all")
    with pytest.raises(ValueError, match="schedule"):
        PolicyConfig(schedule="sigmoid")
    with pytest.raises(ValueError, match="diffusion_steps"):
        PolicyConfig(diffusion_steps=0)


def test_bf16_autocast():
    pol, b, f = policy(), batch(), foresight()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pol = pol.to(device)
    b = {k: v.to(device) for k, v in b.items()}
    f = tuple(x.to(device) for x in f)
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = pol.loss(b, f)
        actions = pol.sample_actions(b, f)
    assert loss.dtype == torch.float32 and loss.isfinite()
    loss.backward()
    assert actions.dtype == torch.float32 and actions.abs().max() <= 1.0


def test_stage2_overfits_a_tiny_batch():
    """8 samples, fixed foresights: the eq. 22 loss (measured on fixed noise) falls >= 8x and
    the sampled chunks move to the training chunks."""
    pol, b, f = policy(), batch(batch_size=8), foresight(batch_size=8)
    gen = torch.Generator().manual_seed(0)

    def measured_loss():
        repeated = {k: v.repeat(32, *([1] * (v.dim() - 1))) for k, v in b.items()}
        with torch.no_grad():
            return pol.loss(repeated, tuple(x.repeat(32, 1) for x in f),
                            generator=torch.Generator().manual_seed(5)).item()

    def sample_error():
        actions = pol.sample_actions(b, f, generator=torch.Generator().manual_seed(3))
        return (actions - b["actions"]).abs().mean().item()

    first, first_error = measured_loss(), sample_error()
    steps = 800
    opt = torch.optim.AdamW(pol.parameters(), lr=2e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = pol.loss(b, f, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    last, last_error = measured_loss(), sample_error()
    assert last < first / 8, (first, last)
    assert last_error < 0.3 < first_error, (first_error, last_error)


def test_num_samples_averages_draws_of_one_batched_pass():
    """num_samples = N: N draws per observation in one (B * N) pass, averaged; N = 1 is the single draw."""
    pol, b, f = randomize_films(policy()), batch(), foresight()
    pol.eval()
    n = 5
    single = pol.sample_actions(b, f, generator=torch.Generator().manual_seed(4))
    assert torch.equal(single, pol.sample_actions(b, f, generator=torch.Generator().manual_seed(4), num_samples=1))
    averaged = pol.sample_actions(b, f, generator=torch.Generator().manual_seed(4), num_samples=n)
    assert averaged.shape == (B, POLICY_CFG.horizon, 7)
    # the same draws, made by hand: each observation repeated N times in a row, one sample each
    repeat = lambda x: x.repeat_interleave(n, dim=0)
    draws = pol.sample_actions({k: repeat(v) for k, v in b.items()}, tuple(repeat(x) for x in f),
                               generator=torch.Generator().manual_seed(4)).reshape(B, n, POLICY_CFG.horizon, 7)
    torch.testing.assert_close(averaged, draws.mean(dim=1).clamp(-1, 1))
    # the mean of N draws varies less across seeds than one draw
    spread = lambda k: torch.stack([pol.sample_actions(b, f, generator=torch.Generator().manual_seed(s), num_samples=k)
                                    for s in range(6)]).std(dim=0).mean()
    assert spread(n) < 0.7 * spread(1)
    with pytest.raises(ValueError, match="num_samples"):
        pol.sample_actions(b, f, num_samples=0)


@pytest.mark.parametrize("mode", ["none", "both"])
def test_past_actions_join_the_condition(mode):
    """policy.past_actions: c gains e_a(a^{t-tau:t}) (obs_dim wide); without the switch they are ignored."""
    c, b = POLICY_CFG, batch()
    f = foresight() if mode != "none" else None
    plain, with_past = policy(foresight=mode), policy(foresight=mode, past_actions=True)
    other = dict(b, actions_past=torch.flip(b["actions_past"], dims=[0]))
    with torch.no_grad():
        c_plain, c_past = plain.condition(b, f), with_past.condition(b, f)
        assert c_past.shape[1] == c_plain.shape[1] + c.obs_dim
        assert torch.equal(plain.condition(other, f), c_plain)          # ignored without the switch
        changed = (with_past.condition(other, f) - c_past).abs().sum(dim=1)
        assert torch.equal(changed[:, None] > 0, (b["actions_past"] != other["actions_past"]).flatten(1).any(1, keepdim=True))
    assert with_past.num_parameters() > plain.num_parameters()
    loss = with_past.loss(b, f)
    loss.backward()
    assert with_past.e_a.net[0].weight.grad.abs().sum() > 0
    with pytest.raises(KeyError, match="actions_past"):
        with_past.condition({k: v for k, v in b.items() if k != "actions_past"}, f)


def test_cond_injection_every_block_films_each_residual_block():
    """policy.cond_injection="every_block": each block FiLMs LN(x) by [emb(k) ; c]; a fresh FiLM is the
    identity, so it starts as the "input" network, and "input" keeps its (checkpoint) parameter names."""
    with pytest.raises(ValueError, match="cond_injection"):
        dataclasses.replace(POLICY_CFG, cond_injection="bogus")
    plain, film = policy(), policy(cond_injection="every_block")
    assert not any("film" in name for name, _ in plain.eps_net.named_parameters())
    missing = film.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(f"eps_net.blocks.{i}.film.proj.{p}" for i in range(POLICY_CFG.n_blocks)
                                     for p in ("weight", "bias"))
    b, f, k = batch(), foresight(), torch.randint(0, POLICY_CFG.diffusion_steps, (B,))
    with torch.no_grad():
        cond = plain.condition(b, f)
        torch.testing.assert_close(film.eps_net(b["actions"], k, cond), plain.eps_net(b["actions"], k, cond))
    film.loss(b, f).backward()
    assert all(block.film.proj.weight.grad.abs().sum() > 0 for block in film.eps_net.blocks)
    randomize_films(film)
    with torch.no_grad():
        assert not torch.allclose(film.eps_net(b["actions"], k, cond), plain.eps_net(b["actions"], k, cond))
    assert film.num_parameters() - plain.num_parameters() == POLICY_CFG.n_blocks * (
        (POLICY_CFG.time_embed_dim + 2 * POLICY_CFG.foresight_dim + 1) * 2 * POLICY_CFG.hidden_dim)


def test_extra_actions_predict_a_longer_chunk_than_tau():
    """policy.extra_actions = e: the network maps chunks of L = τ + e actions; the past actions it may
    read stay τ long; a batch of τ-long targets is refused by name; negative values are refused."""
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="extra_actions"):
            dataclasses.replace(POLICY_CFG, extra_actions=bad)
    config = dataclasses.replace(POLICY_CFG, extra_actions=6, past_actions=True)
    L = POLICY_CFG.horizon + 6
    assert config.chunk_length == L and POLICY_CFG.chunk_length == POLICY_CFG.horizon
    pol = policy(extra_actions=6, past_actions=True)
    b = make_dummy_batch(config, B, torch.Generator().manual_seed(0))
    assert b["actions"].shape == (B, L, 7) and b["actions_past"].shape == (B, POLICY_CFG.horizon, 7)
    pol.loss(b, foresight()).backward()
    actions = pol.sample_actions(b, foresight(), generator=torch.Generator().manual_seed(0))
    assert actions.shape == (B, L, 7) and actions.abs().max() <= 1.0
    with pytest.raises(ValueError, match=r"extra_actions 6"):
        pol.loss(batch(), foresight())  # τ-long targets
    # only the input and output projections grow, by the 6 x 7 extra action values
    grown = policy(extra_actions=6).num_parameters() - policy().num_parameters()
    assert grown == 6 * 7 * POLICY_CFG.hidden_dim + POLICY_CFG.hidden_dim * 6 * 7 + 6 * 7
