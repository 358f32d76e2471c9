"""FeF-DLLM: factorisation-error-free masked-diffusion sampling by speculative decoding (METHODS §5).

Each denoising step

1. calls the model once on the state ``X_t``: drafts ``q_j = f(X_t)_j``;
2. picks its ``K_t`` committed positions *without looking at the values it will sample*
   (marginal confidence ``max_v q_j`` or uniformly at random; current LLaDA block only; ``K_t`` from
   LLaDA's even split) and orders them left to right, ``j_1 < … < j_K``;
3. runs speculative rounds in a ``lax.while_loop``. A round draws ``x̃_m ~ D_m`` for every
   remaining slot and evaluates all prefix contexts ``C^(m) = C ⊕ {j_{m0..m-1} ← x̃}`` in ONE
   batched model call (rows padded to a static ``K``); slot m is accepted w.p.
   ``min(1, P_m(x̃)/D_m(x̃))`` with ``P_m = f(C^(m))_{j_m}``; at the first rejection r the token is
   redrawn from ``(P_r − D_r)_+`` and the drafts of slots ``m > r`` are refreshed from row ``C^(r)``
   of the same call.

The committed tokens then follow ``Π_m f(C_m)_{j_m}``, the exact prefix-conditioned factorisation:
with an exact model the output law is ``p*`` for ANY step schedule (Theorem 1). Temperature and
top-p are applied to P and D alike (exactness then holds for the tempered conditionals).
Temperature 0 is greedy: accept iff ``argmax P = argmax D``, on rejection take ``argmax P``.

``target="poe"`` uses Lemma 1's product of experts
``P ∝ f(X_t)_i · f(C^(m) with i deleted)_i / f(X_t with i deleted)_i`` (deleted = set to
``mask_id``) for corruptions whose undecided tokens carry information (pass them via ``init``:
any id outside ``[0, V)`` is undecided). It costs one extra call per step (``X_t`` with each slot
deleted, K rows). For masked states it reduces to ``target="masked"``.

Cost accounting. Samples are batched explicitly; the round loop runs until every sample's step is
done, so finished samples ride along as padding. ``info`` therefore counts per sample what that
sample needed on its own — ``nfe`` (sequential model calls: one draft call per step, one per round,
plus one per step for ``poe``), ``rows`` (useful batch rows: 1 per draft call, ``K − m0 + 1`` per
round, K per ``poe`` deletion call), ``rounds`` ``[B, steps]`` — and separately what the batched
program physically ran: ``nfe_batched`` and ``rows_batched`` (every round evaluates ``B·K`` rows).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from dlm_jax.samplers.categorical import sample_categorical
from dlm_jax.samplers.llada import (Plan, draw, is_clean, make_plan, select_positions, slot_positions, step_inputs,
                                    step_k, transform_logp)

Array = jax.Array

__all__ = ["sample_fef", "speculative_step", "residual_logp"]


def residual_logp(p_logp: Array, d_logp: Array) -> Array:
    """``log normalise((P − D)_+)``; falls back to P where the residual vanishes (then P = D and a
    rejection has probability 0)."""
    res = jnp.maximum(jnp.exp(p_logp) - jnp.exp(d_logp), 0.0)
    total = res.sum(-1, keepdims=True)
    log_res = jnp.where(res > 0, jnp.log(jnp.where(res > 0, res, 1.0)), -jnp.inf)
    return jnp.where(total > 0, log_res - jnp.log(jnp.where(total > 0, total, 1.0)), p_logp)


def speculative_step(key: Array, p_logp: Array, d_logp: Array, method: str = "auto") -> tuple[Array, Array]:
    """One single-position speculative step: ``x̃ ~ D``, keep it w.p. ``min(1, P/D)``, else draw from
    ``(P − D)_+``. The output is distributed exactly as P. Returns ``(token, accepted)``; batched
    over leading axes."""
    kx, ku, kr = jax.random.split(key, 3)
    x = sample_categorical(kx, d_logp, method)
    gap = (jnp.take_along_axis(p_logp, x[..., None], -1) - jnp.take_along_axis(d_logp, x[..., None], -1))[..., 0]
    accept = jnp.log(jax.random.uniform(ku, x.shape, p_logp.dtype)) < gap
    y = sample_categorical(kr, residual_logp(p_logp, d_logp), method)
    return jnp.where(accept, x, y), accept


def _gather_slots(logp: Array, slot_pos: Array) -> Array:
    """``logp [B, R, L, V]`` at row r, position ``slot_pos[b, r]`` -> ``[B, R, V]``."""
    return jnp.take_along_axis(logp, slot_pos[:, :, None, None], axis=2)[:, :, 0]


def _call(denoise_fn, z: Array, vocab: int) -> Array:
    """Model call on rows ``[..., L]`` with ``t`` = fraction undecided; returns normalised log-probs."""
    lead = z.shape[:-1]
    flat = z.reshape(-1, z.shape[-1])
    out = denoise_fn(flat, (~is_clean(flat, vocab)).mean(-1))
    return jax.nn.log_softmax(out, axis=-1).reshape(lead + out.shape[-2:])


def _rounds(denoise_fn, plan: Plan, poe: bool, key, z, slot_pos, valid, k, q_slot, h_slot):
    """The speculative rounds of one denoising step (``lax.while_loop``)."""
    bsz, length = z.shape
    kmax, vocab = plan.k_max, plan.vocab_size
    greedy = plan.temperature == 0.0
    pos = jnp.arange(length, dtype=jnp.int32)
    slots = jnp.arange(kmax, dtype=jnp.int32)
    rows_b = jnp.arange(bsz)
    onehot = (slot_pos[:, :, None] == pos) & valid[:, :, None]  # [B, K(slot), L]
    tf = lambda lp: transform_logp(lp, plan.temperature, plan.top_p)  # noqa: E731

    def cond(s):
        return jnp.any(s["m0"] < k)

    def body(s):
        key, kx, ku, kr = jax.random.split(s["key"], 4)
        c, m0, d = s["c"], s["m0"], s["d"]
        active = m0 < k
        xt = draw(kx, d, plan)  # [B, K]
        # Row r holds C^(r): slots m0..r-1 filled with their drafts.
        fill = valid[:, None, :] & (slots[None, None, :] >= m0[:, None, None]) & (slots[None, None, :] < slots[None, :, None])
        hit = fill[..., None] & onehot[:, None]  # [B, r, m, L]
        ctx = jnp.where(hit.any(2), jnp.sum(jnp.where(hit, xt[:, None, :, None], 0), axis=2), c[:, None, :])
        ctx = ctx.astype(jnp.int32)
        if poe:  # delete each row's own position
            ctx = jnp.where(onehot, plan.mask_id, ctx)
        out = _call(denoise_fn, ctx, vocab)  # [B, K, L, V]
        g = _gather_slots(out, slot_pos)
        if poe:
            raw = q_slot + g - h_slot
            p = jax.nn.log_softmax(jnp.where(jnp.isfinite(raw), raw, -jnp.inf), axis=-1)
        else:
            p = g
        p = tf(p)
        considered = valid & (slots[None, :] >= m0[:, None])
        if greedy:
            accept = jnp.argmax(p, -1) == xt
        else:
            gap = (jnp.take_along_axis(p, xt[..., None], -1) - jnp.take_along_axis(d, xt[..., None], -1))[..., 0]
            accept = jnp.log(jax.random.uniform(ku, xt.shape, p.dtype)) < gap
        r = jnp.min(jnp.where(considered & ~accept, slots[None, :], k[:, None]), axis=1)  # first rejection
        rc = jnp.minimum(r, kmax - 1)
        rejected = active & (r < k)
        commit = considered & (slots[None, :] < r[:, None]) & active[:, None]
        p_r, d_r = p[rows_b, rc], d[rows_b, rc]
        y = jnp.argmax(p_r, -1).astype(jnp.int32) if greedy else sample_categorical(kr, residual_logp(p_r, d_r), plan.method)
        upd = commit[:, :, None] & onehot
        c = jnp.where(upd.any(1), jnp.sum(jnp.where(upd, xt[:, :, None], 0), axis=1), c).astype(jnp.int32)
        c = jnp.where(rejected[:, None] & (pos[None, :] == slot_pos[rows_b, rc][:, None]), y[:, None], c)
        # Draft refresh for slots after r from row C^(r) of the same call.
        fresh = tf(jnp.take_along_axis(out[rows_b, rc], slot_pos[:, :, None], axis=1))
        d = jnp.where((rejected[:, None] & (slots[None, :] > r[:, None]))[..., None], fresh, d)
        i32 = lambda v: jnp.asarray(v).astype(jnp.int32)  # noqa: E731
        return dict(key=key, c=i32(c), m0=i32(jnp.where(active, r + 1, m0)), d=d,
                    rounds=i32(s["rounds"] + active), rows=i32(s["rows"] + jnp.where(active, k - m0, 0)),
                    accepted=i32(s["accepted"] + commit.sum(1)), rejected=i32(s["rejected"] + rejected),
                    calls=i32(s["calls"] + 1))

    zeros = jnp.zeros((bsz,), jnp.int32)
    init = dict(key=key, c=z, m0=zeros, d=tf(q_slot), rounds=zeros, rows=zeros, accepted=zeros, rejected=zeros,
                calls=jnp.zeros((), jnp.int32))
    return jax.lax.while_loop(cond, body, init)


def _fef_impl(denoise_fn, plan: Plan, poe: bool, key, init):
    bsz, length = init.shape
    vocab, kmax = plan.vocab_size, plan.k_max
    pos = jnp.arange(length)

    def step(carry, xs):
        z, key = carry
        start, end, s_left, k_fix = xs
        key, k_sel, k_rounds = jax.random.split(key, 3)
        q = _call(denoise_fn, z, vocab)  # drafts: one call on X_t
        cand = ~is_clean(z, vocab) & (pos >= start) & (pos < end)
        conf = jax.random.uniform(k_sel, z.shape) if plan.selection == "random" else jnp.exp(q.max(-1))
        k = step_k(cand, s_left, k_fix)
        slot_pos, valid = slot_positions(select_positions(conf, cand, k), kmax)
        q_slot = jnp.take_along_axis(q, slot_pos[:, :, None], axis=1)  # [B, K, V]
        h_slot = None
        if poe:  # f(X_t with slot m deleted) at j_m: one extra call of K rows
            deleted = jnp.where((slot_pos[:, :, None] == pos) & valid[:, :, None], plan.mask_id, z[:, None, :])
            h_slot = _gather_slots(_call(denoise_fn, deleted, vocab), slot_pos)
        s = _rounds(denoise_fn, plan, poe, k_rounds, z, slot_pos, valid, k, q_slot, h_slot)
        out = dict(rounds=s["rounds"], k=k, rows=1 + s["rows"] + (k if poe else 0), calls=s["calls"],
                   accepted=s["accepted"], rejected=s["rejected"])
        return (s["c"], key), out

    (z, _), per = jax.lax.scan(step, (init, key), step_inputs(plan))
    per_call = 2 if poe else 1
    info = {
        "nfe": plan.steps * per_call + per["rounds"].sum(0),
        "rows": per["rows"].sum(0),
        "rounds": per["rounds"].T,
        "k": per["k"].T,
        "total_rounds": per["rounds"].sum(0),
        "accepted": per["accepted"].sum(0),
        "rejected": per["rejected"].sum(0),
        "nfe_batched": plan.steps * per_call + per["calls"].sum(),
        "rows_batched": plan.steps * bsz * (1 + (kmax if poe else 0)) + per["calls"].sum() * bsz * kmax,
    }
    return z, info


_fef_jit = jax.jit(_fef_impl, static_argnums=(0, 1, 2))


def sample_fef(denoise_fn: Callable, key: Array, *, num_samples: int, length: int, steps: int, mask_id: int | None = None,
               vocab_size: int, block_length: Optional[int] = None, selection: str = "confidence",
               temperature: float = 1.0, top_p: float = 1.0, target: str = "masked", prefix=None, init=None,
               k_schedule=None, categorical_method: str = "auto") -> tuple[Array, dict]:
    """FeF-DLLM sampler (see the module docstring).

    ``denoise_fn(z [B, L] int32, t [B]) -> log-probs [B, L, V]`` over the clean tokens; ``t`` is the
    fraction of undecided positions (masked direction: 0 = clean, 1 = fully masked; FeF does not
    rely on it). ``selection``: ``"confidence"`` (``max_v q``) or ``"random"``. ``prefix``: clean
    prompt ``[P]``/``[B, P]``; ``init``: full starting state (non-clean ids are generated);
    ``k_schedule``: explicit committed count per step (default: LLaDA's even split per block).

    Returns ``(tokens [B, L] int32, info)``; info holds per-sample ``nfe``, ``rows``,
    ``rounds [B, steps]``, ``k [B, steps]``, ``total_rounds``, ``accepted``, ``rejected`` and the
    batched program's ``nfe_batched`` / ``rows_batched``. Bad input raises a one-line ValueError
    before anything compiles."""
    if target not in ("masked", "poe"):
        raise ValueError(f"target: {target!r}; expected 'masked' or 'poe'")
    plan, state = make_plan(denoise_fn, num_samples=num_samples, length=length, steps=steps, mask_id=mask_id,
                            vocab_size=vocab_size, block_length=block_length, selection=selection,
                            selections=("confidence", "random"), temperature=temperature, top_p=top_p,
                            prefix=prefix, init=init, k_schedule=k_schedule, categorical_method=categorical_method)
    return _fef_jit(denoise_fn, plan, target == "poe", key, jnp.asarray(state))
