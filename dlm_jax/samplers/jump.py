"""Flow-family samplers: the FS-DFM cumulative-scalar jump sampler and the original DFM Euler
solver of Gat et al. (METHODS §6.4, §2.3(d)).

Seam: ``denoise_fn(x [B, L] int32, t [B], h [B]) -> log-probs [B, L, V]`` over the V clean tokens
(logits are accepted too: they are log-softmax-normalised here). Time direction: **t = 0 is the
source (mask or uniform noise), t = 1 is the data.** The mask id is ``V``.

Both samplers are one ``jax.lax.scan`` (the shared ``driver.run_scan``) over the grid ``t_k = k/N``
with ``h = 1/N`` and exactly one ``denoise_fn`` call per step (``info["nfe"] = N``). They are pure and traceable: wrap them in
``jax.jit`` with ``denoise_fn`` closed over, e.g. ``jax.jit(lambda k: sample_fsdfm(fn, k, ...))``.
All arguments are checked before anything is traced.

Conditional generation (the one API of every sampler, ``driver.check_fixed``): ``fixed`` (``[L]``
or ``[B, L]`` bool) marks positions held at ``fixed_tokens`` for the whole run (a gold prefix, or
random gold positions); only the others move. The denoiser's output width is checked before tracing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm_jax.checks import check_float, check_int
from dlm_jax.processes import flow
from dlm_jax.samplers.categorical import _check_method, sample_categorical, top_p_filter
from dlm_jax.samplers.driver import apply_fixed, check_denoise_fn, check_fixed, check_steps, run_scan

Array = jax.Array

__all__ = ["sample_fsdfm", "sample_dfm_euler"]


def _prepare(denoise_fn, key, num_samples, length, steps, vocab_size, source, schedule, fixed, fixed_tokens,
             categorical_method, top_p):
    """Validate everything (the denoiser's output width included), then build the initial state
    ``x_0`` and the fixed mask ``[B, L]``."""
    b = check_int("num_samples", num_samples, min=1)
    n_len = check_int("length", length, min=1)
    check_steps(steps)
    v = check_int("vocab_size", vocab_size, min=2)
    flow.check_source(source)
    schedule = flow.get_schedule(schedule)
    _check_method(categorical_method)
    check_float("top_p", top_p, min=0.0, max=1.0, min_open=True)
    check_fixed(fixed, fixed_tokens, b, n_len, v)
    key_src, key_run = jax.random.split(key)
    x0, fixed = apply_fixed(flow.sample_source(key_src, (b, n_len), source, v), fixed, fixed_tokens)
    t, h = _grid(steps, b)
    check_denoise_fn(denoise_fn, (x0, jnp.zeros((b,), t.dtype), h), v)
    return schedule, x0, fixed, key_run


def _grid(steps: int, b: int):
    """Flow grid ``t_k = k/N`` (``[N+1]``, t: 0 = source → 1 = data) and ``h = 1/N`` per sample."""
    dtype = jnp.result_type(float)  # float64 under x64, else float32
    t = jnp.arange(steps + 1, dtype=dtype) / steps
    h = jnp.full((b,), 1.0 / steps, dtype)
    return t, h


def _posterior(denoise_fn, x, t, h, top_p):
    log_p = jax.nn.log_softmax(jnp.asarray(denoise_fn(x, t, h)), axis=-1)
    return top_p_filter(log_p, top_p) if top_p < 1.0 else log_p


def _unmasked(x, vocab_size):
    """Fraction of unmasked positions (a per-step diagnostic; tracks κ(t_{k+1}) for the mask source)."""
    return jnp.mean(x != vocab_size)


def _run(step, x0, steps, num_samples, key, vocab_size):
    """Drive ``step(x, k, t, key) -> x`` with the shared scan driver; the carry also records the
    unmasked fraction after every step. One denoiser call per step."""
    grid, _ = _grid(steps, num_samples)
    fractions0 = jnp.zeros((steps,), jnp.result_type(float))

    def step_fn(carry, st):
        x, fractions = carry
        x = step(x, st["k"], st["t"], st["key"])
        return (x, fractions.at[st["k"]].set(_unmasked(x, vocab_size).astype(fractions.dtype))), 1

    return run_scan(step_fn, (x0, fractions0), grid, {"key": jax.random.split(key, steps)})


def _info(nfe, fractions, source):
    info = {"nfe": nfe}
    if source == "mask":
        info["unmasked_fraction"] = fractions
    return info


def jump(key: Array, x: Array, log_p: Array, t: Array, h: Array, schedule="linear", *,
         frozen: Array | None = None, categorical_method: str = "auto") -> Array:
    """One cumulative-scalar jump step from time t to t + h (t: 0 = source, 1 = data); per position
    independent. Draws from ``flow.jump_log_probs`` (the exact law) with ``sample_categorical``. Returns int32 ``[B, L]``.

    Uses ``1 − exp(−G (1 − p(z)))`` exactly. The reference (``MixtureDiscreteEleurSolverWith
    CumulativeScalar``) uses ``h · G/(h + 1e-8)`` in place of G and floors the rate at 1e-12, so
    its jump (and every move) probability is smaller by the relative factor ``1e-8/(h + 1e-8)``
    at most: measured 1.024e-5 at h = 1/1024, 6.4e-7 at h = 1/64, 1e-8 at h = 1 (plus an absolute
    1e-12 h where p(z) = 1). Exactness tests need the exact form (tests/samplers/test_jump.py)."""
    return sample_categorical(key, flow.jump_log_probs(x, log_p, t, h, schedule, frozen=frozen), categorical_method)


def sample_fsdfm(denoise_fn, key: Array, *, num_samples: int, length: int, steps: int, vocab_size: int,
                 source: str = "mask", schedule="linear", fixed: Array | None = None,
                 fixed_tokens: Array | None = None, categorical_method: str = "auto",
                 top_p: float = 1.0) -> tuple[Array, dict]:
    """FS-DFM few-step sampler (§6.4); t: 0 = source, 1 = data, grid ``t_k = k/N``, ``h = 1/N``.

    Steps ``k < N−1``: ``p = denoise_fn(x, t_k, h)``, then the cumulative-scalar jump
    (``flow.jump``: stay w.p. ``exp(−G(t_k,h)(1−p(z)))``, else move ``∝ p(y), y ≠ z``).
    Last step: ``x̂ ~ p`` (p has no mask class); mask source fills only masked positions, uniform
    source resamples **all** (non-fixed) positions. ``top_p < 1`` nucleus-filters p at every step.

    Returns ``(tokens [B, L] int32, info)`` with ``info["nfe"] = N`` (int32) and, for the mask
    source, ``info["unmasked_fraction"] [N]``."""
    schedule, x0, fixed, key = _prepare(denoise_fn, key, num_samples, length, steps, vocab_size, source, schedule,
                                        fixed, fixed_tokens, categorical_method, top_p)
    _, h = _grid(steps, num_samples)

    def last(args):
        k_draw, x, log_p, _ = args
        xhat = sample_categorical(k_draw, log_p, categorical_method)
        resample = ~fixed & (x == vocab_size) if source == "mask" else ~fixed
        return jnp.where(resample, xhat, x)

    def move(args):
        k_draw, x, log_p, tb = args
        return jump(k_draw, x, log_p, tb, h, schedule, frozen=fixed, categorical_method=categorical_method)

    def step(x, k, t, k_step):
        tb = jnp.full((num_samples,), t)
        log_p = _posterior(denoise_fn, x, tb, h, top_p)
        return jax.lax.cond(k == steps - 1, last, move, (k_step, x, log_p, tb))

    (x, fractions), nfe = _run(step, x0, steps, num_samples, key, vocab_size)
    return x, _info(nfe, fractions, source)


def sample_dfm_euler(denoise_fn, key: Array, *, num_samples: int, length: int, steps: int, vocab_size: int,
                     source: str = "mask", schedule="linear", fixed: Array | None = None,
                     fixed_tokens: Array | None = None, categorical_method: str = "auto",
                     top_p: float = 1.0) -> tuple[Array, dict]:
    """Original DFM Euler solver of Gat et al. (§2.3(d)), the 1,024-step baseline; t: 0 = source,
    1 = data, grid ``t_k = k/N``, ``h = 1/N``.

    Each step draws ``x̂_1 ~ p = denoise_fn(x, t_k, h)``; where ``x̂_1 ≠ x`` the position jumps to
    ``x̂_1`` w.p. ``1 − exp(−h κ̇(t_k)/(1−κ(t_k)))`` (the rate frozen at the left end). At the last
    step every non-fixed position is set to ``x̂_1``.

    A teacher trained without h still gets ``h = 1/N`` as the third argument: wrap it as
    ``lambda x, t, h: teacher(x, t)`` (the seam is the same for every flow sampler).

    Returns ``(tokens [B, L] int32, info)`` as ``sample_fsdfm``."""
    schedule, x0, fixed, key = _prepare(denoise_fn, key, num_samples, length, steps, vocab_size, source, schedule,
                                        fixed, fixed_tokens, categorical_method, top_p)
    _, h = _grid(steps, num_samples)

    def step(x, k, t, k_step):
        k_draw, k_u = jax.random.split(k_step)
        tb = jnp.full((num_samples,), t)
        log_p = _posterior(denoise_fn, x, tb, h, top_p)
        xhat = sample_categorical(k_draw, log_p, categorical_method)
        p_jump = -jnp.expm1(-h[:, None] * schedule.rate(tb)[:, None])
        u = jax.random.uniform(k_u, x.shape, dtype=h.dtype)
        moves = (xhat != x) & ((u < p_jump) | (k == steps - 1))
        return jnp.where(moves & ~fixed, xhat, x)

    (x, fractions), nfe = _run(step, x0, steps, num_samples, key, vocab_size)
    return x, _info(nfe, fractions, source)
