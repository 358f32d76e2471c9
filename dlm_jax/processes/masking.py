"""The absorbing-state (masking) forward process and its exact reverse posterior, METHODS §2.1(a).

Time direction: **t = 0 clean, t = 1 masked**; everything here takes ``α`` (the probability a
token is still clean, ``α_t = schedule.alpha(t)``) rather than t, so it works with any schedule
and with per-token times. Classes are the V clean tokens ``0..V-1`` plus the mask ``m``
(conventionally ``m = V``, giving V+1 classes).

* ``q(z_t^ℓ | x^ℓ) = Cat(α_t δ_{x^ℓ} + (1 − α_t) δ_m)``, independently per position;
* for ``s < t`` (so ``α_s ≥ α_t``):
  ``q(z_s | z_t, x) = δ_{z_t}`` if ``z_t ≠ m``, else
  ``Cat((α_s − α_t)/(1 − α_t) · δ_x + (1 − α_s)/(1 − α_t) · δ_m)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["forward_mask", "forward_probs", "reverse_posterior", "unmask_probability"]


def _broadcast_alpha(alpha, x):
    """``α`` as a scalar, per sequence ``[B]`` or per token ``[B, L]`` -> broadcastable to ``x``."""
    alpha = jnp.asarray(alpha)
    if alpha.ndim == 0 or alpha.shape == x.shape:
        return alpha
    if alpha.ndim == 1 and x.ndim >= 1 and alpha.shape[0] == x.shape[0]:
        return alpha.reshape(alpha.shape + (1,) * (x.ndim - 1))
    raise ValueError(f"alpha: shape {alpha.shape}; expected (), ({x.shape[0]},) or {x.shape}")


def forward_mask(key, x, alpha, mask_id: int, *, never_noise=None):
    """Draw ``z_t ~ q(z_t | x)``: each token of ``x`` stays with probability ``α`` and becomes
    ``mask_id`` otherwise, independently.

    ``x`` int ``[B, L]``; ``alpha`` = α_t (t: 0 clean, 1 masked) as a scalar, per sequence
    ``[B]`` or per token ``[B, L]`` (per-token times); ``never_noise`` optional bool ``[B, L]``
    marking positions (prefix / source) that are never masked. Returns int32 ``[B, L]``.
    """
    x = jnp.asarray(x)
    alpha = _broadcast_alpha(alpha, x)
    u = jax.random.uniform(key, x.shape, dtype=jnp.result_type(alpha, jnp.float32))
    masked = u >= alpha  # P(masked) = 1 − α
    if never_noise is not None:
        masked = masked & ~jnp.asarray(never_noise, bool)
    return jnp.where(masked, jnp.asarray(mask_id, x.dtype), x).astype(jnp.int32)


def forward_probs(x, alpha, mask_id: int, num_classes: int, *, never_noise=None):
    """``q(z_t | x)`` as probabilities over ``num_classes`` (= V+1) classes, ``[B, L, C]``.
    ``alpha`` = α_t (t: 0 clean, 1 masked) as in ``forward_mask``."""
    x = jnp.asarray(x)
    alpha = _broadcast_alpha(alpha, x)
    if never_noise is not None:
        alpha = jnp.where(jnp.asarray(never_noise, bool), 1.0, alpha)
    alpha = jnp.broadcast_to(alpha, x.shape)[..., None]
    onehot_x = jax.nn.one_hot(x, num_classes, dtype=alpha.dtype)
    onehot_m = jax.nn.one_hot(jnp.full_like(x, mask_id), num_classes, dtype=alpha.dtype)
    return alpha * onehot_x + (1.0 - alpha) * onehot_m


def unmask_probability(alpha_s, alpha_t):
    """``(α_s − α_t)/(1 − α_t)``: probability that a token masked at time t is clean at the
    earlier time s < t (t: 0 clean, 1 masked)."""
    alpha_s, alpha_t = jnp.asarray(alpha_s), jnp.asarray(alpha_t)
    return (alpha_s - alpha_t) / (1.0 - alpha_t)


def reverse_posterior(z_t, x, alpha_s, alpha_t, mask_id: int, num_classes: int):
    """Exact ``q(z_s | z_t, x)`` for ``s < t`` (t: 0 clean, 1 masked), as probabilities over
    ``num_classes`` (= V+1) classes, ``[B, L, C]``.

    ``z_t``, ``x`` int ``[B, L]``; ``alpha_s`` ≥ ``alpha_t`` scalars, ``[B]`` or ``[B, L]``.
    Unmasked positions keep their token; masked ones become ``x`` with probability
    ``(α_s − α_t)/(1 − α_t)`` and stay masked with ``(1 − α_s)/(1 − α_t)``.
    """
    z_t, x = jnp.asarray(z_t), jnp.asarray(x)
    a_s = jnp.broadcast_to(_broadcast_alpha(alpha_s, z_t), z_t.shape)[..., None]
    a_t = jnp.broadcast_to(_broadcast_alpha(alpha_t, z_t), z_t.shape)[..., None]
    dtype = jnp.result_type(a_s, a_t, jnp.float32)
    p_clean = ((a_s - a_t) / (1.0 - a_t)).astype(dtype)
    onehot_x = jax.nn.one_hot(x, num_classes, dtype=dtype)
    onehot_m = jax.nn.one_hot(jnp.full_like(x, mask_id), num_classes, dtype=dtype)
    onehot_z = jax.nn.one_hot(z_t, num_classes, dtype=dtype)
    p_stay = ((1.0 - a_s) / (1.0 - a_t)).astype(dtype)
    from_mask = p_clean * onehot_x + p_stay * onehot_m
    return jnp.where((z_t == mask_id)[..., None], from_mask, onehot_z)


def carry_over(log_p, z, mask_id: int):
    """Log-probs ``[..., V]`` over clean tokens with visible positions carried over: ``log δ(z)``
    (0 / −∞) where ``z ≠ mask_id``, ``log_p`` where ``z`` is masked (``mask_id = V``). The masked
    path's exact posterior of a visible token is that token (MDLM's SUBS; DFM's ``carry_over``)."""
    log_p, z = jnp.asarray(log_p), jnp.asarray(z)
    carry = jnp.where(jax.nn.one_hot(z, log_p.shape[-1], dtype=bool), 0.0, -jnp.inf).astype(log_p.dtype)
    return jnp.where((z == mask_id)[..., None], log_p, carry)
