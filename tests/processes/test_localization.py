"""DSL localization channel (METHODS §4.1, §4.6 checks 1–2): anchors, the channel's moments, the
mixed SNR sampler's laws, SNR invariance and I-MMSE exactness against exact answers.
SNR direction: s = 0 is "[MASK]" (no information), s → ∞ is clean."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.processes import localization as loc
from dlm_jax.testing.oracles import JointTable, dsl_denoise_fn, total_variation


def test_anchor_norms_and_pca_directions():
    a = np.asarray(loc.random_anchors(jax.random.PRNGKey(0), 50, 8))
    assert a.shape == (50, 8) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=-1), 1.0, atol=1e-6)
    # PCA: an embedding that lives in a 2-D plane (plus an offset) gives anchors equal to the
    # normalised in-plane coordinates, up to a rotation/reflection of the plane.
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(40, 2)) * np.array([3.0, 1.0])
    basis = np.linalg.qr(rng.normal(size=(16, 2)))[0].T  # [2, D] orthonormal
    emb = coords @ basis + rng.normal(size=16)
    p = np.asarray(loc.pca_anchors(emb, 2), np.float64)
    np.testing.assert_allclose(np.linalg.norm(p, axis=-1), 1.0, atol=1e-6)
    centred = coords - coords.mean(0)
    target = centred / np.linalg.norm(centred, axis=-1, keepdims=True)
    np.testing.assert_allclose(p @ p.T, target @ target.T, atol=1e-5)  # same Gram matrix
    assert loc.check_anchors(p, vocab_size=40, dim=2).shape == (40, 2)


def test_encode_moments_mask_and_zero_snr():
    """E z = s e(x), Var z = s per coordinate (Monte Carlo, 5 sigma); s = 0 and mask ids give
    exactly 0."""
    v, d, n = 5, 3, 20000
    anchors = loc.random_anchors(jax.random.PRNGKey(1), v, d)
    snrs = jnp.asarray([0.5, 4.0, 40.0])
    tokens = jnp.tile(jnp.asarray([[0, 3, 1]]), (n, 1))
    z = loc.encode(jax.random.PRNGKey(2), tokens, snrs[None, :], anchors)
    assert z.shape == (n, 3, d) and z.dtype == jnp.float32
    z = np.asarray(z, np.float64)
    for i, (tok, s) in enumerate(zip([0, 3, 1], np.asarray(snrs, np.float64))):
        mean, var = z[:, i].mean(0), z[:, i].var(0)
        np.testing.assert_allclose(mean, s * np.asarray(anchors[tok]), atol=5 * math.sqrt(s / n))
        np.testing.assert_allclose(var, s, atol=5 * s * math.sqrt(2 / n))
    zero = loc.encode(jax.random.PRNGKey(3), jnp.asarray([[0, v, v + 7, 2]]), jnp.asarray([[0.0, 9.0, 9.0, 9.0]]),
                      anchors)
    assert np.all(np.asarray(zero[0, :3]) == 0.0) and np.all(np.asarray(zero[0, 3]) != 0.0)


def test_sample_snr_laws():
    """ROAR fraction ≈ 1/roar_frac; ROAR's revealed count uniform on {0..L-1} (chi-square) with
    revealed s in [0.8, 1]·s_max and the rest in [0, 1); LogNormal median e^μ, log-moments and the
    clamp; per_token=False gives one SNR per sequence."""
    b, n = 40000, 6
    snr, roar, rev = loc.sample_snr(jax.random.PRNGKey(0), b, n, roar_frac=4.0, s_max=50.0)
    snr, roar, rev = np.asarray(snr, np.float64), np.asarray(roar), np.asarray(rev)
    assert abs(roar.mean() - 0.25) < 5 * math.sqrt(0.25 * 0.75 / b)
    assert not rev[~roar].any()
    counts = np.bincount(rev[roar].sum(-1), minlength=n)
    assert counts.shape == (n,)  # k = L never happens
    expected = roar.sum() / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 20.5  # chi-square, 5 dof: p ≈ 0.001
    hi, lo = snr[roar][rev[roar]], snr[roar][~rev[roar]]
    assert hi.min() >= 40.0 and hi.max() <= 50.0
    assert abs(hi.mean() - 45.0) < 5 * (10 / math.sqrt(12)) / math.sqrt(hi.size)
    assert lo.min() >= 0.0 and lo.max() < 1.0 and abs(lo.mean() - 0.5) < 5 * math.sqrt(1 / 12 / lo.size)
    ln = snr[~roar].ravel()
    m = ln.size
    assert abs(np.mean(ln < math.exp(1.69)) - 0.5) < 5 * math.sqrt(0.25 / m)  # median e^μ
    assert ln.max() == pytest.approx(40.0)
    p_clamp = 0.5 * math.erfc((math.log(40.0) - 1.69) / (0.9 * math.sqrt(2)))
    assert abs(np.mean(ln >= 40.0) - p_clamp) < 5 * math.sqrt(p_clamp / m)
    # Lower quartile of log s (untouched by the clamp): μ − 0.6745 σ, within 5 quantile SEs.
    q_se = math.sqrt(0.25 * 0.75 / m) / (math.exp(-0.6744898**2 / 2) / math.sqrt(2 * math.pi) / 0.9)
    assert abs(np.quantile(np.log(ln), 0.25) - (1.69 - 0.9 * 0.6744898)) < 5 * q_se
    snr1, roar1, _ = loc.sample_snr(jax.random.PRNGKey(1), 2000, n, per_token=False, roar_frac=1e9)
    snr1 = np.asarray(snr1)
    assert not np.asarray(roar1).any() and np.all(snr1 == snr1[:, :1]) and len(np.unique(snr1[:, 0])) > 1900


def test_sample_snr_all_roar():
    """roar_frac = 1: every row ROAR with at least one low-SNR position."""
    snr, roar, rev = loc.sample_snr(jax.random.PRNGKey(4), 500, 3, roar_frac=1.0)
    assert np.asarray(roar).all() and (np.asarray(rev).sum(-1) <= 2).all()
    assert (np.asarray(snr).min(-1) < 1.0).all()


def test_posterior_mean_topk():
    anchors = np.asarray(loc.random_anchors(jax.random.PRNGKey(5), 4, 3), np.float64)
    p = np.array([0.1, 0.5, 0.15, 0.25])
    full = np.asarray(loc.posterior_mean(jnp.log(jnp.asarray(p, jnp.float32)), anchors))
    np.testing.assert_allclose(full, p @ anchors, atol=1e-6)
    top2 = np.asarray(loc.posterior_mean(jnp.log(jnp.asarray(p, jnp.float32))[None, None], anchors, top_k=2))
    np.testing.assert_allclose(top2[0, 0], (0.5 * anchors[1] + 0.25 * anchors[3]) / 0.75, atol=1e-6)


def test_bad_input_one_line_errors():
    a = loc.random_anchors(jax.random.PRNGKey(0), 4, 3)
    cases = [
        (lambda: loc.check_anchors(np.ones(4)), "anchors: "),
        (lambda: loc.check_anchors(a, vocab_size=5), "anchors: "),
        (lambda: loc.check_anchors(a, dim=2, name="method.anchors"), "method.anchors: "),
        (lambda: loc.check_anchors(2.0 * a), "unit-norm"),
        (lambda: loc.sample_snr(jax.random.PRNGKey(0), 2, 3, s_max=0.0), "s_max: "),
        (lambda: loc.sample_snr(jax.random.PRNGKey(0), 2, 3, roar_frac=0.5), "roar_frac: "),
        (lambda: loc.sample_snr(jax.random.PRNGKey(0), 2, 3, sigma=0.0), "sigma: "),
        (lambda: loc.sample_snr(jax.random.PRNGKey(0), 2, 3, ln_clamp=-1.0), "ln_clamp: "),
        (lambda: loc.sample_snr(jax.random.PRNGKey(0), 2, 3, mu=float("nan")), "mu: "),
        (lambda: loc.sample_snr(jax.random.PRNGKey(0), 0, 3), "batch: "),
        (lambda: loc.check_snr_config(per_token=1, prefix="method."), "method.per_token: "),
        (lambda: loc.random_anchors(jax.random.PRNGKey(0), 4, 0), "dim: "),
        (lambda: loc.pca_anchors(np.ones((4, 3)), 4), "dim: "),
        (lambda: loc.pca_anchors(np.ones((4, 3)), 2), "embedding: "),
        (lambda: loc.immse_bound(None, jnp.zeros((1, 1), int), a, jax.random.PRNGKey(0), grid=[1.0, 2.0]), "grid: "),
        (lambda: loc.immse_bound(None, jnp.zeros((1, 1), int), a, jax.random.PRNGKey(0), grid=[0.0, 1.0],
                                 noise="antithetic"), "noise: "),
        (lambda: loc.sl_euler_maruyama(None, jax.random.PRNGKey(0), a, num_samples=2, length=1, grid=[0.0, 0.0]),
         "grid: "),
        (lambda: loc.posterior_mean(jnp.zeros((2, 5)), a), "logprobs: "),
    ]
    for fn, start in cases:
        with pytest.raises(ValueError) as err:
            fn()
        msg = str(err.value)
        assert "\n" not in msg and start in msg, msg


def test_snr_invariance_needs_unit_anchors():
    """METHODS §4.6 check 1: the normalised Gaussian likelihoods N(z; s e_v, s I) over v are the
    same at two SNRs (and equal softmax⟨z, e_v⟩) for unit anchors; not for non-unit anchors."""
    v, d = 7, 4
    rng = np.random.default_rng(0)
    unit = np.asarray(loc.random_anchors(jax.random.PRNGKey(0), v, d), np.float64)
    unit /= np.linalg.norm(unit, axis=-1, keepdims=True)
    z = rng.normal(size=(10, d)) * 2.0

    def normalised_likelihood(anchors, s):
        log_n = -((z[:, None, :] - s * anchors[None]) ** 2).sum(-1) / (2 * s) - 0.5 * d * np.log(2 * np.pi * s)
        w = np.exp(log_n - log_n.max(-1, keepdims=True))
        return w / w.sum(-1, keepdims=True)

    p1, p2 = normalised_likelihood(unit, 0.3), normalised_likelihood(unit, 17.0)
    np.testing.assert_allclose(p1, p2, atol=1e-12)
    ev = np.asarray(loc.log_evidence(jnp.asarray(z, jnp.float32), jnp.asarray(unit, jnp.float32)), np.float64)
    np.testing.assert_allclose(p1, np.exp(ev) / np.exp(ev).sum(-1, keepdims=True), atol=1e-5)
    skewed = unit * rng.uniform(0.5, 1.5, size=(v, 1))
    q1, q2 = normalised_likelihood(skewed, 0.3), normalised_likelihood(skewed, 17.0)
    assert np.abs(q1 - q2).max() > 0.1


def _single_token(seed=0, v=6, d=5):
    """A single-token language with prior π (Dirichlet(1)) and its exact DSL denoiser."""
    pi = np.random.default_rng(seed).dirichlet(np.ones(v))
    anchors = loc.random_anchors(jax.random.PRNGKey(seed), v, d)
    return pi, anchors, dsl_denoise_fn(JointTable(pi, v, 1), anchors)


def _stratified_bound(denoise, anchors, pi, per_token, s_max, key, **kw):
    """R(S) = Σ_v π_v mean_ε R(v, ε) with ``per_token`` draws per token value (exact weights
    remove the spread of −log π_X); returns (R, its standard error, per-value means)."""
    v = pi.shape[0]
    tokens = jnp.repeat(jnp.arange(v), per_token)[:, None]
    fn = jax.jit(lambda k: loc.immse_bound(denoise, tokens, anchors, k, grid=loc.immse_grid(s_max), **kw))
    r = np.asarray(fn(key), np.float64)[:, 0].reshape(v, per_token)
    return float(pi @ r.mean(1)), math.sqrt(float((pi**2) @ r.var(1)) / per_token), r.mean(1)


def test_immse_bound_equals_entropy_for_the_exact_posterior():
    """METHODS §4.6 check 2: with the exact posterior, R(S) = H(π) for S ∈ {5, 20, 100} to
    5e-3 nats (Brownian paths + Itô control variate; 200 + 400-point grid), and per token value
    the mean is −log π_v (the identity holds pointwise in x)."""
    pi, anchors, denoise = _single_token()
    h = float(-(pi * np.log(pi)).sum())
    for i, s_max in enumerate((5.0, 20.0, 100.0)):
        r, se, per_value = _stratified_bound(denoise, anchors, pi, 2000, s_max, jax.random.PRNGKey(10 + i))
        assert abs(r - h) < 5e-3 and se < 1.5e-3, (s_max, r, h, se)
        np.testing.assert_allclose(per_value, -np.log(pi), atol=0.03)


def test_immse_bound_with_a_wrong_prior_is_the_cross_entropy():
    """A Bayes denoiser for the wrong prior q: R(S) = H(π) + KL(π || q) > H(π) (exact
    cross-entropy, 5e-3 nats)."""
    pi, anchors, _ = _single_token()
    q = np.random.default_rng(5).dirichlet(np.ones(pi.shape[0]))
    wrong = dsl_denoise_fn(JointTable(q, pi.shape[0], 1), anchors)
    h, kl = float(-(pi * np.log(pi)).sum()), float((pi * np.log(pi / q)).sum())
    r, se, _ = _stratified_bound(wrong, anchors, pi, 2000, 20.0, jax.random.PRNGKey(3))
    assert kl > 0.5 and r > h + 0.5 and abs(r - (h + kl)) < 5e-3, (r, h, kl, se)


def test_immse_bound_common_random_numbers():
    """The CRN estimator (one ε at every s) has the same mean, H(π), within 4 of its standard
    errors — which are ~20× those of the Brownian estimator at equal draws."""
    pi, anchors, denoise = _single_token()
    h = float(-(pi * np.log(pi)).sum())
    r, se, _ = _stratified_bound(denoise, anchors, pi, 2000, 20.0, jax.random.PRNGKey(4), noise="common")
    assert abs(r - h) < 4 * se and se < 0.05, (r, h, se)


def test_sl_dynamics_with_the_exact_posterior_reproduce_the_prior():
    """METHODS §4.6 check 3 (single token): Euler–Maruyama on dz = x̂(z) ds + dW from z = 0, 400
    steps (100 linear on [0, 1], 300 geometric) up to S = 40, then x ~ p(·|z_S): TV(hist, π)
    < 0.01 with 3·10⁴ runs (the sampling floor is ≈ 0.005)."""
    pi, anchors, denoise = _single_token()
    n, grid = 30000, loc.immse_grid(40.0, num_dense=100, num_geometric=300)
    z = jax.jit(lambda k: loc.sl_euler_maruyama(denoise, k, anchors, num_samples=n, length=1, grid=grid))(
        jax.random.PRNGKey(1))
    x = np.asarray(jax.random.categorical(jax.random.PRNGKey(2), denoise(z)))[:, 0]
    tv = total_variation(np.bincount(x, minlength=pi.shape[0]) / n, pi)
    assert tv < 0.01, tv
