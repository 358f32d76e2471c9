"""Diversity metrics on hand-made token lists, against values worked out by hand."""

import math

import numpy as np
import pytest

from dlm_jax.eval import quality
from dlm_jax.eval.baselines import sample_unigram_entropy_bits

ROWS = [[1, 1, 2, 3], [1, 1, 1, 1], [1, 1, 2, 3]]


def test_unigram_entropy_by_hand():
    # row 0: p = (1/2, 1/4, 1/4) -> 1.5 bits = 1.5 ln 2 nats; row 1: 0; row 2 = row 0
    assert quality.unigram_entropy(ROWS) == pytest.approx((1.5 * math.log(2) * 2 + 0.0) / 3, abs=1e-15)
    arr = np.array(ROWS)
    assert quality.unigram_entropy(arr) / math.log(2) == pytest.approx(sample_unigram_entropy_bits(arr), abs=1e-12)
    assert quality.unigram_entropy([[7] * 5, list(range(8))]) == pytest.approx(math.log(8) / 2, abs=1e-15)


def test_sequence_entropy_by_hand():
    # two distinct sequences with counts 2 and 1
    assert quality.sequence_entropy(ROWS) == pytest.approx(-(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3),
                                                           abs=1e-15)
    assert quality.sequence_entropy([[1, 2], [2, 1], [3, 3], [4]]) == pytest.approx(math.log(4), abs=1e-15)
    assert quality.sequence_entropy([[5, 5]] * 6) == 0.0


def test_distinct_n_by_hand():
    # unigrams: 12 tokens, distinct {1, 2, 3}
    assert quality.distinct_n(ROWS, 1) == 3 / 12
    # bigrams: (1,1),(1,2),(2,3) | (1,1)x3 | (1,1),(1,2),(2,3): 9 in all, 3 distinct
    assert quality.distinct_n(ROWS, 2) == 3 / 9
    # 4-grams: one per row, (1,1,2,3) twice and (1,1,1,1): 2 distinct of 3
    assert quality.distinct_n(ROWS, 4) == 2 / 3
    assert quality.distinct_n([[1, 2]], 3) == 0.0  # no trigram at all


def test_repetition_n_by_hand():
    # within rows: row0 unigrams 1 - 3/4; row1 1 - 1/4; row2 as row0
    assert quality.repetition_n(ROWS, 1) == pytest.approx(((1 - 3 / 4) * 2 + (1 - 1 / 4)) / 3, abs=1e-15)
    # bigrams: row0 (3 distinct of 3) -> 0; row1 (1 of 3) -> 2/3
    assert quality.repetition_n(ROWS, 2) == pytest.approx((0 + 2 / 3 + 0) / 3, abs=1e-15)
    assert quality.repetition_n([[1, 2, 1, 2, 1, 2]], 2) == pytest.approx(1 - 2 / 5, abs=1e-15)


def test_diversity_metrics_all_keys_and_ragged_rows():
    rows = [[4, 5, 6], [4], []]
    m = quality.diversity_metrics(rows)
    assert m["num_samples"] == 3.0
    assert m["distinct_1"] == 3 / 4 and m["distinct_2"] == 1.0 and m["distinct_4"] == 0.0
    assert m["unigram_entropy"] == pytest.approx(math.log(3) / 2, abs=1e-15)  # the empty row is skipped
    assert m["unigram_entropy_bits"] == pytest.approx(m["unigram_entropy"] / math.log(2), abs=1e-15)
    assert m["sequence_entropy"] == pytest.approx(math.log(3), abs=1e-15)
    assert set(m) == {"unigram_entropy", "unigram_entropy_bits", "sequence_entropy", "num_samples",
                      *(f"distinct_{n}" for n in range(1, 5)), *(f"repetition_{n}" for n in range(1, 5))}


def test_bad_samples_are_one_line():
    with pytest.raises(ValueError, match=r"^samples: .*; expected integer token ids \[N, L\]$"):
        quality.diversity_metrics(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"^n: 0; expected"):
        quality.distinct_n(ROWS, 0)
