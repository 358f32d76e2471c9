"""LLaDA-style block schedule and the standard (independent-marginal) masked sampler (METHODS §2.5).

Shared by the standard sampler below and by FeF-DLLM (``speculative.py``):

* the generated region — the positions after the prefix fixed in every sample (LLaDA's prompt,
  given as ``fixed``/``fixed_tokens`` like every sampler's conditioning) — is split into blocks of
  ``block_length``; each block gets ``steps / num_blocks`` steps and step ``i`` of a block commits
  ``K = ceil(n_rem / s_rem)`` positions (``n_rem`` still undecided in the block, ``s_rem`` steps
  left in it), which is exactly LLaDA's ``get_num_transfer_tokens`` even split with the remainder
  front-loaded;
* positions are chosen inside the current block only, by a confidence score.

State convention: a token id in ``[0, V)`` is clean (decided, kept); any other id is undecided —
the mask id ``V`` or, for corruptions where a noisy token carries information, an id ``>= V`` that
the ``denoise_fn`` decodes as such (``undecided_init``; see ``sample_fef(target="poe")``). Fixed
positions hold clean ids, free positions start undecided, so the undecided set is the free set.

``denoise_fn(z [B, L] int32, t [B]) -> log-probs [B, L, V]``; ``t`` is the fraction of undecided
positions (masked-diffusion direction: 0 = clean, 1 = fully masked).

The standard sampler draws every committed token independently from its marginal, so a step that
commits several dependent tokens makes a factorisation error; FeF removes it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.checks import check_choice, check_float, check_int, fail
from dlm_jax.samplers.categorical import METHODS as CATEGORICAL_METHODS
from dlm_jax.samplers.categorical import _check_method, sample_categorical, top_p_filter
from dlm_jax.samplers.driver import apply_fixed, check_denoise_fn, check_fixed, static_fixed

Array = jax.Array

__all__ = ["Plan", "make_plan", "sample_llada", "is_clean", "transform_logp", "select_positions"]


@dataclasses.dataclass(frozen=True)
class Plan:
    """Static, validated sampler configuration (hashable: used as a jit static argument)."""

    num_samples: int
    length: int
    vocab_size: int
    mask_id: int
    steps: int
    block_start: tuple  # per step
    block_end: tuple  # per step
    steps_left: tuple  # per step: steps left in its block, current one included
    k_fixed: tuple  # per step: committed count, or -1 for the LLaDA even split
    k_max: int  # static bound on the committed count of any step
    selection: str
    temperature: float
    top_p: float
    method: str  # resolved categorical method


def _leading_fixed(free: np.ndarray) -> int:
    """Length of the prefix fixed in every sample: where the blocks start."""
    open_cols = free.any(0)
    return int(np.argmax(open_cols)) if open_cols.any() else free.shape[1]


def _check_undecided_init(undecided_init, free, num_samples, length, vocab_size):
    """Validate the starting ids of the free positions: ``[L]``/``[B, L]`` ints, all >= V where
    concrete (a negative id would wrap in an embedding lookup; a clean one is conditioning)."""
    arr = jnp.asarray(undecided_init)
    if arr.shape not in ((length,), (num_samples, length)) or not jnp.issubdtype(arr.dtype, jnp.integer):
        fail("undecided_init", f"shape {arr.shape} dtype {arr.dtype}",
             f"integer ids of shape ({length},) or ({num_samples}, {length})")
    if not isinstance(undecided_init, jax.core.Tracer):
        ids = np.broadcast_to(np.asarray(undecided_init), free.shape)[free]
        bad = np.unique(ids[ids < vocab_size])
        if bad.size:
            fail("undecided_init", f"ids {bad[:4].tolist()} at free positions",
                 f"ids >= vocab_size = {vocab_size} (mask_id, or a noisy id the denoiser decodes); "
                 "clamp clean tokens with fixed/fixed_tokens")
    return jnp.broadcast_to(arr.astype(jnp.int32), free.shape)


def make_plan(denoise_fn: Callable, *, num_samples, length, steps, mask_id=None, vocab_size, block_length=None,
              selection="confidence", selections=("confidence", "random"), temperature=1.0, top_p=1.0,
              fixed=None, fixed_tokens=None, undecided_init=None, k_schedule: Optional[Sequence[int]] = None,
              categorical_method="auto") -> tuple[Plan, Array]:
    """Validate everything before compiling; returns the plan and the initial state ``[B, L]``.

    Conditioning is the one API of every sampler (``driver.check_fixed``): ``fixed`` (bool ``[L]``
    or ``[B, L]``, concrete: the plan depends on it) clamps positions to ``fixed_tokens`` (clean ids,
    may be traced). Blocks start after the prefix fixed in every sample (LLaDA's prompt) and cover
    the rest; fixed positions inside them are simply not generated, and every block needs at least
    one free position per sample. ``undecided_init``: starting ids of the free positions (default
    ``mask_id``), for corruptions whose undecided tokens carry information (``sample_fef(target="poe")``);
    they must lie outside the clean ids. ``k_schedule``: optional explicit committed count per step
    (must exhaust every block)."""
    num_samples = check_int("num_samples", num_samples, min=1)
    length = check_int("length", length, min=1)
    vocab_size = check_int("vocab_size", vocab_size, min=1)
    steps = check_int("steps", steps, min=1)
    # CONVENTIONS: the mask id is V by default; ids below V are clean, negative ids are never valid.
    mask_id = vocab_size if mask_id is None else mask_id
    if isinstance(mask_id, (bool, np.bool_)) or not isinstance(mask_id, (int, np.integer)) or mask_id < vocab_size:
        fail("mask_id", mask_id, f"an int >= vocab_size = {vocab_size} (outside the clean ids)")
    mask_id = int(mask_id)
    check_choice("selection", selection, selections)
    temperature = check_float("temperature", temperature, min=0.0)
    top_p = check_float("top_p", top_p, min=0.0, max=1.0, min_open=True)
    check_choice("categorical_method", categorical_method, CATEGORICAL_METHODS)
    method = _check_method(categorical_method)

    check_fixed(fixed, fixed_tokens, num_samples, length, vocab_size)
    free = ~static_fixed(fixed, num_samples, length)
    if undecided_init is None:
        z0 = jnp.full((num_samples, length), mask_id, jnp.int32)
    else:
        z0 = _check_undecided_init(undecided_init, free, num_samples, length, vocab_size)
    state, _ = apply_fixed(z0, fixed, fixed_tokens)

    gen_start = _leading_fixed(free)
    gen_len = length - gen_start
    if gen_len == 0:
        fail("fixed", "every position fixed", "at least one free position")
    block_length = check_int("block_length", gen_len if block_length is None else block_length, min=1)
    if gen_len % block_length:
        fail("block_length", block_length, f"a divisor of the generated length {gen_len}")
    num_blocks = gen_len // block_length
    if steps % num_blocks:
        fail("steps", steps, f"a multiple of the number of blocks ({num_blocks})")
    spb = steps // num_blocks
    counts = [free[:, gen_start + b * block_length: gen_start + (b + 1) * block_length].sum(1)
              for b in range(num_blocks)]
    for b, c in enumerate(counts):
        lo = gen_start + b * block_length
        if c.min() == 0:
            fail("fixed", f"block {b} (positions {lo}..{lo + block_length - 1}) with no free position",
                 ">= 1 free position per block in every sample")
        if k_schedule is None and c.min() < spb:
            fail("steps", steps, f"<= {num_blocks} x {int(c.min())} (each step commits >= 1 of the "
                 f"{int(c.min())} undecided positions of block {b})")
    if k_schedule is not None:
        ks = tuple(int(k) for k in k_schedule)
        if len(ks) != steps or min(ks) < 1:
            fail("k_schedule", ks, f"{steps} integers >= 1 (one per step)")
        for b, c in enumerate(counts):
            part = ks[b * spb:(b + 1) * spb]
            if c.min() != c.max():
                fail("k_schedule", ks, "samples with equal undecided counts per block")
            if sum(part) > c[0]:
                fail("k_schedule", ks, f"at most the {int(c[0])} undecided positions of block {b} "
                     f"(K larger than the number of masked positions)")
            if sum(part) < c[0]:
                fail("k_schedule", ks, f"block {b} steps summing to its {int(c[0])} undecided positions")
        k_fixed, k_max = ks, max(ks)
    else:
        k_fixed = (-1,) * steps
        k_max = max(-(-int(c.max()) // spb) for c in counts)

    starts = tuple(gen_start + (s // spb) * block_length for s in range(steps))
    plan = Plan(num_samples, length, vocab_size, mask_id, steps, starts,
                tuple(s + block_length for s in starts), tuple(spb - s % spb for s in range(steps)),
                k_fixed, k_max, selection, temperature, top_p, method)
    # The loop calls denoise_fn(z, t) with t = the fraction undecided (default float).
    check_denoise_fn(denoise_fn, (state, jnp.zeros((num_samples,), jnp.result_type(float))), vocab_size)
    return plan, state


# ---------------------------------------------------------------- traced helpers


def is_clean(z: Array, vocab_size: int) -> Array:
    """Decided positions: ids in ``[0, V)``."""
    return (z >= 0) & (z < vocab_size)


def transform_logp(logp: Array, temperature: float, top_p: float) -> Array:
    """Temperature then nucleus filter, renormalised (identity up to normalisation at T=1, p=1).
    Temperature 0 (greedy) leaves log-probs unchanged: only their argmax is used."""
    if temperature == 0.0:
        return jax.nn.log_softmax(logp, axis=-1)
    return top_p_filter(logp / temperature, top_p)


def step_k(undecided_in_block: Array, steps_left, k_fixed) -> Array:
    """Committed count per sample: the explicit schedule, else LLaDA's even split."""
    n_rem = undecided_in_block.sum(-1).astype(jnp.int32)
    even = (n_rem + steps_left - 1) // steps_left
    return jnp.minimum(jnp.where(k_fixed >= 0, k_fixed, even), n_rem)


def select_positions(conf: Array, candidates: Array, k: Array) -> Array:
    """The ``k`` (per sample) candidates of highest confidence, ``[B, L]`` bool."""
    score = jnp.where(candidates, -conf, jnp.inf)
    rank = jnp.argsort(jnp.argsort(score, axis=-1, stable=True), axis=-1, stable=True)
    return candidates & (rank < k[:, None])


def slot_positions(selected: Array, k_max: int) -> tuple[Array, Array]:
    """Selected positions in left-to-right order, padded to ``k_max`` slots: ``(pos [B, K], valid [B, K])``."""
    length = selected.shape[-1]
    pos = jnp.arange(length)
    order = jnp.argsort(jnp.where(selected, pos, length + pos), axis=-1)[:, :k_max]
    valid = jnp.arange(k_max)[None, :] < selected.sum(-1, keepdims=True)
    return order.astype(jnp.int32), valid


def step_inputs(plan: Plan):
    """Per-step scan inputs ``(block_start, block_end, steps_left, k_fixed)`` as int32 arrays."""
    return tuple(jnp.asarray(v, jnp.int32) for v in (plan.block_start, plan.block_end, plan.steps_left, plan.k_fixed))


def draw(key: Array, logp: Array, plan: Plan) -> Array:
    """Argmax at temperature 0, else a high-precision categorical draw."""
    if plan.temperature == 0.0:
        return jnp.argmax(logp, axis=-1).astype(jnp.int32)
    return sample_categorical(key, logp, plan.method)


# ---------------------------------------------------------------- standard sampler


def _llada_impl(denoise_fn, plan: Plan, key, init):
    length, vocab = plan.length, plan.vocab_size
    pos = jnp.arange(length)

    def step(carry, xs):
        z, key = carry
        start, end, s_left, k_fix = xs
        key, k_draw, k_conf = jax.random.split(key, 3)
        undecided = ~is_clean(z, vocab)
        logp = jax.nn.log_softmax(denoise_fn(z, undecided.mean(-1)), axis=-1)
        x_hat = draw(k_draw, transform_logp(logp, plan.temperature, plan.top_p), plan)
        if plan.selection == "random":
            conf = jax.random.uniform(k_conf, z.shape)
        elif plan.selection == "low_confidence":  # LLaDA: model probability of the sampled token
            conf = jnp.exp(jnp.take_along_axis(logp, x_hat[..., None], axis=-1)[..., 0])
        else:  # marginal confidence max_v q (X_t-measurable)
            conf = jnp.exp(logp.max(-1))
        cand = undecided & (pos >= start) & (pos < end)
        sel = select_positions(conf, cand, step_k(cand, s_left, k_fix))
        return (jnp.where(sel, x_hat, z), key), None

    (z, _), _ = jax.lax.scan(step, (init, key), step_inputs(plan))
    return z


_llada_jit = jax.jit(_llada_impl, static_argnums=(0, 1))


def sample_llada(denoise_fn: Callable, key: Array, *, num_samples: int, length: int, steps: int, mask_id: int | None = None,
                 vocab_size: int, block_length: Optional[int] = None, selection: str = "low_confidence",
                 temperature: float = 0.0, top_p: float = 1.0, fixed: Array | None = None,
                 fixed_tokens: Array | None = None, undecided_init=None, k_schedule=None,
                 categorical_method: str = "auto") -> tuple[Array, dict]:
    """Standard LLaDA sampler: each step draws every masked token independently from its marginal
    and commits the ``K`` most confident in the current block (``selection``: ``"low_confidence"``
    = LLaDA's probability of the sampled token, ``"confidence"`` = ``max_v q``, ``"random"``).
    ``temperature``: 0 (default, as LLaDA's ``generate.py``) commits ``argmax q`` (greedy); ``T > 0``
    draws from ``softmax(log q / T)`` (float64 Gumbel under x64), e.g. 1 for exact-law tests.
    ``fixed``/``fixed_tokens``: clamped positions (a prompt: blocks start after it), see ``make_plan``.
    Returns ``(tokens [B, L], info)`` with ``info["nfe"] = info["rows"] = steps`` per sample."""
    plan, state = make_plan(denoise_fn, num_samples=num_samples, length=length, steps=steps, mask_id=mask_id,
                            vocab_size=vocab_size, block_length=block_length, selection=selection,
                            selections=("low_confidence", "confidence", "random"), temperature=temperature,
                            top_p=top_p, fixed=fixed, fixed_tokens=fixed_tokens, undecided_init=undecided_init,
                            k_schedule=k_schedule, categorical_method=categorical_method)
    tokens = _llada_jit(denoise_fn, plan, key, state)
    per_sample = jnp.full((num_samples,), steps, jnp.int32)
    return tokens, {"nfe": per_sample, "rows": per_sample, "nfe_batched": steps, "rows_batched": steps * num_samples}
