"""Likelihood evaluation for masked diffusion: the continuous-time NELBO as nats/token,
bits/token and the perplexity bound ``exp(NELBO)`` (METHODS §2.1(c)).

Time direction: **t = 0 clean, t = 1 masked**. The NELBO per sequence is
``∫_0^1 w(t) E_{z_t}[Σ_ℓ 1[z_t^ℓ = m] (−log p_θ(x^ℓ | z_t))] dt`` with ``w = −α'/(1−α)``.

``evaluate_nelbo`` estimates it over a dataset, one jitted call per batch, with a time grid:

``"gauss_legendre"`` (default)  K Gauss–Legendre nodes on ``[t_min, 1]``; every row is evaluated
    at every node with a fresh mask draw. For ``α = 1 − t`` and an exact denoiser the integrand's
    expectation is a polynomial of degree < L in t, so K ≥ L/2 nodes leave only mask noise.
``"stratified"``  the K midpoints of ``[t_min, 1]`` (midpoint rule).
``"antithetic"``  MDLM's validation estimator: K independent antithetic draws
    ``t ~ U[t_min, 1]`` (default ``t_min = 1e-3``), averaged; not divided by ``1 − t_min``.

``exact_nelbo`` computes the same integral *exactly* in the masks (sum over all ``2^L`` mask
patterns) with Gauss–Legendre in t; for exact oracles and tiny L (tests, benchmarks).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.eval.reduce import reduce_sums
from dlm_jax.methods.mdlm import antithetic_times as draw_antithetic
from dlm_jax.methods.mdlm import nelbo_terms
from dlm_jax.processes.masking import forward_mask
from dlm_jax.processes.schedules import MaskingSchedule

__all__ = ["time_grid", "nelbo_batch", "evaluate_nelbo", "exact_nelbo", "TIME_GRIDS"]

TIME_GRIDS = ("antithetic", "gauss_legendre", "stratified")


def time_grid(kind: str, num_times: int, t_min: float = 0.0, t_max: float = 1.0):
    """Deterministic nodes and weights ``(t [K], w [K])`` on ``[t_min, t_max]`` (t: 0 clean,
    1 masked) with ``Σ w = t_max − t_min``: ``"gauss_legendre"`` or ``"stratified"`` (midpoints)."""
    if not isinstance(num_times, int) or num_times < 1:
        raise ValueError(f"num_times: {num_times!r}; expected an int >= 1")
    if kind == "gauss_legendre":
        g, w = np.polynomial.legendre.leggauss(num_times)
    elif kind == "stratified":
        g = (2.0 * np.arange(num_times) + 1.0) / num_times - 1.0
        w = np.full(num_times, 2.0 / num_times)
    else:
        raise ValueError(f"time_grid: {kind!r}; expected one of ('gauss_legendre', 'stratified')")
    half = 0.5 * (t_max - t_min)
    return half * g + (t_max + t_min) * 0.5, half * w


def nelbo_batch(logprobs_fn: Callable, params, tokens, loss_mask, key, *, schedule: MaskingSchedule, mask_id: int,
                times, weights, antithetic_times: bool = False, t_min: float = 1e-3):
    """Per-row NELBO estimates ``[B]`` (nats, summed over real tokens) and token counts ``[B]``.

    ``logprobs_fn(params, z, t) -> [B, L, V]``; ``times``/``weights`` ``[K]`` (t: 0 clean,
    1 masked). Each node gets its own mask draw; with ``antithetic_times`` the K nodes are
    ignored and K antithetic draws on ``[t_min, 1]`` with weight 1/K are used instead.
    """
    tokens = jnp.asarray(tokens)
    b = tokens.shape[0]
    mask = jnp.ones(tokens.shape, jnp.float32) if loss_mask is None else jnp.asarray(loss_mask)
    times, weights = jnp.asarray(times), jnp.asarray(weights)
    keys = jax.random.split(key, times.shape[0])

    def one(carry, inputs):
        t_k, w_k, k = inputs
        k_t, k_z = jax.random.split(k)
        if antithetic_times:  # the trainer's rotated grid: every row's t is uniform on [t_min, 1]
            t = draw_antithetic(k_t, b, t_min, rotate=True, dtype=times.dtype)
        else:
            t = jnp.full((b,), t_k, times.dtype)
        z = forward_mask(k_z, tokens, schedule.alpha(t), mask_id)
        terms = nelbo_terms(lambda zz, tt: logprobs_fn(params, zz, tt), tokens, z, t, schedule, mask_id=mask_id)
        row = jnp.sum(jnp.where(mask > 0, terms * mask, 0.0), axis=-1)
        return carry + w_k * row, None

    init = jnp.zeros((b,), jnp.result_type(times.dtype, jnp.float32))
    rows, _ = jax.lax.scan(one, init, (times, weights, keys))
    return rows, jnp.sum(mask, axis=-1).astype(rows.dtype)


def evaluate_nelbo(logprobs_fn: Callable, params, batches: Iterable[Any], rng, *, schedule: MaskingSchedule,
                   mask_id: int, time_grid_kind: str = "gauss_legendre", num_times: int = 16,
                   t_min: float | None = None, max_batches: int | None = None) -> dict[str, float]:
    """NELBO over a dataset: ``{"nats_per_token", "bits_per_token", "ppl", "stderr_nats",
    "num_tokens", "num_sequences"}``.

    ``batches`` yields dicts with ``"tokens"`` int ``[B, L]`` (and optional ``"loss_mask"``) or
    bare token arrays. ``logprobs_fn(params, z, t) -> log-probs [B, L, V]`` (t: 0 clean, 1 masked),
    e.g. ``mdlm.logprobs_fn(apply_fn, V, schedule)``. ``nats_per_token = Σ NELBO / Σ tokens``;
    ``bits = nats / ln 2``; ``ppl = exp(nats)``; ``stderr_nats`` is the delta-method standard
    error of that ratio over sequences (mask and time noise). ``t_min`` defaults to 0 for the
    deterministic grids and 1e-3 for ``"antithetic"``.
    """
    if time_grid_kind not in TIME_GRIDS:
        raise ValueError(f"time_grid_kind: {time_grid_kind!r}; expected one of {TIME_GRIDS}")
    antithetic = time_grid_kind == "antithetic"
    t_min = (1e-3 if antithetic else 0.0) if t_min is None else float(t_min)
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min: {t_min!r}; expected a float in [0, 1)")
    if antithetic:
        if not isinstance(num_times, int) or num_times < 1:
            raise ValueError(f"num_times: {num_times!r}; expected an int >= 1")
        times, weights = np.zeros(num_times), np.full(num_times, 1.0 / num_times)
    else:
        times, weights = time_grid(time_grid_kind, num_times, t_min, 1.0)
    dtype = jnp.result_type(float)
    times, weights = jnp.asarray(times, dtype), jnp.asarray(weights, dtype)

    @jax.jit
    def step(params, batch, key):
        rows, cnt = nelbo_batch(logprobs_fn, params, batch["tokens"], batch["loss_mask"], key, schedule=schedule,
                                mask_id=mask_id, times=times, weights=weights, antithetic_times=antithetic,
                                t_min=t_min)
        return {"nelbo_sum": rows, "num_tokens": cnt, "sq": rows * rows, "sc": rows * cnt, "cc": cnt * cnt,
                "num_sequences": jnp.ones_like(rows)}

    def prepare(batch):
        tokens = batch["tokens"] if isinstance(batch, dict) else batch
        loss_mask = batch.get("loss_mask") if isinstance(batch, dict) else None
        if loss_mask is None:
            loss_mask = jnp.ones(jnp.shape(tokens), jnp.float32)
        return {"tokens": jnp.asarray(tokens, jnp.int32), "loss_mask": jnp.asarray(loss_mask, jnp.float32)}

    tot, done = reduce_sums(step, params, batches, rng, max_batches=max_batches, prepare=prepare)
    if not done:
        raise ValueError("batches: empty; expected at least one batch")
    s_sum, c_sum, n = tot["nelbo_sum"], tot["num_tokens"], tot["num_sequences"]
    nats = float(s_sum / max(c_sum, 1e-12))
    # Σ (s_i − r c_i)² from the reduced sums (delta-method stderr of the ratio over sequences).
    resid = max(tot["sq"] - 2 * nats * tot["sc"] + nats * nats * tot["cc"], 0.0)
    stderr = float(np.sqrt(resid / max(n * (n - 1), 1)) / max(c_sum / n, 1e-12))
    return {"nats_per_token": nats, "bits_per_token": nats / math.log(2.0), "ppl": float(np.exp(nats)),
            "stderr_nats": stderr, "num_tokens": float(c_sum), "num_sequences": float(n)}


def exact_nelbo(denoise_fn: Callable, xs, schedule: MaskingSchedule, *, mask_id: int, t_lo: float = 0.0,
                t_hi: float = 1.0, num_nodes: int = 64, per_position: bool = False,
                time_independent: bool = False):
    """``∫_{t_lo}^{t_hi} w(t) E_{z_t ~ q(·|x)}[1[z_t^ℓ = m](−log p(x^ℓ | z_t))] dt`` for each
    sequence, exactly in the masks (all ``2^L`` patterns, probability ``(1−α)^{|S|} α^{L−|S|}``)
    and by ``num_nodes``-point Gauss–Legendre in t (t: 0 clean, 1 masked).

    ``denoise_fn(z [B, L], t [B]) -> log-probs [B, L, V]`` (e.g. an oracle's ``denoise_fn(m)``);
    ``xs`` int ``[N, L]``, L ≤ 16. Returns ``[N]`` (or ``[N, L]`` with ``per_position``). With
    ``time_independent`` the denoiser is called once per pattern instead of once per node.
    For ``α(0) = 1, α(1) = 0`` and the exact conditionals this equals ``−log p*(x)``.
    """
    xs = jnp.asarray(xs)
    n, length = xs.shape
    if length > 16:
        raise ValueError(f"xs: length {length}; expected <= 16 (2^L mask patterns are enumerated)")
    pats = jnp.asarray(np.array(list(itertools.product([False, True], repeat=length)), bool))  # [P, L]
    num_masked = pats.sum(-1)
    z = jnp.where(pats[None], mask_id, xs[:, None, :]).reshape(-1, length).astype(jnp.int32)
    x_rep = jnp.repeat(xs, pats.shape[0], axis=0)
    nodes, wq = time_grid("gauss_legendre", num_nodes, t_lo, t_hi)
    dtype = jnp.result_type(float)
    nodes, wq = jnp.asarray(nodes, dtype), jnp.asarray(wq, dtype)
    cached = denoise_fn(z, jnp.zeros((z.shape[0],), dtype)) if time_independent else None

    def at(t):
        tt = jnp.full((z.shape[0],), t, dtype)
        fn = (lambda zz, _t: cached) if time_independent else denoise_fn
        terms = nelbo_terms(fn, x_rep, z, tt, schedule, mask_id=mask_id).reshape(n, -1, length)
        a = schedule.move_chance(t)
        prob = a**num_masked * (1.0 - a) ** (length - num_masked)  # [P]
        return jnp.einsum("npl,p->nl", terms, prob)

    vals = jax.lax.map(at, nodes)  # [K, N, L]
    out = jnp.tensordot(wq, vals, axes=1)
    return out if per_position else out.sum(-1)
