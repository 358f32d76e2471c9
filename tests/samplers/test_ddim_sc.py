"""DDIM with self-conditioning (METHODS §3.4) on an exact denoiser, and on-device length beam / MBR.

One-token world (§3.6 check 3): a codebook of V = 8 unit vectors in d = 8 and a prior π; the exact
posterior mean E[z_0 | z_t] = Σ_v w_v e_v with w ∝ π_v exp((α⟨z, e_v⟩ − α²/2)/σ²). Deterministic
DDIM with K = 200 steps maps N(0, I) to a token histogram within total variation 0.015 of π
(measured 0.0049 on 20,000 draws; 0.005 at K = 1,000: 200 steps have converged); with K = 2 it is
biased: TV 0.091 (K = 1: 0.95, every draw rounds the prior mean; K = 5: 0.030; K = 20: 0.009): the
baseline of the SC-gap study.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.processes.embedding_diffusion import alpha_sigma
from dlm_jax.samplers import ddim_sc as dd
from dlm_jax.samplers import mbr

V, D = 8, 8


def _world():
    e = jax.random.normal(jax.random.key(0), (V, D))
    e = e / jnp.linalg.norm(e, axis=-1, keepdims=True)
    pi = jax.random.dirichlet(jax.random.key(1), jnp.ones(V))
    return e, pi


def _exact_denoiser(e, pi, schedule="interchangeable"):
    def denoise(z, sc, t):
        del sc  # the exact posterior mean needs no self-conditioning
        a, s = alpha_sigma(t, schedule)
        a, s2 = a[..., None], jnp.maximum(s, 1e-6)[..., None] ** 2
        logits = jnp.log(pi) + (a * (z @ e.T) - 0.5 * a * a) / s2
        return jax.nn.softmax(logits, -1) @ e

    return denoise


def _histogram(steps, n=20_000):
    e, pi = _world()
    zhat, info = jax.jit(lambda k: dd.ddim_sc(_exact_denoiser(e, pi), k, shape=(n, 1, D), steps=steps))(
        jax.random.key(2))
    tokens = np.asarray(jnp.argmax(zhat[:, 0] @ e.T, -1))
    return np.bincount(tokens, minlength=V) / n, np.asarray(pi), int(info["nfe"])


def test_exact_denoiser_ddim_reproduces_the_prior_and_records_the_two_step_bias():
    hist, pi, nfe = _histogram(200)
    assert nfe == 200
    tv = 0.5 * np.abs(hist - pi).sum()
    assert tv < 0.015, (tv, hist, pi)
    hist2, _, nfe2 = _histogram(2)
    tv2 = 0.5 * np.abs(hist2 - pi).sum()
    assert nfe2 == 2
    assert 0.08 < tv2 < 0.10, tv2  # measured 0.091: two deterministic steps over-select likely tokens


def test_grids_cedi_and_gap_recording():
    tau, m = dd.time_grids(4, "ddim", t_end=0.2)
    np.testing.assert_allclose(np.asarray(tau), [1.0, 0.8, 0.6, 0.4, 0.2], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(m), np.asarray(tau))
    _, m = dd.time_grids(4, "cedi", cedi_end=0.99)
    np.testing.assert_allclose(np.asarray(m), [1.0, 0.9975, 0.995, 0.9925, 0.99], atol=1e-6)
    e, pi = _world()
    seen = []

    def denoise(z, sc, t):  # records the model times it is called with (a pure function of its inputs)
        seen.append(t)
        return _exact_denoiser(e, pi)(z, sc, t)

    zhat, info = dd.ddim_sc(denoise, jax.random.key(0), shape=(3, 2, D), steps=3, record_gap=True)
    assert int(info["nfe"]) == 3 and int(info["gap_nfe"]) == 6
    # The exact denoiser ignores self-conditioning: its self-conditioning gap is exactly zero.
    np.testing.assert_allclose(np.asarray(info["sc_gap"]), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"^steps: 0; expected an int >= 1$"):
        dd.ddim_sc(denoise, jax.random.key(0), shape=(1, 1, D), steps=0)
    with pytest.raises(ValueError, match=r"^sampler: 'ancestral'; expected one of \('ddim', 'cedi'\)$"):
        dd.ddim_sc(denoise, jax.random.key(0), shape=(1, 1, D), steps=2, mode="ancestral")


def test_sentence_bleu_equals_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu")
    rng = np.random.default_rng(0)
    pairs = [([5, 6, 7, 8, 9], [5, 6, 7, 8, 9]), ([5, 6, 7, 8, 9], [9, 8, 7, 6, 5]), ([5, 5, 5, 5], [5, 5, 6]),
             ([7], [7, 8, 9]), ([5, 6, 5, 6, 5, 6, 7], [6, 5, 6, 7, 7]), ([4, 4, 9], [10, 11, 12, 13])]
    pairs += [(list(rng.integers(4, 9, rng.integers(1, 12))), list(rng.integers(4, 9, rng.integers(1, 12))))
              for _ in range(30)]
    width = 12
    hyp = np.zeros((len(pairs), width), np.int32)
    ref = np.zeros((len(pairs), width), np.int32)
    for i, (h, r) in enumerate(pairs):
        hyp[i, :len(h)], ref[i, :len(r)] = h, r
    hl = np.asarray([len(h) for h, _ in pairs])
    rl = np.asarray([len(r) for _, r in pairs])
    ours = np.asarray(jax.jit(jax.vmap(mbr.sentence_bleu))(hyp, hl, ref, rl))
    theirs = [sacrebleu.sentence_bleu(" ".join(map(str, h)), [" ".join(map(str, r))], tokenize="none").score
              for h, r in pairs]
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_mbr_picks_the_consensus_and_length_beam():
    cands = jnp.asarray([[[5, 6, 7, 8, 0], [5, 6, 7, 9, 0], [9, 9, 9, 9, 9], [5, 6, 7, 8, 0]]])
    lengths = jnp.asarray([[4, 4, 5, 4]])
    select = jax.jit(mbr.mbr_select)
    assert int(select(cands, lengths)[0]) == 0  # the sequence two candidates agree on
    assert int(select(cands[:, :1], lengths[:, :1])[0]) == 0
    logits = jnp.log(jnp.asarray([[0.5, 0.1, 0.3, 0.05, 0.05]]))
    np.testing.assert_array_equal(np.asarray(mbr.top_lengths(logits, 2)), [[2, 1]])  # length 0 never
