"""Discrete flow path, cumulative scalar, jump kernel and losses (METHODS §2.3, §6.1, §6.6; T4, T6, T7).

Time direction throughout: t = 0 source, t = 1 data.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from dlm_jax.processes import flow
from dlm_jax.samplers.jump import jump
from dlm_jax.testing.oracles import MarkovChainLanguage

SCHEDULES = ["linear", "quadratic", "cosine"]


def _kappa_np(name, t):
    t = np.asarray(t, np.float64)
    return {"linear": t, "quadratic": t**2, "cosine": np.sin(0.5 * np.pi * t)}[name]


@pytest.mark.parametrize("name", SCHEDULES)
def test_cumulative_scalar_additive_and_exact_hazard(name):
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 0.6, 200)
    a = rng.uniform(1e-4, 0.2, 200)
    b = rng.uniform(1e-4, 0.19, 200)
    with jax.enable_x64(True):
        g = lambda t_, h_: np.asarray(flow.cumulative_scalar(jnp.asarray(t_), jnp.asarray(h_), name))
        # G_{t,a} + G_{t+a,b} = G_{t,a+b}
        np.testing.assert_allclose(g(t, a) + g(t + a, b), g(t, a + b), rtol=0, atol=1e-12)
        # 1 − e^{−G} = (κ(t+h) − κ(t)) / (1 − κ(t)): the exact arrival probability
        h = a + b
        exact = (_kappa_np(name, t + h) - _kappa_np(name, t)) / (1 - _kappa_np(name, t))
        np.testing.assert_allclose(-np.expm1(-g(t, h)), exact, rtol=0, atol=1e-12)
        # κ and κ̇ against numpy and a central difference; 1 − κ without cancellation
        sched = flow.get_schedule(name)
        np.testing.assert_allclose(np.asarray(sched.kappa(t)), _kappa_np(name, t), atol=1e-15)
        np.testing.assert_allclose(np.asarray(sched.one_minus_kappa(t)), 1 - _kappa_np(name, t), atol=1e-15)
        eps = 1e-6
        fd = (_kappa_np(name, t + eps) - _kappa_np(name, t - eps)) / (2 * eps)
        np.testing.assert_allclose(np.asarray(sched.kappa_dot(t)), fd, rtol=1e-8, atol=1e-8)
        # average rate = G/(h + 1e-8) (§6.1 numerics); G/h is the hazard at the midpoint to O(h²)
        hs = np.full_like(t, 1e-3)
        np.testing.assert_allclose(np.asarray(flow.average_rate(t, hs, name)) * (hs + 1e-8), g(t, hs), rtol=1e-14)
        np.testing.assert_allclose(g(t, hs) / hs, np.asarray(sched.rate(t + hs / 2)), rtol=1e-5)
        # end point: 1 − κ(1) = 0 is clipped to 1e-8 (§6.1), G stays finite
        assert float(flow.cumulative_scalar(0.0, 1.0, name)) == pytest.approx(-np.log(1e-8), abs=1e-9)


def _product_oracle(log_q, mask_id):
    """Exact posterior for product data under the mask source: q at masked positions, δ elsewhere."""

    def fn(x):
        onehot = jax.nn.one_hot(jnp.minimum(x, mask_id - 1), mask_id, dtype=bool)
        return jnp.where((x == mask_id)[..., None], log_q, jnp.where(onehot, 0.0, -jnp.inf))

    return fn


@pytest.mark.parametrize("name", SCHEDULES)
def test_n_small_jumps_equal_one_big_exactly(name):
    """Survival of a masked token (p(mask) = 0) over N steps of h/N = survival over one step of h."""
    v, t0, h = 5, 0.15, 0.8
    with jax.enable_x64(True):
        log_q = jnp.log(jnp.asarray(np.random.default_rng(1).dirichlet(np.ones(v))))
        x = jnp.full((1, 1), v)
        log_p = log_q[None, None]
        big = flow.jump_log_probs(x, log_p, t0, h, name)[0, 0]
        exact = 1 - (1 - _kappa_np(name, t0 + h)) / (1 - _kappa_np(name, t0))
        assert abs(-np.expm1(float(big[v])) - exact) < 1e-12
        for n in (2, 3, 8, 64):
            grid = t0 + h * np.arange(n) / n
            log_survive = sum(float(flow.jump_log_probs(x, log_p, s, h / n, name)[0, 0, v]) for s in grid)
            assert abs(log_survive - float(big[v])) < 1e-12
        # destination law on arrival is exactly q
        np.testing.assert_allclose(np.exp(np.asarray(big[:v])) / -np.expm1(float(big[v])), np.exp(log_q), atol=1e-14)


def test_n_small_jumps_equal_one_big_monte_carlo():
    """The jitted kernel: N = 4 jumps of h/4 vs one jump of h, product-data oracle, 3σ."""
    v, n_tok, t0, h, n = 4, 20_000, 0.1, 0.6, 4
    log_q = jnp.log(jnp.asarray([0.1, 0.2, 0.3, 0.4]))
    oracle = _product_oracle(log_q, v)
    step = jax.jit(lambda k, x, t, hh: jump(k, x, oracle(x), t, hh, "linear"))
    x0 = jnp.full((n_tok, 1), v)
    x_small = x0
    for i, k in enumerate(jax.random.split(jax.random.key(0), n)):
        x_small = step(k, x_small, jnp.asarray(t0 + i * h / n), jnp.asarray(h / n))
    x_big = step(jax.random.key(1), x0, jnp.asarray(t0), jnp.asarray(h))
    p_arrive = (0.7 - 0.1) / (1 - 0.1)
    sigma = np.sqrt(p_arrive * (1 - p_arrive) / n_tok)
    for xs in (x_small, x_big):
        xs = np.asarray(xs)
        assert abs((xs != v).mean() - p_arrive) < 3 * sigma
        # arrivals are distributed as q (oracle posterior), per-class 3σ
        counts = np.bincount(xs[xs != v], minlength=v)
        frac = counts / counts.sum()
        np.testing.assert_array_less(np.abs(frac - np.exp(log_q)), 3 * np.sqrt(0.25 / counts.sum()))


def _jump_law_numpy(x, p, g, v):
    """Independent numpy statement of §6.1: stay w.p. exp(−G(1−p(z))), else y ≠ z ∝ p(y)."""
    out = np.zeros(x.shape + (v + 1,))
    for idx in np.ndindex(x.shape):
        z = x[idx]
        pz = p[idx][z] if z < v else 0.0
        a = 1 - np.exp(-g * (1 - pz))
        for y in range(v):
            if y != z:
                out[idx + (y,)] = a * p[idx][y] / (1 - pz)
        out[idx + (z,)] = 1 - a
    return out


def test_jump_law_matches_spec_and_frozen_positions_stay():
    v = 6
    rng = np.random.default_rng(2)
    x = rng.integers(0, v + 1, (3, 7))
    p = rng.dirichlet(np.full(v, 0.7), (3, 7))
    with jax.enable_x64(True):
        t, h = jnp.asarray([0.0, 0.3, 0.5]), jnp.asarray([0.5, 0.25, 0.5])
        law = np.exp(np.asarray(flow.jump_log_probs(jnp.asarray(x), jnp.log(jnp.asarray(p)), t, h, "cosine")))
        g = np.asarray(flow.cumulative_scalar(t, h, "cosine"))
        ref = np.stack([_jump_law_numpy(x[i], p[i], g[i], v) for i in range(3)])
        np.testing.assert_allclose(law, ref, atol=1e-14)
        np.testing.assert_allclose(law.sum(-1), 1.0, atol=1e-14)
        frozen = rng.random((3, 7)) < 0.5
        law_f = np.exp(np.asarray(flow.jump_log_probs(jnp.asarray(x), jnp.log(jnp.asarray(p)), t, h, "cosine",
                                                      frozen=jnp.asarray(frozen))))
        np.testing.assert_array_equal(law_f[frozen], np.eye(v + 1)[x[frozen]])
        np.testing.assert_allclose(law_f[~frozen], law[~frozen], atol=0)
        # a token the model is certain of never moves (p(z) = 1 ⇒ hazard 0), even with G ≫ 1
        certain = np.exp(np.asarray(flow.jump_log_probs(jnp.asarray([[2]]), jnp.log(jnp.eye(v)[2])[None, None],
                                                        0.0, 1.0)))
        np.testing.assert_array_equal(certain[0, 0], np.eye(v + 1)[2])


def test_path_sampling_marginals():
    v, b, l, t = 5, 4000, 8, 0.35
    x1 = jax.random.randint(jax.random.key(3), (b, l), 0, v)
    ts = jnp.full((b,), t)
    for source in ("mask", "uniform"):
        xt = np.asarray(flow.sample_path(jax.random.key(4), x1, ts, source=source, vocab_size=v, schedule="quadratic"))
        same = (xt == np.asarray(x1)).mean()
        kap = t**2
        expected = kap if source == "mask" else kap + (1 - kap) / v
        assert abs(same - expected) < 3 * np.sqrt(expected * (1 - expected) / xt.size)
        if source == "mask":
            assert set(np.unique(xt[xt != np.asarray(x1)])) == {v}
        else:
            assert xt.max() < v
    x0 = flow.sample_source(jax.random.key(5), (b, l), "uniform", v)
    counts = np.bincount(np.asarray(x0).ravel(), minlength=v) / x0.size
    assert np.abs(counts - 1 / v).max() < 3 * np.sqrt(0.2 * 0.8 / x0.size)


def test_velocity_and_average_generator():
    v = 4
    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        p = jnp.asarray(rng.dirichlet(np.ones(v), (2, 3)))
        x = jnp.asarray([[0, 4, 2], [4, 4, 1]])
        t = jnp.asarray([0.2, 0.6])
        u = np.asarray(flow.marginal_velocity(p, x, t, "linear", source="mask"))
        assert u.shape == (2, 3, v + 1)
        np.testing.assert_allclose(u.sum(-1), 0.0, atol=1e-15)
        rate = 1 / (1 - np.asarray(t))
        np.testing.assert_allclose(u[0, 1, :v], rate[0] * np.asarray(p[0, 1]), atol=1e-15)
        assert u[0, 1, v] == pytest.approx(-rate[0], abs=1e-15)
        hs = jnp.full((2,), 1e-5)
        ubar = np.asarray(flow.average_generator(p, x, t, hs, "linear", source="mask"))
        g = np.asarray(flow.cumulative_scalar(t, hs))
        np.testing.assert_allclose(ubar, (g / (1e-5 + 1e-8))[:, None, None] * u / rate[:, None, None], rtol=1e-13)
        np.testing.assert_allclose(ubar, u, rtol=2e-3, atol=1e-12)
        xu = jnp.minimum(x, v - 1)
        uu = np.asarray(flow.marginal_velocity(p, xu, t, "linear", source="uniform"))
        np.testing.assert_allclose(uu, rate[:, None, None] * (np.asarray(p) - np.eye(v)[np.asarray(xu)]), atol=1e-14)


def _expected_over_x1(loss_fn, q):
    """Σ_y q(y) ℓ(x1 = y) at every position, with the loss evaluated per hypothetical x1 = y."""
    v = q.shape[-1]
    return sum(jnp.where(q[..., y] > 0, q[..., y] * loss_fn(jnp.full(q.shape[:-1], y)), 0.0) for y in range(v))


@pytest.mark.parametrize("source", ["uniform", "mask"])
def test_generalized_kl_minimised_by_exact_posterior(source):
    """T7: E_{x1|x_t}[ℓ_GKL(p)] equals its analytic minimum at the oracle p = p_{1|t} and exceeds it
    elsewhere; the same holds for cross-entropy (minimum = posterior entropy)."""
    v, l, t = 5, 6, 0.4
    with jax.enable_x64(True):
        lang = MarkovChainLanguage.random(7, v, l)
        x1 = lang.sample(jax.random.key(8), 16)
        ts = jnp.full((16,), t)
        xt = flow.sample_path(jax.random.key(9), x1, ts, source=source, vocab_size=v, schedule="cosine")
        q = lang.posteriors(flow.path_evidence(xt, ts, source=source, vocab_size=v, schedule="cosine"))
        gkl = lambda log_p: _expected_over_x1(
            lambda y: flow.generalized_kl_loss(log_p, y, xt, ts, "cosine"), q)
        ce = lambda log_p: _expected_over_x1(lambda y: flow.cross_entropy_loss(log_p, y), q)
        minimum = np.asarray(flow.generalized_kl_minimum(q, xt, ts, "cosine"))
        np.testing.assert_allclose(np.asarray(gkl(jnp.log(q))), minimum, atol=1e-12)
        entropy = -(q * jnp.log(jnp.where(q > 0, q, 1.0))).sum(-1)
        np.testing.assert_allclose(np.asarray(ce(jnp.log(q))), np.asarray(entropy), atol=1e-12)
        rng = np.random.default_rng(10)
        for scale in (0.01, 0.3, 3.0):
            log_p = jax.nn.log_softmax(jnp.log(q + 1e-300) + scale * rng.standard_normal(q.shape), -1)
            gap = np.asarray(gkl(log_p)) - minimum
            assert gap.min() > -1e-12 and gap.mean() > 0
            assert (np.asarray(ce(log_p)) - np.asarray(entropy)).min() > -1e-12


def _expm_small(a, order=10):
    """Batched matrix exponential by Taylor series, exact to rounding for ‖a‖ ≲ 1e-2 (the
    sub-step generators below); checked against scipy.linalg.expm in the test."""
    out = term = np.broadcast_to(np.eye(a.shape[-1]), a.shape).copy()
    for k in range(1, order + 1):
        term = term @ a / k
        out = out + term
    return out


def _exact_ctmc_kernel(q, t0, h, steps):
    """Exact h-step kernel of the single-token marginal CTMC (uniform source, κ = t):
    generator u(y|z) = κ̇/(1−κ)(p_{1|τ}(y|z) − δ), p_{1|τ}(y|z) ∝ q(y)[κ δ_{yz} + (1−κ)/V];
    product of matrix exponentials of the generator frozen at the midpoints of `steps` sub-intervals."""
    v = q.shape[0]
    taus = t0 + h * (np.arange(steps) + 0.5) / steps
    post = q[None, None, :] * (taus[:, None, None] * np.eye(v) + (1 - taus[:, None, None]) / v)
    post /= post.sum(-1, keepdims=True)
    gens = (post - np.eye(v)) / (1 - taus[:, None, None]) * (h / steps)
    exps = _expm_small(gens)
    np.testing.assert_allclose(exps[-1], scipy.linalg.expm(gens[-1]), atol=1e-15)
    np.testing.assert_allclose(exps[0], scipy.linalg.expm(gens[0]), atol=1e-15)
    kernel = np.eye(v)
    for m in exps:
        kernel = kernel @ m
    return kernel


def test_uniform_source_one_step_kernel_error_grows_with_h():
    """T6: one cumulative-scalar step from t = 0 vs the exact marginal-CTMC kernel (10⁴ expm sub-steps
    for h = 1, proportionally fewer for smaller h). TV (averaged over the uniform start) grows with h.

    Measured (V = 5, q ~ Dir(0.5), seed 11), h: TV(kernel) / TV(law of x_h):
    1/64 1.7e-5 / ~0; 1/16 2.7e-4 / ~0; 1/4 4.0e-3 / 4e-5; 1/2 1.6e-2 / 4.2e-4; 1 0.192 / 0.112."""
    v = 5
    q = np.random.default_rng(11).dirichlet(np.full(v, 0.5))
    hs = [2.0**-k for k in range(6, -1, -1)]
    tv_joint, tv_marg = [], []
    with jax.enable_x64(True):
        z = jnp.arange(v)[:, None]
        log_p = jnp.broadcast_to(jnp.log(jnp.asarray(q)), (v, 1, v))  # p_{1|0}(·|z) = q
        for h in hs:
            exact = _exact_ctmc_kernel(q, 0.0, h, max(256, int(10_000 * h)))
            # the reference preserves the path marginal: (1/V) 1ᵀ P = κ(h) q + (1−κ(h))/V
            np.testing.assert_allclose(exact.mean(0), h * q + (1 - h) / v, atol=1e-7)
            one = np.exp(np.asarray(flow.jump_log_probs(z, log_p, 0.0, h)))[:, 0, :v]
            tv_joint.append(0.5 * np.abs(one - exact).sum(-1).mean())
            tv_marg.append(0.5 * np.abs(one.mean(0) - exact.mean(0)).sum())
    print("\nh, TV(kernel), TV(marginal):", *[f"{h:.5f} {a:.3e} {b:.3e}" for h, a, b in zip(hs, tv_joint, tv_marg)],
          sep="\n")
    assert np.all(np.diff(tv_joint) > 0), tv_joint
    assert tv_joint[0] < 0.01 and tv_joint[-1] > 0.1
    # local error of one step is second order: halving h quarters the TV at small h
    assert 3.5 < tv_joint[1] / tv_joint[0] < 4.5 and 3.5 < tv_joint[2] / tv_joint[1] < 4.5
    # the one-step law of x_h is far more accurate than the kernel (marginal error ≪ kernel error)
    assert tv_marg[3] < 1e-2 * tv_joint[3]


def test_bad_inputs_raise_one_line_errors():
    cases = [
        lambda: flow.cumulative_scalar(0.2, 0.0),
        lambda: flow.cumulative_scalar(0.2, 1.5),
        lambda: flow.cumulative_scalar(0.8, 0.3),
        lambda: flow.cumulative_scalar(-0.1, 0.3),
        lambda: flow.get_schedule("sigmoid"),
        lambda: flow.KappaSchedule("polynomial", -1.0),
        lambda: flow.sample_source(jax.random.key(0), (2, 3), "gaussian", 5),
        lambda: flow.sample_path(jax.random.key(0), jnp.zeros((2, 3), int), jnp.zeros(2), source="blank",
                                 vocab_size=5),
        lambda: jump(jax.random.key(0), jnp.zeros((1, 2), int), jnp.zeros((1, 2, 3)), 0.9, 0.5),
    ]
    for case in cases:
        with pytest.raises(ValueError) as err:
            case()
        assert "\n" not in str(err.value) and ";" in str(err.value)
    # float tolerance: a float32 grid that lands a hair above 1 is accepted
    flow.cumulative_scalar(np.float32(0.7), np.float32(0.3) + 1e-7)
