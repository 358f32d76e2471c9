"""Diversity metrics over sampled token sequences, so that a low gen-PPL from degenerate text shows.

Samples are a list of 1-D integer sequences (rows may differ in length, e.g. cut at the first EOS)
or a ``[N, L]`` array. Pure numpy on the host; every metric is exact arithmetic on counts.

* ``unigram_entropy``  — mean over samples of the Shannon entropy (nats) of each sample's token
  histogram, as MDLM/DUO report it (``eval.baselines.sample_unigram_entropy_bits`` is the same in bits);
* ``sequence_entropy`` — entropy (nats) of the empirical law of whole samples: ``log N`` when all
  N samples differ, 0 when they are all one sequence (mode collapse across samples);
* ``distinct_n``       — distinct n-grams / all n-grams, pooled over the samples (Li et al. 2016);
* ``repetition_n``     — mean over samples of ``1 − distinct / all`` n-grams *within* the sample
  (seq-rep-n of Welleck et al. 2019): the share of a sample's n-grams that repeat an earlier one.

``diversity_metrics(samples)`` returns all of them (n = 1..4) as one flat dict.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from dlm_jax import checks

__all__ = ["as_rows", "unigram_entropy", "sequence_entropy", "distinct_n", "repetition_n", "diversity_metrics",
           "NGRAM_ORDERS"]

NGRAM_ORDERS = (1, 2, 3, 4)


def as_rows(samples) -> list[tuple[int, ...]]:
    """Samples as a list of int tuples; one-line error on anything but integer rows."""
    if isinstance(samples, np.ndarray):
        if samples.ndim != 2 or not np.issubdtype(samples.dtype, np.integer):
            checks.fail("samples", f"array {samples.shape} {samples.dtype}", "integer token ids [N, L]")
        return [tuple(int(t) for t in row) for row in samples]
    rows = []
    for row in samples:
        arr = np.asarray(row)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            checks.fail("samples", f"row of shape {arr.shape} {arr.dtype}", "1-D integer token ids")
        rows.append(tuple(int(t) for t in arr))
    return rows


def _entropy(counts: Iterable[int]) -> float:
    c = np.asarray(list(counts), np.float64)
    if c.sum() == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def unigram_entropy(samples) -> float:
    """Mean over samples of the entropy (nats) of each sample's token histogram (empty rows skipped)."""
    rows = [r for r in as_rows(samples) if r]
    return float(np.mean([_entropy(Counter(r).values()) for r in rows])) if rows else 0.0


def sequence_entropy(samples) -> float:
    """Entropy (nats) of the empirical distribution of whole samples (at most ``log N``)."""
    return _entropy(Counter(as_rows(samples)).values())


def _ngrams(row: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]


def distinct_n(samples, n: int) -> float:
    """Distinct n-grams over all n-grams, pooled over samples (0 when there is no n-gram)."""
    checks.check_int("n", n, min=1)
    grams = [g for r in as_rows(samples) for g in _ngrams(r, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_n(samples, n: int) -> float:
    """Mean over samples (with at least one n-gram) of ``1 − distinct/all`` n-grams within the sample."""
    checks.check_int("n", n, min=1)
    per = []
    for r in as_rows(samples):
        grams = _ngrams(r, n)
        if grams:
            per.append(1.0 - len(set(grams)) / len(grams))
    return float(np.mean(per)) if per else 0.0


def diversity_metrics(samples) -> dict[str, float]:
    """``unigram_entropy``, ``unigram_entropy_bits``, ``sequence_entropy``, ``distinct_{1..4}``,
    ``repetition_{1..4}`` and ``num_samples`` of ``samples``."""
    rows = as_rows(samples)
    h = unigram_entropy(rows)
    out = {"unigram_entropy": h, "unigram_entropy_bits": h / math.log(2.0), "sequence_entropy": sequence_entropy(rows)}
    for n in NGRAM_ORDERS:
        out[f"distinct_{n}"] = distinct_n(rows, n)
    for n in NGRAM_ORDERS:
        out[f"repetition_{n}"] = repetition_n(rows, n)
    out["num_samples"] = float(len(rows))
    return out
