"""ReMDM (METHODS §2.2, §7 T3): marginal preservation of the posterior family for every strategy's
σ, loop phase-2 stationarity by enumeration, bounds, conf bookkeeping, and the jitted sampler
against the exact law of its chain by Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.samplers import get_sampler
from dlm_jax.samplers.driver import masked_time_grid
from dlm_jax.samplers.remdm import (LOOP_RULES, check_remdm, conf_eta, conf_update, mask_prob, remdm_schedule,
                                    remdm_step, remdm_weights, sample_remdm, sigma_max)
from dlm_jax.testing.oracles import JointTable, all_sequences, empirical_law, total_variation

V, L = 3, 4
_weights = jax.jit(remdm_weights, static_argnames=("mask_id", "carry_over"))  # one compile, not op-by-op
# ||q P − q||_1 of one loop phase-2 step (η = 0.02, α_on = 0.9) on JointTable.random(0) with the
# exact denoiser: the factorisation error of correlated data (regression baseline).
LOOP_VIOLATION_CORRELATED = 0.0008108301169025863


def _transition(weights, zs):
    """[Z, L, V+1] per-position weights -> [Z, Z] transition (positions independent)."""
    trans = np.ones((len(zs), len(zs)))
    for j in range(zs.shape[1]):
        trans *= weights[:, j, zs[:, j]]
    return trans


def _masked_marginal(p_star, alpha, v, l):
    """q_α(z) = Σ_x p*(x) Π_ℓ [α δ_x + (1 − α) δ_m] over the (V+1)^L states."""
    zs, seqs = all_sequences(v + 1, l), all_sequences(v, l)
    per = np.where(zs[:, None, :] == v, 1 - alpha, alpha * (zs[:, None, :] == seqs[None]))
    return per.prod(-1) @ p_star


def _chain_law(table, steps, strategy, eta=None, **kw):
    """Exact law over [V]^L of the ReMDM chain (σ scalar per step; top_p = 1) + argmax removal."""
    v, l = table.vocab_size, table.length
    zs = all_sequences(v + 1, l)
    probs = np.asarray(table.masked_posteriors(jnp.asarray(zs), v))
    sched = {k: np.asarray(a) for k, a in remdm_schedule(strategy, masked_time_grid(steps), eta, **kw).items()}
    dist = np.zeros(len(zs))
    dist[-1] = 1.0
    for a_t, a_s, sig in zip(sched["alpha_t"], sched["alpha_s"], sched["sigma"]):
        if strategy == "conf":  # at L = 1: η = 1 at a decoded position, 0 at a masked one
            assert l == 1
            sig = sig * (zs != v)
        w = np.asarray(_weights(probs, jnp.asarray(zs), sig, a_s, a_t, mask_id=v))
        dist = dist @ _transition(w, zs)
    out = np.where(zs == v, probs.argmax(-1), zs)
    return np.bincount(out @ (v ** np.arange(l - 1, -1, -1)), weights=dist, minlength=v**l)


def test_marginal_preservation_for_every_strategy_sigma():
    """Σ_{z_t} q(z_t|x) q_σ(z_s|z_t,x) = q(z_s|x) to 1e-12, σ from each strategy."""
    rng = np.random.default_rng(0)
    n = 64
    with jax.enable_x64(True):
        a = np.sort(rng.uniform(0, 1, (2, n)), axis=0)
        alpha_t, alpha_s = a[0], a[1]  # α_s > α_t: s is the cleaner time
        smax = np.asarray(sigma_max(alpha_s, alpha_t))
        eta_conf = np.asarray(conf_eta(jnp.asarray(np.where(rng.uniform(size=n) < 0.3, -np.inf, -rng.uniform(size=n)))))
        sched = remdm_schedule("loop", masked_time_grid(64), 0.1)
        sigmas = {"cap": np.minimum(0.008, smax), "rescale": 0.015 * smax, "conf": eta_conf * smax,
                  "uniform": rng.uniform(0, 1, n) * smax, "max": smax}
        cases = [(alpha_s, alpha_t, s) for s in sigmas.values()]
        cases.append(tuple(np.asarray(sched[k]) for k in ("alpha_s", "alpha_t", "sigma")))
        for a_s, a_t, sig in cases:
            x = rng.integers(0, V, a_s.shape[0])
            assert (sig >= 0).all() and (sig <= np.asarray(sigma_max(a_s, a_t)) + 1e-15).all()
            probs = jnp.asarray(np.eye(V)[x])  # the posterior given x is δ_x
            w_clean = np.asarray(remdm_weights(probs, jnp.asarray(x), sig, a_s, a_t, mask_id=V))
            w_mask = np.asarray(remdm_weights(probs, jnp.full(x.shape, V), sig, a_s, a_t, mask_id=V))
            marg = a_t[:, None] * w_clean + (1 - a_t)[:, None] * w_mask
            target = np.concatenate([a_s[:, None] * np.eye(V)[x], (1 - a_s)[:, None]], -1)
            np.testing.assert_allclose(marg, target, rtol=0, atol=1e-12)
            assert (w_clean >= -1e-15).all() and (w_mask >= -1e-15).all()


def test_schedules_respect_sigma_max_and_loop_phases():
    with jax.enable_x64(True):
        for steps in (5, 64, 1000):
            grid = masked_time_grid(steps)
            t = np.asarray(grid)
            straddle = ((t[:-1] > 0.55) & (t[1:] <= 0.55)) | ((t[:-1] > 0.05) & (t[1:] <= 0.05))
            for strategy, rule in (("cap", "reference"), ("rescale", "reference"), ("conf", "reference"),
                                   ("loop", "reference"), ("loop", "continuous")):
                sc = {k: np.asarray(v) for k, v in remdm_schedule(strategy, grid, loop_rule=rule).items()}
                smax = np.asarray(sigma_max(sc["alpha_s"], sc["alpha_t"]))
                assert (sc["sigma"] >= 0).all() and (sc["sigma"] <= smax + 1e-15).all()
                assert (np.diff(sc["alpha_t"]) >= -1e-15).all() and (sc["alpha_s"] >= sc["alpha_t"] - 1e-15).all()
                # Consecutive steps share α, except the reference loop at the steps straddling t_on, t_off.
                shared = ~straddle[:-1] if (strategy, rule) == ("loop", "reference") else slice(None)
                np.testing.assert_allclose(sc["alpha_s"][:-1][shared], sc["alpha_t"][1:][shared], rtol=0, atol=0)
        for rule in LOOP_RULES:
            sc = {k: np.asarray(v) for k, v in remdm_schedule("loop", masked_time_grid(1000), loop_rule=rule).items()}
            t = np.asarray(masked_time_grid(1000))[:-1]
            phase2 = (t > 0.05) & (t <= 0.55)
            # 45% / 50% / 5% of a uniform grid (t_450 = 0.5500045 > t_on because the grid ends at eps, not 0)
            assert (t > 0.55).sum() == 451 and phase2.sum() == 500 and (t <= 0.05).sum() == 49
            # The phase-2 steps that end in phase 2 (all of them under the reference rule).
            inner = phase2 & (np.r_[t[1:], 0] > 0.05) if rule == "continuous" else phase2
            np.testing.assert_allclose(sc["alpha_t"][inner], 0.9, atol=1e-15)
            np.testing.assert_allclose(sc["alpha_s"][inner], 0.9, atol=1e-15)
            np.testing.assert_allclose(sc["sigma"][inner], 0.02, atol=1e-15)
            assert (sc["sigma"][~phase2] == 0).all()
        # In phase 2 masked tokens unmask w.p. η α_on/(1 − α_on), decoded ones remask w.p. η.
        pi = np.asarray(mask_prob(jnp.array([True, False]), 0.02, 0.9, 0.9))
        np.testing.assert_allclose(pi, [1 - 0.02 * 0.9 / 0.1, 0.02], atol=1e-15)


def test_loop_straddling_steps_follow_the_reference():
    """T = 1024 (ReMDM-loop on OWT): the step t_460 = 0.5508 -> 0.5498 crosses t_on and t_972 = 0.0508
    -> 0.0498 crosses t_off. remdm/diffusion.py takes the phase from t and evaluates s with that
    phase's formula: an MDLM step with α = 0.9(1 − ·)/0.45 at both ends (α_s = 0.90038 > α_on), then a
    phase-2 step (α_s = α_t = α_on, σ = η). Exact per-position laws, hand-derived, vs remdm_weights;
    the continuous rule differs by 3.76e-3 and 3.72e-3 in P(mask) there."""
    probs = np.array([0.5, 0.3, 0.2])
    with jax.enable_x64(True):
        grid = np.asarray(masked_time_grid(1024))
        k_on, k_off = 460, 972
        assert grid[k_on] > 0.55 >= grid[k_on + 1] and grid[k_off] > 0.05 >= grid[k_off + 1]
        a_t, a_s = (0.9 * (1 - grid[k_on + j]) / 0.45 for j in (0, 1))
        stay = (1 - a_s) / (1 - a_t)  # masked stays masked; decoded tokens are kept (σ = 0)
        assert abs(stay - 0.9807711241) < 1e-10
        want = {k_on: ([*(probs * (1 - stay)), stay], [0, 1, 0, 0]),
                k_off: ([*(probs * 0.02 * 0.9 / 0.1), 1 - 0.02 * 0.9 / 0.1], [0, 0.98, 0, 0.02])}
        z = jnp.array([[V, 1]])  # one masked, one decoded position
        p = jnp.asarray(np.broadcast_to(probs, (1, 2, V)))
        laws = {}
        for rule in LOOP_RULES:
            sc = remdm_schedule("loop", jnp.asarray(grid), loop_rule=rule)
            laws[rule] = {k: np.asarray(remdm_weights(p, z, sc["sigma"][k], sc["alpha_s"][k], sc["alpha_t"][k],
                                                      mask_id=V))[0] for k in (k_on, k_off)}
        for k, (masked, decoded) in want.items():
            np.testing.assert_allclose(laws["reference"][k], [masked, decoded], rtol=0, atol=1e-12)
        # The continuous rule (α evaluated at each end in its own phase): off by 3.7e-3 at both steps.
        diff = [laws["continuous"][k][0, -1] - want[k][0][-1] for k in (k_on, k_off)]
        np.testing.assert_allclose(diff, [3.7571676e-3, -3.7162109e-3], rtol=0, atol=1e-9)


def test_loop_phase2_is_stationary_on_product_data():
    with jax.enable_x64(True):
        marg = np.random.default_rng(1).dirichlet(np.ones(V), size=L)
        for table, exact in ((JointTable.from_product(marg), True), (JointTable.random(0), False)):
            zs = all_sequences(V + 1, L)
            probs = table.masked_posteriors(jnp.asarray(zs), V)
            w = np.asarray(remdm_weights(probs, jnp.asarray(zs), 0.02, 0.9, 0.9, mask_id=V))
            q = _masked_marginal(table.law(), 0.9, V, L)
            violation = np.abs(q @ _transition(w, zs) - q).sum()
            if exact:
                assert violation < 1e-12, violation
            else:
                assert abs(violation - LOOP_VIOLATION_CORRELATED) < 1e-9, violation


def test_bounds_and_validation():
    assert check_remdm("loop", 0.1) == 0.1 and check_remdm("cap", None) == 0.008
    assert check_remdm("rescale", None) == 0.015 and check_remdm("loop", None) == 0.02
    check_remdm("loop", 1.0 / 9.0 - 1e-12)  # the bound (1 − α_on)/α_on = 0.111 for α_on = 0.9
    for args, pattern in ((("loop", 0.12), r"^eta: 0.12; expected eta <= \(1 - alpha_on\)/alpha_on = 0.111111"),
                          (("loop", 0.3, 0.55, 0.05, 0.8), r"^eta: 0.3; expected eta <= .* = 0.25"),
                          (("loop", 0.02, 0.05, 0.55), r"^t_on, t_off: \(0.05, 0.55\);"),
                          (("loop", 0.02, 0.55, 0.05, 1.0), "^alpha_on: 1.0;"),
                          (("cap", 1.5), "^eta: 1.5;"), (("rescale", -0.1), "^eta: -0.1;"),
                          (("conf", 0.1), "^eta: 0.1; expected None"), (("greedy", None), "^strategy: 'greedy';")):
        with pytest.raises(ValueError, match=pattern):
            check_remdm(*args)
    fn = JointTable.random(0).denoise_fn(V)
    good = dict(num_samples=2, length=L, steps=4, vocab_size=V)
    for bad, pattern in (({"steps": 0}, "^steps: 0;"), ({"length": 0}, "^length: 0;"), ({"top_p": 0}, "^top_p: 0;"),
                         ({"strategy": "x"}, "^strategy: 'x';"), ({"eta": 0.5, "strategy": "loop"}, "^eta: 0.5;")):
        with pytest.raises(ValueError, match=pattern):
            sample_remdm(fn, jax.random.key(0), **{**good, **bad})
    with pytest.raises(ValueError, match="^strategy: 'cap'; expected no strategy"):
        get_sampler("remdm_loop")(fn, jax.random.key(0), strategy="cap", **good)


def test_conf_eta_and_bookkeeping():
    with jax.enable_x64(True):
        conf = jnp.array([[-0.9, -jnp.inf, -0.2, -0.5], [-jnp.inf] * 4])
        eta = np.asarray(conf_eta(conf))
        e = np.exp([-0.9, -0.2, -0.5])
        np.testing.assert_allclose(eta[0], [e[0] / e.sum(), 0, e[1] / e.sum(), e[2] / e.sum()], atol=1e-15)
        np.testing.assert_array_equal(eta[1], 0)
        assert eta[0, 2] > eta[0, 3] > eta[0, 0]  # less confident tokens are remasked more often
        assert (eta.sum(-1) <= 1 + 1e-15).all()
        z = jnp.array([[V, 1, 2, V]])
        z_s = jnp.array([[0, V, 2, V]])  # pos 0 newly decoded, pos 1 remasked, 2 kept, 3 still masked
        new = np.asarray(conf_update(jnp.array([[-jnp.inf, -0.3, -0.7, -jnp.inf]]), z, z_s,
                                     jnp.array([[0.25, 0.5, 0.5, 0.5]]), V))
        np.testing.assert_array_equal(new, [[-0.25, -np.inf, -0.7, -np.inf]])


def test_single_token_law_every_strategy():
    """At L = 1 the exact denoiser makes every chain output (1 − π) p* + π δ_argmax, π = mass still
    masked at t_T. cap/rescale/loop preserve the marginals, so π = 1 − α(t_T) exactly. conf does
    not: its σ^ℓ = η^ℓ σ^max is 0 in the masked branch (η = 0 at masked ℓ) while decoded ℓ remask
    at σ^max, so masked mass follows m ← m (1−α_s)/(1−α_t) + (1 − m) σ^max > 1 − α_s."""
    with jax.enable_x64(True):
        table = JointTable.random(3, vocab_size=V, length=1)
        p = table.law()
        for steps in (4, 33):
            sched = {k: np.asarray(a) for k, a in remdm_schedule("conf", masked_time_grid(steps)).items()}
            m = 1.0
            for a_t, a_s, smax in zip(sched["alpha_t"], sched["alpha_s"], sched["sigma"]):
                m = m * (1 - a_s) / (1 - a_t) + (1 - m) * smax
            # Reference loop: its straddling steps break the α chain, so its masked mass follows
            # m <- m (1 − α_s − σ α_t)/(1 − α_t) + (1 − m) σ over its own schedule.
            loop = {k: np.asarray(a) for k, a in remdm_schedule("loop", masked_time_grid(steps)).items()}
            m_loop = 1.0
            for a_t, a_s, sig in zip(loop["alpha_t"], loop["alpha_s"], loop["sigma"]):
                m_loop = m_loop * (1 - a_s - sig * a_t) / (1 - a_t) + (1 - m_loop) * sig
            for strategy, pi, kw in (("cap", 1e-5, {}), ("rescale", 1e-5, {}), ("conf", m, {}), ("loop", m_loop, {}),
                                     ("loop", 1e-5 * 0.1 / 0.05, {"loop_rule": "continuous"})):
                law = _chain_law(table, steps, strategy, **kw)
                np.testing.assert_allclose(law, (1 - pi) * p + pi * np.eye(V)[p.argmax()], rtol=0, atol=1e-12)
            assert m > 2.5e-5  # conf's excess masked mass (2.67e-5 at T=4, 7.25e-5 at T=33 vs 1e-5)
            assert abs(m_loop - 1e-5 * 0.1 / 0.05) > 1e-6  # the reference loop does not end at 1 − α(t_T)


def test_step_kernel_law_matches_weights_by_monte_carlo():
    """remdm_step's draws follow remdm_weights, per position (σ array, carry-over on and off)."""
    n = 20_000
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        z = jnp.array([V, V, 0, 2, 1, V])
        probs = rng.dirichlet(np.ones(V), size=z.shape[0])
        sigma = jnp.asarray(rng.uniform(0, 0.3, z.shape[0]))
        a_s, a_t = 0.6, 0.4

        @jax.jit
        def draw(key):
            keys = jax.random.split(key, n)
            step = lambda k, co: remdm_step(k, jnp.log(probs)[None], z[None], sigma[None], a_s, a_t, mask_id=V,
                                            carry_over=co)[0][0]
            return jax.vmap(lambda k: step(k, True))(keys), jax.vmap(lambda k: step(k, False))(keys)

        for draws, carry in zip(draw(jax.random.key(3)), (True, False)):
            w = np.asarray(remdm_weights(jnp.asarray(probs), z, sigma, a_s, a_t, mask_id=V, carry_over=carry))
            freq = np.stack([np.bincount(np.asarray(draws[:, j]), minlength=V + 1) / n for j in range(z.shape[0])])
            assert np.abs(freq - w).max() < 5 * np.sqrt(0.25 / n), np.abs(freq - w).max()


def test_loop_sampler_matches_exact_chain_law_by_monte_carlo():
    n, steps, eta = 40_000, 8, 0.1
    with jax.enable_x64(True):
        table = JointTable.random(0)
        exact = _chain_law(table, steps, "loop", eta)
        run = jax.jit(lambda key: sample_remdm(table.denoise_fn(V), key, num_samples=n, length=L, steps=steps,
                                               vocab_size=V, strategy="loop", eta=eta, top_p=1.0))
        z, info = run(jax.random.key(4))
        assert int(info["nfe"]) == steps + 1
        emp = empirical_law(np.asarray(z), V)
        counts = np.random.default_rng(0).multinomial(n, exact, size=2000)
        floor = float(np.quantile(0.5 * np.abs(counts / n - exact).sum(-1), 0.999))
        assert total_variation(emp, exact) < floor, (total_variation(emp, exact), floor)
        mdlm_like = _chain_law(table, steps, "loop", 0.0)  # same α schedule without remasking
        assert total_variation(exact, mdlm_like) > 2 * floor  # remasking is visible to the test
