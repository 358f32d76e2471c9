"""Reference points a model must beat, as evaluators: ``kind="unigram"`` is the cross-entropy of
the evaluation split under the training split's unigram distribution (add-½ smoothed), in
nats/token — what a model that ignores context scores. A NELBO below it means the model uses
context. Counts run on the host in numpy over ``train_batches`` training batches."""

from __future__ import annotations

import math

import numpy as np

from dlm_jax import checks
from dlm_jax.eval.evaluators import register_evaluator


def _tokens(batch):
    tokens = np.asarray(batch["tokens"])
    mask = np.asarray(batch.get("loss_mask", np.ones(tokens.shape))) > 0
    return tokens[mask]


class UnigramEvaluator:
    """``unigram_ce`` (nats/token) and ``unigram_bits`` of ``split`` under the train unigram."""

    def __init__(self, block: dict):
        self.split, self.batches = block["split"], int(block["batches"])
        self.train_batches = checks.check_int("evals.unigram.train_batches", block.get("train_batches", 50), min=1)

    def run(self, ctx, params) -> dict[str, float]:
        del params
        counts: dict[int, float] = {}
        train = ctx.batches("train")
        seen = []
        for _ in range(self.train_batches):
            try:
                seen.append(_tokens(next(train)))
            except StopIteration:
                break
        ids = np.concatenate(seen) if seen else np.zeros(0, np.int64)
        size = int(max(ids.max(initial=0), 0)) + 1
        evals = []
        it = ctx.batches(self.split)
        for _ in range(self.batches):
            try:
                evals.append(_tokens(next(it)))
            except StopIteration:
                break
        if not evals:
            checks.fail(f"data split {self.split!r}", 0, "at least one batch to evaluate")
        ev = np.concatenate(evals)
        size = max(size, int(ev.max(initial=0)) + 1)
        counts = np.bincount(ids, minlength=size).astype(np.float64) + 0.5
        logp = np.log(counts / counts.sum())
        ce = float(-logp[ev].mean())
        return {"unigram_ce": ce, "unigram_bits": ce / math.log(2.0), "num_tokens": float(ev.size)}


register_evaluator("unigram", UnigramEvaluator)


def sample_unigram_entropy_bits(samples) -> float:
    """Mean over samples of the Shannon entropy (bits) of each sample's token histogram: low values
    reveal degenerate, repetitive samples that a low NLL alone would hide (FS-DFM §6.5)."""
    out = []
    for row in np.asarray(samples):
        _, counts = np.unique(row, return_counts=True)
        p = counts / counts.sum()
        out.append(float(-(p * np.log2(p)).sum()))
    return float(np.mean(out))
