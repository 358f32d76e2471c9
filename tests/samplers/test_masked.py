"""MDLM sampler (METHODS §2.1(d), §7 T2): exact output law by enumeration of the 256-state chain,
the jitted sampler against that law by Monte Carlo, and caching equivalence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.samplers import get_sampler
from dlm_jax.samplers.masked import sample_mdlm, sample_mdlm_cache
from dlm_jax.testing.oracles import JointTable, all_sequences, empirical_law, total_variation

V, L = 3, 4
EPS = 1e-5
# TV(exact output law, p*) for JointTable.random(0) (V=3, L=4) at T steps; regression baseline.
TV_BASELINE = {1: 0.5707950286096246, 2: 0.33188696673938783, 4: 0.17968541423072898,
               8: 0.09359089789866126, 16: 0.04777141454860329, 64: 0.012143899835903839}


def exact_denoiser(probs, v, l, zs):
    """p*(x^ℓ | unmasked part of z) for every state z (mask id v), by summing the table. [Z, L, V]"""
    seqs = all_sequences(v, l)
    compat = np.all((zs[:, None, :] == v) | (zs[:, None, :] == seqs[None]), axis=-1)
    w = compat * probs[None]
    w = w / w.sum(1, keepdims=True)
    return np.einsum("zs,slv->zlv", w, np.eye(v)[seqs])


def mdlm_exact_law(probs, v, l, steps, eps=EPS, start=None):
    """Exact law over [V]^L of T ancestral steps + argmax noise removal, from the all-mask state
    (or state index ``start``), by propagating a distribution over the (V+1)^L states (numpy)."""
    zs = all_sequences(v + 1, l)
    p = exact_denoiser(probs, v, l, zs)
    masked = zs == v
    dist = np.zeros(len(zs))
    dist[len(zs) - 1 if start is None else start] = 1.0
    grid = 1.0 - np.arange(steps + 1) * ((1.0 - eps) / steps)
    keep = np.eye(v + 1)[zs]
    for t, s in zip(grid[:-1], grid[1:]):
        move = np.concatenate([p * ((t - s) / t), np.full(p.shape[:-1] + (1,), s / t)], -1)
        kernel = np.where(masked[..., None], move, keep)  # [Z, L, V+1]
        trans = np.ones((len(zs), len(zs)))
        for j in range(l):
            trans *= kernel[:, j, zs[:, j]]
        dist = dist @ trans
    out = np.where(masked, p.argmax(-1), zs)
    return np.bincount(out @ (v ** np.arange(l - 1, -1, -1)), weights=dist, minlength=v**l)


def tv_null_quantile(law, n, q=0.999, draws=2000, seed=0):
    """Quantile of TV(empirical of n exact draws, law): the Monte-Carlo noise floor."""
    counts = np.random.default_rng(seed).multinomial(n, law, size=draws)
    return float(np.quantile(0.5 * np.abs(counts / n - law).sum(-1), q))


def test_exact_law_single_token_is_p_star_for_any_T():
    table = JointTable.random(3, vocab_size=V, length=1)
    p = table.law()
    for steps in (1, 2, 4, 8, 16, 64):
        law = mdlm_exact_law(p, V, 1, steps)
        # Still masked at t_T = eps w.p. eps, then argmax: exactly (1-eps) p* + eps δ_argmax.
        np.testing.assert_allclose(law, (1 - EPS) * p + EPS * np.eye(V)[p.argmax()], rtol=0, atol=1e-14)
        np.testing.assert_allclose(mdlm_exact_law(p, V, 1, steps, eps=0.0), p, rtol=0, atol=1e-14)


def test_exact_law_tv_decreases_with_T_baseline():
    p = JointTable.random(0).law()
    tvs = {steps: total_variation(mdlm_exact_law(p, V, L, steps), p) for steps in TV_BASELINE}
    values = [tvs[k] for k in sorted(tvs)]
    assert all(a > b for a, b in zip(values, values[1:])), tvs
    for steps, ref in TV_BASELINE.items():
        assert abs(tvs[steps] - ref) < 1e-9, (steps, tvs[steps], ref)
    assert values[-1] < 0.02 and values[0] > 0.5  # factorisation error vanishes as T grows


def test_jitted_sampler_matches_exact_law_by_monte_carlo():
    """One compiled sampler, two runs: unconditional (T=2) and with a fixed prefix."""
    n, steps = 40_000, 2
    with jax.enable_x64(True):
        table = JointTable.random(0)
        p = table.law()
        run = jax.jit(lambda key, fixed, tokens: sample_mdlm(
            table.denoise_fn(V), key, num_samples=n, length=L, steps=steps, vocab_size=V, fixed=fixed,
            fixed_tokens=tokens))
        z, info = run(jax.random.key(1), jnp.zeros(L, bool), jnp.zeros(L, jnp.int32))
        assert int(info["nfe"]) == steps + 1 and info["nfe"].dtype == jnp.int32
        emp = empirical_law(np.asarray(z), V)
        exact = mdlm_exact_law(p, V, L, steps)
        floor = tv_null_quantile(exact, n)
        assert total_variation(emp, exact) < floor, (total_variation(emp, exact), floor)
        assert total_variation(emp, p) > 10 * floor  # the test can see the factorisation error

        # Conditional generation: positions 0..2 fixed to (1, 0, 2); one free token -> exact conditional.
        prefix = np.array([1, 0, 2, 0])
        fixed = np.array([True, True, True, False])
        z, _ = run(jax.random.key(2), jnp.asarray(fixed), jnp.asarray(prefix, jnp.int32))
        z = np.asarray(z)
        assert (z[:, :3] == prefix[:3]).all()
        start = int((np.where(fixed, prefix, V)) @ ((V + 1) ** np.arange(L - 1, -1, -1)))
        exact = mdlm_exact_law(p, V, L, steps, start=start)
        cond = np.asarray(table.masked_posteriors(jnp.asarray([[1, 0, 2, V]]), V))[0, 3]
        rows = 1 * 27 + 0 * 9 + 2 * 3 + np.arange(V)
        np.testing.assert_allclose(exact[rows], (1 - EPS) * cond + EPS * np.eye(V)[cond.argmax()], atol=1e-12)
        emp = empirical_law(z, V)
        assert total_variation(emp, exact) < tv_null_quantile(exact, n)


def test_cache_is_bitwise_identical_and_skips_real_model_calls():
    """Same keys -> same tokens; the cached sampler really skips the model (counted by a host
    callback inside denoise_fn) and reports exactly the calls it made; NFE < T + 1 when T > L."""
    steps, runs = 16, 24
    calls = {"n": 0}

    def count(_):
        calls["n"] += 1

    with jax.enable_x64(True):
        table = JointTable.random(0)
        base = table.denoise_fn(V)

        def denoise(z, t):
            jax.debug.callback(count, t)
            return base(z, t)

        keys = jax.random.split(jax.random.key(7), runs)
        outs = {}
        # The plain sampler runs without the callback (so its compile is cacheable); values are equal.
        for name, fn, den in (("plain", sample_mdlm, base), ("cache", sample_mdlm_cache, denoise)):
            one = lambda k, fn=fn, den=den: fn(den, k, num_samples=1, length=L, steps=steps, vocab_size=V)
            calls["n"] = 0
            z, info = jax.block_until_ready(jax.jit(lambda ks: jax.lax.map(one, ks))(keys))
            outs[name] = (np.asarray(z), np.asarray(info["nfe"]), calls["n"])
    (z_plain, nfe_plain, calls_plain), (z_cache, nfe_cache, calls_cache) = outs["plain"], outs["cache"]
    np.testing.assert_array_equal(z_plain, z_cache)
    assert (nfe_plain == steps + 1).all() and calls_plain == 0
    assert calls_cache == nfe_cache.sum()  # the reported NFE are real evaluations
    assert (nfe_cache <= L + 2).all() and nfe_cache.max() < steps + 1
    assert nfe_cache.mean() < 0.5 * (steps + 1)


def test_cache_gives_identical_tokens_for_a_float32_network():
    """The documented limit: the cached sampler reuses a prediction only where the model would get
    the same input, so with a deterministic float32 network (params as jit arguments, t ignored)
    the tokens equal sample_mdlm's under the same key, with T > L so that steps are skipped."""
    v, length, steps, batch, width = 16, 8, 32, 4, 32
    keys = jax.random.split(jax.random.key(11), 4)
    params = {"emb": jax.random.normal(keys[0], (v + 1, width)), "mix": jax.random.normal(keys[1], (length, length)),
              "out": jax.random.normal(keys[2], (width, v)) * 0.5}

    def net(p, z):  # float32 logits [B, L, V]; every position sees the whole sequence
        h = jnp.tanh(p["emb"][z] + jnp.einsum("lm,bmd->bld", p["mix"], p["emb"][z]) / length)
        return h @ p["out"]

    kw = dict(num_samples=batch, length=length, steps=steps, vocab_size=v)
    runs = {name: jax.jit(lambda p, k, fn=fn: jax.lax.map(lambda kk: fn(lambda z, t: net(p, z), kk, **kw),
                                                          jax.random.split(k, 6)))
            for name, fn in (("plain", sample_mdlm), ("cache", sample_mdlm_cache))}
    (z_plain, info_plain), (z_cache, info_cache) = (runs[n](params, keys[3]) for n in ("plain", "cache"))
    assert z_plain.dtype == jnp.int32 and not jax.config.jax_enable_x64
    np.testing.assert_array_equal(np.asarray(z_plain), np.asarray(z_cache))
    assert (np.asarray(info_plain["nfe"]) == steps + 1).all() and np.asarray(info_cache["nfe"]).max() < steps + 1


def test_registry_and_validation_before_compiling():
    assert get_sampler("mdlm") is sample_mdlm and get_sampler("mdlm_cache") is sample_mdlm_cache
    with pytest.raises(ValueError, match=r"^sampler: 'x'; expected one of \("):
        get_sampler("x")
    fn = JointTable.random(0).denoise_fn(V)
    key = jax.random.key(0)
    good = dict(num_samples=2, length=L, steps=4, vocab_size=V)
    for bad, pattern in (({"steps": 0}, "^steps: 0;"), ({"length": 0}, "^length: 0;"),
                         ({"top_p": 0.0}, "^top_p: 0.0;"), ({"top_p": 1.5}, "^top_p: 1.5;"),
                         ({"categorical_method": "fp16"}, "^method: 'fp16';"),
                         ({"fixed": np.ones(L, bool)}, "^fixed_tokens: missing;")):
        with pytest.raises(ValueError, match=pattern):
            sample_mdlm(fn, key, **{**good, **bad})


def test_draw_kernel_greedy_carry_over_and_top_p_predictor():
    from dlm_jax.samplers.categorical import top_p_filter
    from dlm_jax.samplers.masked import ancestral_draw, predictor

    with jax.enable_x64(True):
        logp = jnp.log(jnp.array([[[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]]))
        z = jnp.array([[V, V, 2, 0]])
        pi = jnp.array([[0.0, 1.0, 0.0, 1.0]])  # pos 0 must unmask, pos 1 stay masked, pos 3 remask
        draw = jax.jit(lambda k: ancestral_draw(k, logp, z, pi, mask_id=V, greedy=True))
        z_s, x = draw(jax.random.key(0))
        np.testing.assert_array_equal(z_s, [[1, V, 2, V]])  # argmax at pos 0; carry-over keeps pos 2
        np.testing.assert_array_equal(x, [[1, 0, 2, 0]])
        table = JointTable.random(0)
        zq = jnp.array([[V, 1, V, V]])
        got = predictor(table.denoise_fn(V), 0.7)(zq, 0.5)
        want = top_p_filter(jnp.log(table.masked_posteriors(zq, V)), 0.7)
        np.testing.assert_allclose(np.exp(got), np.exp(want), rtol=0, atol=1e-12)
        assert (np.asarray(got) == -np.inf).any()  # the nucleus actually cut something
