"""FeF-DLLM: factorisation-error-free masked-diffusion sampling by speculative decoding (METHODS §5).

Each denoising step, on the state ``X_t`` with drafts ``q = f(X_t)``,

1. picks its ``K_t`` committed positions *without looking at the values it will sample*
   (marginal confidence ``max_v q_j`` or uniformly at random; current LLaDA block only; ``K_t`` from
   LLaDA's even split) and orders them left to right, ``j_1 < … < j_K``;
2. commits ``j_1`` straight from its draft: its target ``f(C^(1))_{j_1}`` is computed from
   ``C^(1) = X_t``, the very context of the draft, so it needs no verification row ("free first
   position");
3. runs speculative rounds over ``j_2..j_K`` in a ``lax.while_loop``. A round draws ``x̃_m ~ D_m``
   for every remaining slot and evaluates all prefix contexts ``C^(m) = C ⊕ {j_{m0..m-1} ← x̃}`` in
   ONE batched model call; slot m is accepted w.p. ``min(1, P_m(x̃)/D_m(x̃))`` with
   ``P_m = f(C^(m))_{j_m}``; at the first rejection r the token is redrawn from ``(P_r − D_r)_+``
   and the drafts of slots ``m > r`` are refreshed from row ``C^(r)`` of the same call;
4. "lookahead": every round also evaluates ``C ⊕ {j_{m0..K} ← x̃}``, the state the step ends in if
   the round accepts everything. When it does, that row IS ``f(X_{t'})``, the next step's drafts
   (computed from exactly the context they are used for), so the next step makes no separate draft
   call. Otherwise (a rejection at the last slot, or ``K = 1``) the next step calls the model on
   ``X_{t'}`` first. The last step adds no lookahead row.

The committed tokens then follow ``Π_m f(C_m)_{j_m}``, the exact prefix-conditioned factorisation:
with an exact model the output law is ``p*`` for ANY step schedule (Theorem 1); positions stay
``X_t``-measurable because ``q`` is always ``f(X_t)`` exactly. Temperature and top-p are applied to
P and D alike (exactness then holds for the tempered conditionals). Temperature 0 is greedy: accept
iff ``argmax P = argmax D``, on rejection take ``argmax P``.

Conditioning is the one API of every sampler: ``fixed``/``fixed_tokens`` clamp positions (a prompt;
LLaDA blocks start after the prefix fixed in every sample, ``llada.make_plan``).

``target="poe"`` uses Lemma 1's product of experts
``P ∝ f(X_t)_i · f(C^(m) with i deleted)_i / f(X_t with i deleted)_i`` (deleted = set to
``mask_id``) for corruptions whose undecided tokens carry information: pass their ids, all
``>= V``, as ``undecided_init`` (the starting state of the free positions; not conditioning —
those tokens are generated). The ``X_t``-with-``j_m``-deleted rows ride in the step's
first round call (no extra sequential call); the first slot stays free (its ratio is 1). For
masked states it reduces to ``target="masked"``.

Compacted calls. Samples are batched explicitly and finish their rounds at different times. Every
model call gathers only the rows some sample needs into the smallest of a few static batch sizes
(``n, n/2, n/4, …``: ``row_buckets`` halvings, one ``lax.switch`` branch each; 0 rows skips the
call), so finished samples and dead slots cost (almost) nothing.

Cost accounting. ``info`` counts per sample what that sample needed on its own: ``nfe``
(sequential model calls: draft calls + rounds), ``rows`` (useful rows: 1 per draft call; per round
``K − m0`` verification rows + 1 lookahead row (+ ``K − 1`` deletion rows in a ``poe`` first
round)), ``rounds`` ``[B, steps]``, ``draft_calls``, ``accepted`` / ``rejected`` (verified
proposals only: the free first slots are not counted); and what the batched program physically
ran: ``nfe_batched`` (calls) and ``rows_batched`` (rows including bucket padding).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from dlm_jax.checks import check_choice, check_int
from dlm_jax.samplers.categorical import sample_categorical
from dlm_jax.samplers.llada import (Plan, draw, is_clean, make_plan, select_positions, slot_positions, step_inputs,
                                    step_k, transform_logp)

Array = jax.Array

__all__ = ["sample_fef", "speculative_step", "residual_logp", "compact_call", "buckets"]


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


def buckets(n: int, halvings: int) -> tuple[int, ...]:
    """Static batch sizes of a compacted call over ``n`` rows: 0 (skip), ``n`` and ``⌈n/2^i⌉``."""
    return tuple(sorted({0, n} | {-(-n // 2**i) for i in range(1, halvings + 1)}))


def compact_call(denoise_fn, rows: Array, need: Array, vocab: int, sizes: tuple[int, ...], dtype) -> tuple[Array, Array]:
    """``f`` on the rows flagged by ``need [N]`` only, gathered into the smallest static batch size in
    ``sizes`` that holds them (one ``lax.switch`` branch per size; 0 skips the call). Returns
    ``(log-probs [N, L, V], rows run)``; rows not needed hold zeros (or their own value at full size).
    Each output row depends on its own context only, so compaction never changes a needed row."""
    n, length = rows.shape
    table = jnp.asarray(sizes, jnp.int32)
    which = jnp.searchsorted(table, need.sum().astype(jnp.int32), side="left")
    empty = jnp.zeros((n, length, vocab), dtype)

    def branch(size):
        def run(_):
            if size == 0:
                return empty
            if size == n:
                return _call(denoise_fn, rows, vocab).astype(dtype)
            idx = jnp.nonzero(need, size=size, fill_value=n)[0]  # padding: out of range, dropped below
            out = _call(denoise_fn, rows[jnp.minimum(idx, n - 1)], vocab).astype(dtype)
            return empty.at[idx].set(out, mode="drop")
        return run

    return jax.lax.switch(which, [branch(s) for s in sizes], None), table[which]


def _rounds(denoise_fn, plan: Plan, poe: bool, sizes, dtype, key, z0, c, slot_pos, valid, k, q_slot, lookahead, q):
    """The speculative rounds of one denoising step over slots ``1..k-1`` (``lax.while_loop``).
    ``z0``: ``X_t``; ``c``: ``X_t`` with slot 0 committed; ``q``: ``f(X_t)`` (kept if no lookahead)."""
    bsz, length = c.shape
    kmax, vocab = plan.k_max, plan.vocab_size
    greedy = plan.temperature == 0.0
    pos = jnp.arange(length, dtype=jnp.int32)
    slots = jnp.arange(kmax, dtype=jnp.int32)
    ridx = jnp.arange(kmax + 1, dtype=jnp.int32)  # row r < K: C^(r); row K: lookahead (all slots filled)
    rows_b = jnp.arange(bsz)
    onehot = (slot_pos[:, :, None] == pos) & valid[:, :, None]  # [B, K(slot), L]
    tf = lambda lp: transform_logp(lp, plan.temperature, plan.top_p)  # noqa: E731
    i32 = lambda v: jnp.asarray(v).astype(jnp.int32)  # noqa: E731

    def cond(s):
        return jnp.any(s["m0"] < k)

    def body(s):
        key, kx, ku, kr = jax.random.split(s["key"], 4)
        c, m0, d = s["c"], s["m0"], s["d"]
        active = m0 < k
        first = s["rounds"] == 0
        xt = draw(kx, d, plan)  # [B, K]
        fill = valid[:, None, :] & (slots[None, None, :] >= m0[:, None, None]) & (slots[None, None, :] < ridx[None, :, None])
        hit = fill[..., None] & onehot[:, None]  # [B, row, slot, L]
        ctx = jnp.where(hit.any(2), jnp.sum(jnp.where(hit, xt[:, None, :, None], 0), axis=2), c[:, None, :])
        ctx = ctx.astype(jnp.int32)  # [B, K+1, L]
        need = active[:, None] & (((ridx[None, :] >= m0[:, None]) & (ridx[None, :] < k[:, None]))
                                  | ((ridx[None, :] == kmax) & lookahead))
        if poe:  # delete each verification row's own position; add X_t with j_m deleted (first round only)
            ctx = ctx.at[:, :kmax].set(jnp.where(onehot, plan.mask_id, ctx[:, :kmax]))
            ctx = jnp.concatenate([ctx, jnp.where(onehot, plan.mask_id, z0[:, None, :])], axis=1)
            need_h = (active & first)[:, None] & (slots[None, :] >= 1) & (slots[None, :] < k[:, None])
            need = jnp.concatenate([need, need_h], axis=1)
        nrow = ctx.shape[1]
        out, ran = compact_call(denoise_fn, ctx.reshape(-1, length), need.reshape(-1), vocab, sizes, dtype)
        out = out.reshape(bsz, nrow, length, vocab)
        g = _gather_slots(out[:, :kmax], slot_pos)
        h = s["h"]
        if poe:
            h = jnp.where(first[:, None, None], _gather_slots(out[:, kmax + 1:], slot_pos), h)
            raw = q_slot + g - h
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
        # Lookahead: if everything was accepted, the last row was evaluated on exactly X_{t'}.
        hit_all = active & (r >= k) & lookahead
        q_next = jnp.where(hit_all[:, None, None], out[:, kmax], s["q"])
        used = (k - m0) + lookahead + (jnp.where(first, k - 1, 0) if poe else 0)
        return dict(key=key, c=i32(c), m0=i32(jnp.where(active, r + 1, m0)), d=d, h=h, q=q_next,
                    q_ok=jnp.where(active, hit_all, s["q_ok"]),
                    rounds=i32(s["rounds"] + active), rows=i32(s["rows"] + jnp.where(active, used, 0)),
                    accepted=i32(s["accepted"] + commit.sum(1)), rejected=i32(s["rejected"] + rejected),
                    calls=i32(s["calls"] + 1), rows_run=i32(s["rows_run"] + ran))

    zeros = jnp.zeros((bsz,), jnp.int32)
    init = dict(key=key, c=c, m0=jnp.minimum(1, k).astype(jnp.int32), d=tf(q_slot), h=jnp.zeros_like(q_slot), q=q,
                q_ok=jnp.zeros((bsz,), bool), rounds=zeros, rows=zeros, accepted=zeros, rejected=zeros,
                calls=jnp.zeros((), jnp.int32), rows_run=jnp.zeros((), jnp.int32))
    return jax.lax.while_loop(cond, body, init)


def _fef_impl(denoise_fn, plan: Plan, poe: bool, halvings: int, key, init):
    bsz, length = init.shape
    vocab, kmax = plan.vocab_size, plan.k_max
    pos = jnp.arange(length)
    dtype = jax.eval_shape(lambda z: _call(denoise_fn, z, vocab), jax.ShapeDtypeStruct((1, length), jnp.int32)).dtype
    draft_sizes = buckets(bsz, halvings)
    round_sizes = buckets(bsz * ((2 * kmax + 1) if poe else (kmax + 1)), halvings)
    lookahead = jnp.arange(plan.steps) < plan.steps - 1  # the last step needs no next drafts

    def step(carry, xs):
        z, q, q_ok, key = carry
        start, end, s_left, k_fix, look = xs
        key, k_sel, k_first, k_rounds = jax.random.split(key, 4)
        # Drafts q = f(X_t): from the previous step's lookahead row where it was evaluated, else a call.
        fresh, ran = compact_call(denoise_fn, z, ~q_ok, vocab, draft_sizes, dtype)
        q = jnp.where(q_ok[:, None, None], q, fresh)
        cand = ~is_clean(z, vocab) & (pos >= start) & (pos < end)
        conf = jax.random.uniform(k_sel, z.shape) if plan.selection == "random" else jnp.exp(q.max(-1))
        k = step_k(cand, s_left, k_fix)
        slot_pos, valid = slot_positions(select_positions(conf, cand, k), kmax)
        q_slot = jnp.take_along_axis(q, slot_pos[:, :, None], axis=1)  # [B, K, V]
        # Free first position: its target context is X_t itself, so P_1 = D_1 (no verification).
        x0 = draw(k_first, transform_logp(q_slot[:, 0], plan.temperature, plan.top_p), plan)
        c = jnp.where((pos[None, :] == slot_pos[:, :1]) & valid[:, :1], x0[:, None], z).astype(jnp.int32)
        s = _rounds(denoise_fn, plan, poe, round_sizes, dtype, k_rounds, z, c, slot_pos, valid, k, q_slot, look, q)
        drafted = (~q_ok).astype(jnp.int32)
        out = dict(rounds=s["rounds"], k=k, draft=drafted, rows=drafted + s["rows"], accepted=s["accepted"],
                   rejected=s["rejected"], calls=s["calls"] + (ran > 0), rows_run=s["rows_run"] + ran)
        return (s["c"], s["q"], s["q_ok"], key), out

    carry = (init, jnp.zeros((bsz, length, vocab), dtype), jnp.zeros((bsz,), bool), key)
    (z, _, _, _), per = jax.lax.scan(step, carry, step_inputs(plan) + (lookahead,))
    info = {
        "nfe": per["draft"].sum(0) + per["rounds"].sum(0),
        "rows": per["rows"].sum(0),
        "rounds": per["rounds"].T,
        "k": per["k"].T,
        "draft_calls": per["draft"].sum(0),
        "total_rounds": per["rounds"].sum(0),
        "accepted": per["accepted"].sum(0),
        "rejected": per["rejected"].sum(0),
        "nfe_batched": per["calls"].sum(),
        "rows_batched": per["rows_run"].sum(),
    }
    return z, info


_fef_jit = jax.jit(_fef_impl, static_argnums=(0, 1, 2, 3))


def sample_fef(denoise_fn: Callable, key: Array, *, num_samples: int, length: int, steps: int, mask_id: int | None = None,
               vocab_size: int, block_length: Optional[int] = None, selection: str = "confidence",
               temperature: float = 1.0, top_p: float = 1.0, target: str = "masked", fixed: Array | None = None,
               fixed_tokens: Array | None = None, undecided_init=None, k_schedule=None,
               categorical_method: str = "auto", row_buckets: int = 6) -> tuple[Array, dict]:
    """FeF-DLLM sampler (see the module docstring).

    ``denoise_fn(z [B, L] int32, t [B]) -> log-probs [B, L, V]`` over the clean tokens, for any
    batch size B, each row depending on its own context only; ``t`` is the fraction of undecided
    positions (masked direction: 0 = clean, 1 = fully masked; FeF does not rely on it).
    ``selection``: ``"confidence"`` (``max_v q``) or ``"random"``. ``fixed`` (bool ``[L]``/``[B, L]``,
    concrete) / ``fixed_tokens`` (clean ids): clamped positions, e.g. a prompt; ``undecided_init``
    (ids ``>= V`` ``[L]``/``[B, L]``): starting ids of the free positions (default ``mask_id``; noisy
    ids for ``target="poe"``); ``k_schedule``: explicit committed count per step (default: LLaDA's
    even split per block); ``row_buckets``: halvings of the static batch sizes of compacted calls
    (0: full batch or skip).

    Returns ``(tokens [B, L] int32, info)``; info holds per-sample ``nfe``, ``rows``,
    ``rounds [B, steps]``, ``k [B, steps]``, ``draft_calls``, ``total_rounds``, ``accepted``,
    ``rejected`` and the batched program's ``nfe_batched`` / ``rows_batched``. Bad input raises a
    one-line ValueError before anything compiles."""
    check_choice("target", target, ("masked", "poe"))
    row_buckets = check_int("row_buckets", row_buckets, min=0, max=16)
    plan, state = make_plan(denoise_fn, num_samples=num_samples, length=length, steps=steps, mask_id=mask_id,
                            vocab_size=vocab_size, block_length=block_length, selection=selection,
                            selections=("confidence", "random"), temperature=temperature, top_p=top_p,
                            fixed=fixed, fixed_tokens=fixed_tokens, undecided_init=undecided_init,
                            k_schedule=k_schedule, categorical_method=categorical_method)
    return _fef_jit(denoise_fn, plan, target == "poe", row_buckets, key, state)
