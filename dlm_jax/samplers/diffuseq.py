"""DiffuSeq-style ancestral sampler with self-conditioning for continuous embedding diffusion
(METHODS §2.4; the many-step reference FastDiSS's "400×" is measured against).

Time direction: **t = 1 is noise, t = 0 clean**; the latent grid ``τ_k = linspace(1, t_end, K+1)``.
Each step draws from the x0-parameterised Gaussian posterior of the forward process,
``q(z_s | z_t, x_0 = ẑ)`` with fresh noise (DDPM's ``p_sample``), where for ``s < t``

    α_{t|s} = α_t / α_s,     σ²_{t|s} = σ_t² − α_{t|s}² σ_s²
    mean    = (α_{t|s} σ_s² / σ_t²) z_t + (α_s σ²_{t|s} / σ_t²) ẑ
    var     = σ²_{t|s} σ_s² / σ_t²

One ``lax.scan`` over the K steps, carrying ``(z, ẑ_sc, key)``; ``ẑ = D(z, ẑ_sc, τ_k)`` and the
self-conditioning input is the previous step's ``ẑ`` (0 at the first step). The output is the
last ``ẑ`` (rounding ``argmax ẑ Eᵀ`` is the caller's), so the final step's noise never reaches
the tokens. ``clamp_fn`` (optional) replaces ``ẑ`` before the posterior step, e.g. by its nearest
embedding (DiffuSeq's clamping trick); the self-conditioning input stays the raw ``ẑ``.
``record_gap`` measures ``‖D(z, ẑ_prev) − D(z, D(z, 0))‖`` per token as ``ddim_sc`` does.
DiffuSeq itself uses T = 2,000 discrete steps of the sqrt schedule: ``steps=2000,
schedule="sqrt"`` is that grid up to the discretisation of t.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dlm_jax.checks import check_bool, check_choice, check_float, check_int
from dlm_jax.processes.embedding_diffusion import SCHEDULES, alpha_sigma
from dlm_jax.samplers.driver import run_scan

__all__ = ["posterior", "diffuseq_sc"]


def posterior(z_t, x0, t, s, schedule: str = "interchangeable"):
    """``(mean, var)`` of ``q(z_s | z_t, x_0)`` for ``0 <= s < t <= 1`` (t, s broadcast against z)."""
    a_t, s_t = alpha_sigma(t, schedule)
    a_s, s_s = alpha_sigma(s, schedule)
    a_ts = a_t / jnp.maximum(a_s, 1e-12)
    var_ts = jnp.maximum(s_t ** 2 - a_ts ** 2 * s_s ** 2, 0.0)
    inv = 1.0 / jnp.maximum(s_t ** 2, 1e-24)
    mean = a_ts * s_s ** 2 * inv * z_t + a_s * var_ts * inv * x0
    return mean, var_ts * s_s ** 2 * inv


def diffuseq_sc(denoise_fn: Callable, key, *, shape, steps: int, schedule: str = "interchangeable",
                t_end: float = 1e-3, self_cond: bool = True, record_gap: bool = False, z_init=None,
                clamp_fn: Callable | None = None):
    """Run K ancestral steps from ``z ~ N(0, I)`` of ``shape = (B, n, d)`` (or ``z_init``);
    returns ``(ẑ_0 [B, n, d], info)`` with ``info["nfe"]`` (= K), ``info["z"]`` (the last latent)
    and, with ``record_gap``, ``info["sc_gap"] [K]`` and ``info["gap_nfe"]``.
    ``denoise_fn(z [B, n, d], self_cond | None, t [B, n]) -> x0 [B, n, d]``."""
    steps = check_int("steps", steps, min=1)
    check_choice("schedule", schedule, SCHEDULES)
    check_float("t_end", t_end, min=0.0, max=1.0, max_open=True)
    check_bool("self_cond", self_cond)
    check_bool("record_gap", record_gap)
    tau = jnp.linspace(1.0, t_end, steps + 1, dtype=jnp.float32)
    b, n, _ = shape
    k_init, k_steps = jax.random.split(key)
    z = jax.random.normal(k_init, shape, jnp.float32) if z_init is None else jnp.asarray(z_init, jnp.float32)

    def body(carry, st):
        z, sc, gaps = carry
        m = jnp.full((b, n), st["t"], jnp.float32)
        zhat = denoise_fn(z, sc if self_cond else None, m)
        if record_gap:  # the carried estimate vs the same-step one the model saw in training
            same = denoise_fn(z, denoise_fn(z, None, m), m)
            gaps = gaps.at[st["k"]].set(jnp.mean(jnp.sqrt(jnp.sum((zhat - same) ** 2, -1))))
        x0 = zhat if clamp_fn is None else clamp_fn(zhat)
        mean, var = posterior(z, x0, st["t"], st["s"], schedule)
        noise = jax.random.normal(jax.random.fold_in(k_steps, st["k"]), z.shape, jnp.float32)
        return (mean + jnp.sqrt(var) * noise, zhat, gaps), 1

    carry0 = (z, jnp.zeros(shape, jnp.float32), jnp.zeros((steps,), jnp.float32))
    (z, zhat, gaps), nfe = run_scan(body, carry0, tau)
    info = {"nfe": nfe, "z": z}
    if record_gap:
        info["sc_gap"], info["gap_nfe"] = gaps, jnp.int32(2 * steps)
    return zhat, info
