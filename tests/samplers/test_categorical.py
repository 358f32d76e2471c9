"""High-precision categorical sampling (METHODS §1.2–1.3): the exact law of the float32 two-stage
sampler (from the float32 uniform grid, by bisection through the sampler's own inverse-CDF) and of
naive float32 Gumbel-max, against the true law on a peaked distribution with a long tail; MC
checks of the exact-law machinery; nucleus filtering against a numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.samplers.categorical import _inverse_cdf, nucleus_mask, sample_categorical, top_p_filter, two_stage_tables

GRID = 2**23  # jax.random.uniform(float32) takes the values k·2^-23, k = 0..2^23-1
_icdf = jax.jit(_inverse_cdf)


def _stage_law(probs):
    """Exact law of ``_inverse_cdf(u, row)`` for u uniform on the float32 grid, per row ``[R, n]``.
    ``idx(u)`` is non-decreasing in u, so ``#{k: idx(u_k) <= j}`` is found by bisection on k."""
    probs = jnp.asarray(probs, jnp.float32)
    rows, n = probs.shape
    j = np.broadcast_to(np.arange(n), (rows, n))
    lo, hi = np.zeros((rows, n), np.int64), np.full((rows, n), GRID, np.int64)
    for _ in range(24):
        mid = (lo + hi) // 2
        u = jnp.asarray(mid.astype(np.float32) * np.float32(2.0**-23))  # exact: mid < 2^24
        ok = np.asarray(_icdf(u, probs[:, None, :])) <= j
        active = lo < hi
        lo, hi = np.where(active & ok, mid + 1, lo), np.where(active & ~ok, mid, hi)
    return np.diff(lo, prepend=0, axis=-1) / GRID


def two_stage_law(logits):
    """Exact law of ``sample_categorical(..., "two_stage")`` for one logit vector ``[V]``."""
    bucket, weights, inner = two_stage_tables(jnp.asarray(logits, jnp.float32))
    p_bucket = _stage_law(np.asarray(weights)[None])[0]
    p_inner = _stage_law(np.asarray(inner))
    return (p_bucket[:, None] * p_inner).reshape(-1)[: len(logits)]


def gumbel32_tail_mass(p_top, p_tail, n_tail):
    """Probability that float32 Gumbel-max picks one of ``n_tail`` equal tail tokens over the top one,
    from the 2^23 float32 Gumbel atoms (exact up to float32 rounding of logit + noise)."""
    u = jnp.maximum(jnp.finfo(jnp.float32).tiny, jnp.arange(GRID, dtype=jnp.float32) * jnp.float32(2.0**-23))
    atoms = np.sort(np.asarray(-jnp.log(-jnp.log(u)), np.float64))
    delta = np.log(p_top) - np.log(p_tail)
    top = atoms[::-1][:1024]  # n-th largest atom
    # n(k) = #{atoms > G_k + Δ}: the tail token loses to G_top = G_k w.p. (1 − n(k)/2^23) each.
    at_least = np.searchsorted(atoms, top - delta, side="left")  # #{k: n(k) >= n}, n = 1..1024
    assert at_least[-1] == 0
    exactly = at_least - np.r_[at_least[1:], 0]
    p_top_wins = (GRID - at_least[0] + (exactly * (1 - np.arange(1, 1025) / GRID) ** n_tail).sum()) / GRID
    return 1.0 - p_top_wins


def truncation_ratio(p_top, p_tail, mantissa_bits):
    """P(Gumbel-max with a 2^-m uniform grid picks a tail token) / p_tail for a dominant top token:
    the top atoms are −log(j 2^-m), so the ratio is c/(e^c − 1) with c = 2^-m p_top/p_tail."""
    c = 2.0**-mantissa_bits * p_top / p_tail
    return c / np.expm1(c)


def test_uniform_grid_premise():
    u = np.asarray(jax.random.uniform(jax.random.key(0), (100_000,)), np.float64)
    assert ((u * GRID) == np.round(u * GRID)).all() and u.min() >= 0 and u.max() < 1


def test_two_stage_keeps_the_tail_and_float32_gumbel_loses_it():
    """V = 4096, top token 0.999, 4095 tail tokens of 2.44e-7 each (15.2 nats below the top)."""
    v, top = 4096, 1234
    p = np.full(v, 0.001 / (v - 1))
    p[top] = 0.999
    tail = np.arange(v) != top
    law = two_stage_law(np.log(p))
    assert abs(law.sum() - 1) < 1e-12
    # The fallback's tail mass matches the true 1e-3 to 4e-4 relative (measured -3.3e-4) and TV 2e-6;
    # single tail tokens in the top token's bucket are resolved to ~50% (measured -2.5% .. +46%).
    assert abs(law[tail].sum() / 0.001 - 1) < 4e-4
    assert 0.5 * np.abs(law - p).sum() < 2e-6
    assert np.abs(law[tail] / p[tail] - 1).max() < 0.5
    # Naive float32 Gumbel-max draws the tail only 77.6% as often as it should.
    g32 = gumbel32_tail_mass(p[top], p[tail][0], v - 1)
    assert abs(g32 / 0.001 - 0.7759) < 1e-3, g32
    assert abs(g32 / 0.001 - truncation_ratio(p[top], p[tail][0], 23)) < 1e-4  # the formula is right
    # float64 Gumbel-max (52 mantissa bits): the same formula bounds its deficit by 5e-10 relative.
    assert 1 - truncation_ratio(p[top], p[tail][0], 52) < 5e-10


def test_exact_law_machinery_matches_monte_carlo():
    """Small V: two-stage MC draws follow ``two_stage_law``; gumbel64 draws follow softmax."""
    n = 100_000
    logits = np.log(np.array([0.3, 1e-3, 0.2, 0.05, 2e-4, 0.1, 0.248, 0.1, 8e-4]))
    logits = logits - np.log(np.exp(logits).sum())
    counts = np.random.default_rng(0).multinomial(n, np.exp(logits), size=2000)
    floor = np.quantile(0.5 * np.abs(counts / n - np.exp(logits)).sum(-1), 0.999)
    law = two_stage_law(logits)
    draws = jax.jit(lambda k: sample_categorical(k, jnp.broadcast_to(jnp.asarray(logits, jnp.float32),
                                                                      (n, len(logits))), "two_stage"))
    emp = np.bincount(np.asarray(draws(jax.random.key(1))), minlength=len(logits)) / n
    assert 0.5 * np.abs(emp - law).sum() < floor
    with jax.enable_x64(True):
        draws = jax.jit(lambda k: sample_categorical(k, jnp.broadcast_to(jnp.asarray(logits), (n, len(logits)))))
        emp = np.bincount(np.asarray(draws(jax.random.key(2))), minlength=len(logits)) / n
    assert 0.5 * np.abs(emp - np.exp(logits)).sum() < floor


def _top_p_reference(p, top_p):
    order = np.argsort(-p, kind="stable")
    keep = np.cumsum(p[order]) <= top_p
    keep[0] = True
    out = np.zeros_like(p)
    out[order[keep]] = p[order[keep]]
    return out / out.sum()


def test_top_p_keeps_prefix_and_renormalises():
    with jax.enable_x64(True):
        p = np.array([0.1, 0.5, 0.25, 0.15])
        for top_p, expected in ((0.8, [0, 2 / 3, 1 / 3, 0]), (0.75, [0, 2 / 3, 1 / 3, 0]),
                                (0.4, [0, 1, 0, 0]), (1.0, p)):
            got = np.exp(np.asarray(top_p_filter(jnp.log(jnp.asarray(p)), top_p)))
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
        rng = np.random.default_rng(0)
        probs = rng.dirichlet(np.full(50, 0.3), size=64)
        got = np.exp(np.asarray(top_p_filter(jnp.asarray(np.log(probs) + 3.0), 0.9)))  # logits, unnormalised
        ref = np.stack([_top_p_reference(row, 0.9) for row in probs])
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=f"^top_p: {bad};"):
            top_p_filter(jnp.zeros(3), bad)
    with pytest.raises(ValueError, match="^method: 'fp8';"):
        sample_categorical(jax.random.key(0), jnp.zeros(3), "fp8")


def test_top_p_ties_follow_the_reference_index_order():
    """Exact ties: the reference sorts descending (ties by lower index, a stable sort), keeps the
    prefix with cumsum <= p and the first token, so a tie group can be cut inside; ``ties="group"``
    keeps or drops it whole. Dyadic probabilities (exact sums), then bfloat16 logits (many ties)."""
    quarter, spread = [0.25] * 4, [0.125, 0.5, 0.125, 0.125, 0.125]
    cases = ((quarter, 0.5, [0.5, 0.5, 0, 0], quarter),          # two of four tied tokens fit
             (quarter, 0.3, [1, 0, 0, 0], quarter),              # none fits: the first token only
             (spread, 0.75, [1 / 6, 2 / 3, 1 / 6, 0, 0], [0, 1, 0, 0, 0]),
             ([0.5] + [0.125] * 4, 0.75, [2 / 3, 1 / 6, 1 / 6, 0, 0], [1, 0, 0, 0, 0]))
    run = jax.jit(top_p_filter, static_argnums=(1, 2))
    for p, top_p, index_rule, group_rule in cases:
        for ties, want in (("index", index_rule), ("group", group_rule)):
            got = np.exp(np.asarray(run(jnp.log(jnp.asarray(p, jnp.float32)), top_p, ties)))
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-7, err_msg=f"{p} {top_p} {ties}")
    # bfloat16 logits, V = 1000: float32 log-probs inside; every row keeps the reference's set.
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(64, 1000)) * 3, jnp.bfloat16)
    probs = np.asarray(jax.nn.softmax(logits.astype(jnp.float32), -1), np.float64)
    ref = np.stack([_top_p_reference(row, 0.9) > 0 for row in probs])
    kept = {ties: np.isfinite(np.asarray(run(logits, 0.9, ties), np.float32)) for ties in ("index", "group")}
    assert run(logits, 0.9, "index").dtype == jnp.float32
    assert (kept["index"] == ref).all(-1).sum() == 64
    assert (kept["group"] != ref).any(-1).sum() == 25  # the tie-group rule: 25 of 64 rows differ
    # The mask alone, a batch mixing cut and uncut tie groups, under vmap.
    p = jnp.asarray([[0.25] * 4, [0.4, 0.3, 0.2, 0.1], [0.125, 0.5, 0.125, 0.25]], jnp.float32)
    keep = np.asarray(jax.vmap(lambda row: nucleus_mask(row, 0.6))(p))
    np.testing.assert_array_equal(keep, [[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]])
    with pytest.raises(ValueError, match=r"^ties: 'first'; expected one of"):
        top_p_filter(jnp.zeros(3), 0.9, ties="first")
