"""Gaussian embedding diffusion (METHODS §2.4) and SCP / MANS mechanics (§3.1, §3.6 checks 1-2).
Time direction: t = 0 clean, t = 1 noise."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.processes import embedding_diffusion as ed


def test_schedules_closed_forms():
    a, s = ed.alpha_sigma(jnp.asarray([0.0, 0.6, 1.0]), "interchangeable")
    np.testing.assert_allclose(np.asarray(a), [1.0, 0.8, 0.0], atol=1e-7)
    np.testing.assert_allclose(np.asarray(s), [0.0, 0.6, 1.0], atol=1e-7)
    a, s = ed.alpha_sigma(jnp.asarray([0.0, 1.0 / 16, 1.0]), "sqrt")  # √t = 1/4: σ = 1/2, α = √(3/4)
    np.testing.assert_allclose(np.asarray(a), [1.0, math.sqrt(0.75), 0.0], atol=1e-7)
    np.testing.assert_allclose(np.asarray(s), [0.0, 0.5, 1.0], atol=1e-7)
    t = jnp.linspace(0, 1, 101)
    for name in ed.SCHEDULES:
        a, s = ed.alpha_sigma(t, name)
        np.testing.assert_allclose(np.asarray(a * a + s * s), 1.0, atol=1e-6)  # variance preserving
        np.testing.assert_allclose(np.asarray(ed.sigma_inverse(s, name)), np.asarray(t), atol=2e-6)
    with pytest.raises(ValueError, match=r"^schedule: 'cosine'; expected one of"):
        ed.alpha_sigma(0.5, "cosine")


def test_normalised_embeddings_and_clipped_t_min():
    table = jax.random.normal(jax.random.key(0), (7, 5)) * 1e-3
    n = ed.normalize_embeddings(table)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(n), axis=-1), math.sqrt(5), rtol=1e-6)
    # Rows (0,0), (3,4), (0,1): nearest-neighbour squared distances 1, 18, 1 -> var = (20/3)/2 = 10/3.
    e = jnp.asarray([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    assert abs(float(ed.nn_variance(e)) - 10 / 3) < 1e-6
    assert abs(float(ed.clipped_t_min(e, "interchangeable")) - math.sqrt(10 / 13)) < 1e-6
    assert abs(float(ed.clipped_t_min(e, "sqrt")) - (10 / 13) ** 2) < 1e-6
    assert abs(float(ed.clipped_t_min(e, plus_one=True)) - math.sqrt((13 / 3) / (16 / 3))) < 1e-6
    g = jax.grad(lambda x: ed.clipped_t_min(x))(e)  # recomputed every step, never trained through
    assert float(jnp.max(jnp.abs(g))) == 0.0
    t = ed.sample_time(jax.random.key(1), (200_000,), 0.6)
    assert float(t.min()) >= 0.6 and float(t.max()) <= 1.0 and abs(float(t.mean()) - 0.8) < 2e-3


def test_forward_per_sequence_and_per_token_time():
    z0 = jnp.ones((2, 3, 4))
    eps = jnp.full((2, 3, 4), 2.0)
    z = ed.forward(z0, jnp.asarray([0.6, 0.0]), eps)
    np.testing.assert_allclose(np.asarray(z[0]), 0.8 + 1.2, atol=1e-6)
    np.testing.assert_allclose(np.asarray(z[1]), 1.0, atol=1e-6)
    tk = jnp.asarray([[0.6, 0.0, 1.0], [0.0, 0.0, 0.0]])
    z = ed.forward(z0, tk, eps)
    np.testing.assert_allclose(np.asarray(z[0, :, 0]), [2.0, 1.0, 2.0], atol=1e-6)


@pytest.mark.parametrize("schedule", ed.SCHEDULES)
def test_scp_marginal_identity(schedule):
    """z' = α_t λ z_0 + σ_t √(1+γ²) ε is distributed as z at t⁺ = t + Δ (§3.6 check 1)."""
    t, delta, z0 = 0.3, 0.2, 1.7
    lam, gam, t_sc = ed.scp_params(jnp.float32(t), jnp.float32(delta), schedule)
    a, s = ed.alpha_sigma(t, schedule)
    a_p, s_p = ed.alpha_sigma(t + delta, schedule)
    assert abs(float(t_sc) - 0.5) < 1e-7
    assert abs(float(a * lam) - float(a_p)) < 1e-6  # exact identity of the parameterisation
    assert abs(float(s * s * (1 + gam * gam)) - float(s_p * s_p)) < 1e-6
    n = 1_000_000
    zp = ed.scp_latent(jnp.full((n,), z0), jax.random.normal(jax.random.key(0), (n,)), jnp.float32(t), lam, gam,
                       schedule)
    # Sample moments within 4 standard errors (σ/√n for the mean, σ²√(2/n) for the variance; both < 2e-3).
    assert abs(float(zp.mean()) - float(a_p) * z0) < 4 * float(s_p) / math.sqrt(n)
    assert abs(float(zp.var()) - float(s_p) ** 2) < 4 * float(s_p) ** 2 * math.sqrt(2 / n)
    # Δ = 0: the identity (λ = 1, γ = 0, same time label, same latent).
    lam0, gam0, t0 = ed.scp_params(jnp.asarray([0.3, 0.9]), 0.0, schedule)
    np.testing.assert_allclose(np.asarray(lam0), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gam0), 0.0, atol=1e-3)  # √ of a float32 rounding residue
    np.testing.assert_allclose(np.asarray(t0), [0.3, 0.9], atol=1e-7)
    # t⁺ clipped at 1: λ = 0 (no signal), σ_{t⁺} = 1.
    lam1, gam1, t1 = ed.scp_params(jnp.float32(0.8), jnp.float32(0.5), schedule)
    assert float(t1) == 1.0 and float(lam1) == 0.0
    assert abs(float(ed.alpha_sigma(0.8, schedule)[1]) ** 2 * (1 + float(gam1) ** 2) - 1.0) < 1e-5


def test_shared_noise_would_hand_the_main_pass_z0_so_the_default_draws_fresh_noise():
    """With the SC latent z' on the same ε as z_t, the pair fixes z_0 exactly:
    z_0 = (σ' z_t − σ_t z') / (σ' α_t − σ_t α'). A trained +SCP run learned that shortcut (95.6 % of
    tokens right with the shared ε, 18.0 % with a fresh one; BENCHMARKS, FastDiSS), which no sampler
    can offer — so ``scp_shared_noise`` is False by default."""
    import ml_collections

    from dlm_jax.methods.fastdiss_config import settings

    t, delta = jnp.float32(0.4), jnp.float32(0.2)
    z0 = jax.random.normal(jax.random.key(1), (5, 16))
    eps = jax.random.normal(jax.random.key(2), (5, 16))
    lam, gam, t_sc = ed.scp_params(t, delta)
    z_t, z_sc = ed.forward(z0, t, eps), ed.scp_latent(z0, eps, t, lam, gam)
    (a, s), (a_p, s_p) = ed.alpha_sigma(t), ed.alpha_sigma(t_sc)
    np.testing.assert_allclose(np.asarray((s_p * z_t - s * z_sc) / (s_p * a - s * a_p)), np.asarray(z0), atol=2e-5)
    cfg = ml_collections.ConfigDict({"model": {"name": "encdec", "vocab_size": 12},
                                     "method": {"name": "fastdiss", "scp": True}})
    assert settings(cfg).scp_shared_noise is False


def test_scp_constant_and_delta_draws():
    lam, gam, t_sc = ed.scp_constant(jnp.asarray([0.2, 0.7]), 0.9, 0.1)
    np.testing.assert_allclose(np.asarray(lam), 0.9)
    np.testing.assert_allclose(np.asarray(gam), 0.1)
    np.testing.assert_allclose(np.asarray(t_sc), [0.2, 0.7])
    d = np.asarray(ed.sample_delta(jax.random.key(0), (40_000,), "steps", steps=(1, 2, 5, 10)))
    values, counts = np.unique(d, return_counts=True)
    np.testing.assert_allclose(values, [0.1, 0.2, 0.5, 1.0], rtol=1e-6)
    assert np.all(np.abs(counts / d.size - 0.25) < 0.01)
    d = np.asarray(ed.sample_delta(jax.random.key(1), (40_000,), "uniform", delta_max=0.4))
    assert d.min() >= 0 and d.max() <= 0.4 and abs(d.mean() - 0.2) < 3e-3
    with pytest.raises(ValueError, match=r"^method.scp_delta: 'grid'; expected one of"):
        ed.sample_delta(jax.random.key(0), (2,), "grid")


def test_beta_phases_switch_exactly_at_boundaries():
    phases, betas = (100_000, 200_000), (2.0, 3.0, 4.0)
    steps = jnp.asarray([0, 99_999, 100_000, 100_001, 199_999, 200_000, 10**7])
    np.testing.assert_array_equal(np.asarray(ed.beta_at(steps, phases, betas)), [2, 2, 3, 3, 3, 4, 4])
    with pytest.raises(ValueError, match=r"^method.beta_phases: \(200, 100\); expected strictly increasing"):
        ed.check_phases((200, 100), (2.0, 3.0, 4.0))
    with pytest.raises(ValueError, match=r"^method.mans_betas: \(2.0, 3.0\); expected 3 numbers > 0"):
        ed.check_phases((100, 200), (2.0, 3.0))


def test_mans_time_clipped_per_token():
    t = jnp.asarray([0.2, 0.4])
    correct = jnp.asarray([[True, False, True], [True, True, False]])
    tau = ed.mans_time(t, correct, 3.0)
    np.testing.assert_allclose(np.asarray(tau), [[0.6, 0.2, 0.6], [1.0, 1.0, 0.4]], atol=1e-6)
    assert float(tau.max()) <= 1.0
