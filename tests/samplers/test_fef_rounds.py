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


def _pair(seed, vocab=5):
    rng = np.random.default_rng(seed)
    p, d = rng.dirichlet(np.ones(vocab)), rng.dirichlet(np.ones(vocab))
    return p, d, float(np.minimum(p, d).sum())


def _synthetic(p, d, length, draft_distinct):
    """Outputs depend only on how many tokens are filled: position i gets P when exactly i
    positions are filled (its own target context when all positions are committed left to right
    in one step), D otherwise. With ``draft_distinct`` the draft call (batch = num_samples) returns
    D everywhere, so even the first slot sees the pair (P, D)."""
    logp, logd = jnp.log(jnp.asarray(p)), jnp.log(jnp.asarray(d))

    def make(num_samples):
        def fn(z, t):
            filled = (z < len(p)).sum(-1)  # [B]
            own = filled[:, None] == jnp.arange(length)[None, :]
            if draft_distinct and z.shape[0] == num_samples:
                own = jnp.zeros_like(own)
            return jnp.where(own[..., None], logp, logd)
        return fn
    return make


@pytest.mark.parametrize("draft_distinct", [True, False])
def test_measured_rounds_match_recursion(draft_distinct):
    length, n = 8, 20_000
    p, d, a = _pair(3)
    with jax.enable_x64(True):
        fn = _synthetic(p, d, length, draft_distinct)(n)
        _, info = sample_fef(fn, jax.random.key(0), num_samples=n, length=length, steps=1, mask_id=5,
                             vocab_size=5, selection="random")
        rounds = np.asarray(info["rounds"][:, 0], np.float64)
    predicted = fr.rounds_recursion(length, a) if draft_distinct else float(fr.step_rounds(length, a))
    # rounds = 1 + Binomial(#proposable slots - 1, 1 - a): its standard error is known exactly.
    slots = length if draft_distinct else length - 1
    stderr = np.sqrt((slots - 1) * a * (1 - a) / n)
    print(f"a={a:.4f} draft_distinct={draft_distinct}: measured {rounds.mean():.4f} predicted {predicted:.4f} "
          f"(stderr {stderr:.4f})")
    assert abs(rounds.mean() - predicted) < 0.01 * predicted
    assert abs(rounds.mean() - predicted) < 4 * stderr
    report = fr.rounds_report(info, a)
    assert report[0]["k"] == length and abs(report[0]["measured"] - rounds.mean()) < 1e-12
