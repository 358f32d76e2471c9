"""The one reducer of evaluation sums (the Flax lm1b/gemma pattern).

A per-batch step returns a dict of *sums* (``nelbo_sum``, ``num_tokens``, sums of squares, ...);
``reduce_sums`` adds them over batches in float64 on the host, and ``ratios`` turns
``<name>_sum / <denominator>`` into ``<name>``. Means are never averaged across batches of
different sizes, so the result does not depend on how the data were batched.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import jax
import numpy as np

__all__ = ["reduce_sums", "ratios", "nelbo_units"]


def reduce_sums(step: Callable[[Any, Any, Any], dict], params, batches: Iterable[Any], rng, *,
                max_batches: int | None = None, prepare: Callable[[Any], Any] | None = None
                ) -> tuple[dict[str, float], int]:
    """``(totals, batches_done)``: ``step(params, prepare(batch), fold_in(rng, i))`` summed over up to
    ``max_batches`` batches (all when None). Array-valued entries are summed over all their elements."""
    totals: dict[str, float] = {}
    done = 0
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        out = jax.device_get(step(params, prepare(batch) if prepare else batch, jax.random.fold_in(rng, i)))
        for key, value in out.items():
            totals[key] = totals.get(key, 0.0) + float(np.sum(np.asarray(value, np.float64)))
        done += 1
    return totals, done


def ratios(totals: dict[str, float], denominator: str = "num_tokens") -> dict[str, float]:
    """Every ``<name>_sum`` divided by ``totals[denominator]`` as ``<name>`` (beside the totals)."""
    out = dict(totals)
    count = totals.get(denominator, 0.0)
    if count:
        out.update({k[:-4]: v / count for k, v in totals.items() if k.endswith("_sum")})
    return out


def nelbo_units(metrics: dict[str, float], key: str = "nelbo") -> dict[str, float]:
    """Add ``bits_per_token`` and ``ppl_bound`` beside a NELBO in nats/token."""
    out = dict(metrics)
    if key in out:
        out["bits_per_token"] = out[key] / math.log(2.0)
        out["ppl_bound"] = math.exp(min(out[key], 700.0))
    return out
