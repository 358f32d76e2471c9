"""Forward masking q(z_t|x) and the exact reverse posterior q(z_s|z_t,x) (METHODS §2.1(a)).
Time direction: t = 0 clean, t = 1 masked; functions take α_t = schedule.alpha(t)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.processes.masking import forward_mask, forward_probs, reverse_posterior, unmask_probability
from dlm_jax.processes.schedules import get_schedule

V, M = 5, 5  # mask id = V


def test_reverse_posterior_marginalises_to_forward():
    """Σ_{z_t} q(z_t|x) q(z_s|z_t,x) = q(z_s|x) exactly, for s < t (α_s ≥ α_t), per-sequence and
    per-token α, across schedules."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.integers(0, V, size=(6, 7)))
        for name in ("loglinear", "linear", "cosine", "poly"):
            s = get_schedule(name)
            t = jnp.asarray(rng.uniform(0.05, 1.0, size=(6, 7)))  # per-token times
            tau = jnp.asarray(rng.uniform(0.0, 1.0, size=(6, 7))) * t  # s < t
            a_t, a_s = s.alpha(t), s.alpha(tau)
            q_t = forward_probs(x, a_t, M, V + 1)  # [B, L, V+1]
            marg = jnp.zeros_like(q_t)
            for c in range(V + 1):  # every value z_t can take
                z_t = jnp.full_like(x, c)
                marg = marg + q_t[..., c:c + 1] * reverse_posterior(z_t, x, a_s, a_t, M, V + 1)
            np.testing.assert_allclose(np.asarray(marg), np.asarray(forward_probs(x, a_s, M, V + 1)), atol=1e-15)
        # Per-sequence α [B] broadcasts over positions.
        a_t, a_s = jnp.full((6,), 0.3), jnp.full((6,), 0.7)
        post = reverse_posterior(jnp.full_like(x, M), x, a_s, a_t, M, V + 1)
        np.testing.assert_allclose(np.asarray(jnp.take_along_axis(post, x[..., None], -1)[..., 0]), 0.4 / 0.7,
                                   atol=1e-15)
        np.testing.assert_allclose(np.asarray(post[..., M]), 0.3 / 0.7, atol=1e-15)
        assert float(unmask_probability(0.7, 0.3)) == pytest.approx(0.4 / 0.7, abs=1e-15)


def test_reverse_posterior_unmasked_is_delta_and_rows_sum_to_one():
    with jax.enable_x64(True):
        x = jnp.asarray([[0, 1, 2, 3]])
        z = jnp.asarray([[0, M, 2, M]])
        post = np.asarray(reverse_posterior(z, x, 0.9, 0.2, M, V + 1))
        np.testing.assert_allclose(post.sum(-1), 1.0, atol=1e-15)
        np.testing.assert_array_equal(post[0, 0], np.eye(V + 1)[0])
        np.testing.assert_array_equal(post[0, 2], np.eye(V + 1)[2])
        np.testing.assert_allclose(post[0, 1, [1, M]], [0.7 / 0.8, 0.1 / 0.8], atol=1e-15)


def test_forward_mask_frequencies_and_never_noise():
    """Empirical mask frequency = 1 − α within 4 standard errors, per-sequence and per-token α;
    never_noise positions are never masked; unmasked positions keep x."""
    key = jax.random.PRNGKey(0)
    n, L = 4000, 8
    x = jnp.tile(jnp.arange(L) % V, (n, 1))
    alpha_seq = jnp.tile(jnp.asarray([0.1, 0.5, 0.9, 1.0]), n // 4)
    z = forward_mask(key, x, alpha_seq, M)
    assert z.dtype == jnp.int32
    assert bool(jnp.all((z == M) | (z == x)))
    freq = np.asarray((z == M).reshape(n // 4, 4, L).mean(axis=(0, 2)))
    target = 1 - np.array([0.1, 0.5, 0.9, 1.0])
    se = np.sqrt(target * (1 - target) / (n // 4 * L)) + 1e-12
    assert np.all(np.abs(freq - target) <= 4 * se), (freq, target)

    alpha_tok = jnp.broadcast_to(jnp.linspace(0.0, 1.0, L), (n, L))  # per-token α
    never = jnp.zeros((n, L), bool).at[:, :2].set(True)  # a clean prefix of 2
    z = forward_mask(jax.random.PRNGKey(1), x, alpha_tok, M, never_noise=never)
    freq = np.asarray((z == M).mean(0))
    target = 1 - np.linspace(0.0, 1.0, L)
    target[:2] = 0.0
    se = np.sqrt(target * (1 - target) / n) + 1e-12
    assert np.all(np.abs(freq - target) <= 4 * se), (freq, target)
    np.testing.assert_array_equal(np.asarray(z[:, :2]), np.asarray(x[:, :2]))
    with pytest.raises(ValueError, match=r"^alpha: shape \(3,\); expected"):
        forward_mask(key, x, jnp.ones(3), M)


def test_forward_mask_pattern_law_exact_enumeration():
    """The joint law of the mask pattern is the product law α^{kept}(1−α)^{masked}: chi-square-free
    check by comparing every pattern's frequency for L = 3 within 4 standard errors."""
    n, L, a = 20000, 3, 0.6
    z = forward_mask(jax.random.PRNGKey(2), jnp.zeros((n, L), jnp.int32), a, M)
    pat = np.asarray(z == M)
    for bits in itertools.product([False, True], repeat=L):
        p = np.prod([(1 - a) if b else a for b in bits])
        f = np.mean(np.all(pat == np.asarray(bits), axis=1))
        assert abs(f - p) <= 4 * np.sqrt(p * (1 - p) / n), (bits, f, p)
