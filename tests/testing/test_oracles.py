"""The exact oracles agree with brute-force enumeration and with each other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.testing.oracles import (
    JointTable,
    MarkovChainLanguage,
    all_sequences,
    empirical_law,
    mask_log_evidence,
    total_variation,
)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def brute_posteriors(law, vocab, length, log_evidence):
    seqs = all_sequences(vocab, length)
    w = law * np.exp(log_evidence[np.arange(length), seqs].sum(-1))
    w = w / w.sum()
    return np.stack([np.bincount(seqs[:, l], weights=w, minlength=vocab) for l in range(length)])


def test_markov_law_normalised_and_entropy_matches_table():
    mc = MarkovChainLanguage.random(0, vocab_size=4, length=5)
    law = mc.law()
    assert abs(law.sum() - 1.0) < 1e-12
    assert abs(mc.entropy() - (-(law * np.log(law)).sum())) < 1e-12


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_backward_equals_enumeration_under_soft_evidence(seed):
    mc = MarkovChainLanguage.random(seed, vocab_size=4, length=5)
    ev = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (5, 4)))
    expected = brute_posteriors(mc.law(), 4, 5, ev)
    np.testing.assert_allclose(np.asarray(mc.posteriors(jnp.asarray(ev))), expected, atol=1e-13)
    table = JointTable(mc.law(), 4, 5)
    np.testing.assert_allclose(np.asarray(table.posteriors(jnp.asarray(ev))), expected, atol=1e-13)
    log_z = np.log((mc.law() * np.exp(ev[np.arange(5), all_sequences(4, 5)].sum(-1))).sum())
    assert abs(float(mc.log_marginal(jnp.asarray(ev))) - log_z) < 1e-12


def test_masked_posteriors_are_prefix_conditionals():
    table = JointTable.random(3, vocab_size=3, length=4)
    law, seqs = table.law(), all_sequences(3, 4)
    z = jnp.array([1, 3, 0, 3])  # mask id 3
    post = np.asarray(table.masked_posteriors(z, 3))
    keep = (seqs[:, 0] == 1) & (seqs[:, 2] == 0)
    cond = law * keep / (law * keep).sum()
    np.testing.assert_allclose(post[1], np.bincount(seqs[:, 1], weights=cond, minlength=3), atol=1e-14)
    np.testing.assert_allclose(post[0], [0, 1, 0], atol=0)
    ev = np.asarray(mask_log_evidence(z, 3, 3))
    assert ev[1].tolist() == [0, 0, 0] and ev[0].tolist() == [-np.inf, 0, -np.inf]


def test_denoise_fn_returns_log_conditionals_batched():
    mc = MarkovChainLanguage.random(2, vocab_size=3, length=4)
    z = jnp.array([[3, 3, 3, 3], [0, 3, 2, 3]])
    out = mc.denoise_fn(3)(z, jnp.ones(2))
    np.testing.assert_allclose(np.exp(np.asarray(out[0, 0])), np.asarray(mc.initial), atol=1e-14)
    expected = np.asarray(mc.masked_posteriors(z, 3))
    np.testing.assert_allclose(np.exp(np.asarray(out)), expected, atol=1e-14)


def test_samplers_follow_the_law():
    mc = MarkovChainLanguage.random(4, vocab_size=3, length=4)
    draws = np.asarray(mc.sample(jax.random.PRNGKey(0), 100_000))
    tv = total_variation(empirical_law(draws, 3), mc.law())
    # MC floor for 81 states and 1e5 draws is about 0.5 * sum sqrt(p/n) ~ 0.01.
    assert tv < 0.02
    table = JointTable.random(5)
    draws = np.asarray(table.sample(jax.random.PRNGKey(1), 100_000))
    assert total_variation(empirical_law(draws, 3), table.law()) < 0.02


def test_posterior_sampling_is_exact_joint():
    mc = MarkovChainLanguage.random(6, vocab_size=3, length=4)
    z = jnp.array([3, 1, 3, 3])
    ev = jnp.broadcast_to(mask_log_evidence(z, 3, 3), (100_000, 4, 3))
    draws = np.asarray(mc.sample_posterior(jax.random.PRNGKey(2), ev))
    assert (draws[:, 1] == 1).all()
    seqs = all_sequences(3, 4)
    cond = mc.law() * (seqs[:, 1] == 1)
    assert total_variation(empirical_law(draws, 3), cond / cond.sum()) < 0.02


def test_product_table_has_independent_marginals():
    q = np.random.default_rng(0).dirichlet(np.ones(4), size=3)
    table = JointTable.from_product(q)
    post = np.asarray(table.masked_posteriors(jnp.array([4, 2, 4]), 4))
    np.testing.assert_allclose(post[[0, 2]], q[[0, 2]], atol=1e-14)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="probs"):
        JointTable(np.ones(10), 3, 2)
    with pytest.raises(ValueError, match="transition"):
        MarkovChainLanguage(np.ones(3) / 3, np.ones((2, 2)), 4)
