"""Gaussian embedding diffusion for seq2seq (DINOISER / DiffuSeq, METHODS §2.4) and FastDiSS's
training-time noise manipulations (SCP and MANS, §3.1). Pure math, no networks.

Time direction: **t = 0 is clean, t = 1 is pure noise**; ``z_t = α_t z_0 + σ_t ε`` with
``α_t² + σ_t² = 1`` for both schedules:

* ``"interchangeable"`` (DINOISER's training scripts): ``σ_t = t``, ``α_t = √(1 − t²)``;
* ``"sqrt"`` (DiffuSeq, ``ᾱ_t = 1 − √t``): ``σ_t = t^{1/4}``, ``α_t = √(1 − √t)``.

Latents are target-token embeddings normalised to norm √d (``normalize_embeddings``). The clipped
time sampler draws ``t ~ U[t_min, 1]`` with ``t_min`` recomputed from the current table
(``clipped_t_min``): the noise level at which a token's nearest neighbour stops being
distinguishable, so training never spends updates on trivially easy times.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm_jax.checks import check_choice, fail

__all__ = ["SCHEDULES", "DELTA_MODES", "alpha_sigma", "sigma_inverse", "normalize_embeddings", "nn_variance",
           "clipped_t_min", "sample_time", "forward", "scp_params", "scp_constant", "scp_latent", "sample_delta",
           "beta_at", "check_phases", "mans_time"]

SCHEDULES = ("interchangeable", "sqrt")
DELTA_MODES = ("steps", "uniform")


def alpha_sigma(t, schedule: str = "interchangeable"):
    """``(α_t, σ_t)`` of any shape (t in [0, 1], 0 = clean)."""
    check_choice("schedule", schedule, SCHEDULES)
    t = jnp.clip(jnp.asarray(t, jnp.result_type(float)), 0.0, 1.0)
    if schedule == "interchangeable":
        return jnp.sqrt(jnp.maximum(1.0 - t * t, 0.0)), t
    r = jnp.sqrt(t)
    return jnp.sqrt(jnp.maximum(1.0 - r, 0.0)), jnp.sqrt(r)


def sigma_inverse(sigma, schedule: str = "interchangeable"):
    """The t with ``σ_t = sigma`` (identity for the interchangeable schedule, ``σ⁴`` for sqrt)."""
    check_choice("schedule", schedule, SCHEDULES)
    s = jnp.clip(jnp.asarray(sigma, jnp.result_type(float)), 0.0, 1.0)
    return s if schedule == "interchangeable" else s ** 4


def normalize_embeddings(table, eps: float = 1e-12):
    """Rows scaled to norm √d (``F.normalize(E) · √d``): ``[..., d]`` -> same shape."""
    table = jnp.asarray(table)
    d = table.shape[-1]
    norm = jnp.sqrt(jnp.sum(table * table, axis=-1, keepdims=True))
    return table / jnp.maximum(norm, eps) * jnp.sqrt(jnp.asarray(d, table.dtype))


def nn_variance(table):
    """``mean_i min_{j≠i} ||e_i − e_j||² / d`` over the rows of ``table [V, d]`` (V >= 2)."""
    table = jnp.asarray(table)
    v, d = table.shape
    sq = jnp.sum(table * table, -1)
    dist = sq[:, None] + sq[None, :] - 2.0 * table @ table.T
    dist = jnp.where(jnp.eye(v, dtype=bool), jnp.inf, jnp.maximum(dist, 0.0))
    return jnp.mean(jnp.min(dist, axis=1)) / d


def clipped_t_min(table, schedule: str = "interchangeable", *, plus_one: bool = False):
    """DINOISER's clipped sampler bound: ``var = nn_variance(E)`` (``+1`` with ``plus_one``, the
    ``clipped_s`` variant) and ``t_min = σ^{-1}(√(var / (1 + var)))``. Gradient-free by design."""
    var = jax.lax.stop_gradient(nn_variance(table)) + (1.0 if plus_one else 0.0)
    return sigma_inverse(jnp.sqrt(var / (1.0 + var)), schedule)


def sample_time(key, shape, t_min=0.0):
    """``t ~ U[t_min, 1]`` of ``shape`` (``t_min`` a scalar or broadcastable array)."""
    u = jax.random.uniform(key, shape, jnp.float32)
    return t_min + (1.0 - t_min) * u


def _expand(a, like):
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))


def forward(z0, t, eps, schedule: str = "interchangeable"):
    """``z_t = α_t z_0 + σ_t ε``; ``t`` is ``[B]`` (per sequence) or ``[B, n]`` (per token)."""
    alpha, sigma = alpha_sigma(t, schedule)
    return _expand(alpha, z0) * z0 + _expand(sigma, z0) * eps


def scp_params(t, delta, schedule: str = "interchangeable"):
    """SCP's previous-step matching (§3.1): with ``t⁺ = min(t + Δ, 1)``,
    ``λ = α_{t⁺}/α_t``, ``γ = √(σ_{t⁺}²/σ_t² − 1)``, ``t_sc = t⁺``; then
    ``α_t λ z_0 + σ_t √(1+γ²) ε`` is exactly ``α_{t⁺} z_0 + σ_{t⁺} ε``. Δ = 0 gives λ = 1, γ = 0."""
    t = jnp.asarray(t)
    t_plus = jnp.minimum(t + jnp.asarray(delta), 1.0)
    a, s = alpha_sigma(t, schedule)
    a_p, s_p = alpha_sigma(t_plus, schedule)
    lam = jnp.where(a > 0, a_p / jnp.where(a > 0, a, 1.0), 0.0)
    ratio = jnp.where(s > 0, s_p * s_p / jnp.where(s > 0, s * s, 1.0), 1.0)
    gamma = jnp.sqrt(jnp.maximum(ratio - 1.0, 0.0))
    return lam, gamma, t_plus


def scp_constant(t, lam: float, gamma: float):
    """The constant-(λ, γ) option (DDPM-IP-style input perturbation): ``(λ, γ, t_sc = t)``."""
    t = jnp.asarray(t)
    return jnp.full_like(t, lam), jnp.full_like(t, gamma), t


def scp_latent(z0, eps, t, lam, gamma, schedule: str = "interchangeable"):
    """``z'_t = α_t λ z_0 + σ_t √(1+γ²) ε`` (§3.1, SCP), broadcasting ``[B]`` or ``[B, n]`` scalars."""
    alpha, sigma = alpha_sigma(t, schedule)
    lam, gamma = jnp.asarray(lam), jnp.asarray(gamma)
    return (_expand(alpha * lam, z0) * z0 + _expand(sigma * jnp.sqrt(1.0 + gamma * gamma), z0) * eps)


def sample_delta(key, shape, mode: str = "steps", *, steps=(1, 2, 5, 10), delta_max: float = 0.5):
    """Δ per example: ``1/K`` with K uniform over ``steps`` (a uniform grid's step sizes), or
    ``U[0, delta_max]``."""
    check_choice("method.scp_delta", mode, DELTA_MODES)
    if mode == "uniform":
        return delta_max * jax.random.uniform(key, shape, jnp.float32)
    sizes = 1.0 / jnp.asarray(steps, jnp.float32)
    return sizes[jax.random.randint(key, shape, 0, sizes.shape[0])]


def check_phases(phases, betas, key: str = "method.beta_phases"):
    """``phases`` strictly increasing positive step boundaries, one fewer than ``betas`` (all > 0)."""
    phases, betas = tuple(phases), tuple(betas)
    if any(not isinstance(p, int) or isinstance(p, bool) or p < 1 for p in phases) or any(
            b <= a for a, b in zip(phases, phases[1:])):
        fail(key, phases, "strictly increasing step boundaries >= 1")
    if len(betas) != len(phases) + 1 or any(not isinstance(b, (int, float)) or isinstance(b, bool) or b <= 0
                                            for b in betas):
        fail("method.mans_betas", betas, f"{len(phases) + 1} numbers > 0 (one per phase of {key})")
    return phases, betas


def beta_at(step, phases, betas):
    """β(n): ``betas[i]`` for ``phases[i-1] <= n < phases[i]`` (piecewise constant by phase)."""
    idx = jnp.searchsorted(jnp.asarray(phases, jnp.int32), jnp.asarray(step, jnp.int32), side="right")
    return jnp.asarray(betas, jnp.float32)[idx]


def mans_time(t, correct, beta, t_max: float = 1.0):
    """MANS per-token time (§3.1): ``τ_k = min(β t, t_max)`` where the SC-pass rounding is right
    (``correct [B, n]``), else ``t``. ``t`` is ``[B]``; returns ``[B, n]``."""
    t = jnp.broadcast_to(jnp.asarray(t)[:, None], correct.shape)
    return jnp.where(correct, jnp.minimum(beta * t, t_max), t)
