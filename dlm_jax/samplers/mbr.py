"""Candidate selection for seq2seq diffusion (METHODS §2.4 / §3.4): length beam and MBR, on device.

* ``top_lengths``: the ``beam`` most likely target lengths from the length predictor's logits
  (length 0 excluded).
* ``sentence_bleu``: sacreBLEU's sentence-level BLEU (``smooth_method="exp"``, effective order,
  max order 4, 0 without any matching n-gram) between two token-id sequences, in [0, 100]: clipped n-gram matches by pairwise
  comparison of n-grams (``O(L²)`` per order, fine for the short candidates here).
* ``mbr_select``: per source, the candidate with the highest mean sentence-BLEU against the others
  (the consensus), among ``C`` candidates (length beam × samples per length).

Everything is jit-able, batched with ``vmap``, over int ids with a length per sequence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["top_lengths", "ngram_stats", "sentence_bleu", "bleu_matrix", "mbr_select"]

MAX_ORDER = 4


def top_lengths(length_logits, beam: int):
    """``[B, beam]`` lengths (>= 1) by decreasing predicted probability."""
    logits = jnp.asarray(length_logits).at[..., 0].set(-jnp.inf)
    return jax.lax.top_k(logits, beam)[1].astype(jnp.int32)


def _ngrams(ids, n: int):
    """``[L, n]`` windows of ``ids [L]`` (positions past the end wrap; masked by the caller)."""
    length = ids.shape[0]
    idx = (jnp.arange(length)[:, None] + jnp.arange(n)[None, :]) % length
    return ids[idx]


def ngram_stats(hyp, hyp_len, ref, ref_len, max_order: int = MAX_ORDER):
    """``(correct [max_order], total [max_order])``: clipped n-gram matches of ``hyp`` in ``ref``
    and the number of hypothesis n-grams, for orders 1..max_order."""
    correct, total = [], []
    pos_h, pos_r = jnp.arange(hyp.shape[0]), jnp.arange(ref.shape[0])
    for n in range(1, max_order + 1):
        gh, gr = _ngrams(hyp, n), _ngrams(ref, n)
        vh = pos_h <= hyp_len - n
        vr = pos_r <= ref_len - n
        same_h = jnp.all(gh[:, None, :] == gh[None, :, :], -1) & vh[None, :]
        same_r = jnp.all(gh[:, None, :] == gr[None, :, :], -1) & vr[None, :]
        cnt_h = jnp.sum(same_h, 1).astype(jnp.float32)
        cnt_r = jnp.sum(same_r, 1).astype(jnp.float32)
        # each distinct n-gram occurs cnt_h times; its occurrences share its clipped count min(cnt_h, cnt_r)
        matched = jnp.where(vh, jnp.minimum(cnt_h, cnt_r) / jnp.maximum(cnt_h, 1.0), 0.0)
        correct.append(jnp.round(jnp.sum(matched)))
        total.append(jnp.sum(vh).astype(jnp.float32))
    return jnp.stack(correct), jnp.stack(total)


def sentence_bleu(hyp, hyp_len, ref, ref_len, max_order: int = MAX_ORDER):
    """sacreBLEU ``sentence_bleu`` (exp smoothing, effective order) of id sequences, in [0, 100]."""
    correct, total = ngram_stats(hyp, hyp_len, ref, ref_len, max_order)
    used = total > 0
    zero = used & (correct == 0)
    halvings = jnp.cumsum(zero.astype(jnp.float32))  # exp smoothing: 1/2^k for the k-th zero precision
    prec = jnp.where(zero, 1.0 / (2.0 ** halvings * jnp.maximum(total, 1.0)), correct / jnp.maximum(total, 1.0))
    order = jnp.maximum(jnp.sum(used), 1)
    log_mean = jnp.sum(jnp.where(used, jnp.log(jnp.where(used, prec, 1.0)), 0.0)) / order
    c, r = jnp.asarray(hyp_len, jnp.float32), jnp.asarray(ref_len, jnp.float32)
    bp = jnp.where(c < r, jnp.exp(1.0 - r / jnp.maximum(c, 1.0)), 1.0)
    return jnp.where((c > 0) & jnp.any(correct > 0), 100.0 * bp * jnp.exp(log_mean), 0.0)  # no match at all: 0


def bleu_matrix(cands, lengths):
    """``[C, C]`` sentence-BLEU of candidate i (hypothesis) against candidate j (reference)."""
    row = jax.vmap(sentence_bleu, in_axes=(None, None, 0, 0))
    return jax.vmap(row, in_axes=(0, 0, None, None))(cands, lengths, cands, lengths)


def mbr_select(cands, lengths):
    """Per source: the index of the candidate (``cands [B, C, L]``, ``lengths [B, C]``) with the
    highest mean BLEU against the other candidates (ties: the first). ``C = 1`` returns 0."""
    if cands.shape[1] == 1:
        return jnp.zeros(cands.shape[0], jnp.int32)
    m = jax.vmap(bleu_matrix)(cands, lengths)
    c = cands.shape[1]
    score = (jnp.sum(m, -1) - jnp.diagonal(m, axis1=1, axis2=2)) / (c - 1)
    return jnp.argmax(score, -1).astype(jnp.int32)
