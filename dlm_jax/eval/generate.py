"""Sampling a restored run: ``generate`` (timed, one warm-up call), ``decode`` and, for runs on the
synthetic Markov language, the exact score of the samples under the true chain.

``run`` is anything with ``method``, ``params``, ``mesh``, ``config`` and ``tokenizer``
(``dlm_jax.runs.load_run`` returns one).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

__all__ = ["generate", "decode", "exact_score"]


def generate(run, *, steps: int, sampler: str | None = None, num_samples: int = 4, seed: int = 0,
             **sampler_kw) -> tuple[Any, dict]:
    """Sample ``num_samples`` sequences with ``steps`` steps; returns ``(tokens [B, L] numpy,
    info)`` with ``info["nfe"]`` and ``info["seconds"]`` (compile excluded: one warm-up call)."""
    from dlm_jax.samplers import get_sampler

    name = sampler or run.config.get("sample", {}).get("sampler", None)
    if name is not None:
        get_sampler(name)  # unknown names fail here, before compiling

    @jax.jit
    def draw(params, key):
        return run.method.sample(params, key, num_samples=num_samples, steps=steps, sampler=name, **sampler_kw)

    key = jax.random.key(seed)
    with jax.set_mesh(run.mesh):
        jax.block_until_ready(draw(run.params, key))
        t0 = time.perf_counter()
        tokens, info = jax.block_until_ready(draw(run.params, key))
    info = {k: np.asarray(v) for k, v in info.items()}
    info["seconds"] = time.perf_counter() - t0
    return np.asarray(tokens), info


def decode(run, tokens) -> list[str]:
    """Token rows -> text (sentencepiece) or space-separated ids (synthetic languages)."""
    if hasattr(run.tokenizer, "decode") and run.config.data.get("source") != "markov":
        return [run.tokenizer.decode(row) for row in tokens]
    return [" ".join(str(int(t)) for t in row) for row in tokens]


def exact_score(run, tokens) -> dict[str, float] | None:
    """For runs on the synthetic Markov language: the exact per-token log-likelihood of ``tokens``
    under the true chain, beside the best achievable (−H/L). ``None`` for other sources."""
    if run.config.data.get("source") != "markov":
        return None
    from dlm_jax.data.pipeline import markov_language

    length = int(np.shape(tokens)[-1])
    lang = markov_language(run.config.data, length)
    ll = np.asarray(lang.log_prob(jax.numpy.asarray(tokens)), np.float64) / length
    return {"log_prob_per_token": float(ll.mean()),
            "stderr": float(ll.std(ddof=1) / np.sqrt(len(ll))) if len(ll) > 1 else float("nan"),
            "exact_per_token": -lang.entropy() / length}
