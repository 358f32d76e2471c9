"""MDLM ancestral sampler, with and without prediction caching (METHODS §2.1(d)).

Seam: ``denoise_fn(z [B, L] int32, t [B] float32) -> log-probs [B, L, V]`` over the V clean
tokens (logits are accepted; they are log-softmax-normalised here). Mask id is ``V``.
Time direction: **t = 1 is fully masked, t = 0 is clean.** The grid is
``t_k = 1 − k(1 − eps)/T`` (eps = 1e-5) and the sampler uses move-chance = t, i.e. ``α_t = 1 − t``.

One step from t to s < t, independently per position (all positions share one model call):
masked ℓ unmasks w.p. ``(t − s)/t`` to ``x ~ p^ℓ`` (or ``argmax p^ℓ`` with ``greedy``); unmasked ℓ
keep their token (SUBS carry-over). After the T steps a final noise-removal call sets the
positions still masked to ``argmax p`` (one extra NFE).

Caching (``sample_mdlm_cache``): when a step changed no token anywhere in the batch, the next
step reuses the previous prediction instead of calling the model. This is exact when
``denoise_fn`` ignores t (MDLM's ``time_conditioning=False``; the exact oracles). The skip is a
``lax.cond``, so unbatched/un-vmapped the model really is not run and ``info["nfe"]`` counts only
real evaluations. **Under ``jax.vmap`` the ``cond`` becomes a ``select``: both branches run, so
caching saves nothing and ``nfe`` is then the logical count, not the work done.** Batch inside
``denoise_fn``'s leading axis instead (the cache is valid only if no row changed).

Keys: step k uses ``fold_in(key, k)`` whether or not the model ran. So when ``denoise_fn`` ignores
t, every step of the cached sampler has the uncached one's transition law exactly, and the tokens
are identical under the same key if the denoiser also returns the same bits for the same input in
both compiled programs (it runs inside a ``lax.cond`` branch in one). True for the exact oracles
and a float32 network (tests/samplers/test_masked.py) and measured for a random-weight DiT on CPU
(0 of 4,096 tokens differ at B = 32, T = 8; 0 of 512 at B = 4, T = 256 with 40 calls skipped); XLA
does not promise it in general. A freshly initialised DiT closed over as a constant breaks it: XLA
CPU (jax 0.10.2) returns uninitialised memory for its all-zero output layer, different in each
program; pass params as jit arguments.

Conditional generation (the one API of every sampler, ``driver.check_fixed``): ``fixed`` (``[L]``
or ``[B, L]`` bool) marks positions held at ``fixed_tokens`` for the whole run (a prompt/prefix);
they start unmasked and never change. The denoiser's output width is checked before tracing.

Both samplers are pure and traceable; wrap them in ``jax.jit`` with ``denoise_fn`` closed over and
a network's params as arguments, e.g. ``jax.jit(lambda p, k: sample_mdlm(partial(fn, p), k, ...))``.
Arguments are checked before tracing.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dlm_jax.checks import check_float, check_int
from dlm_jax.samplers.categorical import _check_method, sample_categorical, top_p_filter
from dlm_jax.samplers.driver import (apply_fixed, check_denoise_fn, check_fixed, check_steps, masked_time_grid,
                                     run_scan)

Array = jax.Array
DenoiseFn = Callable[[Array, Array], Array]

__all__ = ["sample_mdlm", "sample_mdlm_cache", "ancestral_draw", "noise_removal", "prepare_masked"]


def prepare_masked(denoise_fn, num_samples, length, steps, vocab_size, top_p, categorical_method, fixed,
                   fixed_tokens, eps=1e-5):
    """Validate the shared arguments of the masked samplers and the denoiser's output width
    (before tracing) and build the initial state: ``(z0 [B, L] int32, fixed [B, L] bool)``; free
    positions start at mask id V."""
    b = check_int("num_samples", num_samples, min=1)
    n_len = check_int("length", length, min=1)
    check_steps(steps)
    v = check_int("vocab_size", vocab_size, min=2)
    _check_method(categorical_method)
    check_float("top_p", top_p, min=0.0, max=1.0, min_open=True)
    check_float("eps", eps, min=0.0, max=1.0, max_open=True)
    z0 = jnp.full((b, n_len), v, jnp.int32)
    check_fixed(fixed, fixed_tokens, b, n_len, v)
    check_denoise_fn(denoise_fn, (z0, jnp.zeros((b,), jnp.float32)), v)
    return apply_fixed(z0, fixed, fixed_tokens)


def predictor(denoise_fn: DenoiseFn, top_p: float) -> Callable[[Array, Array], Array]:
    """``(z [B, L], t scalar) -> log-probs [B, L, V]``: calls ``denoise_fn`` with ``t`` broadcast to
    ``[B]`` float32 (t: 1 = masked, 0 = clean), normalises, and nucleus-filters when ``top_p < 1``."""

    def predict(z, t):
        tb = jnp.full((z.shape[0],), t, jnp.float32)
        logp = jax.nn.log_softmax(jnp.asarray(denoise_fn(z, tb)), axis=-1)
        return top_p_filter(logp, top_p) if top_p < 1.0 else logp

    return predict


def ancestral_draw(key: Array, logp: Array, z: Array, mask_prob: Array, *, mask_id: int,
                   categorical_method: str = "auto", greedy: bool = False,
                   carry_over: bool = True) -> tuple[Array, Array]:
    """One independent per-position draw from the weights ``[p^ℓ (1 − π^ℓ), π^ℓ]`` over
    (V tokens, mask): ``z_s^ℓ = m`` w.p. ``π^ℓ = mask_prob``, else ``x^ℓ ~ p^ℓ`` (``argmax`` if
    ``greedy``). With ``carry_over`` (SUBS) ``x^ℓ = z^ℓ`` at unmasked positions.

    Returns ``(z_s [B, L] int32, x [B, L] int32)``. ``key`` is split into a token key and a move
    key, so the law of ``z_s`` is the product of these weights (a Bernoulli with float64
    resolution under x64)."""
    k_tok, k_move = jax.random.split(key)
    if greedy:
        x = jnp.argmax(logp, axis=-1).astype(jnp.int32)
    else:
        x = sample_categorical(k_tok, logp, categorical_method)
    if carry_over:
        x = jnp.where(z == mask_id, x, z)
    mask_prob = jnp.asarray(mask_prob)
    u = jax.random.uniform(k_move, z.shape, dtype=jnp.result_type(mask_prob.dtype, jnp.float32))
    z_s = jnp.where(u < mask_prob, jnp.int32(mask_id), x).astype(jnp.int32)
    return z_s, x


def noise_removal(logp: Array, z: Array, mask_id: int) -> Array:
    """Final step: positions still masked take ``argmax p``; the rest are kept."""
    return jnp.where(z == mask_id, jnp.argmax(logp, axis=-1).astype(jnp.int32), z)


def _sample(denoise_fn, key, num_samples, length, steps, vocab_size, top_p, greedy, categorical_method,
            fixed, fixed_tokens, eps, cache):
    z0, fixed = prepare_masked(denoise_fn, num_samples, length, steps, vocab_size, top_p, categorical_method, fixed,
                               fixed_tokens, eps)
    grid = masked_time_grid(steps, eps)
    predict = predictor(denoise_fn, top_p)
    mask_id = vocab_size
    logp_shape = jax.eval_shape(predict, z0, grid[0])

    def step(carry, st):
        z, cached, valid = carry
        if cache:
            logp, used = jax.lax.cond(valid, lambda zz, c: (c, jnp.int32(0)),
                                      lambda zz, c: (predict(zz, st["t"]), jnp.int32(1)), z, cached)
        else:
            logp, used = predict(z, st["t"]), 1
        # Masked positions stay masked w.p. s/t (= (1-α_s)/(1-α_t) with α = 1 - t).
        stay = jnp.where(z == mask_id, st["s"] / st["t"], 0.0)
        z_s, _ = ancestral_draw(jax.random.fold_in(key, st["k"]), logp, z, stay, mask_id=mask_id,
                                categorical_method=categorical_method, greedy=greedy)
        z_s = jnp.where(fixed, z, z_s)
        return (z_s, logp, jnp.all(z_s == z)), used

    init = (z0, jnp.zeros(logp_shape.shape, logp_shape.dtype), jnp.bool_(False))
    (z, _, _), nfe = run_scan(step, init, grid)
    z = noise_removal(predict(z, grid[-1]), z, mask_id)
    return z, {"nfe": nfe + jnp.int32(1)}


def sample_mdlm(denoise_fn: DenoiseFn, key: Array, *, num_samples: int, length: int, steps: int,
                vocab_size: int, top_p: float = 1.0, greedy: bool = False, categorical_method: str = "auto",
                fixed: Array | None = None, fixed_tokens: Array | None = None,
                eps: float = 1e-5) -> tuple[Array, dict]:
    """MDLM ancestral sampler, T = ``steps`` model calls + 1 noise-removal call.

    t: 1 = fully masked -> 0 = clean, grid ``t_k = 1 − k(1 − eps)/T``. Returns
    ``(tokens [B, L] int32, {"nfe": int32 T + 1})``. ``top_p < 1`` applies nucleus filtering to
    every prediction; ``greedy`` unmasks to ``argmax p`` (the unmasking times stay random)."""
    return _sample(denoise_fn, key, num_samples, length, steps, vocab_size, top_p, greedy, categorical_method,
                   fixed, fixed_tokens, eps, cache=False)


def sample_mdlm_cache(denoise_fn: DenoiseFn, key: Array, *, num_samples: int, length: int, steps: int,
                      vocab_size: int, top_p: float = 1.0, greedy: bool = False, categorical_method: str = "auto",
                      fixed: Array | None = None, fixed_tokens: Array | None = None,
                      eps: float = 1e-5) -> tuple[Array, dict]:
    """MDLM with prediction caching ("ddpm_cache"): the same transition law as ``sample_mdlm``
    when ``denoise_fn`` ignores t, and the same tokens under the same key when the denoiser is
    also bitwise reproducible across the two programs (see the module docstring);
    ``info["nfe"]`` = real evaluations (at most T + 1, at most ``#steps that changed a token +
    2``). See the module docstring for vmap."""
    return _sample(denoise_fn, key, num_samples, length, steps, vocab_size, top_p, greedy, categorical_method,
                   fixed, fixed_tokens, eps, cache=True)
