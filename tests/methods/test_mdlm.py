"""MDLM: NELBO exactness against exact oracles (METHODS §2.1(c),(f), T1), the Monte-Carlo loss,
antithetic times, SUBS, loss_mask handling and the build/sample plumbing.
Time direction: t = 0 clean, t = 1 masked; mask id = V."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dlm_jax.eval.likelihood import exact_nelbo
from dlm_jax.methods import mdlm
from dlm_jax.methods.base import build_method
from dlm_jax.processes.schedules import get_schedule
from dlm_jax.testing.oracles import JointTable, MarkovChainLanguage, all_sequences


def _config(vocab_size, **method):
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict({"vocab_size": vocab_size, "dropout": 0.0})
    c.data = ml_collections.ConfigDict({"seq_len": 4})
    c.method = ml_collections.ConfigDict({"name": "mdlm", **method})
    return c


def _oracle_apply(oracle):
    """The exact conditionals dressed as a network: logits [B, L, V+1] (mask logit arbitrary)."""
    v = oracle.vocab_size

    def apply(params, z, cond, **_):
        del params, cond
        lp = jnp.log(oracle.masked_posteriors(z, v))
        return jnp.concatenate([lp, jnp.full(lp.shape[:-1] + (1,), 3.0, lp.dtype)], -1)

    return apply


# Schedules with α(0) = 1 and α(1) = 0: the NELBO is exactly −log p*(x).
EXACT = [("linear", {"eps": 0.0}), ("loglinear", {"eps": 0.0}), ("cosine", {"eps": 0.0}),
         ("poly", {"eps": 0.0, "exponent": 3.0})]


@pytest.mark.parametrize("name,kw", EXACT)
def test_nelbo_exact_joint_table(name, kw):
    """V=3, L=4 arbitrary joint: exact mask expectation + 64-node Gauss–Legendre gives −log p*(x)
    for all 81 sequences (measured error ≈ 4e-14)."""
    with jax.enable_x64(True):
        oracle = JointTable.random(0, 3, 4)
        xs = jnp.asarray(all_sequences(3, 4))
        val = exact_nelbo(oracle.denoise_fn(3), xs, get_schedule(name, **kw), mask_id=3, time_independent=True)
        err = float(jnp.max(jnp.abs(val + oracle.log_prob(xs))))
        assert err < 1e-10, err


@pytest.mark.parametrize("name,kw", EXACT[:2])
def test_nelbo_exact_markov_chain(name, kw):
    """V=4, L=5 Markov chain, all 1024 sequences: NELBO = −log p*(x) (measured ≈ 1e-14)."""
    with jax.enable_x64(True):
        oracle = MarkovChainLanguage.random(1, 4, 5)
        xs = jnp.asarray(all_sequences(4, 5))
        val = exact_nelbo(oracle.denoise_fn(4), xs, get_schedule(name, **kw), mask_id=4, time_independent=True)
        err = float(jnp.max(jnp.abs(val + oracle.log_prob(xs))))
        assert err < 1e-10, err


def test_nelbo_with_eps_is_the_truncated_any_order_nll():
    """With ε > 0 the schedule sweeps mask probabilities a ∈ [1−α(0), 1−α(1)] only. What is exactly
    true: NELBO_s(x) = ∫_{a0}^{a1} f(a) da with f the α = 1 − t integrand (change of variables;
    checks w = −α'/(1−α)). For MDLM's log-linear (a ∈ [0, 1−ε]) the gap to −log p*(x) is the
    missing ∫_{1−ε}^1 f ≈ ε Σ_ℓ −log p*(x^ℓ) (all-masked marginals), to O(ε²)."""
    with jax.enable_x64(True):
        oracle = JointTable.random(0, 3, 4)
        fn = oracle.denoise_fn(3)
        xs = jnp.asarray(all_sequences(3, 4))
        lin = get_schedule("linear", eps=0.0)
        for s in (get_schedule("loglinear"), get_schedule("linear"), get_schedule("cosine")):
            a0, a1 = s.mask_range()
            val = exact_nelbo(fn, xs, s, mask_id=3, time_independent=True)
            ref = exact_nelbo(fn, xs, lin, mask_id=3, t_lo=a0, t_hi=a1, time_independent=True)
            assert float(jnp.max(jnp.abs(val - ref))) < 1e-10
        s = get_schedule("loglinear", eps=1e-3)
        gap = -oracle.log_prob(xs) - exact_nelbo(fn, xs, s, mask_id=3, time_independent=True)
        marg = -jnp.log(oracle.masked_posteriors(jnp.full((1, 4), 3), 3))[0]  # [L, V]
        first_order = 1e-3 * marg[jnp.arange(4), xs].sum(-1)
        assert float(jnp.min(gap)) > 0
        np.testing.assert_allclose(np.asarray(gap), np.asarray(first_order), rtol=2e-3)


def test_nelbo_terms_zero_at_unmasked_and_weighted():
    """Unmasked positions give exactly 0 even if the denoiser puts −inf there; masked ones give
    w(t)·(−log p[x]); per-token t [B, L] is supported."""
    s = get_schedule("linear", eps=0.0)
    lp = jnp.log(jnp.asarray([[[0.5, 0.25, 0.25], [0.0, 1.0, 0.0]]]))  # [1, 2, 3]
    x, z = jnp.asarray([[1, 0]]), jnp.asarray([[3, 0]])
    terms = mdlm.nelbo_terms(lambda z, t: lp, x, z, jnp.asarray([0.5]), s)
    np.testing.assert_allclose(np.asarray(terms), [[2.0 * np.log(4.0), 0.0]], rtol=1e-6)
    terms = mdlm.nelbo_terms(lambda z, t: lp, x, z, jnp.asarray([[0.25, 0.5]]), s)
    np.testing.assert_allclose(np.asarray(terms), [[4.0 * np.log(4.0), 0.0]], rtol=1e-6)


def test_antithetic_times_are_a_shifted_grid():
    """Sorted times are a grid of spacing (1−δ)/B starting in [δ, δ + (1−δ)/B); with the default
    random rotation every row is marginally U[δ, 1); without it row b stays in stratum b."""
    with jax.enable_x64(True):
        for seed in range(3):
            t = np.sort(np.asarray(mdlm.antithetic_times(jax.random.PRNGKey(seed), 16, 1e-3)))
            np.testing.assert_allclose(np.diff(t), (1 - 1e-3) / 16, atol=1e-12)
            assert 1e-3 <= t[0] < 1e-3 + (1 - 1e-3) / 16 and t[-1] < 1.0
        keys = jax.random.split(jax.random.PRNGKey(9), 4000)
        ts = np.asarray(jax.vmap(lambda k: mdlm.antithetic_times(k, 4, 1e-3))(keys))
        m = ts.mean(0)
        assert np.all(np.abs(m - (1 + 1e-3) / 2) < 4 * np.sqrt((1 - 1e-3) ** 2 / 12 / 4000)), m
        fixed = np.asarray(jax.vmap(lambda k: mdlm.antithetic_times(k, 4, 0.0, rotate=False))(keys))
        assert np.all(np.floor(fixed * 4) == np.arange(4))


def test_subs_logprobs():
    logits = jnp.asarray([[[1.0, 2.0, 0.5, 50.0], [0.0, 0.0, 0.0, 50.0]]])
    z = jnp.asarray([[3, 2]])
    out = np.asarray(mdlm.subs_logprobs(logits, z, 3))
    np.testing.assert_allclose(out[0, 0], np.asarray(jax.nn.log_softmax(jnp.asarray([1.0, 2.0, 0.5]))), rtol=1e-6)
    assert out[0, 1, 2] == 0.0 and np.all(np.isneginf(out[0, 1, :2]))  # carry-over δ_z


def _mc_loss(method, tokens, loss_mask, n_keys, seed=0):
    batch = {"tokens": tokens, "loss_mask": loss_mask}
    f = jax.jit(lambda ks: jax.lax.map(lambda k: method.loss(None, batch, k, 0, {})[0], ks))
    vals = np.asarray(f(jax.random.split(jax.random.PRNGKey(seed), n_keys)), np.float64)
    return vals.mean(), vals.std(ddof=1) / np.sqrt(n_keys)


def test_mc_loss_matches_exact_expectation():
    """Method.loss with the exact oracle in place of the net (default log-linear schedule, antithetic
    t on [1e-3, 1]): the mean over 200 keys equals the exact expectation of the estimator,
    ``(1/(1−δ)) ∫_δ^1 …`` by enumeration, within 3 standard errors; and that is −log p*(x)/L
    up to the O(1e-3) ε/δ truncation."""
    with jax.enable_x64(True):
        oracle = JointTable.random(0, 3, 4)
        method = build_method(_config(3), _oracle_apply(oracle))
        xs = jnp.asarray(all_sequences(3, 4))
        mean, se = _mc_loss(method, xs, jnp.ones(xs.shape), 200)
        s = get_schedule("loglinear")
        exact = exact_nelbo(oracle.denoise_fn(3), xs, s, mask_id=3, t_lo=1e-3, time_independent=True)
        target = float(exact.sum() / xs.size / (1 - 1e-3))
        assert abs(mean - target) < 3 * se, (mean, target, se)
        nll = float(-oracle.log_prob(xs).sum() / xs.size)
        assert abs(target - nll) < 3e-3 * nll, (target, nll)


def test_loss_mask_per_token_mean():
    """Padding (loss_mask 0) is excluded from numerator and denominator: the MC mean matches the exact
    Σ m·E[term] / Σ m (which differs from the unmasked mean by many standard errors)."""
    with jax.enable_x64(True):
        oracle = JointTable.random(0, 3, 4)
        method = build_method(_config(3, schedule="linear", eps=0.0), _oracle_apply(oracle))
        xs = jnp.asarray(all_sequences(3, 4))
        lm = jnp.ones(xs.shape).at[::2, 3].set(0.0).at[1::3, 2:].set(0.0)
        mean, se = _mc_loss(method, xs, lm, 200, seed=1)
        per_pos = exact_nelbo(oracle.denoise_fn(3), xs, get_schedule("linear", eps=0.0), mask_id=3, t_lo=1e-3,
                              per_position=True, time_independent=True) / (1 - 1e-3)
        target = float((per_pos * lm).sum() / lm.sum())
        assert abs(mean - target) < 3 * se, (mean, target, se)
        # Power: dividing by all B·L tokens instead of Σ mask would be far off.
        assert abs(target * float(lm.sum()) / lm.size - target) > 10 * se
        batch = {"tokens": xs, "loss_mask": lm}
        loss, metrics, ev = jax.jit(lambda k: method.loss(None, batch, k) + (method.evaluate(None, batch, k),))(
            jax.random.PRNGKey(0))
        assert float(metrics["num_tokens"]) == float(lm.sum())
        assert abs(float(loss) - float(metrics["nelbo_sum"] / metrics["num_tokens"])) < 1e-12
        assert abs(float(ev["nelbo_sum"]) - float(metrics["nelbo_sum"])) < 1e-9


def test_loss_ignores_padding_content_and_is_differentiable():
    """With a position-wise model, changing tokens under loss_mask = 0 leaves the loss unchanged
    (same rng); gradients are finite and non-zero."""
    v = 5
    table = jax.random.normal(jax.random.PRNGKey(0), (v + 1, v + 1))
    method = build_method(_config(v), lambda p, z, cond, **_: p[z])
    x = jax.random.randint(jax.random.PRNGKey(1), (8, 6), 0, v)
    lm = jnp.ones((8, 6)).at[:, 4:].set(0.0)
    x2 = x.at[:, 4:].set((x[:, 4:] + 1) % v)
    key = jax.random.PRNGKey(2)
    loss = jax.jit(lambda p, tokens: method.loss(p, {"tokens": tokens, "loss_mask": lm}, key)[0])
    l1, l2 = loss(table, x), loss(table, x2)
    assert float(l1) == float(l2) and float(l1) > 0
    g = jax.jit(jax.grad(loss))(table, x)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
    assert float(jnp.abs(g[:, v]).max()) == 0.0  # the mask logit gets no gradient (SUBS)


def test_model_cond_and_denoise_adapter():
    """time_conditioning False feeds t = 0 (MDLM-OWT); True feeds t or σ = −log α_t."""
    seen = {}

    def apply(params, z, cond, **_):
        seen["t"] = np.asarray(cond["t"])
        return jnp.zeros(z.shape + (4,))

    s = get_schedule("loglinear")
    z = jnp.asarray([[3, 1], [0, 3]])
    out = mdlm.denoise_fn(apply, None, 3, s)(z, jnp.asarray([0.5, 0.25]))
    np.testing.assert_array_equal(seen["t"], [0.0, 0.0])
    np.testing.assert_allclose(np.asarray(out[0, 0]), np.log(np.full(3, 1 / 3)), rtol=1e-6)
    mdlm.denoise_fn(apply, None, 3, s, time_conditioning=True)(z, jnp.asarray([0.5, 0.25]))
    np.testing.assert_allclose(seen["t"], [0.5, 0.25])
    mdlm.denoise_fn(apply, None, 3, s, time_conditioning=True, time_input="sigma")(z, jnp.asarray([0.5, 0.25]))
    np.testing.assert_allclose(seen["t"], np.asarray(s.sigma(jnp.asarray([0.5, 0.25]))), rtol=1e-6)


def test_sample_dispatches_through_get_sampler(monkeypatch):
    import dlm_jax.samplers as samplers

    calls = {}

    def fake(denoise, key, **kw):
        calls.update(kw)
        calls["out"] = denoise(jnp.full((1, kw["length"]), kw["vocab_size"]), jnp.ones((1,)))
        return jnp.zeros((kw["num_samples"], kw["length"]), jnp.int32), {"nfe": kw["steps"]}

    monkeypatch.setattr(samplers, "get_sampler", lambda name: fake if name == "mdlm" else None, raising=False)
    oracle = JointTable.random(0, 3, 4)
    method = build_method(_config(3), _oracle_apply(oracle))
    tokens, info = method.sample(None, jax.random.PRNGKey(0), num_samples=2, steps=5)
    assert tokens.shape == (2, 4) and info["nfe"] == 5
    assert calls["vocab_size"] == 3 and calls["length"] == 4
    np.testing.assert_allclose(np.asarray(jnp.exp(calls["out"])),
                               np.asarray(oracle.masked_posteriors(jnp.full((1, 4), 3), 3)), rtol=1e-5)


def test_sample_with_real_sampler_equals_direct_oracle_sampling():
    """Method.sample (model -> SUBS -> denoise seam -> samplers.get_sampler) gives the same tokens
    as the sampler run directly on the oracle's denoise_fn with the same key."""
    from dlm_jax.samplers import get_sampler

    with jax.enable_x64(True):
        oracle = JointTable.random(0, 3, 4)
        method = build_method(_config(3), _oracle_apply(oracle))
        key = jax.random.PRNGKey(4)
        for name in ("mdlm_cache",):
            tokens, info = method.sample(None, key, num_samples=64, steps=4, sampler=name)
            ref, ref_info = get_sampler(name)(oracle.denoise_fn(3), key, num_samples=64, length=4, steps=4,
                                              vocab_size=3)
            np.testing.assert_array_equal(np.asarray(tokens), np.asarray(ref))
            assert int(info["nfe"]) == int(ref_info["nfe"])
            assert np.asarray(tokens).min() >= 0 and np.asarray(tokens).max() < 3


def test_build_validates_config():
    apply = lambda p, z, c, **_: None  # noqa: E731
    with pytest.raises(ValueError, match=r"^method.schedule: 'nope'; expected one of"):
        build_method(_config(3, schedule="nope"), apply)
    with pytest.raises(ValueError, match=r"^method.time_input: 'x'"):
        build_method(_config(3, time_input="x"), apply)
    with pytest.raises(ValueError, match=r"^method.sampling_eps"):
        build_method(_config(3, sampling_eps=1.5), apply)
    c = _config(3)
    c.model.vocab_size = None
    with pytest.raises(ValueError, match=r"^model.vocab_size"):
        build_method(c, apply)
    m = build_method(_config(3, schedule="poly", exponent=3.0, eps=0.0), apply)
    assert m.name == "mdlm"
