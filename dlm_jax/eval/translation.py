"""The ``bleu`` evaluator: translate a split's sources with the method's conditional ``sample``
(``source=``/``source_mask=``) and score the hypotheses against the split's targets with SacreBLEU
(``eval.text_metrics``): BLEU, chrF and exact match, at each configured step count K.

Block keys (``config.evals.<name>``, beside the common ones)::

    {"kind": "bleu", "split": "validation", "batches": 4, "steps": (5,), "sampler": None,
     "tokenize": None, "print_examples": 3}

``steps``: K values (metrics ``bleu_k<K>``, ``chrf_k<K>``, ``exact_match_k<K>``; plain ``bleu``,
``chrf``, ``exact_match`` for the first). ``sampler``: None = the method's default. ``tokenize``:
SacreBLEU's tokenizer; None = ``bleu_tokenize(data.tgt_lang)`` ("intl" for German, else "13a").
``print_examples``: how many ``source -> hypothesis -> reference`` lines to print (first K only).
References are the decoded target rows (cut at EOS), i.e. the text the model was trained on.
"""

from __future__ import annotations

import jax
import numpy as np

from dlm_jax import checks
from dlm_jax.eval.evaluators import register_evaluator

__all__ = ["TranslationEvaluator", "decode_rows"]

EOS_ID = 2  # the seq2seq tokenizers' layout (pad 0, bos 1, eos 2, unk 3)


def decode_rows(tokenizer, ids) -> list[str]:
    """Id rows ``[B, n]`` cut before the first EOS, decoded to text."""
    out = []
    for row in np.asarray(ids):
        hits = np.flatnonzero(row == EOS_ID)
        out.append(tokenizer.decode(row[:hits[0]] if hits.size else row))
    return out


class TranslationEvaluator:
    def __init__(self, block: dict):
        self.split, self.batches = block["split"], int(block["batches"])
        steps = block.get("steps", (5,))
        steps = (steps,) if isinstance(steps, int) else tuple(steps)
        self.steps = tuple(checks.check_int("evals.steps", k, min=1) for k in steps)
        if not self.steps:
            checks.fail("evals.steps", steps, "one or more step counts >= 1")
        self.sampler = block.get("sampler", None)
        self.tokenize = block.get("tokenize", None)
        self.print_examples = checks.check_int("evals.print_examples", block.get("print_examples", 3), min=0)

    def _tokenizer(self, ctx):
        from dlm_jax.data.pipeline import train_or_load_tokenizer

        return train_or_load_tokenizer(ctx.config.data, ctx.workdir)

    def run(self, ctx, params) -> dict[str, float]:
        from dlm_jax.eval import text_metrics as tm

        import inspect

        if "source" not in inspect.signature(ctx.method.sample).parameters:
            checks.fail("evals kind", "bleu", f"a conditional (seq2seq) method; {ctx.method.name!r} samples without a "
                        "source")
        tok = self._tokenizer(ctx)
        tokenize = self.tokenize or tm.bleu_tokenize(ctx.config.data.get("tgt_lang", "en"))
        batches = []
        for i, batch in enumerate(ctx.batches(self.split)):
            if i >= self.batches:
                break
            batches.append(batch)
        if not batches:
            checks.fail(f"data split {self.split!r}", 0, "at least one batch to translate")
        out = {}
        for j, steps in enumerate(self.steps):
            def translate(p, batch, rng, steps=steps):
                tokens, info = ctx.method.sample(p, rng, steps=steps, sampler=self.sampler, source=batch["source"],
                                                 source_mask=batch["source_mask"])
                return {"tokens": tokens, "nfe": info["nfe"]}

            step_fn = ctx.compile(translate)
            srcs, hyps, refs = [], [], []
            for i, batch in enumerate(batches):
                res = jax.device_get(step_fn(params, ctx.to_device(batch), jax.random.fold_in(ctx.rng, i)))
                real = np.asarray(batch["target_mask"]).sum(-1) > 0  # zero rows fill a finite split's last batch
                hyps += [h for h, r in zip(decode_rows(tok, np.asarray(res["tokens"]).astype(np.int64)), real) if r]
                refs += [t for t, r in zip(decode_rows(tok, batch["target"]), real) if r]
                src_tok = getattr(tok, "source_tokenizer", tok)  # separate vocabularies: the source side's
                srcs += [t for t, r in zip(decode_rows(src_tok, batch["source"]), real) if r]
            suffix = "" if j == 0 else f"_k{steps}"
            out[f"bleu{suffix}"] = tm.corpus_bleu(hyps, refs, tokenize=tokenize)
            out[f"chrf{suffix}"] = tm.corpus_chrf(hyps, refs)
            out[f"exact_match{suffix}"] = tm.exact_match(hyps, refs)
            out[f"nfe{suffix}"] = float(np.asarray(res["nfe"]))
            if j == 0:
                out["num_sentences"] = float(len(hyps))
                if self.print_examples and jax.process_index() == 0:
                    print(f"\n{ctx.config.method.get('name', '')} translations, K = {steps} "
                          f"(BLEU {out['bleu']:.2f}, {tokenize}):")
                    for a, h, r in list(zip(srcs, hyps, refs))[:self.print_examples]:
                        print(f"  src: {a}\n  hyp: {h}\n  ref: {r}")
        return out


register_evaluator("bleu", TranslationEvaluator)
