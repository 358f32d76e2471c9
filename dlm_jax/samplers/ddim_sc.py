"""Few-step DDIM with self-conditioning for continuous embedding diffusion (METHODS §2.4, §3.4).

Time direction: **t = 1 is noise, t = 0 clean**; the latent grid ``τ_k = linspace(1, t_end, K+1)``.
One ``lax.scan`` over the K steps, carrying ``(z, ẑ_sc)``:

    ẑ   = D(z, ẑ_sc, m_k)                       # x0 estimate; ẑ_sc = the previous step's ẑ (0 at k = 0)
    ε̂   = (z − α_{τ_k} ẑ) / σ_{τ_k}
    z   = α_{τ_{k+1}} ẑ + σ_{τ_{k+1}} ε̂         # deterministic DDIM
    ẑ_sc = ẑ

``m_k`` is the model's time label: ``τ_k`` (``mode="ddim"``) or DINOISER's CEDI grid
``linspace(1, cedi_end, K+1)[k]`` (``mode="cedi"``: the model always "thinks" the noise is high,
which makes it lean on the source). The output is the last ``ẑ``; rounding (``argmax ẑ Eᵀ``) is the
caller's. ``record_gap`` also measures the self-conditioning gap of FastDiSS's appendix,
``‖D(z, ẑ_prev, m) − D(z, D(z, 0, m), m)‖`` per token, at every step (2 extra calls a step,
reported as ``info["gap_nfe"]``, not in ``info["nfe"]``).

``denoise_fn(z [B, n, d], self_cond [B, n, d] | None, t [B, n]) -> x0 [B, n, d]`` is a plain
callable: a trained network, or an exact posterior mean in tests.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dlm_jax.checks import check_bool, check_choice, check_float, check_int
from dlm_jax.processes.embedding_diffusion import SCHEDULES, alpha_sigma
from dlm_jax.samplers.driver import run_scan

__all__ = ["MODES", "time_grids", "ddim_sc"]

MODES = ("ddim", "cedi")


def time_grids(steps: int, mode: str = "ddim", *, t_end: float = 1e-3, cedi_end: float = 0.99):
    """``(latent grid τ [K+1], model-time grid m [K+1])``, both from 1 downwards."""
    steps = check_int("steps", steps, min=1)
    check_choice("sampler", mode, MODES)
    check_float("t_end", t_end, min=0.0, max=1.0, max_open=True)
    check_float("cedi_end", cedi_end, min=0.0, max=1.0)
    tau = jnp.linspace(1.0, t_end, steps + 1, dtype=jnp.float32)
    model = tau if mode == "ddim" else jnp.linspace(1.0, cedi_end, steps + 1, dtype=jnp.float32)
    return tau, model


def ddim_sc(denoise_fn: Callable, key, *, shape, steps: int, schedule: str = "interchangeable", mode: str = "ddim",
            t_end: float = 1e-3, cedi_end: float = 0.99, self_cond: bool = True, record_gap: bool = False,
            z_init=None):
    """Run K DDIM steps from ``z ~ N(0, I)`` of ``shape = (B, n, d)`` (or ``z_init``); returns
    ``(ẑ_0 [B, n, d], info)`` with ``info["nfe"]`` (= K), ``info["z"]`` (the last latent) and, with
    ``record_gap``, ``info["sc_gap"] [K]`` (mean per-token gap) and ``info["gap_nfe"]``."""
    check_choice("schedule", schedule, SCHEDULES)
    check_bool("self_cond", self_cond)
    check_bool("record_gap", record_gap)
    tau, model_t = time_grids(steps, mode, t_end=t_end, cedi_end=cedi_end)
    b, n, _ = shape
    z = jax.random.normal(key, shape, jnp.float32) if z_init is None else jnp.asarray(z_init, jnp.float32)
    alpha, sigma = alpha_sigma(tau, schedule)

    def body(carry, s):
        z, sc, gaps = carry
        m = jnp.full((b, n), s["m"], jnp.float32)
        zhat = denoise_fn(z, sc if self_cond else None, m)
        eps = (z - s["a_t"] * zhat) / jnp.maximum(s["s_t"], 1e-12)
        if record_gap:  # the carried estimate vs the same-step one the model saw in training
            same = denoise_fn(z, denoise_fn(z, None, m), m)
            gaps = gaps.at[s["k"]].set(jnp.mean(jnp.sqrt(jnp.sum((zhat - same) ** 2, -1))))
        return (s["a_s"] * zhat + s["s_s"] * eps, zhat, gaps), 1

    carry0 = (z, jnp.zeros(shape, jnp.float32), jnp.zeros((steps,), jnp.float32))
    per_step = {"m": model_t[:-1], "a_t": alpha[:-1], "s_t": sigma[:-1], "a_s": alpha[1:], "s_s": sigma[1:]}
    (z, zhat, gaps), nfe = run_scan(body, carry0, tau, per_step)
    info = {"nfe": nfe, "z": z}
    if record_gap:
        info["sc_gap"], info["gap_nfe"] = gaps, jnp.int32(2 * steps)
    return zhat, info
