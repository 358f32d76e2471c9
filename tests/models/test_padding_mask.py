"""cond["padding_mask"]: padded keys are invisible to every attention layer. Numbers: real positions of a
right-padded batch equal the same model on the unpadded shorter sequences, whatever the padded tokens are."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.models import DiTConfig, abstract_model, build_model, make_apply

BASE = dict(vocab_size=11, num_classes=10, width=32, depth=2, heads=4, cond_dim=16, max_len=16)
B, L = 3, 8
LENGTHS = (3, 8, 5)
MASK = jnp.arange(L)[None, :] < jnp.array(LENGTHS)[:, None]  # [B, L] bool, True = real


def cfg(**kw):
    return DiTConfig(**{**BASE, **kw})


def perturb(params, seed=1, scale=0.3):
    """Noise on every weight so the zero-initialised adaLN / final layers are live."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@functools.lru_cache(maxsize=None)
def model(config):
    g, p = build_model(config, 0)
    return jax.jit(make_apply(g)), perturb(p)


def inputs(config, seed=0):
    """x and cond for the padded batch; t per token when the config allows it, so it differs per position."""
    ks = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.randint(ks[0], (B, L), 0, config.vocab_size)
    t = jax.random.uniform(ks[1], (B, L) if config.per_token_time else (B,))
    cond = {"t": t}
    if config.conditioning == "th":
        cond["h"] = jax.random.uniform(ks[2], (B,))
    if config.self_cond_dim:
        cond["self_cond"] = jax.random.normal(ks[3], (B, L, config.self_cond_dim))
    return x, cond


def row(cond, i, n):
    """cond of sequence i cut to its first n positions (the unpadded sequence)."""
    return {k: (v[i:i + 1, :n] if v.ndim >= 2 else v[i:i + 1]) for k, v in cond.items()}


CONFIGS = [cfg(), cfg(conditioning="th", per_token_time=True, self_cond_dim=5), cfg(attention_impl="einsum"),
           cfg(qkv_impl="split", rope_impl="split_halves", embed_impl="onehot")]


@pytest.mark.parametrize("config", CONFIGS, ids=["t", "th-per-token-selfcond", "einsum", "split-impls"])
def test_real_positions_equal_the_unpadded_sequence(config):
    apply, p = model(config)
    x, cond = inputs(config)
    padded = apply(p, x, {**cond, "padding_mask": MASK})
    assert bool(jnp.all(jnp.isfinite(padded)))
    scale = float(jnp.max(jnp.abs(padded)))
    assert scale > 1.0
    for i, n in enumerate(LENGTHS):
        short = apply(p, x[i:i + 1, :n], row(cond, i, n))
        assert float(jnp.max(jnp.abs(padded[i, :n] - short[0]))) < 1e-5 * scale  # float32 rounding only
    # without the mask the padded keys leak into the real positions of the short rows
    unmasked = apply(p, x, cond)
    assert float(jnp.max(jnp.abs(unmasked[0, :3] - padded[0, :3]))) > 1e-3


@pytest.mark.parametrize("config", CONFIGS[:2], ids=["t", "th-per-token-selfcond"])
def test_padded_tokens_do_not_matter(config):
    apply, p = model(config)
    x, cond = inputs(config)
    out = apply(p, x, {**cond, "padding_mask": MASK})
    other = jnp.where(MASK, x, (x + 3) % config.vocab_size)
    cond2 = dict(cond)
    if config.per_token_time:  # time and self-conditioning at padded positions are padding too
        cond2["t"] = jnp.where(MASK, cond["t"], 0.99)
    if config.self_cond_dim:
        cond2["self_cond"] = jnp.where(MASK[..., None], cond["self_cond"], 7.0)
    out2 = apply(p, other, {**cond2, "padding_mask": MASK})
    real = np.asarray(MASK)
    assert float(jnp.max(jnp.abs(out2 - out)[real])) < 1e-6 * float(jnp.max(jnp.abs(out)))
    assert float(jnp.max(jnp.abs(out2 - out)[~real])) > 1e-3  # padded queries still compute (finite) outputs
    assert bool(jnp.all(jnp.isfinite(out2)))


def test_mask_forms_all_real_and_all_padded():
    apply, p = model(cfg())
    x, cond = inputs(cfg())
    ref = apply(p, x, {**cond, "padding_mask": MASK})
    for form in (MASK.astype(jnp.int32), MASK.astype(jnp.float32), np.asarray(MASK)):
        assert float(jnp.max(jnp.abs(apply(p, x, {**cond, "padding_mask": form}) - ref))) == 0.0
    # all real = no mask (absent mask takes the unmasked code path)
    full = apply(p, x, {**cond, "padding_mask": jnp.ones((B, L), bool)})
    assert float(jnp.max(jnp.abs(full - apply(p, x, cond)))) < 1e-6 * float(jnp.max(jnp.abs(ref)))
    # a row of nothing but padding: uniform attention over its (padded) keys, finite
    empty = MASK.at[0].set(False)
    out = apply(p, x, {**cond, "padding_mask": empty})
    assert bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_array_equal(np.asarray(out[1:]), np.asarray(ref[1:]))


def test_gradients_finite_with_padding():
    g, p0 = build_model(cfg(attention_impl="einsum"), 0)
    raw, p = make_apply(g), perturb(p0)
    x, cond = inputs(cfg())
    for mask in (MASK, MASK.at[0].set(False)):
        def loss(q, mask=mask):
            return jnp.sum(jnp.where(mask[..., None], raw(q, x, {**cond, "padding_mask": mask}), 0.0) ** 2)

        for leaf in jax.tree.leaves(jax.jit(jax.grad(loss))(p)):
            assert bool(jnp.all(jnp.isfinite(leaf)))


def test_bad_padding_mask_raises_one_line():
    g, p = abstract_model(cfg())  # validation raises before any compute
    apply = make_apply(g)
    x, cond = inputs(cfg())
    cases = [(jnp.ones((B, L + 1), bool), "shape"), (jnp.ones((B,), bool), "shape"),
             (jnp.full((B, L), 2), "values 0 or 1"), (jnp.full((B, L), 0.5), "values 0 or 1")]
    for mask, msg in cases:
        with pytest.raises(ValueError, match=r"^cond\['padding_mask'\]: .*" + msg) as e:
            apply(p, x, {**cond, "padding_mask": mask})
        assert "\n" not in str(e.value)
    # under jit only the shape is known: values are not checked, the shape still is
    traced = lambda q, m: apply(q, x, {**cond, "padding_mask": m})  # noqa: E731
    assert jax.eval_shape(traced, p, jnp.full((B, L), 2)).shape == (B, L, 10)
    with pytest.raises(ValueError, match=r"^cond\['padding_mask'\]: \(3, 2\); expected shape"):
        jax.eval_shape(traced, p, jnp.ones((B, 2), jnp.int32))
