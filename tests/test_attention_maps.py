"""Recording attention weights (clad_lite.layers.record_attention, CLaD.attention_maps)."""

import dataclasses

import pytest
import torch

from clad_lite.clad import CLaD, make_dummy_batch
from clad_lite.configuration_clad import MODEL_PRESETS
from clad_lite.layers import Attention, AttentionBlock, record_attention

# distinct token counts, so that shapes tell the modalities apart
CFG = dataclasses.replace(MODEL_PRESETS["ci"][0], n_proprio_tokens=2, n_semantic_tokens=3,
                          transition_depth=2)
B = 5


def model(**overrides) -> CLaD:
    torch.manual_seed(0)
    return CLaD(dataclasses.replace(CFG, **overrides)).eval()


def batch(seed=0):
    return make_dummy_batch(CFG, B, torch.Generator().manual_seed(seed))


def test_weights_reproduce_the_attention_output():
    torch.manual_seed(0)
    attn = Attention(16, 4).eval()
    x, context = torch.randn(3, 2, 16), torch.randn(3, 7, 16)
    w = attn.attention_weights(x, context)
    assert w.shape == (3, 4, 2, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 2))
    v = attn.kv(context).chunk(2, dim=-1)[1].reshape(3, 7, 4, 4).transpose(1, 2)   # (B, h, M, d)
    y = (w @ v).transpose(1, 2).reshape(3, 2, 16)
    torch.testing.assert_close(attn.out(y), attn(x, context), atol=1e-5, rtol=1e-5)


def test_recording_is_off_by_default_and_leaves_outputs_unchanged():
    m, b = model(), batch()
    with torch.no_grad():
        before = m.dynamics(b)
    assert all(not module._forward_hooks for module in m.modules())
    with record_attention(m) as record, torch.no_grad():
        during = m.dynamics(b)
    torch.testing.assert_close(during, before, atol=0, rtol=0)
    assert len(record) == 2 * CFG.transition_depth + CFG.cross_depth + 1
    # hooks are removed on exit: nothing is recorded afterwards
    assert all(not module._forward_hooks for module in m.modules())
    with torch.no_grad():
        m.dynamics(b)
    assert all(len(calls) == 1 for calls in record.calls.values())


def test_record_names_and_shapes():
    m, b = model(), batch()
    tau = CFG.horizon
    with record_attention(m) as record, torch.no_grad():
        m.dynamics(b)
    assert record["transition_p.blocks.0.attn"].shape == (B, CFG.n_heads, 2, 2 + tau)
    assert record["transition_s.blocks.1.attn"].shape == (B, CFG.n_heads, 3, 3 + tau)
    assert record["cross_modal.blocks.0.attn"].shape == (B, CFG.n_heads, 2, 3)
    assert record["pool.attn"].shape == (B, CFG.n_heads, 1, 2)
    for weights in record.values():
        assert not weights.requires_grad
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
        assert (weights >= 0).all()


def test_recording_during_training_forward_keeps_gradients():
    m, b = model(), batch()
    m.train()
    with record_attention(m) as record:
        out = m(b, mask_ratio=0.3)
        out["loss"].backward()
    assert m.f_p.mlp.net[0].weight.grad is not None
    assert record["pool.attn"].shape == (B, CFG.n_heads, 1, 2)


def test_self_attention_block_is_recorded():
    torch.manual_seed(0)
    block = AttentionBlock(16, 4, cross=False)
    with record_attention(block) as record:
        block(torch.randn(2, 5, 16))
    assert record["attn"].shape == (2, 4, 5, 5)


@pytest.mark.parametrize("attention, n_query, n_key", [("p_queries_s", 2, 3), ("s_queries_p", 3, 2),
                                                        ("self", 5, 5)])
def test_clad_attention_maps(attention, n_query, n_key):
    m, b = model(attention=attention), batch()
    tau = CFG.horizon
    maps = m.attention_maps(b)
    assert maps["transition_p"].shape == (B, 2, CFG.n_heads, 2, 2 + tau)
    assert maps["transition_s"].shape == (B, 2, CFG.n_heads, 3, 3 + tau)
    assert maps["cross_modal"].shape == (B, CFG.cross_depth, CFG.n_heads, n_query, n_key)
    assert maps["pool"].shape == (B, CFG.n_heads, n_query)
    for key in ("transition_p", "transition_s", "cross_modal", "pool"):
        torch.testing.assert_close(maps[key].sum(-1), torch.ones(maps[key].shape[:-1]))
    with torch.no_grad():
        torch.testing.assert_close(maps["z_dyn"], m.dynamics(b), atol=0, rtol=0)


def test_masked_actions_get_identical_attention_whatever_the_actions():
    m, b = model(), batch()
    other = dict(b, actions_past=torch.rand_like(b["actions_past"]) * 2 - 1)
    masked_a, masked_b = m.attention_maps(b, mask_ratio=1.0), m.attention_maps(other, mask_ratio=1.0)
    torch.testing.assert_close(masked_a["transition_p"], masked_b["transition_p"], atol=0, rtol=0)
    open_a, open_b = m.attention_maps(b, mask_ratio=0.0), m.attention_maps(other, mask_ratio=0.0)
    assert (open_a["transition_p"] - open_b["transition_p"]).abs().max() > 1e-4
