"""The DiffuSeq-style ancestral sampler (x0-parameterised Gaussian posterior, fresh noise, self-
conditioning): its step equals Gaussian conditioning of the forward process in closed form, and in
the one-token world of ``test_ddim_sc`` an exact denoiser reproduces the prior at K = 200 (TV 0.006
on 20,000 draws; K = 300: 0.004; K = 2: 0.081, vs 0.091 for deterministic DDIM; K = 5: 0.025).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.processes.embedding_diffusion import alpha_sigma
from dlm_jax.samplers import diffuseq as dq

V, D = 8, 8


@pytest.mark.parametrize("schedule", ["interchangeable", "sqrt"])
def test_posterior_step_is_gaussian_conditioning(schedule):
    # Independent derivation: (z_s, z_t) | x0 is jointly Gaussian with Var z_s = σ_s², Var z_t = σ_t²,
    # Cov = α_{t|s} σ_s²; condition z_s on z_t (float64 numpy).
    rng = np.random.default_rng(0)
    z_t, x0 = rng.normal(size=(2, 5, 3))
    for t, s in [(1.0, 0.8), (0.9, 0.5), (0.3, 0.1), (0.5, 0.0), (0.2, 0.19)]:
        a_t, s_t = (float(v) for v in alpha_sigma(np.float64(t), schedule))
        a_s, s_s = (float(v) for v in alpha_sigma(np.float64(s), schedule))
        cov = (a_t / a_s) * s_s ** 2
        want_mean = a_s * x0 + cov / s_t ** 2 * (z_t - a_t * x0)
        want_var = s_s ** 2 - cov ** 2 / s_t ** 2
        mean, var = dq.posterior(jnp.asarray(z_t, jnp.float32), jnp.asarray(x0, jnp.float32), t, s, schedule)
        np.testing.assert_allclose(np.asarray(mean), want_mean, atol=1e-6)
        np.testing.assert_allclose(float(var), want_var, atol=1e-6)


def test_first_step_from_pure_noise_and_the_noise_it_adds():
    # From t = 1 the posterior forgets z_t: z_s = α_s ẑ + σ_s ξ, so with a constant denoiser the
    # one-step output's spread is exactly σ_s (interchangeable: σ_{0.5} = 0.5) around α_s ẑ.
    c = jnp.full((1, 1, D), 0.7)
    _, info = jax.jit(lambda k: dq.diffuseq_sc(lambda z, sc, t: jnp.broadcast_to(c, z.shape), k,
                                               shape=(40_000, 1, D), steps=1, t_end=0.5))(jax.random.key(0))
    z = np.asarray(info["z"]).reshape(-1)
    assert int(info["nfe"]) == 1
    np.testing.assert_allclose(z.mean(), np.sqrt(0.75) * 0.7, atol=0.01)
    np.testing.assert_allclose(z.std(), 0.5, atol=0.01)


def _world():
    e = jax.random.normal(jax.random.key(0), (V, D))
    e = e / jnp.linalg.norm(e, axis=-1, keepdims=True)
    pi = jax.random.dirichlet(jax.random.key(1), jnp.ones(V))
    return e, pi


def _exact_denoiser(e, pi):
    def denoise(z, sc, t):
        del sc
        a, s = alpha_sigma(t)
        a, s2 = a[..., None], jnp.maximum(s, 1e-6)[..., None] ** 2
        return jax.nn.softmax(jnp.log(pi) + (a * (z @ e.T) - 0.5 * a * a) / s2, -1) @ e

    return denoise


def test_exact_denoiser_reproduces_the_prior_and_self_conditioning_is_carried():
    e, pi = _world()
    n = 20_000

    def tv(steps):
        zhat, info = jax.jit(lambda k: dq.diffuseq_sc(_exact_denoiser(e, pi), k, shape=(n, 1, D), steps=steps))(
            jax.random.key(2))
        hist = np.bincount(np.asarray(jnp.argmax(zhat[:, 0] @ e.T, -1)), minlength=V) / n
        return 0.5 * np.abs(hist - np.asarray(pi)).sum(), int(info["nfe"])

    tv_many, nfe = tv(200)
    assert nfe == 200 and tv_many < 0.015, tv_many  # measured 0.006 (20,000 draws)
    tv_two, _ = tv(2)
    assert 0.07 < tv_two < 0.09, tv_two  # measured 0.081: two steps over-select likely tokens (DDIM: 0.091)
    def spy(z, sc, t):  # the self-conditioning input is the previous step's estimate (zeros first)
        return jnp.full_like(z, 0.25) + (0.0 if sc is None else sc)

    zhat, info = dq.diffuseq_sc(spy, jax.random.key(0), shape=(2, 3, D), steps=3, record_gap=True)
    np.testing.assert_allclose(np.asarray(zhat), 0.75, atol=1e-6)  # 0.25 accumulated over 3 steps
    assert int(info["nfe"]) == 3 and int(info["gap_nfe"]) == 6
    # same-step estimate D(z, D(z, None)) = 0.5; carried ẑ_k = 0.25 (k + 1): gap |ẑ_k − 0.5| · √8 per token
    np.testing.assert_allclose(np.asarray(info["sc_gap"]), np.sqrt(8) * np.asarray([0.25, 0.0, 0.25]), atol=1e-5)
    with pytest.raises(ValueError, match=r"^steps: 0; expected an int >= 1$"):
        dq.diffuseq_sc(spy, jax.random.key(0), shape=(1, 1, D), steps=0)
