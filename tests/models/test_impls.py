"""Compute-implementation switches of DiTConfig (attention_impl, qkv_impl, rope_impl, embed_impl): same params,
same outputs (to float32 rounding) as the reference implementations, padding mask included."""

import jax
import jax.numpy as jnp
import pytest

from dlm_jax.models import DiTConfig, abstract_model, build_model, make_apply
from dlm_jax.models import attention, config as config_lib

BASE = dict(vocab_size=11, num_classes=10, width=32, depth=2, heads=4, cond_dim=16, max_len=16)
SWITCHES = [dict(attention_impl="einsum"), dict(qkv_impl="split"), dict(rope_impl="split_halves"),
            dict(embed_impl="onehot"),
            dict(attention_impl="einsum", qkv_impl="split", rope_impl="split_halves", embed_impl="onehot")]


def perturb(params, seed=1, scale=0.3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def reference():
    g, p = build_model(DiTConfig(**BASE, conditioning="th", per_token_time=True), 0)
    return jax.jit(make_apply(g)), perturb(p)


@pytest.mark.parametrize("kw", SWITCHES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_switch_matches_reference(reference, kw):
    apply0, p = reference
    g, shapes = abstract_model(DiTConfig(**BASE, conditioning="th", per_token_time=True, **kw))
    assert jax.tree.structure(shapes) == jax.tree.structure(p)  # same params: checkpoints interchange
    apply = jax.jit(make_apply(g))
    x = jax.random.randint(jax.random.key(0), (2, 8), 0, 11)
    cond = {"t": jax.random.uniform(jax.random.key(1), (2, 8)), "h": jnp.array([0.25, 0.5])}
    mask = jnp.arange(8)[None, :] < jnp.array([[5], [8]])
    for c in (cond, {**cond, "padding_mask": mask}):
        a, b = apply0(p, x, c), apply(p, x, c)
        scale = float(jnp.max(jnp.abs(a)))
        assert scale > 1.0 and float(jnp.max(jnp.abs(b - a))) < 1e-5 * scale  # float32 rounding only


def test_every_choice_has_an_implementation():
    assert tuple(attention.ATTENTIONS) == config_lib.ATTENTION_IMPLS
    assert tuple(attention.ROPES) == config_lib.ROPE_IMPLS
    defaults = DiTConfig(**BASE)
    assert (defaults.attention_impl, defaults.qkv_impl, defaults.rope_impl, defaults.embed_impl,
            defaults.input_adapter) == ("xla", "fused", "rotate_half", "gather", "default")


@pytest.mark.parametrize("key", ["attention_impl", "qkv_impl", "rope_impl", "embed_impl"])
def test_bad_switch_raises_one_line(key):
    with pytest.raises(ValueError, match=f"^{key}: 'bogus'; expected one of"):
        DiTConfig.from_dict({**BASE, key: "bogus"})
