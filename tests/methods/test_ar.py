"""AR baseline: exact NLL against the Markov oracle, exact causality of the DiT switch, the sampler's
law against the oracle's, and one-line errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dlm_jax.methods import ar
from dlm_jax.methods.base import build_method, model_spec
from dlm_jax.models import DiTConfig, build_model, make_apply
from dlm_jax.models.attention import Attention, einsum_attention, rotary_cos_sin, xla_attention
from dlm_jax.testing.oracles import MarkovChainLanguage, all_sequences, empirical_law, total_variation

V, L = 3, 4


def oracle_apply(lang):
    """A "model" whose logits are the chain's exact next-token log-probs: BOS (= V) -> log π0,
    token a -> log A[a]. Causal by construction (position i reads only input i)."""
    table = jnp.concatenate([jnp.log(lang.transition), jnp.log(lang.initial)[None]], axis=0)  # [V + 1, V]

    def apply(params, x, cond, **_):
        del params, cond
        return table[x]

    return apply


def ar_config(**method):
    return ml_collections.ConfigDict({"model": {"vocab_size": V, "name": "dit", "causal": True},
                                      "data": {"seq_len": L}, "method": dict(name="ar", **method)})


def test_evaluate_is_the_exact_nll_of_the_chain():
    lang = MarkovChainLanguage.random(0, V, L)
    method = build_method(ar_config(), oracle_apply(lang))
    x = jnp.asarray(all_sequences(V, L))  # all 81 sequences
    mask = jnp.asarray(np.random.default_rng(0).integers(0, 2, x.shape), jnp.float32).at[:, 0].set(1.0)
    with jax.enable_x64(True):
        sums = method.evaluate(None, {"tokens": x}, jax.random.key(0))
        expected = -float(jnp.sum(lang.log_prob(x)))
        np.testing.assert_allclose(float(sums["nll_sum"]), expected, rtol=1e-5)
        assert float(sums["num_tokens"]) == x.size
        # per-token terms under a loss mask: the chain's conditionals at the kept positions only
        masked = method.evaluate(None, {"tokens": x, "loss_mask": mask}, jax.random.key(0))
        lp0 = jnp.log(lang.initial)[x[:, 0]]
        lpt = jnp.log(lang.transition)[x[:, :-1], x[:, 1:]]
        per_token = -jnp.concatenate([lp0[:, None], lpt], axis=1)
        np.testing.assert_allclose(float(masked["nll_sum"]), float(jnp.sum(per_token * mask)), rtol=1e-5)
        loss, metrics = method.loss(None, {"tokens": x}, jax.random.key(0))
        np.testing.assert_allclose(float(loss), expected / x.size, rtol=1e-5)
    # the chain's entropy is the expected NLL: Σ_x p(x) NLL(x) = H
    with jax.enable_x64(True):
        p = jnp.exp(lang.log_prob(x))
        nll = -lang.log_prob(x)
        np.testing.assert_allclose(float(jnp.sum(p * nll)), lang.entropy(), rtol=1e-6)  # lang built in float32


def test_shift_right_puts_bos_first():
    np.testing.assert_array_equal(ar.shift_right(jnp.array([[5, 6, 7]]), 9), [[9, 5, 6]])


def test_ancestral_sampler_draws_the_chain_law():
    lang = MarkovChainLanguage.random(1, V, L)
    logits = oracle_apply(lang)
    n = 20000
    with jax.enable_x64(True):
        tokens, info = jax.jit(lambda k: ar.sample_ancestral(lambda x: logits(None, x, {}), k, num_samples=n,
                                                             length=L, bos=V))(jax.random.key(3))
        exact = np.exp(np.asarray(lang.log_prob(jnp.asarray(all_sequences(V, L)))))
    tv = total_variation(empirical_law(np.asarray(tokens), V), exact)
    assert tv < 0.03, tv  # E[TV] ≈ 0.011 for 81 cells and 20,000 draws
    assert np.all(np.asarray(info["nfe"]) == L)


def test_ancestral_sampler_is_greedy_under_one_hot_logits_and_top_p():
    # logits that make token (prev + 1) mod V much likelier; top_p = 0.5 keeps only it
    table = jnp.log(jnp.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]))
    tokens, _ = ar.sample_ancestral(lambda x: table[x], jax.random.key(0), num_samples=5, length=6, bos=3,
                                    top_p=0.5, categorical="two_stage")
    np.testing.assert_array_equal(np.asarray(tokens), np.tile([2, 0, 1, 2, 0, 1], (5, 1)))


def _perturbed(config, seed=1):
    g, params = build_model(config, 0)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    return jax.jit(make_apply(g)), params


def test_causal_dit_position_i_ignores_later_tokens_exactly():
    config = DiTConfig(vocab_size=V + 1, num_classes=V, width=16, depth=1, heads=2, cond_dim=8, max_len=8,
                       conditioning="none", causal=True)
    apply, params = _perturbed(config)
    x = jax.random.randint(jax.random.key(0), (2, 6), 0, V + 1)
    ys = jnp.stack([x.at[:, i + 1:].set((x[:, i + 1:] + 1) % (V + 1)) for i in range(6)])  # change all > i
    outs = np.asarray(jax.vmap(lambda y: apply(params, y, {}))(jnp.concatenate([x[None], ys])))
    for i in range(6):
        np.testing.assert_array_equal(outs[1 + i][:, : i + 1], outs[0][:, : i + 1])  # bit-equal up to i
        if i < 5:
            assert np.abs(outs[1 + i][:, i + 1:] - outs[0][:, i + 1:]).max() > 1e-3  # later positions move


def _attention(causal, impl="xla"):
    from flax import nnx

    with nnx.use_eager_sharding(False):
        return Attention(16, 2, impl=impl, causal=causal, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("impl", ["xla", "einsum"])
def test_causal_attention_masks_the_future_and_off_is_the_plain_call(impl):
    x = jax.random.normal(jax.random.key(1), (2, 5, 16))
    cos, sin = rotary_cos_sin(5, 8)
    causal, plain = _attention(True, impl), _attention(False, impl)
    q, k, v = plain.qkv_rotated(x, cos, sin)
    np.testing.assert_array_equal(np.asarray(plain(x, cos, sin)), np.asarray(plain.out(
        {"xla": xla_attention, "einsum": einsum_attention}[impl](q, k, v))))
    # causal: row i is softmax over keys <= i, computed by hand in float64
    s = np.einsum("blhd,bmhd->bhlm", np.asarray(q, np.float64), np.asarray(k, np.float64)) / np.sqrt(8)
    s = np.where(np.tril(np.ones((5, 5), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = np.einsum("bhlm,bmhd->blhd", p, np.asarray(v, np.float64))
    np.testing.assert_allclose(np.asarray(causal(x, cos, sin)), np.asarray(plain.out(jnp.asarray(ref, jnp.float32))),
                               rtol=1e-5, atol=1e-6)
    masked = causal(x, cos, sin, key_mask=jnp.array([[True] * 5, [True, True, True, False, False]]))
    np.testing.assert_allclose(np.asarray(masked)[1, :3], np.asarray(causal(x, cos, sin))[1, :3], rtol=1e-5, atol=1e-6)


def test_bad_input_is_one_line():
    config = ar_config()
    config.model.causal = False
    with pytest.raises(ValueError, match=r"^model.causal: False; expected True for method 'ar'"):
        model_spec(config)
    with pytest.raises(ValueError, match=r"^method.temperature: 0.0; expected"):
        build_method(ar_config(temperature=0.0), lambda *a, **k: None)
    method = build_method(ar_config(), oracle_apply(MarkovChainLanguage.random(0, V, L)))
    with pytest.raises(ValueError, match=r"^sampler: 'mdlm'; expected None for method 'ar'"):
        method.sample(None, jax.random.key(0), num_samples=1, steps=8, sampler="mdlm")
    assert model_spec(ar_config()).num_input_ids == V + 1 and model_spec(ar_config()).num_outputs == V
