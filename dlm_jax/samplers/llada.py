"""LLaDA-style block schedule and the standard (independent-marginal) masked sampler (METHODS §2.5).

Shared by the standard sampler below and by FeF-DLLM (``speculative.py``):

* the generated region is split into blocks of ``block_length``; each block gets
  ``steps / num_blocks`` steps and step ``i`` of a block commits ``K = ceil(n_rem / s_rem)``
  positions (``n_rem`` still undecided in the block, ``s_rem`` steps left in it), which is exactly
  LLaDA's ``get_num_transfer_tokens`` even split with the remainder front-loaded;
* positions are chosen inside the current block only, by a confidence score.

State convention: a token id in ``[0, V)`` is clean (decided, kept); any other id is undecided —
the mask id ``V`` or, for corruptions where a noisy token carries information, an id that the
``denoise_fn`` decodes as such (see ``sample_fef(target="poe")``).

``denoise_fn(z [B, L] int32, t [B]) -> log-probs [B, L, V]``; ``t`` is the fraction of undecided
positions (masked-diffusion direction: 0 = clean, 1 = fully masked).

The standard sampler draws every committed token independently from its marginal, so a step that
commits several dependent tokens makes a factorisation error; FeF removes it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.samplers.categorical import METHODS as CATEGORICAL_METHODS
from dlm_jax.samplers.categorical import _check_method, sample_categorical, top_p_filter

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


def _fail(name, value, allowed):
    raise ValueError(f"{name}: {value!r}; expected {allowed}")


def _as_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        _fail(name, value, f"an integer >= {minimum}")
    return int(value)


def make_plan(denoise_fn: Callable, *, num_samples, length, steps, mask_id=None, vocab_size, block_length=None,
              selection="confidence", selections=("confidence", "random"), temperature=1.0, top_p=1.0,
              prefix=None, init=None, k_schedule: Optional[Sequence[int]] = None,
              categorical_method="auto") -> tuple[Plan, np.ndarray]:
    """Validate everything before compiling; returns the plan and the initial state ``[B, L]``.

    ``prefix``: clean prompt tokens ``[P]`` or ``[B, P]`` (P < length) placed first; blocks cover
    the remaining ``length - P`` positions. ``init``: alternatively a full starting state ``[L]`` or
    ``[B, L]`` whose non-clean ids are generated; blocks then cover the whole sequence.
    ``k_schedule``: optional explicit committed count per step (must exhaust every block)."""
    num_samples = _as_int("num_samples", num_samples, 1)
    length = _as_int("length", length, 1)
    vocab_size = _as_int("vocab_size", vocab_size, 1)
    steps = _as_int("steps", steps, 1)
    mask_id = int(vocab_size if mask_id is None else mask_id)  # CONVENTIONS: the mask id is V by default
    if 0 <= mask_id < vocab_size:
        _fail("mask_id", mask_id, f"an id outside the clean vocabulary [0, {vocab_size})")
    if selection not in selections:
        _fail("selection", selection, f"one of {selections}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        _fail("temperature", temperature, "a finite float >= 0 (0 = greedy)")
    if not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        _fail("top_p", top_p, "a float in (0, 1]")
    if categorical_method not in CATEGORICAL_METHODS:
        _fail("categorical_method", categorical_method, f"one of {CATEGORICAL_METHODS}")
    method = _check_method(categorical_method)

    if prefix is not None and init is not None:
        _fail("init", "given together with prefix", "at most one of prefix / init")
    if init is not None:
        state = np.asarray(init)
        if state.ndim == 1:
            state = np.broadcast_to(state, (num_samples, state.shape[0]))
        if state.shape != (num_samples, length) or not np.issubdtype(state.dtype, np.integer):
            _fail("init", f"shape {state.shape} dtype {state.dtype}", f"integer ids of shape ({length},) or ({num_samples}, {length})")
        gen_start = 0
    else:
        pre = np.zeros((num_samples, 0), np.int32) if prefix is None else np.asarray(prefix)
        if pre.ndim == 1:
            pre = np.broadcast_to(pre, (num_samples, pre.shape[0]))
        if pre.ndim != 2 or pre.shape[0] != num_samples or pre.shape[1] >= length or (
                pre.size and not np.issubdtype(pre.dtype, np.integer)):
            _fail("prefix", f"shape {pre.shape}", f"integer ids [P] or [{num_samples}, P] with P < length = {length}")
        if pre.size and (pre.min() < 0 or pre.max() >= vocab_size):
            _fail("prefix", f"ids in [{pre.min()}, {pre.max()}]", f"clean ids in [0, {vocab_size})")
        gen_start = pre.shape[1]
        state = np.concatenate([pre, np.full((num_samples, length - gen_start), mask_id)], axis=1)
    state = np.ascontiguousarray(state, dtype=np.int32)

    gen_len = length - gen_start
    block_length = gen_len if block_length is None else block_length
    block_length = _as_int("block_length", block_length, 1)
    if gen_len % block_length:
        _fail("block_length", block_length, f"a divisor of the generated length {gen_len}")
    num_blocks = gen_len // block_length
    if steps % num_blocks:
        _fail("steps", steps, f"a multiple of the number of blocks ({num_blocks})")
    spb = steps // num_blocks
    undecided = (state < 0) | (state >= vocab_size)
    counts = [undecided[:, gen_start + b * block_length: gen_start + (b + 1) * block_length].sum(1)
              for b in range(num_blocks)]
    for b, c in enumerate(counts):
        lo = gen_start + b * block_length
        if c.min() == 0:
            _fail("init", f"block {b} (positions {lo}..{lo + block_length - 1}) with no undecided position",
                  ">= 1 undecided position per block")
        if k_schedule is None and c.min() < spb:
            _fail("steps", steps, f"<= {num_blocks} x {int(c.min())} (each step commits >= 1 of the "
                  f"{int(c.min())} undecided positions of block {b})")
    if k_schedule is not None:
        ks = tuple(int(k) for k in k_schedule)
        if len(ks) != steps or min(ks) < 1:
            _fail("k_schedule", ks, f"{steps} integers >= 1 (one per step)")
        for b, c in enumerate(counts):
            part = ks[b * spb:(b + 1) * spb]
            if c.min() != c.max():
                _fail("k_schedule", ks, "samples with equal undecided counts per block")
            if sum(part) > c[0]:
                _fail("k_schedule", ks, f"at most the {int(c[0])} undecided positions of block {b} "
                      f"(K larger than the number of masked positions)")
            if sum(part) < c[0]:
                _fail("k_schedule", ks, f"block {b} steps summing to its {int(c[0])} undecided positions")
        k_fixed, k_max = ks, max(ks)
    else:
        k_fixed = (-1,) * steps
        k_max = max(-(-int(c.max()) // spb) for c in counts)

    starts = tuple(gen_start + (s // spb) * block_length for s in range(steps))
    plan = Plan(num_samples, length, vocab_size, mask_id, steps, starts,
                tuple(s + block_length for s in starts), tuple(spb - s % spb for s in range(steps)),
                k_fixed, k_max, selection, float(temperature), float(top_p), method)
    _check_denoise_fn(denoise_fn, num_samples, length, vocab_size)
    return plan, state


def _check_denoise_fn(denoise_fn, batch, length, vocab_size):
    z = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    t = jax.ShapeDtypeStruct((batch,), jnp.result_type(float))
    out = jax.eval_shape(denoise_fn, z, t)
    shape = getattr(out, "shape", None)
    if shape != (batch, length, vocab_size):
        _fail("denoise_fn", f"output shape {shape}", f"log-probs of shape ({batch}, {length}, {vocab_size}) = [B, L, V]")


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
                 temperature: float = 1.0, top_p: float = 1.0, prefix=None, init=None, k_schedule=None,
                 categorical_method: str = "auto") -> tuple[Array, dict]:
    """Standard LLaDA sampler: each step draws every masked token independently from its marginal
    and commits the ``K`` most confident in the current block (``selection``: ``"low_confidence"``
    = LLaDA's probability of the sampled token, ``"confidence"`` = ``max_v q``, ``"random"``).
    Returns ``(tokens [B, L], info)`` with ``info["nfe"] = info["rows"] = steps`` per sample."""
    plan, state = make_plan(denoise_fn, num_samples=num_samples, length=length, steps=steps, mask_id=mask_id,
                            vocab_size=vocab_size, block_length=block_length, selection=selection,
                            selections=("low_confidence", "confidence", "random"), temperature=temperature,
                            top_p=top_p, prefix=prefix, init=init, k_schedule=k_schedule,
                            categorical_method=categorical_method)
    tokens = _llada_jit(denoise_fn, plan, key, jnp.asarray(state))
    per_sample = jnp.full((num_samples,), steps, jnp.int32)
    return tokens, {"nfe": per_sample, "rows": per_sample, "nfe_batched": steps, "rows_batched": steps * num_samples}
