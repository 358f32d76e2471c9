"""The one scan driver every fixed-grid sampler runs on (METHODS §1.1).

A sampler is a *step function* plus a precomputed time grid. ``run_scan`` turns them into a
single ``jax.lax.scan``: the body receives the step index ``k`` and reads ``t = grid[k]`` and
``s = grid[k+1]`` (plus any per-step arrays the sampler precomputed, e.g. ReMDM's α_t, α_s, σ),
and returns how many real model evaluations it spent; the driver accumulates that NFE count in
the carry as an int32. There is no Python loop over steps and no host synchronisation, so the
whole sampler traces to one compiled loop under ``jax.jit``.

The grid's time direction belongs to the sampler: masked samplers run ``t: 1 (all masked) -> 0
(clean)``; flow samplers run ``t: 0 (source) -> 1 (data)``. The driver only slices it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
StepFn = Callable[[Any, Mapping[str, Array]], tuple[Any, Array]]

__all__ = ["run_scan", "masked_time_grid", "check_steps"]


def check_steps(steps) -> int:
    """Validate a step count (a positive Python int) before anything is traced."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps: {steps!r}; expected an int >= 1")
    return int(steps)


def masked_time_grid(steps: int, eps: float = 1e-5, dtype=None) -> Array:
    """MDLM/ReMDM sampling grid ``t_k = 1 − k(1 − eps)/T``, ``k = 0..T`` (``[T+1]``).

    Time direction: ``t = 1`` is fully masked, ``t = 0`` is clean; the grid decreases from 1 to
    ``eps``. ``dtype`` defaults to the default float (float64 under x64, else float32).
    """
    steps = check_steps(steps)
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps: {eps!r}; expected a value in [0, 1)")
    dtype = jnp.result_type(float) if dtype is None else dtype
    k = jnp.arange(steps + 1, dtype=dtype)
    return 1.0 - k * ((1.0 - eps) / steps)


def run_scan(step_fn: StepFn, carry: Any, grid: Array, per_step: Mapping[str, Array] | None = None,
             *, unroll: int = 1) -> tuple[Any, Array]:
    """Run ``step_fn`` once per grid interval in one ``lax.scan``; returns ``(carry, nfe)``.

    ``grid``: ``[K+1]`` times (any direction). ``per_step``: optional dict of arrays with leading
    dimension ``K``, sliced per step. ``step_fn(carry, step) -> (carry, nfe_increment)`` where
    ``step`` is a dict with ``"k"`` (int32 step index), ``"t"`` (= grid[k]), ``"s"`` (= grid[k+1])
    and the per-step entries. ``nfe_increment`` is the number of real denoiser evaluations the
    step made (an int, or an int32 scalar when it is data-dependent, e.g. under ``lax.cond``).
    ``nfe`` is the int32 total over the K steps.
    """
    grid = jnp.asarray(grid)
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError(f"grid: shape {grid.shape}; expected [K+1] with K >= 1")
    num = grid.shape[0] - 1
    xs = {"k": jnp.arange(num, dtype=jnp.int32), "t": grid[:-1], "s": grid[1:]}
    for name, arr in (per_step or {}).items():
        if name in xs:
            raise ValueError(f"per_step: key {name!r}; expected a name other than 'k', 't', 's'")
        arr = jnp.asarray(arr)
        if arr.ndim < 1 or arr.shape[0] != num:
            raise ValueError(f"per_step[{name!r}]: shape {arr.shape}; expected leading dimension {num}")
        xs[name] = arr

    def body(state, step):
        inner, nfe = state
        inner, used = step_fn(inner, step)
        return (inner, nfe + jnp.asarray(used, jnp.int32)), None

    (carry, nfe), _ = jax.lax.scan(body, (carry, jnp.int32(0)), xs, unroll=unroll)
    return carry, nfe


def check_fixed(fixed, fixed_tokens, num_samples: int, length: int, vocab_size: int) -> None:
    """Validate a conditioning mask ``fixed`` (bool ``[L]`` or ``[B, L]``) and the tokens it pins,
    before anything compiles; both or neither must be given."""
    if (fixed is None) != (fixed_tokens is None):
        raise ValueError(f"fixed_tokens: {'missing' if fixed_tokens is None else 'given'}; expected both "
                         "fixed and fixed_tokens, or neither")
    if fixed is None:
        return
    fixed, fixed_tokens = jnp.asarray(fixed), jnp.asarray(fixed_tokens)
    for name, arr in (("fixed", fixed), ("fixed_tokens", fixed_tokens)):
        if arr.shape not in ((length,), (num_samples, length)):
            raise ValueError(f"{name}: shape {arr.shape}; expected ({length},) or ({num_samples}, {length})")
    if fixed.dtype != jnp.bool_:
        raise ValueError(f"fixed: dtype {fixed.dtype}; expected bool")
    if not isinstance(fixed, jax.core.Tracer) and not isinstance(fixed_tokens, jax.core.Tracer):
        tok, fx = np.broadcast_arrays(np.asarray(fixed_tokens), np.asarray(fixed))
        if tok[fx].size and not ((tok[fx] >= 0) & (tok[fx] < vocab_size)).all():
            raise ValueError(f"fixed_tokens: values {np.unique(tok[fx])[:4].tolist()}; "
                             f"expected ids in [0, {vocab_size})")


def apply_fixed(x0, fixed, fixed_tokens):
    """Pin the fixed positions of the initial state ``x0 [B, L]``; returns ``(x0, fixed [B, L])``
    (``fixed`` all False when None). Call ``check_fixed`` first."""
    shape = x0.shape
    if fixed is None:
        return x0, jnp.zeros(shape, bool)
    fixed = jnp.broadcast_to(jnp.asarray(fixed), shape)
    return jnp.where(fixed, jnp.broadcast_to(jnp.asarray(fixed_tokens), shape).astype(jnp.int32), x0), fixed
