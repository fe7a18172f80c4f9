"""CLaD stage 1 (eq. 5-19): shapes, attention direction, EMA, masking, losses, overfitting."""

import dataclasses

import pytest
import torch

from clad_lite.clad import CLaD, l2_latent_loss, make_dummy_batch
from clad_lite.configuration_clad import (ABLATIONS, MODEL_PRESETS, CLaDConfig, apply_ablation,
                                          get_model_presets)
from clad_lite.layers import AttentionBlock, AttentionPool, FiLM

# distinct token counts, so that shapes tell the modalities apart
CFG = dataclasses.replace(MODEL_PRESETS["ci"][0], n_proprio_tokens=2, n_semantic_tokens=3)
B = 5


def model(**overrides) -> CLaD:
    torch.manual_seed(0)
    return CLaD(dataclasses.replace(CFG, **overrides))


def batch(seed=0, batch_size=B, config=CFG):
    return make_dummy_batch(config, batch_size, torch.Generator().manual_seed(seed))


def test_block_shapes():
    c, m, b = CFG, model(), batch()
    H, tau = c.hidden_dim, c.horizon
    assert m.f_p(b["proprio"]).shape == (B, 2, H)                                    # eq. 5
    s = m.semantic_state(b["vision"], b["language"])
    assert s.shape == (B, c.vision_dim)
    assert m.f_s(s).shape == (B, 3, H)                                                # eq. 6
    assert m.encode_actions(b["actions_past"], B, 0.3, "cpu").shape == (B, tau, H)
    z_p, z_s = m.transitions(b, 0.3)
    assert z_p.shape == (B, 2, H) and z_s.shape == (B, 3, H)                          # eq. 7-8
    assert m.cross_modal_attention(z_p, z_s).shape == (B, 2, H)                       # eq. 9
    assert m.dynamics(b).shape == (B, H)                                              # eq. 10
    assert AttentionPool(H, 4)(torch.randn(B, 7, H)).shape == (B, H)
    assert AttentionBlock(H, 4)(torch.randn(B, 2, H), torch.randn(B, 9, H)).shape == (B, 2, H)
    assert FiLM(10, 4)(torch.randn(B, 10), torch.randn(B, 4)).shape == (B, 10)
    f = m.foresight(b)
    assert f.proprio.shape == f.semantic.shape == f.z_dyn.shape == (B, H)             # eq. 11-13
    zbar_p, zbar_s, s_future = m.targets(b)
    assert zbar_p.shape == zbar_s.shape == (B, H) and s_future.shape == (B, c.vision_dim)
    out = m(b)
    for key in ("loss", "latent", "recon", "latent_proprio", "latent_semantic",
                "recon_proprio", "recon_semantic"):
        assert out[key].shape == () and torch.isfinite(out[key]), key
    assert out["foresight_proprio"].shape == out["foresight_semantic"].shape == (B, H)
    torch.testing.assert_close(out["loss"], out["latent"] + c.lambda_recon * out["recon"])


def test_attention_direction_decides_the_queries():
    H = CFG.hidden_dim
    gen = torch.Generator().manual_seed(1)
    z_p, z_s = torch.randn(B, 2, H, generator=gen), torch.randn(B, 3, H, generator=gen)
    z_s2 = torch.randn(B, 3, H, generator=gen)
    p_q_s, s_q_p, sym = model(), model(attention="s_queries_p"), model(attention="self")
    with torch.no_grad():
        out = p_q_s.cross_modal_attention(z_p, z_s)
        assert out.shape == (B, 2, H)                         # one output per proprio query
        assert s_q_p.cross_modal_attention(z_p, z_s).shape == (B, 3, H)
        assert sym.cross_modal_attention(z_p, z_s).shape == (B, 5, H)
        # p queries s: the output depends on z_s (keys/values) ...
        assert not torch.allclose(out, p_q_s.cross_modal_attention(z_p, z_s2), atol=1e-4)
        # ... and is invariant to the order of the semantic tokens (a set of keys), while
        # permuting the proprio tokens permutes the output (they are the queries)
        perm_s, perm_p = torch.tensor([2, 0, 1]), torch.tensor([1, 0])
        torch.testing.assert_close(p_q_s.cross_modal_attention(z_p, z_s[:, perm_s]), out)
        torch.testing.assert_close(p_q_s.cross_modal_attention(z_p[:, perm_p], z_s), out[:, perm_p])
        # and the reverse direction: invariant to the proprio token order instead
        rev = s_q_p.cross_modal_attention(z_p, z_s)
        torch.testing.assert_close(s_q_p.cross_modal_attention(z_p[:, perm_p], z_s), rev)
        assert not torch.allclose(s_q_p.cross_modal_attention(z_p, z_s2), rev, atol=1e-4)


def test_ema_targets_get_no_gradient_and_follow_the_momentum_rule():
    m, b = model(ema_momentum=0.9), batch()
    targets = [m.f_p_target, m.f_s_target, m.film_target]
    m(b)["loss"].backward()
    for target in targets:
        for p in target.parameters():
            assert not p.requires_grad and p.grad is None
    assert all(p.grad is not None for p in m.f_p.parameters())
    trainable = [p for p in m.parameters() if p.requires_grad]
    before = {name: p.detach().clone() for name, p in m.named_parameters()}
    torch.optim.SGD(trainable, lr=0.5).step()
    for name in m.target_parameter_names():                  # the optimiser did not touch them
        torch.testing.assert_close(dict(m.named_parameters())[name], before[name], rtol=0, atol=0)
    online = dict(m.named_parameters())
    m.update_ema()
    for name in m.target_parameter_names():                   # eq. 14
        online_name = name.replace("_target", "", 1)
        expected = 0.9 * before[name] + 0.1 * online[online_name].detach()
        torch.testing.assert_close(online[name], expected, rtol=1e-6, atol=1e-7)
        assert not torch.equal(online[name], before[name])
    m.update_ema(momentum=1.0)                                # m = 1 freezes the targets
    frozen = {n: p.detach().clone() for n, p in m.named_parameters()}
    m.update_ema(momentum=1.0)
    assert all(torch.equal(frozen[n], p) for n, p in m.named_parameters())


def test_masking_ratio_and_action_independence():
    m = model()
    tau, H = CFG.horizon, CFG.hidden_dim
    actions = torch.rand(4000, tau, CFG.action_dim) * 2 - 1
    with torch.no_grad():
        tokens = m.encode_actions(actions, 4000, 0.3, "cpu", torch.Generator().manual_seed(0))
        is_mask = torch.isclose(tokens - m.action_pos, m.mask_token.expand(4000, tau, H), atol=1e-6).all(-1)
    assert abs(is_mask.float().mean().item() - 0.3) < 0.01
    # ratio 1: nothing about the actions reaches the output; ratio 0: they do
    b1, b2 = batch(), batch()
    b2["actions_past"] = torch.rand_like(b1["actions_past"]) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(m.dynamics(b1, 1.0), m.dynamics(b2, 1.0))
        without_actions = dict(b1)
        del without_actions["actions_past"]
        torch.testing.assert_close(m.dynamics(without_actions, 0.0), m.dynamics(b1, 1.0))
        assert not torch.allclose(m.dynamics(b1, 0.0), m.dynamics(b2, 0.0), atol=1e-5)
    # the training forward uses the configured ratio, evaluation masks nothing
    m.train()
    assert m(b1)["mask_ratio"] == 0.3
    m.eval()
    assert m(b1)["mask_ratio"] == 0.0


def test_mask_schedules():
    fixed = CFG
    heavy = dataclasses.replace(CFG, mask_ratio=0.9)
    free = dataclasses.replace(CFG, mask_schedule="action_free")
    curriculum = dataclasses.replace(CFG, mask_schedule="curriculum", curriculum_action_free_fraction=0.25)
    assert fixed.mask_ratio_at(0.0) == fixed.mask_ratio_at(0.9) == 0.3
    assert heavy.mask_ratio_at(0.5) == 0.9
    assert free.mask_ratio_at(0.5) == 1.0 and free.mask_ratio_at(training=False) == 1.0
    assert curriculum.mask_ratio_at(0.1) == 1.0 and curriculum.mask_ratio_at(0.3) == 0.3
    assert curriculum.mask_ratio_at(0.1, training=False) == 0.0
    m = CLaD(curriculum).train()
    assert m(batch(), progress=0.1)["mask_ratio"] == 1.0
    assert m(batch(), progress=0.9)["mask_ratio"] == 0.3


def test_latent_loss_bounds():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(64, 32, generator=gen)
    torch.testing.assert_close(l2_latent_loss(3.0 * z, z), torch.zeros(64), atol=1e-6, rtol=0)
    torch.testing.assert_close(l2_latent_loss(-z, 2.0 * z), torch.full((64,), 4.0))
    random = l2_latent_loss(torch.randn(1000, 32, generator=gen), torch.randn(1000, 32, generator=gen))
    assert random.min() >= 0 and random.max() <= 4.0 + 1e-5
    out = model()(batch())
    for key in ("latent_proprio", "latent_semantic"):
        assert 0.0 <= out[key].item() <= 4.0


def test_recon_targets_are_detached_and_switchable():
    m = model()
    out = m(batch())
    out["loss"].backward()
    assert all(p.grad is None for p in m.film_target.parameters())
    m2 = model(recon_semantic_target="vision", lambda_recon=0.0)
    out2 = m2(batch())
    torch.testing.assert_close(out2["loss"], out2["latent"])     # table 4 ablation


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_every_ablation_builds_and_runs(name):
    clad_config, _ = apply_ablation(*get_model_presets("ci"), name)
    out = CLaD(clad_config)(make_dummy_batch(clad_config, 2, torch.Generator().manual_seed(0)))
    assert torch.isfinite(out["loss"])


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="attention"):
        dataclasses.replace(CFG, attention="both_ways")
    with pytest.raises(ValueError, match="mask_ratio=1.5"):
        dataclasses.replace(CFG, mask_ratio=1.5)
    with pytest.raises(ValueError, match="hidden_dim"):
        CLaDConfig(hidden_dim=30, n_heads=4)
    with pytest.raises(ValueError, match="mask_schedule"):
        CLaDConfig(mask_schedule="sometimes")


def test_bf16_autocast_losses_are_float32():
    m, b = model(), batch()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    m, b = m.to(device), {k: v.to(device) for k, v in b.items()}
    with torch.autocast(device, dtype=torch.bfloat16):
        out = m(b)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()


def test_stage1_overfits_a_tiny_batch():
    m, b = model(), batch(batch_size=8)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    first = None
    for _ in range(150):
        loss = m(b, generator=gen)["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.update_ema()
    m.eval()
    with torch.no_grad():
        last = m(b)["loss"].item()
    assert last < first / 20, (first, last)
