"""DSL samplers (METHODS §4.4 d1–d4) on the exact DSL denoiser ``dsl_denoise_fn(lang, anchors)``
(forward–backward under the soft evidence ``⟨z, e(v)⟩``) of a Markov chain, L = 3, V = 4, d = 8
random unit anchors.

"Within Monte Carlo noise" means: TV(empirical law of n draws, exact law) at most the 99.9%
quantile of the same TV for n exact draws (numpy multinomial, ``_tv_bound``).

Numbers measured with n = 100,000 draws (TV of exact draws: mean 0.0073, q99 0.0098; H = 3.309
nats) for the SL-SDE, geometric grid s_min = 0.01 -> s_max = 80:

=====================================  ======  ======  ======  ======  ======  ======
η = 1, init "zero" (exact SL)          K = 4   8       16      32      64      128
TV to the data law                     0.171   0.069   0.012   0.0071  0.0068  0.0062
NLL of the samples (H = 3.309)         4.089   3.502   3.323   3.304   3.304   3.307
=====================================  ======  ======  ======  ======  ======  ======

Heun in y = z/s is exact on the homogeneous part (y ∝ 1/s) but inflates the step's drift by
(r+1)/2 and its noise variance by (r+1)²/4 (r = s'/s), hence the bias at small K. At K = 16 / 64:
η = 1, init "gaussian": TV 0.012 / 0.007; η = 1, "norm" init (s_min = 3): 0.067 / 0.068 (the
start |z| = 3 is not the SL marginal: a bias that K does not remove), with the sensitive grid
0.075 / 0.068; the DSL-LLaDA defaults (η = 0.3, norm, sensitive, s_max = 80): 0.125 / 0.080
with NLL 3.05 / 3.16 < H (low temperature); η = 0.05: 0.151 / 0.092, NLL 3.01 / 3.14.
Hybrid at 48 NFE (n = 20,000, exact-draw TV ≈ 0.016): defaults (η_sde 0.3) TV 0.053, NLL 3.22,
97-99% of positions kept at the switch; η_sde = 1 with init "zero" TV 0.025; DSL ReMDM-loop
T = 48 (noisy encoding, top-p 1) TV 0.020.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.processes.localization import random_anchors
from dlm_jax.samplers import DSL, SAMPLERS, get_sampler
from dlm_jax.samplers.localization import discrete_schedule, self_correct_step
from dlm_jax.samplers.localization_sde import snr_grid
from dlm_jax.samplers.remdm import remdm_weights
from dlm_jax.testing.oracles import (JointTable, MarkovChainLanguage, all_sequences, dsl_denoise_fn, empirical_law,
                                     total_variation)

V, L, D = 4, 3, 8
N = 20_000
LANG = MarkovChainLanguage.random(0, V, L)
ANCHORS = random_anchors(jax.random.key(0), V, D)


def _tv_bound(law, n, q=0.999, reps=4000):
    """q-quantile of TV(empirical, law) for n exact draws."""
    rng = np.random.default_rng(0)
    return float(np.quantile(0.5 * np.abs(rng.multinomial(n, law, size=reps) / n - law).sum(-1), q))


def _draw(name, n=N, seed=1, lang=LANG, **kw):
    """``n`` jitted draws of sampler ``name`` on the exact DSL denoiser: ``(law [V^L], info)``."""
    fn = dsl_denoise_fn(lang, ANCHORS)
    with jax.enable_x64(True):
        tokens, info = jax.jit(lambda k: get_sampler(name)(fn, k, num_samples=n, length=lang.length, vocab_size=V,
                                                            anchors=ANCHORS, **kw))(jax.random.key(seed))
    return empirical_law(np.asarray(tokens), V), {k: np.asarray(v) for k, v in info.items()}


def _state_probs(s_max):
    """Exact denoiser probabilities ``[Z, L, V]`` at every discrete state (mask id V) encoded
    cleanly (masked -> 0, decoded -> s_max·e(x)), float64."""
    zs = all_sequences(V + 1, L)
    e = np.asarray(ANCHORS, np.float64)
    z = np.where((zs == V)[..., None], 0.0, s_max * e[np.minimum(zs, V - 1)])
    with jax.enable_x64(True):
        return np.asarray(LANG.posteriors(jnp.asarray(z @ e.T)), np.float64)


@functools.lru_cache(maxsize=None)
def _chain_law(source, s_max, steps, self_correct=False, eta=0.02):
    """Exact output law over [V]^L of the DSL ReMDM-loop chain (top-p 1) from all-masked, T =
    ``steps``, by enumeration of the (V+1)^L states; ``source``: "dsl" (clean encoding at
    ``s_max``) or "masked" (the MDLM oracle's masked posteriors)."""
    zs = all_sequences(V + 1, L)
    with jax.enable_x64(True):
        probs = _state_probs(s_max) if source == "dsl" else np.asarray(LANG.masked_posteriors(jnp.asarray(zs), V))
    _, sched = discrete_schedule("remdm_loop", steps, eta)
    dist = np.zeros(len(zs))
    dist[-1] = 1.0  # all masked
    onehot = np.eye(V)[np.minimum(zs, V - 1)]
    for a_t, a_s, sig in zip(*(np.asarray(sched[k], np.float64) for k in ("alpha_t", "alpha_s", "sigma"))):
        with jax.enable_x64(True):
            w = np.asarray(remdm_weights(jnp.asarray(probs), jnp.asarray(zs), sig, a_s, a_t, mask_id=V), np.float64)
        if self_correct:  # decoded: (1 − σ) δ_z + σ p; masked: the MDLM rate (σ = 0), nothing is remasked
            with jax.enable_x64(True):
                w0 = np.asarray(remdm_weights(jnp.asarray(probs), jnp.asarray(zs), 0.0, a_s, a_t, mask_id=V))
            dec = np.concatenate([(1 - sig) * onehot + sig * probs, np.zeros(zs.shape + (1,))], -1)
            w = np.where((zs == V)[..., None], w0, dec)
        trans = np.ones((len(zs), len(zs)))
        for j in range(L):
            trans *= w[:, j, zs[:, j]]
        dist = dist @ trans
    out = np.where(zs == V, probs.argmax(-1), zs)
    return np.bincount(out @ (V ** np.arange(L - 1, -1, -1)), weights=dist, minlength=V**L)


def test_roar_reproduces_the_joint_law():
    """T = L, clean encoding: the chain rule over positions in a random order -> the data law.
    T = 1: every position drawn in parallel from its marginal -> the product of marginals."""
    law = LANG.law()
    emp, info = _draw("dsl_roar", steps=L, encode="clean")
    assert int(info["nfe"]) == L
    assert total_variation(emp, law) <= _tv_bound(law, N)
    seqs = all_sequences(V, L)
    product = np.prod(LANG.marginals()[np.arange(L), seqs], axis=-1)
    assert total_variation(product, law) > 0.1  # the factorisation error is real (0.1995)
    emp1, info1 = _draw("dsl_roar", steps=1)  # noisy encoding: nothing is revealed before the one step
    assert int(info1["nfe"]) == 1
    assert total_variation(emp1, product) <= _tv_bound(product, N)


def test_remdm_loop_endpoint_equals_the_masked_remdm_loop():
    """Clean encoding at s_max = 100: the exact DSL posteriors equal the MDLM masked posteriors at
    every discrete state (endpoint equivalence), so the chain's law equals the masked ReMDM-loop's;
    the jitted sampler matches it within Monte Carlo noise."""
    with jax.enable_x64(True):
        masked = np.asarray(LANG.masked_posteriors(jnp.asarray(all_sequences(V + 1, L)), V), np.float64)
    np.testing.assert_allclose(_state_probs(100.0), masked, rtol=0, atol=1e-12)
    law_dsl, law_masked = _chain_law("dsl", 100.0, 8), _chain_law("masked", 0.0, 8)
    np.testing.assert_allclose(law_dsl, law_masked, rtol=0, atol=1e-12)
    assert total_variation(law_masked, LANG.law()) > 0.01  # 8 loop steps are not exact: a real target
    emp, info = _draw("dsl_remdm_loop", steps=8, encode="clean", top_p=1.0)
    assert int(info["nfe"]) == 9
    assert total_variation(emp, law_dsl) <= _tv_bound(law_dsl, N)
    with jax.enable_x64(True):  # the masked sampler itself, on the MDLM oracle
        masked_tokens, _ = jax.jit(lambda k: get_sampler("remdm_loop")(
            LANG.denoise_fn(V), k, num_samples=N, length=L, steps=8, vocab_size=V, top_p=1.0))(jax.random.key(5))
    assert total_variation(empirical_law(np.asarray(masked_tokens), V), law_masked) <= _tv_bound(law_masked, N)


def test_self_correction_law():
    """s_max = 4 (clean), η = 0.1, T = 32: visible tokens carry soft evidence, so self-correction
    (a position picked for remasking is re-drawn from p at the visible position) has its own
    exact law, 0.06 in TV from carry-over's (under both ReMDM loop rules); the sampler matches it
    within Monte Carlo noise."""
    law_sc, law_carry = _chain_law("dsl", 4.0, 32, True, 0.1), _chain_law("dsl", 4.0, 32, False, 0.1)
    n = 4 * N
    bound = _tv_bound(law_sc, n)
    assert total_variation(law_sc, law_carry) > 4 * bound
    emp, _ = _draw("dsl_remdm_loop", n=n, steps=32, eta=0.1, encode="clean", s_max=4.0, top_p=1.0,
                   self_correct=True)
    assert total_variation(emp, law_sc) <= bound


def test_self_correction_keeps_the_schedule():
    """Self-correction remasks nothing, so masked positions unmask at the MDLM rate: the masked
    fraction follows m' = m (1 − α_s)/(1 − α_t), i.e. 1 − α_s (0.1 in the loop phase) wherever
    the schedule is consistent; ReMDM's rate (1 − α_s − σα_t)/(1 − α_t) would empty the mask
    during the loop phase (0.094 lower at T = 64, η = 0.1). 20,000 positions, s.e. <= 0.0036."""
    steps = 64
    _, sched = discrete_schedule("remdm_loop", steps, 0.1)
    a_t, a_s, sig = (np.asarray(sched[k], np.float64) for k in ("alpha_t", "alpha_s", "sigma"))
    logp = jnp.log(jnp.full((200, 100, V), 1.0 / V))

    def step(z, st):
        z = self_correct_step(jax.random.key(st[0].astype(jnp.int32)), logp, z, st[3], st[2], st[1], mask_id=V)
        return z, jnp.mean(z == V)

    xs = jnp.asarray(np.stack([np.arange(steps), a_t, a_s, sig], 1), jnp.float32)
    got = np.asarray(jax.jit(lambda: jax.lax.scan(step, jnp.full((200, 100), V, jnp.int32), xs)[1])())
    want, remdm_rate, m, m_old = [], [], 1.0, 1.0
    for k in range(steps):
        m *= (1.0 - a_s[k]) / (1.0 - a_t[k])
        m_old *= (1.0 - a_s[k] - sig[k] * a_t[k]) / (1.0 - a_t[k])
        want.append(m), remdm_rate.append(m_old)
    np.testing.assert_allclose(got, want, atol=0.013)
    np.testing.assert_allclose(want, 1.0 - a_s, atol=0.0065)  # 0.0062 at the step that straddles t_on
    assert np.max(np.abs(np.asarray(want) - remdm_rate)) > 0.09


def test_sde_with_eta_one_approaches_the_data_law():
    """Exact SL (η = 1, z = 0 start): Heun's bias at K = 4 vanishes by K = 32; the DSL-LLaDA
    defaults (η = 0.3) keep a low-temperature bias (numbers in the module docstring)."""
    law, h = LANG.law(), LANG.entropy()
    exact = dict(eta=1.0, start="zero", grid="geometric")
    emp4, info4 = _draw("dsl_sde", steps=4, **exact)
    emp32, info32 = _draw("dsl_sde", steps=32, **exact)
    assert (int(info4["nfe"]), int(info32["nfe"])) == (9, 65)
    assert total_variation(emp4, law) > 0.13  # 0.171
    assert total_variation(emp32, law) <= _tv_bound(law, N)
    emp, info = _draw("dsl_sde", steps=16)
    assert int(info["nfe"]) == 33
    assert 0.09 < total_variation(emp, law) < 0.16  # 0.125
    seqs = all_sequences(V, L)
    nll = -(emp * np.asarray(LANG.log_prob(jnp.asarray(seqs)))).sum()
    assert nll < h - 0.15  # 3.05 vs H = 3.31: sharper than the data


def test_snr_grids():
    np.testing.assert_allclose(snr_grid("geometric", 4, 0.01, 100.0), [0.01, 0.1, 1.0, 10.0, 100.0], rtol=1e-12)
    g = snr_grid("sensitive", 16, 3.0, 80.0)  # n1 = 1, n2 = 14, n3 = 1
    np.testing.assert_allclose(g[[0, 1, 15, 16]], [3.0, 7.0, 74.0, 80.0], rtol=1e-12)
    np.testing.assert_allclose(np.diff(np.log(g[1:16])), np.log(74 / 7) / 14, rtol=1e-9)
    g10 = snr_grid("sensitive", 10, 3.0, 80.0)  # DSL-LLaDA's n3 would be 0 (ends at 74): one step moved
    assert len(g10) == 11 and g10[-1] == 80.0 and g10[-2] == 74.0 and g10[1] == 7.0


def test_hybrid_budget_and_switch():
    """NFE = steps. Nothing confident at the switch (tiny s_switch, threshold 1): the discrete
    phase alone, whose law is the exact T_d-step chain's. Near-exact SDE phase: TV recorded."""
    law8 = _chain_law("dsl", 100.0, 8)
    emp, info = _draw("dsl_hybrid", steps=12, sde_steps=1, start="zero", s_min=1e-3, s_switch=2e-3, threshold=1.0,
                      encode="clean", top_p=1.0)
    assert int(info["nfe"]) == 12 and float(info["kept"]) == 0.0
    assert total_variation(emp, law8) <= _tv_bound(law8, N)
    emp, info = _draw("dsl_hybrid", steps=48, sde_eta=1.0, start="zero", top_p=1.0)
    assert int(info["nfe"]) == 48 and 0.9 < float(info["kept"]) < 1.0  # 0.975
    assert total_variation(emp, LANG.law()) < 0.04  # 0.025 (exact draws: ~0.016)


def _sum_table(v, length):
    """p*(x) > 0 only where Σ x ≡ 0 (mod V): given any L − 1 tokens the last one is determined."""
    seqs = all_sequences(v, length)
    weights = np.random.default_rng(0).dirichlet(np.ones(len(seqs))) * (seqs.sum(-1) % v == 0)
    return JointTable(weights, v, length)


STEPS_NFE = {"dsl_remdm_loop": (4, 5), "dsl_roar": (2, 2), "dsl_sde": (4, 9), "dsl_hybrid": (8, 8)}


@pytest.mark.parametrize("name", DSL)
def test_fixed_positions_and_nfe_under_jit_with_traced_anchors(name):
    """Rows with different prompts and one free position each: fixed tokens come back unchanged,
    the free one is the only completion of the table, NFE is exact; anchors are a jit argument."""
    v, length, b = 3, 4, 24
    table = _sum_table(v, length)
    anchors = random_anchors(jax.random.key(3), v, D)
    rng = np.random.default_rng(1)
    free = rng.integers(0, length, size=b)
    fixed = np.arange(length)[None, :] != free[:, None]
    tokens = rng.integers(0, v, size=(b, length))
    expect = tokens.copy()
    expect[np.arange(b), free] = 0
    expect[np.arange(b), free] = (-expect.sum(-1)) % v
    steps, nfe = STEPS_NFE[name]

    @jax.jit
    def run(key, a):
        return get_sampler(name)(dsl_denoise_fn(table, a), key, num_samples=b, length=length, steps=steps,
                                 vocab_size=v, anchors=a, fixed=jnp.asarray(fixed), fixed_tokens=jnp.asarray(tokens))

    with jax.enable_x64(True):
        out, info = run(jax.random.key(2), anchors)
    np.testing.assert_array_equal(np.asarray(out), expect)
    assert int(info["nfe"]) == nfe


def test_dsl_family_is_registered():
    assert set(DSL) == {"dsl_remdm_loop", "dsl_sde", "dsl_roar", "dsl_hybrid"} and set(DSL) <= set(SAMPLERS)


@pytest.mark.parametrize("name", DSL)
@pytest.mark.parametrize("width", [V - 1, V + 1])
def test_wrong_width_denoiser_raises(name, width):
    fn = lambda z: jnp.zeros(z.shape[:-1] + (width,))  # noqa: E731
    with pytest.raises(ValueError, match=rf"^denoise_fn: output width {width}; expected vocab_size {V} ") as err:
        get_sampler(name)(fn, jax.random.key(0), num_samples=2, length=L, steps=STEPS_NFE[name][0], vocab_size=V,
                          anchors=ANCHORS)
    assert "\n" not in str(err.value)


BAD = [
    ("dsl_sde", dict(steps=0), r"^steps: 0; expected an int >= 1"),
    ("dsl_remdm_loop", dict(steps=0), r"^steps: 0; expected an int >= 1"),
    ("dsl_sde", dict(eta=-0.1), r"^eta: -0.1; expected a finite number in \[0.0"),
    ("dsl_remdm_loop", dict(eta=-0.1), r"^eta: -0.1; expected"),
    ("dsl_hybrid", dict(sde_eta=-1.0), r"^sde_eta: -1.0; expected"),
    ("dsl_sde", dict(s_max=0.0), r"^s_max: 0.0; expected a finite number in \(0.0"),
    ("dsl_sde", dict(grid="geometric", s_max=-1.0), r"^s_max: -1.0; expected"),
    ("dsl_remdm_loop", dict(s_max=0.0), r"^s_max: 0.0; expected"),
    ("dsl_roar", dict(s_max=-5.0), r"^s_max: -5.0; expected"),
    ("dsl_hybrid", dict(s_switch=0.0), r"^s_switch: 0.0; expected"),
    ("dsl_sde", dict(grid="linear"), r"^grid: 'linear'; expected one of \('geometric', 'sensitive'\)"),
    ("dsl_sde", dict(s_max=50.0), r"^s_min, s_max: \(3.0, 50.0\); expected s_min < 7.0 and s_max > 74.0"),
    ("dsl_sde", dict(steps=2), r"^steps: 2; expected an int >= 3 for grid 'sensitive'"),
    ("dsl_sde", dict(start="uniform"), r"^start: 'uniform'; expected one of"),
    ("dsl_sde", dict(top_k=0), r"^top_k: 0; expected an int >= 1"),
    ("dsl_remdm_loop", dict(encode="soft"), r"^encode: 'soft'; expected one of \('noisy', 'clean'\)"),
    ("dsl_remdm_loop", dict(self_correct=1), r"^self_correct: 1; expected a bool"),
    ("dsl_roar", dict(steps=L + 1), rf"^steps: {L + 1}; expected an int >= 1 and <= {L}"),
    ("dsl_hybrid", dict(steps=4), r"^steps: 4; expected an int >= 5"),
    ("dsl_hybrid", dict(discrete="ddim"), r"^discrete: 'ddim'; expected one of \('remdm_loop', 'mdlm'\)"),
    ("dsl_hybrid", dict(threshold=1.5), r"^threshold: 1.5; expected"),
    ("dsl_roar", dict(anchors=ANCHORS[:, :3]), r"^anchors: 'row \d has norm [\d.]+'; expected unit-norm rows"),
    ("dsl_sde", dict(anchors=ANCHORS * 1.1), r"^anchors: 'row \d has norm 1.1'; expected unit-norm rows"),
    ("dsl_remdm_loop", dict(anchors=ANCHORS[: V - 1]),
     rf"^anchors: 'shape \({V - 1}, {D}\)'; expected shape \[{V}, d\]"),
    ("dsl_hybrid", dict(anchors=ANCHORS[0]), r"^anchors: 'shape \(8,\) dtype float32'; expected a 2-D float array"),
]


@pytest.mark.parametrize("name,kwargs,pattern", BAD)
def test_bad_input_one_line_before_tracing(name, kwargs, pattern):
    calls = []

    def fn(z):
        calls.append(1)
        return jnp.zeros(z.shape[:-1] + (V,))

    args = dict(num_samples=2, length=L, steps=STEPS_NFE[name][0], vocab_size=V, anchors=ANCHORS)
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern) as err:
        get_sampler(name)(fn, jax.random.key(0), **args)
    assert "\n" not in str(err.value)
    assert not calls  # options and anchors fail before the denoiser is even traced
