"""Judges: causal LMs that score samples in their own tokenizer (generative NLL / perplexity).

Chosen by name (``--judge``, ``config.quality.judge``):

* ``run:<workdir>`` — a dlm_jax run of the AR baseline (``methods/ar.py``); its sentencepiece
  tokenizer, its BOS (id V), its training length as the context;
* ``hf:<folder>``   — a Hugging Face causal LM found locally, GPT-2 family (``eval/hf_gpt2.py``,
  no torch); ``tokenizer.json`` through ``tokenizers``; BOS = ``bos_token_id`` (GPT-2's
  ``<|endoftext|>``), context ``n_positions``.

Gen-PPL as MDLM computes it, with two stated differences: samples are decoded to text with the
sampled run's tokenizer (cut at the run's first EOS, which becomes the judge's EOS), retokenised with
the judge's tokenizer, cut after the judge's first EOS, and scored in consecutive windows of the
judge's context. Each window starts from the judge's BOS, so its first token is scored too (MDLM
leaves it unscored) and nothing after the first EOS counts (MDLM's mask keeps later non-EOS tokens).
``gen_nll`` is Σ NLL / Σ tokens (nats/token) over all samples; ``gen_ppl = exp(gen_nll)``.

More judges: ``register_judge(prefix, loader)`` with ``loader(path) -> Judge``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax import checks

__all__ = ["Judge", "register_judge", "judge_prefixes", "check_judge_spec", "load_judge", "gen_nll", "judge_windows",
           "ratio_standard_error", "paired_difference"]

_EXPECTED = ("run:<workdir> (an 'ar' dlm_jax run) or hf:<folder> (a local Hugging Face GPT-2: config.json, "
             "model.safetensors, tokenizer.json)")


@dataclasses.dataclass
class Judge:
    """A causal LM: ``logits_fn(inputs [B, W]) -> [B, W, V]`` where inputs are ``[BOS, x_0, ...]``;
    ``features_fn`` (optional) gives the final hidden states ``[B, W, d]`` (MAUVE)."""

    name: str
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    bos_id: int
    eos_id: int | None
    unk_id: int | None
    context: int
    logits_fn: Callable[[Any], Any]
    features_fn: Callable[[Any], Any] | None = None


def _run_judge(path: str) -> Judge:
    from dlm_jax.runs import load_run

    if not os.path.isdir(os.path.join(path, "checkpoints")):
        checks.fail("--judge", f"run:{path}", f"{_EXPECTED}; {path!r} holds no checkpoints")
    run = load_run(path)
    if run.config.method.name != "ar":
        checks.fail("--judge", f"run:{path}", f"an 'ar' run (this one is method {run.config.method.name!r})")
    tok = run.tokenizer
    bos = int(tok.vocab_size)  # the AR input id before the first token (methods/ar.py)

    @jax.jit
    def logits(params, inputs):
        return run.apply(params, inputs, {})

    def logits_fn(inputs):
        with jax.set_mesh(run.mesh):
            return logits(run.params, jnp.asarray(inputs, jnp.int32))

    return Judge(name=f"run:{path}", encode=lambda s: [int(i) for i in tok.encode(s)],
                 decode=lambda ids: tok.decode(np.asarray(ids, np.int32)), bos_id=bos,
                 eos_id=getattr(tok, "eos_id", None), unk_id=getattr(tok, "unk_id", None),
                 context=int(run.config.data.seq_len), logits_fn=logits_fn)


def _hf_judge(path: str) -> Judge:
    from tokenizers import Tokenizer

    from dlm_jax.eval.hf_gpt2 import gpt2_forward, load_gpt2

    config, params = load_gpt2(path)
    tok_path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(tok_path):
        checks.fail("--judge", f"hf:{path}", "a folder with tokenizer.json (read with the tokenizers package)")
    tok = Tokenizer.from_file(tok_path)
    eos = config.get("eos_token_id")
    bos = config.get("bos_token_id", eos)
    if bos is None:
        checks.fail(f"{path}/config.json bos_token_id", None, "an id (GPT-2: 50256, <|endoftext|>)")
    unk = None
    model = getattr(tok, "model", None)
    if getattr(model, "unk_token", None):
        unk = tok.token_to_id(model.unk_token)
    logits = jax.jit(lambda p, x: gpt2_forward(p, x, config))
    hidden = jax.jit(lambda p, x: gpt2_forward(p, x, config, hidden=True))
    return Judge(name=f"hf:{path}", encode=lambda s: list(tok.encode(s).ids),
                 decode=lambda ids: tok.decode([int(i) for i in ids], skip_special_tokens=False), bos_id=int(bos),
                 eos_id=None if eos is None else int(eos), unk_id=unk, context=int(config["n_positions"]),
                 logits_fn=lambda x: logits(params, jnp.asarray(x, jnp.int32)),
                 features_fn=lambda x: hidden(params, jnp.asarray(x, jnp.int32)))


_JUDGES: dict[str, Callable[[str], Judge]] = {"run": _run_judge, "hf": _hf_judge}


def register_judge(prefix: str, loader: Callable[[str], Judge]) -> None:
    """Make ``--judge <prefix>:<path>`` load ``loader(path)``."""
    _JUDGES[checks.check_str("judge prefix", prefix)] = loader


def judge_prefixes() -> tuple[str, ...]:
    return tuple(sorted(_JUDGES))


def check_judge_spec(spec) -> tuple[str, str]:
    """``(prefix, path)`` of ``<prefix>:<path>``; one-line error for an unknown prefix or a missing path."""
    if not isinstance(spec, str) or ":" not in spec:
        checks.fail("--judge", spec, _EXPECTED)
    prefix, path = spec.split(":", 1)
    if prefix not in _JUDGES:
        checks.fail("--judge", spec, f"{_EXPECTED} (prefixes {judge_prefixes()})")
    if not os.path.isdir(path):
        checks.fail("--judge", spec, f"{_EXPECTED}; {path!r} is not a directory")
    return prefix, path


def load_judge(spec: str) -> Judge:
    prefix, path = check_judge_spec(spec)
    return _JUDGES[prefix](path)


def check_encodes(judge: Judge, text: str, where: str) -> list[int]:
    """The judge's ids for ``text``; a one-line error when its tokenizer cannot encode it (an unknown
    token, or characters lost in the encode/decode round trip, whitespace aside)."""
    ids = judge.encode(text)
    lost = (judge.unk_id is not None and judge.unk_id in ids) or (
        "".join(judge.decode(ids).split()) != "".join(text.split()))
    if lost:
        checks.fail("--judge", judge.name, f"a judge whose tokenizer encodes the samples ({where} {text[:40]!r} "
                                           "does not survive its encode/decode)")
    return ids


def judge_windows(ids: list[int], judge: Judge, ended: bool) -> list[list[int]]:
    """The scored windows of one sample's judge ids: the judge's EOS appended when the sample
    ``ended`` (it had the run's EOS), everything after the first EOS dropped, then cut into windows
    of ``context`` tokens."""
    ids = list(ids) + ([judge.eos_id] if ended and judge.eos_id is not None else [])
    if judge.eos_id is not None and judge.eos_id in ids:
        ids = ids[: ids.index(judge.eos_id) + 1]
    return [ids[i:i + judge.context] for i in range(0, len(ids), judge.context)]


def window_nll(judge: Judge, windows: list[list[int]], batch_size: int = 16) -> np.ndarray:
    """``−log p`` summed per window (float64 ``[n]``), each window read as ``[BOS, w_0, ...]``; batches of
    fixed shape ``[batch_size, context]`` (one compile), padding masked out."""
    w = judge.context
    out = np.zeros(len(windows), np.float64)
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        ids = np.zeros((batch_size, w), np.int32)
        mask = np.zeros((batch_size, w), bool)
        for r, win in enumerate(chunk):
            ids[r, : len(win)] = win
            mask[r, : len(win)] = True
        inputs = np.concatenate([np.full((batch_size, 1), judge.bos_id, np.int32), ids[:, :-1]], axis=1)
        logp = jax.nn.log_softmax(jnp.asarray(judge.logits_fn(inputs), jnp.float32), axis=-1)
        nll = -np.asarray(jnp.take_along_axis(logp, jnp.asarray(ids)[..., None], -1)[..., 0], np.float64)
        out[start:start + len(chunk)] = np.where(mask, nll, 0.0).sum(-1)[: len(chunk)]
    return out


def _ratio_residuals(sums, counts):
    """``R = Σ sums / Σ counts`` and the delta-method residuals ``(s_i − R c_i) / mean(c)``."""
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    ratio = sums.sum() / counts.sum()
    return ratio, (sums - ratio * counts) / counts.mean()


def _standard_error(resid) -> float:
    k = resid.size
    return float(math.sqrt((resid ** 2).sum() / (k * (k - 1)))) if k >= 2 else float("nan")


def ratio_standard_error(sums, counts) -> float:
    """Standard error of ``Σ sums / Σ counts`` over k independent samples (the delta-method ratio
    estimator): ``sqrt(Σ (s_i − R c_i)² / (k (k − 1))) / mean(c)``; NaN below two samples or tokens."""
    if not np.sum(counts) > 0:
        return float("nan")
    return _standard_error(_ratio_residuals(sums, counts)[1])


def paired_difference(sums_a, counts_a, sums_b, counts_b) -> tuple[float, float]:
    """``(R_a − R_b, its standard error)`` for two ratios ``R = Σ sums / Σ counts`` measured on the same
    k seeds (sample i of a and of b share their noise): the delta method on the paired residuals
    ``(a_i − R_a c_i)/mean(c_a) − (b_i − R_b c_i)/mean(c_b)``, whose correlation the unpaired errors
    ignore. NaN error below two samples."""
    shapes = [np.shape(v) for v in (sums_a, counts_a, sums_b, counts_b)]
    if len(set(shapes)) != 1:
        raise ValueError(f"paired_difference: shapes {', '.join(map(str, shapes))}; "
                         "expected one sum and one count per seed on both sides")
    (r_a, res_a), (r_b, res_b) = _ratio_residuals(sums_a, counts_a), _ratio_residuals(sums_b, counts_b)
    return float(r_a - r_b), _standard_error(res_a - res_b)


def gen_nll(judge: Judge, texts: list[str], ended: list[bool] | None = None, batch_size: int = 16) -> dict:
    """Generative NLL of ``texts`` under ``judge``: ``gen_nll`` (nats/token), its standard error over
    samples ``gen_nll_se`` (``ratio_standard_error``), ``gen_ppl``, ``judge_tokens`` and the per-sample
    NLL sums / token counts (with one seed per sample, two rows' per-sample sums pair up)."""
    ended = ended or [False] * len(texts)
    windows, owner = [], []
    for i, (text, end) in enumerate(zip(texts, ended)):
        ids = check_encodes(judge, text, f"sample {i}:")
        for win in judge_windows(ids, judge, end):
            windows.append(win)
            owner.append(i)
    sums = window_nll(judge, windows, batch_size) if windows else np.zeros(0)
    per_nll = np.bincount(np.asarray(owner, np.int64), weights=sums, minlength=len(texts)) if windows else \
        np.zeros(len(texts))
    per_tok = np.bincount(np.asarray(owner, np.int64), weights=[len(w) for w in windows],
                          minlength=len(texts)) if windows else np.zeros(len(texts))
    total = float(per_tok.sum())
    nll = float(per_nll.sum() / total) if total else float("nan")
    return {"gen_nll": nll, "gen_nll_se": ratio_standard_error(per_nll, per_tok),
            "gen_ppl": math.exp(min(nll, 700.0)) if total else float("nan"),
            "judge_tokens": total, "per_sample_nll": per_nll.tolist(), "per_sample_tokens": per_tok.tolist()}
