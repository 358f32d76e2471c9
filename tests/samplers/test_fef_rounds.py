"""FeF speculative-round statistics: the recursion R(K, a) of METHODS §5.4 against its closed
form and against rounds measured by the sampler on constructed constant-overlap models (T11)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.samplers import fef_rounds as fr
from dlm_jax.samplers.speculative import sample_fef


@pytest.mark.parametrize("k", [1, 2, 3, 7, 16, 40])
@pytest.mark.parametrize("a", [0.0, 0.25, 0.6, 0.93, 1.0])
def test_recursion_equals_closed_form(k, a):
    assert abs(fr.rounds_recursion(k, a) - (1 + (k - 1) * (1 - a))) < 1e-12
    assert abs(fr.round_law(k, a).sum() - 1.0) < 1e-12


def test_speedup_limits_and_rows():
    assert fr.speedup(16, 1.0) == 16.0 and fr.speedup(16, 0.0) == 1.0
    assert abs(fr.speedup(2_000, 0.8) - fr.speedup_large_k(0.8)) < 0.02  # K / (1 + (K-1)(1-a)) -> 1/(1-a)
    assert fr.rows_recursion(6, 0.0) == 21.0 and fr.rows_recursion(6, 1.0) == 6.0  # K(K+1)/2 and K
    assert abs(float(fr.step_rounds(8, 0.4)) - fr.rounds_recursion(7, 0.4)) < 1e-12
    assert float(fr.step_rounds(1, 0.4)) == 0.0  # K = 1: the free first slot is the whole step
    # K = 1 per step is exact decoding: one draft call and one row per step.
    assert fr.schedule_cost([1] * 16, 0.3) == dict(nfe=16.0, rows=16.0, rounds=0.0, draft_calls=16.0)
    # a = 1: one round per step, lookahead drafts every step: rows = L (as exact decoding), calls = 1 + steps.
    assert fr.schedule_cost([4] * 4, 1.0) == dict(nfe=5.0, rows=16.0, rounds=4.0, draft_calls=1.0)


def _pair(seed, vocab=5):
    rng = np.random.default_rng(seed)
    p, d = rng.dirichlet(np.ones(vocab)), rng.dirichlet(np.ones(vocab))
    return p, d, float(np.minimum(p, d).sum())


def _synthetic(p, d, length):
    """Outputs depend only on how many tokens are filled: position i gets P when exactly i
    positions are filled, D otherwise. Committing blocks left to right (one block per step, K =
    block length), every verified slot sees the pair (target P, draft D) — also after a draft
    refresh, and in a step whose drafts came from the previous step's lookahead row — while the
    free first slot of a step gets P from its draft call."""
    logp, logd = jnp.log(jnp.asarray(p)), jnp.log(jnp.asarray(d))

    def fn(z, t):
        filled = (z < len(p)).sum(-1)  # [B]
        own = filled[:, None] == jnp.arange(length)[None, :]
        return jnp.where(own[..., None], logp, logd)
    return fn


@pytest.mark.parametrize("steps", [1, 2])
def test_measured_cost_matches_recursion(steps):
    """Rounds, sequential calls and rows per sample against ``R(K − 1, a)`` / ``schedule_cost``. Each
    verified slot is decided (accepted, or first rejected) exactly once, independently w.p. a, so
    ``rounds = steps + Binomial(steps·(K − 2), 1 − a)`` and a draft call follows each non-final
    step's last-slot rejection: ``nfe = 1 + rounds + Binomial(steps − 1, 1 − a)``."""
    length, n = 8, 20_000
    k = length // steps
    p, d, a = _pair(3)
    with jax.enable_x64(True):
        _, info = sample_fef(_synthetic(p, d, length), jax.random.key(steps), num_samples=n, length=length,
                             steps=steps, block_length=k, mask_id=5, vocab_size=5, selection="random")
    rounds = np.asarray(info["rounds"], np.float64)
    nfe, rows = np.asarray(info["nfe"], np.float64), np.asarray(info["rows"], np.float64)
    cost = fr.schedule_cost([k] * steps, a)
    checks = [("rounds/step", rounds.mean(0), float(fr.step_rounds(k, a)), np.sqrt((k - 2) * a * (1 - a) / n)),
              ("nfe", nfe.mean(), cost["nfe"], np.sqrt(((k - 2) * steps + steps - 1) * a * (1 - a) / n)),
              ("rows", rows.mean(), cost["rows"], rows.std(ddof=1) / np.sqrt(n))]
    for name, measured, predicted, stderr in checks:
        print(f"a={a:.4f} steps={steps} {name}: measured {measured} predicted {predicted:.4f} (stderr {stderr:.4f})")
        assert np.all(np.abs(measured - predicted) < 0.01 * predicted)
        assert np.all(np.abs(measured - predicted) < 4 * stderr)
    np.testing.assert_array_equal(nfe, np.asarray(info["draft_calls"]) + rounds.sum(1))
    assert abs(fr.acceptance_rate(info) - a) < 4 * np.sqrt(a * (1 - a) / (steps * (k - 1) * n))
    # The batched program: compaction runs at most twice the useful rows plus one bucket per call.
    assert int(info["rows_batched"]) <= 2 * rows.sum() + int(info["nfe_batched"]) * n * (k + 1) / 64
    report = fr.rounds_report(info, a)
    assert report[0]["k"] == k and abs(report[0]["measured"] - rounds[:, 0].mean()) < 1e-12
