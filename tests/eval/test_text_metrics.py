"""Text metrics: BLEU and chrF equal sacrebleu's own numbers on fixed strings and a hand-computed
BLEU; the tokenizer choice per target language; ROUGE-1/2/L on hand-computed values; exact match."""

import math

import pytest
import sacrebleu

from dlm_jax.eval.text_metrics import (bleu_tokenize, corpus_bleu, corpus_chrf, exact_match, lcs_length, rouge,
                                       rouge_pair, sentence_bleu)

HYPS = ["The cat sat on the mat.", "Es ist ein „schöner“ Tag, z.B. heute!",
        "He read the book because he was interested.", "no match here"]
REFS = ["The cat is on the mat.", "Es ist ein „ schöner “ Tag, z. B. heute!",
        "He was interested in the book, so he read it.", "completely different words"]
REFS2 = ["There is a cat on the mat.", "Heute ist ein schöner Tag!", "He read the book out of interest.", "nothing"]


def test_bleu_by_hand():
    # 1-4-gram matches of "The cat sat on the mat ." vs "The cat is on the mat .": 6/7, 4/6, 2/5, 1/4; same length
    want = 100 * math.exp((math.log(6 / 7) + math.log(4 / 6) + math.log(2 / 5) + math.log(1 / 4)) / 4)
    assert corpus_bleu(HYPS[:1], REFS[:1]) == pytest.approx(want, abs=1e-9)
    assert sentence_bleu(HYPS[0], REFS[0]) == pytest.approx(want, abs=1e-9)
    assert corpus_bleu(["a b c d"], ["a b c d"]) == pytest.approx(100.0)
    # brevity penalty: hypothesis "a b c d" vs reference "a b c d e f": exp(1 - 6/4), precisions 1
    assert corpus_bleu(["a b c d"], ["a b c d e f"]) == pytest.approx(100 * math.exp(1 - 6 / 4), abs=1e-9)


@pytest.mark.parametrize("tokenize", ["13a", "intl", "char"])
def test_bleu_and_chrf_equal_sacrebleu(tokenize):
    assert corpus_bleu(HYPS, REFS, tokenize=tokenize) == sacrebleu.corpus_bleu(HYPS, [REFS], tokenize=tokenize).score
    two = [[a, b] for a, b in zip(REFS, REFS2)]  # two references per hypothesis
    assert corpus_bleu(HYPS, two, tokenize=tokenize) == sacrebleu.corpus_bleu(HYPS, [REFS, REFS2],
                                                                               tokenize=tokenize).score
    for h, r, r2 in zip(HYPS, REFS, REFS2):
        assert sentence_bleu(h, [r, r2], tokenize=tokenize) == sacrebleu.sentence_bleu(h, [r, r2],
                                                                                       tokenize=tokenize).score
    assert corpus_chrf(HYPS, REFS) == sacrebleu.corpus_chrf(HYPS, [REFS]).score
    assert corpus_chrf(HYPS, two, word_order=2) == sacrebleu.corpus_chrf(HYPS, [REFS, REFS2], word_order=2).score


def test_pinned_values_and_german_tokenizer():
    assert corpus_bleu(HYPS, REFS) == pytest.approx(41.28164892007734, abs=1e-9)  # sacrebleu 2.6.0
    assert corpus_chrf(HYPS, REFS) == pytest.approx(62.201450923521975, abs=1e-9)
    assert [bleu_tokenize(x) for x in ("de", "de_CH", "DE-at", "en", "pt", "zh", "fr@latin")] == [
        "intl", "intl", "intl", "13a", "13a", "zh", "13a"]
    # "„schöner“" is one token under 13a, three under intl (as the reference's "„ schöner “"): 62.2 vs 100
    assert corpus_bleu(HYPS[1:2], REFS[1:2], tokenize=bleu_tokenize("de")) == pytest.approx(100.0)
    assert corpus_bleu(HYPS[1:2], REFS[1:2]) == pytest.approx(62.20700406786387, abs=1e-9)


def test_rouge_by_hand():
    # "the cat sat on the mat" vs "the cat is on the mat": unigrams 5/6 both ways; bigrams 3/5; LCS 5
    r = rouge_pair("The cat sat on the mat.", "The cat is on the mat.")
    assert r["rouge1"] == pytest.approx((5 / 6, 5 / 6, 5 / 6))
    assert r["rouge2"] == pytest.approx((3 / 5, 3 / 5, 3 / 5))
    assert r["rougeL"] == pytest.approx((5 / 6, 5 / 6, 5 / 6))
    # "a b a" vs "a a c d": clipped unigram matches 2 (p 2/3, r 1/2, F 4/7); no bigram; LCS "a a" = 2
    r = rouge_pair("a b a", "a a c d")
    assert r["rouge1"] == pytest.approx((2 / 3, 1 / 2, 4 / 7)) and r["rouge2"] == (0.0, 0.0, 0.0)
    assert r["rougeL"] == pytest.approx((2 / 3, 1 / 2, 4 / 7))
    assert rouge_pair("Größe ändern", "größe Ändern")["rouge2"] == pytest.approx((1.0, 1.0, 1.0))  # Unicode words
    assert rouge_pair("", "a")["rouge1"] == (0.0, 0.0, 0.0)
    corpus = rouge(["The cat sat on the mat.", "a b a"], ["The cat is on the mat.", "a a c d"])
    assert corpus["rouge1"] == pytest.approx(100 * (5 / 6 + 4 / 7) / 2)
    assert corpus["rouge2"] == pytest.approx(100 * 0.6 / 2)
    assert corpus["rougeL"] == pytest.approx(100 * (5 / 6 + 4 / 7) / 2)
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # the textbook example (CLRS)


def test_exact_match_and_errors():
    assert exact_match(["1 2", "3"], ["1 2", "4"]) == 0.5
    assert exact_match([[5, 6], [7]], [(5, 6), (7,)]) == 1.0
    with pytest.raises(ValueError, match=r"^references: 1; expected one reference \(str, or a list of str\) per "
                                         r"hypothesis \(2\)$"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=r"^hypotheses: 0; expected a non-empty list of strings$"):
        corpus_chrf([], [])
    with pytest.raises(ValueError, match=r"^tokenize: 'moses'; expected one of \('13a', 'intl', 'char', 'zh', "):
        corpus_bleu(["a"], ["a"], tokenize="moses")
    with pytest.raises(ValueError, match=r"^references: \[1, 2\]; expected the same number"):
        corpus_bleu(["a", "b"], [["a"], ["b", "c"]])
    with pytest.raises(ValueError, match=r"^references: 2; expected one reference per hypothesis for ROUGE$"):
        rouge(["a"], [["a", "b"]])
