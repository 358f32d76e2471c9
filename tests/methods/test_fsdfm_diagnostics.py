"""FS-DFM diagnostics (dlm_jax.methods.fsdfm_diagnostics) against exact answers on small joint tables.
Time direction: t = 0 source (mask / uniform noise), t = 1 data; mask id = V.

* the exact one-step marginal against a brute-force enumeration of the mixture path (x_1, x_0, arrival);
* the ideal student's kernel reproduces it exactly; for the mask source the ideal student is q;
* the oracle teacher composed over n sub-steps, enumerated exactly over all joint states: for the
  mask source its implied posterior IS q for every n (so a mask-source student has nothing to
  distil in its marginals); for the uniform source it converges as n grows, to a coupling other
  than the mixture path's;
* the Monte Carlo ``composed_marginal`` agrees with that exact enumeration;
* ``report`` at a product-data oracle: zero KL where the answer is exactly zero."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.methods import fsdfm_diagnostics as fd
from dlm_jax.processes import flow
from dlm_jax.testing.oracles import JointTable


V, L = 3, 2
CASES = [(0.3, 0.25), (0.0, 0.5), (0.5, 0.5), (0.125, 0.125)]  # (t, h); (0.5, 0.5) is a last step


_TABLE = []


def _table():
    if not _TABLE:
        with jax.enable_x64(True):
            _TABLE.append(JointTable.random(3, vocab_size=V, length=L, concentration=0.4))
    return _TABLE[0]


def _q(table, x, t, source):
    return table.posteriors(flow.path_evidence(x, t, source=source, vocab_size=V))


def _brute_marginal(table, x, t, h, source):
    """P(x_{t+h}^i | x_t = x) by enumerating x_1, the source x_0 and each position's arrival
    (before t, in (t, t+h], after t+h) on the linear path."""
    k0, k1 = t, t + h
    cats = ((0, k0), (1, k1 - k0), (2, 1.0 - k1))
    sources = [tuple([V] * L)] if source == "mask" else list(itertools.product(range(V), repeat=L))
    joint = np.zeros((L, V + 1))
    total = 0.0
    for s_idx, x1 in enumerate(np.asarray(table.sequences)):
        p1 = float(table.probs[s_idx])
        for x0 in sources:
            p0 = 1.0 if source == "mask" else V**-L
            for arr in itertools.product(cats, repeat=L):
                w = p1 * p0 * np.prod([a[1] for a in arr])
                at_t = [x1[i] if arr[i][0] == 0 else x0[i] for i in range(L)]
                if w == 0 or list(at_t) != list(x):
                    continue
                total += w
                for i in range(L):
                    joint[i, x1[i] if arr[i][0] < 2 else x0[i]] += w
    return joint / total


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_exact_step_marginal_matches_path_enumeration(source):
    with jax.enable_x64(True):
        table = _table()
        states = [(V, 1), (V, V), (2, 0)] if source == "mask" else [(0, 1), (2, 2)]
        marginal = jax.jit(lambda xb, tb, hb: fd.exact_step_marginal(_q(table, xb, tb, source), xb, tb, hb))
        for x in states:
            for t, h in CASES:
                if source == "mask" and t == 0 and x != (V, V):
                    continue  # impossible at t = 0
                got = marginal(jnp.asarray([x], jnp.int32), jnp.asarray([t]), jnp.asarray([h]))[0]
                np.testing.assert_allclose(got, _brute_marginal(table, x, t, h, source), atol=1e-13)


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_ideal_student_kernel_reproduces_the_exact_marginal(source):
    with jax.enable_x64(True):
        table = _table()
        x = jnp.asarray([[V, 1], [V, V], [0, 2]] if source == "mask" else [[0, 1], [2, 2], [1, 0]], jnp.int32)
        def parts(tb, hb):
            q = _q(table, x, tb, source)
            ideal = fd.ideal_student(q, x, tb, hb)
            law = fd.kernel_marginal(jnp.log(ideal), x, tb, hb, source=source)
            return q, ideal, law, fd.exact_step_marginal(q, x, tb, hb)

        parts = jax.jit(parts)
        for t, h in CASES:
            q, ideal, law, exact = parts(jnp.full((3,), t), jnp.full((3,), h))
            np.testing.assert_allclose(ideal.sum(-1), 1.0, atol=1e-14)
            np.testing.assert_allclose(law, exact, atol=1e-13)
            if source == "mask" or t + h >= 1:
                np.testing.assert_allclose(ideal, q, atol=1e-13)  # nothing to learn in the marginals
            else:  # more mass stays on z than q puts there: 1 − p*(z) ≤ 1 − q(z)
                qz = jnp.take_along_axis(q, x[..., None], -1)
                pz = jnp.take_along_axis(ideal, x[..., None], -1)
                assert np.all(np.asarray(pz) >= np.asarray(qz) - 1e-15) and np.any(np.asarray(pz - qz) > 1e-3)


def _states(source):
    return np.array(list(itertools.product(range(V + 1) if source == "mask" else range(V), repeat=L)), np.int32)


_LAWS = {}  # one compiled one-step law per (table, source)


def _exact_composed(table, x, t, h, n, source):
    """Exact per-position law of x_{t+h} after n oracle sub-steps from x: the joint chain over
    every state, each sub-step's kernel a product over positions (the sampler's rules)."""
    states = _states(source)
    index = {tuple(s): i for i, s in enumerate(states)}
    dist = np.zeros(len(states))
    dist[index[tuple(x)]] = 1.0
    law_of = _LAWS.setdefault((id(table), source), jax.jit(
        lambda xs, tb, hb: fd.kernel_marginal(jnp.log(_q(table, xs, tb, source)), xs, tb, hb, source=source)))
    for k in range(n):
        tk, dt = t + k * h / n, h / n
        law = np.asarray(law_of(jnp.asarray(states), jnp.full((len(states),), tk), jnp.full((len(states),), dt)))
        trans = np.prod(law[:, np.arange(L), states], axis=-1)  # [from, to]
        dist = dist @ trans
    marg = np.zeros((L, V + 1))
    for i in range(L):
        np.add.at(marg[i], states[:, i], dist)
    return marg


def test_composed_oracle_teacher_is_the_posterior_for_the_mask_source():
    """Mask source: n oracle sub-steps (n = 2, 4, 8) land, per position, exactly where one oracle step
    does (the posterior is a martingale and reveal times are independent of values)."""
    with jax.enable_x64(True):
        table = _table()
        for n, x, (t, h) in [(2, (V, V), (0.0, 0.5)), (4, (V, 1), (0.25, 0.5)), (8, (2, V), (0.5, 0.5)),
                             (8, (V, V), (0.125, 0.25))]:
            xb, tb, hb = jnp.asarray([x], jnp.int32), jnp.asarray([t]), jnp.asarray([h])
            m = _exact_composed(table, x, t, h, n, "mask")
            implied = fd.implied_posterior(jnp.asarray(m)[None], xb, tb, hb)[0]
            np.testing.assert_allclose(implied, _q(table, xb, tb, "mask")[0], atol=1e-12)
            np.testing.assert_allclose(m, fd.exact_step_marginal(_q(table, xb, tb, "mask"), xb, tb, hb)[0],
                                       atol=1e-12)


def test_composed_oracle_teacher_converges_for_the_uniform_source():
    """Uniform source: the one-step kernel of q is first order; composing the oracle over n
    sub-steps converges (KL to the n = 64 chain shrinks ≥ 3.5-fold per doubling: measured 0.185,
    0.034, 0.0074, 0.0016 at n = 1, 2, 4, 8 vs n = 128). Its limit (the CTMC's coupling) is NOT the
    mixture path's own per-position transition (``ideal_student``): both keep the one-time
    marginals, but they are different couplings of x_t and x_{t+h} (KL 0.05 here)."""
    with jax.enable_x64(True):
        table = _table()
        x, t, h = (0, 1), 0.25, 0.5
        xb, tb, hb = jnp.asarray([x], jnp.int32), jnp.asarray([t]), jnp.asarray([h])
        implied = {n: fd.implied_posterior(jnp.asarray(_exact_composed(table, x, t, h, n, "uniform"))[None], xb, tb, hb)
                   for n in (1, 2, 4, 8, 64)}
        kls = [float(fd.kl(implied[64], jnp.log(implied[n])).sum()) for n in (1, 2, 4, 8)]
        assert kls[0] > 0.1 and all(a > 3.5 * b for a, b in zip(kls, kls[1:])), kls
        ideal = fd.ideal_student(_q(table, xb, tb, "uniform"), xb, tb, hb)
        assert float(fd.kl(implied[64], jnp.log(ideal)).sum()) > 0.01


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_monte_carlo_composed_marginal_matches_the_exact_chain(source):
    with jax.enable_x64(True):
        table = _table()
        x, t, h, n = ((V, 1) if source == "mask" else (0, 1)), 0.25, 0.5, 4
        fn = lambda xs, ts, hs: jnp.log(_q(table, xs, ts, source))  # noqa: E731
        chains = 4096
        got = jax.jit(lambda k: fd.composed_marginal(fn, k, jnp.asarray([x], jnp.int32), jnp.asarray([t]),
                                                     jnp.asarray([h]), n, num_chains=chains, source=source))
        got = got(jax.random.key(0))[0]
        exact = _exact_composed(table, x, t, h, n, source)
        np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-12)
        np.testing.assert_allclose(got, exact, atol=4.5 * np.sqrt(0.25 / chains))


def test_report_is_zero_at_a_product_oracle():
    """Product data: the posterior of a position ignores the others, so every stage and every
    sub-step of the oracle sees the same q; one composed step and the ideal are exact zeros."""
    with jax.enable_x64(True):
        marg = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
        table = JointTable.from_product(marg)
        fn = lambda xs, ts, hs: jnp.log(_q(table, xs, ts, "mask"))  # noqa: E731
        x1 = table.sample(jax.random.key(1), 4)
        out = fd.report(fn, fn, fn, jax.random.key(2), x1, [(0.25, 0.25), (0.5, 0.5)], source="mask",
                        vocab_size=V, n_subs=(1,), num_chains=2, oracle_q=lambda xs, ts: _q(table, xs, ts, "mask"))
        for name in ("composed_1", "teacher_one_1", "ideal", "teacher_ideal"):
            np.testing.assert_allclose(out[name], 0.0, atol=1e-12)
        assert out["t"] == [0.25, 0.5] and out["h"] == [0.25, 0.5]
        assert min(out["rk4"]) >= 0.0


def test_rk4_mean_target_is_the_posterior_for_product_data():
    """Product data, mask source, oracle stages: a still-masked position sees q at every stage and a
    revealed one a one-hot at a value drawn from q, so E[softmax ℓ_T] = q (faithful RK-4: within 4σ
    of Monte Carlo; no conflicting stages, since chained stages keep a revealed token)."""
    with jax.enable_x64(True):
        marg = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
        table = JointTable.from_product(marg)
        fn = lambda xs, ts, hs: jnp.log(_q(table, xs, ts, "mask"))  # noqa: E731
        x = jnp.asarray([[V, V], [V, 1]], jnp.int32)
        t, h, draws = jnp.full((2,), 0.25), jnp.full((2,), 0.5), 4096
        target, conflict = jax.jit(lambda k: fd.rk4_mean_target(fn, k, x, t, h, num_draws=draws))(jax.random.key(3))
        np.testing.assert_allclose(jnp.exp(target), _q(table, x, t, "mask"), atol=4 * np.sqrt(0.25 / draws))
        np.testing.assert_array_equal(conflict, 0.0)
