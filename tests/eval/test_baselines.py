"""The no-context baselines against hand-computed values."""

import math

import numpy as np

from dlm_jax.eval.baselines import UnigramEvaluator, sample_unigram_entropy_bits
from dlm_jax.eval.evaluators import EvalContext


def _ctx(splits):
    return EvalContext(config=None, method=None, batches=lambda split: iter(splits[split]), compile=None,
                       to_device=None, rng=None)


def test_unigram_cross_entropy_is_exact_with_add_half_smoothing():
    train = [{"tokens": np.array([[0, 0, 1, 9]]), "loss_mask": np.array([[1, 1, 1, 0]])}]  # 9 is padding
    valid = [{"tokens": np.array([[0, 1, 2]]), "loss_mask": np.ones((1, 3))}]
    out = UnigramEvaluator(dict(split="validation", batches=1, train_batches=1)).run(
        _ctx({"train": train, "validation": valid}), params=None)
    counts = np.array([2, 1, 0]) + 0.5  # ids 0..2 (the masked 9 is not counted)
    expected = -np.mean(np.log(counts[[0, 1, 2]] / counts.sum()))
    assert math.isclose(out["unigram_ce"], expected, rel_tol=1e-12)
    assert math.isclose(out["unigram_bits"], expected / math.log(2), rel_tol=1e-12) and out["num_tokens"] == 3


def test_sample_unigram_entropy_bits():
    assert sample_unigram_entropy_bits(np.array([[0, 1, 2, 3], [1, 1, 1, 1]])) == 1.0
    h = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert math.isclose(sample_unigram_entropy_bits(np.array([[0, 0, 1]])), h)
