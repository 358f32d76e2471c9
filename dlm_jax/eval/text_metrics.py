"""Text metrics of generated sequences against references (host-side, on strings).

* ``corpus_bleu`` / ``sentence_bleu`` / ``corpus_chrf``: SacreBLEU 2.x (``sacrebleu``), so numbers
  match the published protocol: ``tokenize="13a"`` by default, ``"intl"`` for German targets
  (``bleu_tokenize(lang)``, as DINOISER's ``calculate_sacrebleu.py``); chrF with character order 6,
  beta 2 (``word_order=2`` gives chrF++). Scores are on sacrebleu's 0-100 scale.
* ``rouge``: ROUGE-1/2/L F-measures (0-100), written here (a few lines): text lower-cased and
  split into Unicode word characters (``\\w+``; the ``rouge-score`` package keeps only ``[a-z0-9]``,
  which would erase umlauts), no stemming; ROUGE-N from clipped n-gram matches, ROUGE-L from the
  longest common subsequence; each pair scored on its own, then averaged over the corpus.
* ``exact_match``: the fraction of hypotheses equal to their reference (the synthetic tasks).

References: one str per hypothesis, or (for several references) a list of str per hypothesis.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from dlm_jax.checks import check_choice, check_int, fail

__all__ = ["bleu_tokenize", "corpus_bleu", "sentence_bleu", "corpus_chrf", "rouge", "rouge_pair", "exact_match",
           "lcs_length"]

_TOKENIZERS = ("13a", "intl", "char", "zh", "none")


def bleu_tokenize(lang: str) -> str:
    """SacreBLEU's tokenizer for a target language: "intl" for German (``de``, ``de_CH``, ``de-AT``),
    "zh" for Chinese, "13a" otherwise."""
    base = re.split(r"[-_@.]", str(lang).lower())[0]
    return {"de": "intl", "zh": "zh"}.get(base, "13a")


def _check(hyps: Sequence[str], refs) -> list[list[str]]:
    """Validate and return the references as streams (``[[ref of hyp 0, ...], ...]`` per reference index)."""
    if isinstance(hyps, str) or not len(hyps):
        fail("hypotheses", hyps if isinstance(hyps, str) else len(hyps), "a non-empty list of strings")
    if isinstance(refs, str) or len(refs) != len(hyps):
        fail("references", len(refs) if not isinstance(refs, str) else refs,
             f"one reference (str, or a list of str) per hypothesis ({len(hyps)})")
    per_hyp = [[r] if isinstance(r, str) else list(r) for r in refs]
    n = len(per_hyp[0])
    if n == 0 or any(len(r) != n for r in per_hyp):
        fail("references", [len(r) for r in per_hyp][:8], "the same number (>= 1) of references for every hypothesis")
    return [[r[i] for r in per_hyp] for i in range(n)]


def corpus_bleu(hyps: Sequence[str], refs, *, tokenize: str = "13a", lowercase: bool = False) -> float:
    """Corpus BLEU (0-100) of detokenized ``hyps`` against ``refs``; ``tokenize`` one of
    ("13a", "intl", "char", "zh", "none")."""
    import sacrebleu

    streams = _check(hyps, refs)
    check_choice("tokenize", tokenize, _TOKENIZERS)
    return float(sacrebleu.corpus_bleu(list(hyps), streams, tokenize=tokenize, lowercase=lowercase).score)


def sentence_bleu(hyp: str, refs: str | Sequence[str], *, tokenize: str = "13a") -> float:
    """Sentence BLEU (0-100) with sacrebleu's default exponential smoothing (for MBR consensus or
    per-example reports; corpus BLEU is not the mean of these)."""
    import sacrebleu

    if not isinstance(hyp, str):
        fail("hypothesis", hyp, "a string")
    refs = [refs] if isinstance(refs, str) else list(refs)
    if not refs or not all(isinstance(r, str) for r in refs):
        fail("references", refs, "a string or a non-empty list of strings")
    check_choice("tokenize", tokenize, _TOKENIZERS)
    return float(sacrebleu.sentence_bleu(hyp, refs, tokenize=tokenize).score)


def corpus_chrf(hyps: Sequence[str], refs, *, word_order: int = 0) -> float:
    """Corpus chrF (0-100; character n-grams up to 6, beta 2); ``word_order=2`` is chrF++."""
    import sacrebleu

    streams = _check(hyps, refs)
    check_int("word_order", word_order, min=0, max=2)
    return float(sacrebleu.corpus_chrf(list(hyps), streams, word_order=word_order).score)


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _prf(matches: int, n_hyp: int, n_ref: int) -> tuple[float, float, float]:
    p = matches / n_hyp if n_hyp else 0.0
    r = matches / n_ref if n_ref else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a) len(b)))."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_pair(hyp: str, ref: str) -> dict[str, tuple[float, float, float]]:
    """``{"rouge1"|"rouge2"|"rougeL": (precision, recall, F1)}`` of one hypothesis (fractions in [0, 1])."""
    h, r = _tokens(hyp), _tokens(ref)
    out = {}
    for n in (1, 2):
        hn, rn = _ngrams(h, n), _ngrams(r, n)
        out[f"rouge{n}"] = _prf(sum((hn & rn).values()), sum(hn.values()), sum(rn.values()))
    out["rougeL"] = _prf(lcs_length(h, r), len(h), len(r))
    return out


def rouge(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 over the pairs, on the 0-100 scale (one reference per hypothesis)."""
    streams = _check(hyps, refs)
    if len(streams) != 1:
        fail("references", len(streams), "one reference per hypothesis for ROUGE")
    scores = [rouge_pair(h, r) for h, r in zip(hyps, streams[0])]
    return {k: 100.0 * sum(s[k][2] for s in scores) / len(scores) for k in ("rouge1", "rouge2", "rougeL")}


def exact_match(hyps: Sequence, refs: Sequence) -> float:
    """Fraction of hypotheses equal to their reference (strings, or id sequences compared as tuples)."""
    if isinstance(hyps, str) or not len(hyps) or len(refs) != len(hyps):
        fail("hypotheses/references", (len(hyps), len(refs)), "two non-empty lists of the same length")
    norm = lambda x: x if isinstance(x, str) else tuple(int(v) for v in x)  # noqa: E731
    return sum(norm(h) == norm(r) for h, r in zip(hyps, refs)) / len(hyps)
