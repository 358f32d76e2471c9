"""DSL samplers on a discrete state: the ReMDM-loop with the DSL encoding (METHODS §4.4 d1) and
random-order AR (d3). The continuous SL-SDE and the hybrid are in ``localization_sde.py``.

Seam: ``denoise_fn(z [B, L, d] float32) -> log-probs [B, L, V]`` (logits accepted) — no time or
SNR input: with unit-norm anchors ``e(v)`` the Bayes denoiser depends on z only (§4.1). SNR
direction: **s = 0 is "[MASK]" (no information), large s is clean.** The discrete state holds
token ids with mask id V; ``encode_state`` turns it into the denoiser's input::

    masked     -> 0                                        (s = 0)
    decoded    -> s_c·e(x) + √s_c·ε,  s_c ~ U[0.8, 1]·s_max  (encode="noisy": ROAR's clean positions)
               -> s_max·e(x)                               (encode="clean")
    fixed      -> s_max·e(x)                               (prompts stay clean)

Every sampler takes ``anchors [V, d]`` (unit-norm rows, checked before tracing) and the one
conditioning API ``fixed``/``fixed_tokens`` (held positions never change), and returns
``(tokens [B, L] int32, {"nfe": int32})``. Each is one ``lax.scan`` (``driver.run_scan``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.checks import check_bool, check_choice, check_float, check_int, fail
from dlm_jax.processes.localization import check_anchors
from dlm_jax.samplers.categorical import _check_method, sample_categorical, top_p_filter
from dlm_jax.samplers.driver import (apply_fixed, check_denoise_fn, check_fixed, check_steps, masked_time_grid,
                                     run_scan)
from dlm_jax.samplers.masked import ancestral_draw, noise_removal
from dlm_jax.samplers.remdm import check_remdm, mask_prob, remdm_schedule, remdm_step

Array = jax.Array

ENCODINGS = ("noisy", "clean")
DISCRETE = ("remdm_loop", "mdlm")

__all__ = ["ENCODINGS", "DISCRETE", "check_dsl_anchors", "prepare_dsl", "encode_state", "dsl_predictor",
           "check_discrete_options", "self_correct_step", "discrete_schedule", "discrete_scan",
           "sample_dsl_remdm_loop", "sample_dsl_roar"]


def check_dsl_anchors(anchors, vocab_size: int) -> Array:
    """``anchors [V, d]`` as float32 after ``check_anchors`` (shape and unit norm). Traced anchors
    (e.g. trained ones passed through ``jit``) are checked for shape only."""
    if isinstance(anchors, jax.core.Tracer):
        if anchors.ndim != 2 or anchors.shape[0] != vocab_size:
            fail("anchors", f"shape {anchors.shape}", f"shape [{vocab_size}, d]")
        return anchors.astype(jnp.float32)
    return check_anchors(anchors, vocab_size=vocab_size).astype(jnp.float32)


def prepare_dsl(denoise_fn, *, num_samples, length, steps, vocab_size, anchors, fixed, fixed_tokens):
    """Validate what every DSL sampler shares, then check the denoiser's output width on a
    ``[B, L, d]`` input (``jax.eval_shape``: traced, not compiled; samplers check their own
    options first, so an option error never traces the denoiser). Returns ``(anchors f32
    [V, d], x0 [B, L] int32, fixed [B, L])``, ``x0`` all mask id V except the fixed positions."""
    b = check_int("num_samples", num_samples, min=1)
    n = check_int("length", length, min=1)
    check_steps(steps)
    v = check_int("vocab_size", vocab_size, min=2)
    anchors = check_dsl_anchors(anchors, v)
    check_fixed(fixed, fixed_tokens, b, n, v)
    d = anchors.shape[1]
    check_denoise_fn(lambda tok: denoise_fn(jnp.zeros(tok.shape + (d,), jnp.float32)),
                     (jnp.full((b, n), v, jnp.int32),), v)
    x0, fixed = apply_fixed(jnp.full((b, n), v, jnp.int32), fixed, fixed_tokens)
    return anchors, x0, fixed


def encode_state(key: Array, z: Array, anchors: Array, fixed: Array, *, s_max: float, encode: str = "noisy") -> Array:
    """Discrete state ``z [B, L]`` (mask id V) -> denoiser input ``[B, L, d]`` (table in the module
    docstring; s: 0 = masked, s_max = clean). Fresh s_c and ε per call."""
    v = anchors.shape[0]
    masked = z >= v
    e = anchors[jnp.where(masked, 0, z)]
    if encode == "clean":
        out = s_max * e
    else:
        k_s, k_e = jax.random.split(key)
        s = jax.random.uniform(k_s, z.shape, e.dtype, minval=0.8, maxval=1.0) * s_max
        s = jnp.where(fixed, s_max, s)
        noise = jnp.where(fixed, 0.0, jnp.sqrt(s))
        out = s[..., None] * e + noise[..., None] * jax.random.normal(k_e, e.shape, e.dtype)
    return jnp.where(masked[..., None], 0.0, out)


def dsl_predictor(denoise_fn, top_p: float = 1.0):
    """``z [B, L, d] -> log-probs [B, L, V]`` in at least float32: normalised, nucleus-filtered
    when ``top_p < 1``."""

    def predict(zc):
        out = jnp.asarray(denoise_fn(zc))
        logp = jax.nn.log_softmax(out.astype(jnp.promote_types(out.dtype, jnp.float32)), axis=-1)
        return top_p_filter(logp, top_p) if top_p < 1.0 else logp

    return predict


def self_correct_step(key: Array, logp: Array, z: Array, sigma, alpha_s, alpha_t, *, mask_id: int,
                      categorical_method: str = "auto") -> Array:
    """ReMDM step with DSL self-correction: a decoded position picked for remasking (w.p. σ) is
    instead re-drawn from the model's own distribution ``p`` at that *visible* position (the
    denoiser saw its noisy encoding); the others keep their token. No position goes back to the
    mask, so masked positions unmask at the plain MDLM rate ``(α_s − α_t)/(1 − α_t)`` (ReMDM's
    ``(α_s − (1 − σ)α_t)/(1 − α_t)`` pays back remasking that never happens here: it would
    leave ``1 − α_s − σα_t`` masked instead of ``1 − α_s``, and empty the mask during the loop
    phase, where α is constant). Per position, the law is ``decoded: (1 − σ) δ_z + σ p``;
    ``masked: (1 − α_s)/(1 − α_t) δ_m + (α_s − α_t)/(1 − α_t) p``, so ``P(masked) = 1 − α_s``
    after every step, as in the schedule."""
    masked = z == mask_id
    pi = jnp.where(masked, mask_prob(masked, 0.0, alpha_s, alpha_t), sigma)
    z_s, x = ancestral_draw(key, logp, z, pi, mask_id=mask_id, categorical_method=categorical_method,
                            carry_over=False)
    return jnp.where(z == mask_id, z_s, jnp.where(z_s == mask_id, x, z)).astype(jnp.int32)


def discrete_schedule(discrete: str, steps: int, eta=0.02, t_on: float = 0.55, t_off: float = 0.05,
                      alpha_on: float = 0.9, eps: float = 1e-5):
    """``(grid [T+1], per-step {alpha_t, alpha_s, sigma})`` for ``discrete`` = ``"remdm_loop"``
    (ReMDM's loop schedule) or ``"mdlm"`` (α = 1 − t, σ = 0). Masked time t: 1 -> 0 (clean)."""
    check_choice("discrete", discrete, DISCRETE)
    grid = masked_time_grid(steps, eps)
    if discrete == "mdlm":
        return grid, remdm_schedule("cap", grid, 0.0)
    return grid, remdm_schedule("loop", grid, eta, t_on, t_off, alpha_on)


def discrete_scan(denoise_fn, key: Array, z0: Array, fixed: Array, anchors: Array, grid: Array, sched, *,
                  s_max: float, encode: str, top_p: float, self_correct: bool, categorical_method: str):
    """The ReMDM scan on the DSL encoding from state ``z0 [B, L]`` (t: grid[0] -> grid[-1]), then
    the noise-removal call (argmax at positions still masked). Returns ``(tokens, nfe = T + 1)``.
    Fixed positions: σ = 0 and never changed."""
    mask_id = anchors.shape[0]
    predict = dsl_predictor(denoise_fn, top_p)

    def step(z, st):
        k_enc, k_draw = jax.random.split(jax.random.fold_in(key, st["k"]))
        logp = predict(encode_state(k_enc, z, anchors, fixed, s_max=s_max, encode=encode))
        sigma = jnp.where(fixed, 0.0, jnp.broadcast_to(st["sigma"], z.shape))
        if self_correct:
            z_s = self_correct_step(k_draw, logp, z, sigma, st["alpha_s"], st["alpha_t"], mask_id=mask_id,
                                    categorical_method=categorical_method)
        else:
            z_s, _ = remdm_step(k_draw, logp, z, sigma, st["alpha_s"], st["alpha_t"], mask_id=mask_id,
                                categorical_method=categorical_method)
        return jnp.where(fixed, z, z_s), 1

    z, nfe = run_scan(step, z0, grid, sched)
    k_last = jax.random.fold_in(key, grid.shape[0] - 1)
    logp = predict(encode_state(k_last, z, anchors, fixed, s_max=s_max, encode=encode))
    return noise_removal(logp, z, mask_id), nfe + jnp.int32(1)


def check_discrete_options(*, s_max, encode, top_p, self_correct, categorical_method, discrete="remdm_loop",
                           eta=0.02, t_on=0.55, t_off=0.05, alpha_on=0.9, eps=1e-5) -> None:
    """Validate the discrete-phase options (one line each, before tracing)."""
    check_float("s_max", s_max, min=0.0, min_open=True)
    check_choice("encode", encode, ENCODINGS)
    check_float("top_p", top_p, min=0.0, max=1.0, min_open=True)
    check_bool("self_correct", self_correct)
    _check_method(categorical_method)
    check_choice("discrete", discrete, DISCRETE)
    check_float("eps", eps, min=0.0, max=1.0, max_open=True)
    if discrete == "remdm_loop":
        check_remdm("loop", eta, t_on, t_off, alpha_on)


def sample_dsl_remdm_loop(denoise_fn, key: Array, *, num_samples: int, length: int, steps: int, vocab_size: int,
                          anchors, fixed: Array | None = None, fixed_tokens: Array | None = None,
                          eta: float = 0.02, t_on: float = 0.55, t_off: float = 0.05, alpha_on: float = 0.9,
                          top_p: float = 0.9, s_max: float = 100.0, encode: str = "noisy",
                          self_correct: bool = False, categorical_method: str = "auto",
                          eps: float = 1e-5) -> tuple[Array, dict]:
    """ReMDM-loop on the DSL denoiser (METHODS §4.4 d1): T = ``steps`` loop steps (masked time t:
    1 -> 0 clean; α_on, t_on, t_off, η and top-p as in ``remdm.py``), each calling the denoiser
    on ``encode_state`` of the current state (decoded tokens at s_c ~ U[0.8,1]·s_max with noise
    by default, ``encode="clean"``: s_max·e), then the noise-removal argmax: NFE = T + 1.
    Decoded positions carry over (SUBS); ``self_correct=True`` re-draws a position picked for
    remasking from the model's distribution at that visible position and unmasks at the MDLM
    rate, since nothing is remasked (``self_correct_step``)."""
    check_discrete_options(s_max=s_max, encode=encode, top_p=top_p, self_correct=self_correct,
                           categorical_method=categorical_method, eta=eta, t_on=t_on, t_off=t_off,
                           alpha_on=alpha_on, eps=eps)
    anchors, x0, fixed = prepare_dsl(denoise_fn, num_samples=num_samples, length=length, steps=steps,
                                     vocab_size=vocab_size, anchors=anchors, fixed=fixed, fixed_tokens=fixed_tokens)
    grid, sched = discrete_schedule("remdm_loop", steps, eta, t_on, t_off, alpha_on, eps)
    tokens, nfe = discrete_scan(denoise_fn, key, x0, fixed, anchors, grid, sched, s_max=float(s_max), encode=encode,
                                top_p=float(top_p), self_correct=self_correct, categorical_method=categorical_method)
    return tokens, {"nfe": nfe}


def sample_dsl_roar(denoise_fn, key: Array, *, num_samples: int, length: int, steps: int, vocab_size: int,
                    anchors, fixed: Array | None = None, fixed_tokens: Array | None = None, s_max: float = 100.0,
                    encode: str = "noisy", top_p: float = 1.0,
                    categorical_method: str = "auto") -> tuple[Array, dict]:
    """Random-order AR (METHODS §4.4 d3): the per-token SNR path that moves positions, in a
    uniformly random order, from s = 0 ("[MASK]") to s_max. Step k reveals the free positions of
    rank ``[⌈k n/T⌉, ⌈(k+1) n/T⌉)`` in the order (n free positions per row, T = ``steps`` <= L: one
    per step when T = L, else about ``n/T`` drawn in parallel from their marginals), each token
    drawn from the model (float64 Gumbel / two-stage categorical) given the revealed ones,
    encoded as in ``encode_state``. With ``T = L``, ``encode="clean"`` and the exact denoiser
    the output law is the data law up to ``exp(−s_max·(1 − max cos))``. NFE = T."""
    check_int("steps", steps, min=1, max=check_int("length", length, min=1))
    check_float("s_max", s_max, min=0.0, min_open=True)
    check_choice("encode", encode, ENCODINGS)
    check_float("top_p", top_p, min=0.0, max=1.0, min_open=True)
    _check_method(categorical_method)
    anchors, x0, fixed = prepare_dsl(denoise_fn, num_samples=num_samples, length=length, steps=steps,
                                     vocab_size=vocab_size, anchors=anchors, fixed=fixed, fixed_tokens=fixed_tokens)
    predict = dsl_predictor(denoise_fn, float(top_p))
    k_order, k_run = jax.random.split(key)
    u = jnp.where(fixed, 2.0, jax.random.uniform(k_order, fixed.shape))  # fixed positions rank last
    rank = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1)
    n_free = jnp.sum(~fixed, axis=-1, keepdims=True).astype(jnp.int32)

    def step(z, st):
        k_enc, k_draw = jax.random.split(jax.random.fold_in(k_run, st["k"]))
        logp = predict(encode_state(k_enc, z, anchors, fixed, s_max=float(s_max), encode=encode))
        x = sample_categorical(k_draw, logp, categorical_method)
        lo = (st["k"] * n_free + steps - 1) // steps
        hi = ((st["k"] + 1) * n_free + steps - 1) // steps
        new = ~fixed & (rank >= lo) & (rank < hi)
        return jnp.where(new, x, z), 1

    tokens, nfe = run_scan(step, x0, jnp.asarray(np.linspace(0.0, 1.0, steps + 1), jnp.float32))
    return tokens, {"nfe": nfe}
