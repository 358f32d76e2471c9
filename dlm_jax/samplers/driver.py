"""The one scan driver every fixed-grid sampler runs on (METHODS §1.1).

A sampler is a *step function* plus a precomputed time grid. ``run_scan`` turns them into a
single ``jax.lax.scan``: the body receives the step index ``k`` and reads ``t = grid[k]`` and
``s = grid[k+1]`` (plus any per-step arrays the sampler precomputed, e.g. ReMDM's α_t, α_s, σ),
and returns how many real model evaluations it spent; the driver accumulates that NFE count in
the carry as an int32. There is no Python loop over steps and no host synchronisation, so the
whole sampler traces to one compiled loop under ``jax.jit``.

The grid's time direction belongs to the sampler: masked samplers run ``t: 1 (all masked) -> 0
(clean)``; flow samplers run ``t: 0 (source) -> 1 (data)``. The driver only slices it.

The driver also owns what every sampler validates the same way, before anything is traced:

* conditioning — ONE API for every sampler: ``fixed`` (bool ``[L]`` or ``[B, L]``) marks clamped
  positions and ``fixed_tokens`` (int ``[L]`` or ``[B, L]``) their clean ids (a prompt/prefix, or
  random gold positions). ``check_fixed`` validates them, ``apply_fixed`` pins them in the initial
  state, ``static_fixed`` hands samplers with a static plan (LLaDA blocks, FeF) the concrete mask;
* the denoiser's output width — ``check_denoise_fn`` evaluates its shape on the initial state, so a
  model with the wrong number of classes fails with one line instead of sampling all-zero or
  all-max ids.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.checks import check_float, check_int

Array = jax.Array
StepFn = Callable[[Any, Mapping[str, Array]], tuple[Any, Array]]

__all__ = ["run_scan", "masked_time_grid", "check_steps", "check_fixed", "apply_fixed", "static_fixed",
           "check_denoise_fn"]


def check_steps(steps) -> int:
    """Validate a step count (a positive Python int) before anything is traced."""
    return check_int("steps", steps, min=1)


def masked_time_grid(steps: int, eps: float = 1e-5, dtype=None) -> Array:
    """MDLM/ReMDM sampling grid ``t_k = 1 − k(1 − eps)/T``, ``k = 0..T`` (``[T+1]``).

    Time direction: ``t = 1`` is fully masked, ``t = 0`` is clean; the grid decreases from 1 to
    ``eps``. ``dtype`` defaults to the default float (float64 under x64, else float32).
    """
    steps = check_steps(steps)
    check_float("eps", eps, min=0.0, max=1.0, max_open=True)
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
    """Validate the conditioning of any sampler before anything compiles: ``fixed`` (bool ``[L]``
    or ``[B, L]``) and the clean ids it pins, ``fixed_tokens`` (int ``[L]`` or ``[B, L]``); both or
    neither. Ids are range-checked where both arrays are concrete (under ``jit`` they may be traced:
    then the caller guarantees ``0 <= id < V`` at fixed positions)."""
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
    if not jnp.issubdtype(fixed_tokens.dtype, jnp.integer):
        raise ValueError(f"fixed_tokens: dtype {fixed_tokens.dtype}; expected integer token ids")
    if not isinstance(fixed, jax.core.Tracer) and not isinstance(fixed_tokens, jax.core.Tracer):
        tok, fx = np.broadcast_arrays(np.asarray(fixed_tokens), np.asarray(fixed))
        if tok[fx].size and not ((tok[fx] >= 0) & (tok[fx] < vocab_size)).all():
            bad = np.unique(tok[fx][(tok[fx] < 0) | (tok[fx] >= vocab_size)])
            raise ValueError(f"fixed_tokens: values {bad[:4].tolist()}; expected ids in [0, {vocab_size})")


def apply_fixed(x0, fixed, fixed_tokens):
    """Pin the fixed positions of the initial state ``x0 [B, L]``; returns ``(x0, fixed [B, L])``
    (``fixed`` all False when None). Call ``check_fixed`` first."""
    shape = x0.shape
    if fixed is None:
        return x0, jnp.zeros(shape, bool)
    fixed = jnp.broadcast_to(jnp.asarray(fixed), shape)
    return jnp.where(fixed, jnp.broadcast_to(jnp.asarray(fixed_tokens), shape).astype(jnp.int32), x0), fixed


def static_fixed(fixed, num_samples: int, length: int) -> np.ndarray:
    """``fixed`` as a concrete numpy bool ``[B, L]`` (all False when None), for samplers whose
    static plan (block layout, committed counts) depends on it. Call ``check_fixed`` first; a
    traced ``fixed`` raises (``fixed_tokens`` may stay traced)."""
    if fixed is None:
        return np.zeros((num_samples, length), bool)
    if isinstance(fixed, jax.core.Tracer):
        raise ValueError("fixed: a traced array; expected a concrete mask (this sampler plans its blocks "
                         "from it before tracing; fixed_tokens may be traced)")
    return np.broadcast_to(np.asarray(fixed), (num_samples, length)).copy()


def check_denoise_fn(denoise_fn, args, vocab_size: int) -> None:
    """``jax.eval_shape`` ``denoise_fn(*args)`` (``args[0]``: the initial state ``[B, L]``) and
    raise one line unless it returns ``[B, L, vocab_size]``: a wrong width (e.g. a V+1-class model
    head) would otherwise sample all-zero or all-max ids silently. Nothing is compiled."""
    specs = tuple(jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in args)
    out = jax.eval_shape(denoise_fn, *specs)
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) == 0:
        raise ValueError(f"denoise_fn: output {type(out).__name__}; expected an array [B, L, V] with "
                         f"V = vocab_size {vocab_size}")
    if shape[-1] != vocab_size:
        raise ValueError(f"denoise_fn: output width {shape[-1]}; expected vocab_size {vocab_size} (log-probs "
                         "[B, L, V] over the clean tokens, without a mask class)")
    want = tuple(specs[0].shape) + (vocab_size,)
    if tuple(shape) != want:
        raise ValueError(f"denoise_fn: output shape {tuple(shape)}; expected {want} = [B, L, V]")
