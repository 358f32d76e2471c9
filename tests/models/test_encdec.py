"""The encoder–decoder denoiser (METHODS §2.4 / §3.2): registry build, padding exactness, per-token
time, self-conditioning default, precomputed memory, normalised table, sharding names, bad input."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from dlm_jax.models import registry
from dlm_jax.models.registry import ModelSpec

V, D = 11, 8


def _model(**fields):
    m = dict(name="encdec", vocab_size=V, width=32, heads=2, enc_depth=1, dec_depth=2, max_src_len=12,
             max_tgt_len=10, mlp_ratio=2)
    m.update(fields)
    cfg = ml_collections.ConfigDict({"model": m})
    return registry.build(cfg, ModelSpec(input="tokens", num_input_ids=V, num_outputs=D))


@pytest.fixture(scope="module")
def built():
    model = _model()
    return model, jax.jit(model.init)(jax.random.key(0))


def _jit(model, outputs="x0"):
    """jit with the (static) output mode closed over."""
    return jax.jit(lambda params, x, cond: model.apply(params, x, dict(cond, outputs=outputs)))


def _inputs(b=2, ls=7, n=6, seed=1):
    k = jax.random.split(jax.random.key(seed), 4)
    src = jax.random.randint(k[0], (b, ls), 0, V)
    z = jax.random.normal(k[1], (b, n, D))
    sc = jax.random.normal(k[2], (b, n, D))
    t = jax.random.uniform(k[3], (b,))
    return src, z, sc, t


def test_padding_at_the_end_is_exact(built):
    """Real positions compute what the unpadded shorter source/target compute (1e-5)."""
    model, params = built
    src, z, sc, t = _inputs()
    apply, encode = _jit(model), _jit(model, "encode")
    short = apply(params, z[:, :4], {"source": src[:, :5], "t": t, "self_cond": sc[:, :4]})
    pm_src = jnp.arange(7)[None].repeat(2, 0) < 5
    pm_tgt = jnp.arange(6)[None].repeat(2, 0) < 4
    padded = apply(params, z, {"source": jnp.where(pm_src, src, 0), "source_mask": pm_src, "t": t,
                               "self_cond": sc, "padding_mask": pm_tgt})
    np.testing.assert_allclose(np.asarray(padded[:, :4]), np.asarray(short), atol=1e-5)
    enc_short = encode(params, None, {"source": src[:, :5]})
    enc_pad = encode(params, None, {"source": src, "source_mask": pm_src})
    np.testing.assert_allclose(np.asarray(enc_pad["length_logits"]), np.asarray(enc_short["length_logits"]),
                               atol=1e-5)
    assert enc_pad["length_logits"].shape == (2, 11)


def test_time_self_cond_memory_and_table(built):
    model, params = built
    src, z, sc, t = _inputs()
    tk = jnp.broadcast_to(t[:, None], (2, 6))

    @jax.jit
    def variants(params):  # one compile for every variant
        a = lambda x, **c: model.apply(params, x, c)  # noqa: E731
        enc = a(None, source=src, outputs="encode")
        return (a(z, source=src, t=t), a(z, source=src, t=tk), a(z, source=src, t=t, self_cond=jnp.zeros_like(z)),
                a(z, memory=enc["memory"], t=t), a(z, source=src, t=t, outputs="all"),
                a(z, source=src, t=tk.at[:, 2].set(0.99)))

    base, per_token, zeros, from_memory, allout, moved = variants(params)
    np.testing.assert_allclose(np.asarray(per_token), np.asarray(base), atol=1e-6)
    np.testing.assert_allclose(np.asarray(zeros), np.asarray(base), atol=1e-6)  # absent self-conditioning = zeros
    np.testing.assert_allclose(np.asarray(from_memory), np.asarray(base), atol=1e-6)
    np.testing.assert_allclose(np.asarray(allout["x0"]), np.asarray(base), atol=1e-6)
    e = np.asarray(allout["embedding"])
    assert e.shape == (V, D)
    np.testing.assert_allclose(np.linalg.norm(e, axis=-1), np.sqrt(D), rtol=1e-5)
    # A different time at one position changes the output (time is per token).
    assert float(jnp.max(jnp.abs(moved - base))) > 1e-4


def test_every_weight_has_logical_names(built):
    model, params = built
    specs = nnx.get_partition_spec(params)
    for (path, leaf), (_, spec) in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                       jax.tree_util.tree_flatten_with_path(specs)[0]):
        assert spec is not None and len(spec) == leaf.ndim, path
    names = {n for s in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
             for n in s if n}
    assert names <= {"vocab", "embed", "mlp", "heads", "kv", "cond", "norm"}


def test_bad_inputs_are_one_line_errors(built):
    model, params = built
    src, z, sc, t = _inputs(ls=13)
    with pytest.raises(ValueError, match=r"^source: 'length 13'; expected <= model.max_src_len=12$"):
        model.apply(params, z, {"source": src, "t": t})
    with pytest.raises(ValueError, match=r"^x: \(2, 6, 5\); expected latents \[B, n, latent_dim=8\]$"):
        model.apply(params, z[..., :5], {"source": src[:, :5], "t": t})
    with pytest.raises(ValueError, match=r"^cond\['outputs'\]: 'logits'; expected one of"):
        model.apply(params, z, {"source": src[:, :5], "t": t, "outputs": "logits"})
    with pytest.raises(ValueError, match=r"^model.latent_dim: 4; expected 8 \(the method's latent width\)$"):
        _model(latent_dim=4)
    with pytest.raises(ValueError, match=r"^model.depth: 2; expected an encdec field"):
        _model(depth=2)
