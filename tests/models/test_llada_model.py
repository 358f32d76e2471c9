"""The llada model: a float64 numpy LLaDA forward (written from the equations) against the JAX model,
the mask-id remapping, refusals, padding, and the masked samplers driving it through the MDLM method."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx, traverse_util

from dlm_jax.methods.base import build_method, model_spec
from dlm_jax.models import llada, registry
from dlm_jax.models.registry import ModelSpec

V1 = 12  # ids embedded = classes predicted (V = 11 clean, mask id 11 in dlm_jax order)


def _config(mask_token_id=5, **model):
    m = dict(dict(name="llada", vocab_size=V1 - 1, width=16, depth=2, heads=4, kv_heads=2, mlp_dim=24, max_len=16,
                  mask_token_id=mask_token_id), **model)
    return ml_collections.ConfigDict({"model": m, "method": {"name": "mdlm"}, "data": {"seq_len": 10}})


def _model(config):
    model = registry.build(config, model_spec(config))
    params = jax.jit(model.init)(jax.random.key(0))
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(params))
    rng = np.random.default_rng(1)  # norm scales away from 1, so they are exercised too
    for path in flat:
        if path[-1] == "scale":
            flat[path] = jnp.asarray(1.0 + 0.3 * rng.standard_normal(flat[path].shape), jnp.float32)
    nnx.replace_by_pure_dict(params, traverse_util.unflatten_dict(flat))
    return model, params


def _numpy_llada(p, ids, cfg):
    """LLaDA's mask predictor in float64, on checkpoint ids (p: own-named numpy params)."""
    def rms(x, w):
        return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + cfg.norm_eps) * w

    def rope(x):
        d = x.shape[-1]
        ang = np.arange(x.shape[1])[:, None] / cfg.rope_theta ** (np.arange(0, d, 2) / d)[None]
        c, s = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
        return np.concatenate([x[..., : d // 2] * c - x[..., d // 2:] * s, x[..., d // 2:] * c + x[..., : d // 2] * s], -1)

    x = p["embed.embedding"][ids]
    rep = cfg.heads // cfg.num_kv_heads
    for i in range(cfg.depth):
        b = lambda k: p[f"blocks.{i}.{k}"]  # noqa: E731
        n = rms(x, b("attn_norm.scale"))
        q = rope(np.einsum("blw,whd->blhd", n, b("attn.q.kernel")))
        k = np.repeat(rope(np.einsum("blw,whd->blhd", n, b("attn.k.kernel"))), rep, axis=2)
        v = np.repeat(np.einsum("blw,whd->blhd", n, b("attn.v.kernel")), rep, axis=2)
        s = np.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(cfg.head_dim)
        a = np.exp(s - s.max(-1, keepdims=True))
        o = np.einsum("bhlm,bmhd->blhd", a / a.sum(-1, keepdims=True), v)
        x = x + np.einsum("blhd,hdw->blw", o, b("attn.out.kernel"))
        m = rms(x, b("ff_norm.scale"))
        g = m @ b("mlp.gate.kernel")
        x = x + ((g / (1 + np.exp(-g))) * (m @ b("mlp.up.kernel"))) @ b("mlp.down.kernel")
    return rms(x, p["final_norm.scale"]) @ p["head.kernel"]


@pytest.mark.parametrize("mask_token_id", [5, V1 - 1])
def test_matches_numpy_reference_in_checkpoint_order(mask_token_id):
    model, params = _model(_config(mask_token_id))
    flat = {".".join(map(str, k)): np.asarray(v, np.float64)
            for k, v in traverse_util.flatten_dict(nnx.to_pure_dict(params)).items()}
    ckpt_ids = np.random.default_rng(2).integers(0, V1, (3, 10))
    ckpt_ids[0, :3] = mask_token_id
    ours = llada.checkpoint_to_dlm_ids(ckpt_ids, V1, mask_token_id)
    assert (ours[0, :3] == V1 - 1).all() and ours.max() < V1
    out = np.asarray(jax.jit(model.apply)(params, jnp.asarray(ours), {"t": jnp.zeros(3)}))
    got = llada.logits_to_checkpoint_order(out, mask_token_id)
    ref = _numpy_llada(flat, ckpt_ids, model.config)
    assert np.abs(ref).max() > 0.5
    assert np.abs(got - ref).max() < 2e-5, np.abs(got - ref).max()


def test_id_maps_are_inverse_bijections():
    ids = np.arange(V1)
    for m in (0, 5, V1 - 1):
        to = llada.dlm_to_checkpoint_ids(ids, V1, m)
        assert sorted(to.tolist()) == ids.tolist() and to[V1 - 1] == m
        assert np.array_equal(llada.checkpoint_to_dlm_ids(to, V1, m), ids)
        logits = np.arange(V1)[None].astype(float)  # logit value = dlm id
        assert np.array_equal(llada.logits_to_checkpoint_order(logits, m)[0], llada.checkpoint_to_dlm_ids(ids, V1, m))
    assert np.array_equal(llada.dlm_to_checkpoint_ids(ids, V1, V1 - 1), ids)


def test_padding_at_the_end_leaves_real_positions_unchanged():
    model, params = _model(_config())
    x = jnp.asarray(np.random.default_rng(3).integers(0, V1, (2, 10)))
    apply = jax.jit(model.apply)
    short = apply(params, x[:, :6])
    pad = jnp.concatenate([jnp.ones((2, 6), bool), jnp.zeros((2, 4), bool)], axis=1)
    padded = apply(params, x, {"padding_mask": pad})
    assert np.abs(np.asarray(padded[:, :6]) - np.asarray(short)).max() < 1e-5


def test_refusals_are_one_line():
    model, params = _model(_config())
    cases = [
        (lambda: registry.build(_config(), ModelSpec(num_outputs=11, num_input_ids=12)), "outputs equal its input ids"),
        (lambda: registry.build(_config(), ModelSpec(num_outputs=12, num_input_ids=12, conditioning="t")),
         "model.conditioning: 't'; expected 'none'"),
        (lambda: registry.build(_config(mask_token_id=12), model_spec(_config())), "model.mask_token_id: 12"),
        (lambda: registry.build(_config(kv_heads=3), model_spec(_config())), "model.kv_heads: 3"),
        (lambda: registry.build(_config(bias=True), model_spec(_config())), "model.bias: True; expected a field"),
        (lambda: model.apply(params, jnp.zeros((1, 4), jnp.int32), {"h": jnp.zeros(1)}), "cond: 'h'"),
        (lambda: model.apply(params, jnp.full((1, 4), 12), None), r"ids in \[0, 12\)"),
        (lambda: model.apply(params, jnp.zeros((1, 17), jnp.int32), None), "max_len=16"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match) as e:
            fn()
        assert "\n" not in str(e.value)


def test_masked_samplers_drive_it_through_the_mdlm_method():
    config = _config(depth=1)
    model, params = _model(config)
    method = build_method(config, model.apply)
    for sampler in ("mdlm", "remdm_conf", "llada", "fef"):
        tokens, info = method.sample(params, jax.random.key(4), num_samples=2, steps=4, length=8, sampler=sampler)
        tokens = np.asarray(tokens)
        assert tokens.shape == (2, 8) and tokens.min() >= 0 and tokens.max() < V1 - 1, sampler  # all decoded
        assert int(np.max(info["nfe"])) >= 1
