"""Bidirectional multi-head self-attention with rotary q/k (MDLM / FS-DFM DDiT).

Rotary follows MDLM's `Rotary` + flash-attn `apply_rotary_emb_qkv_` (non-interleaved): the head vector is split
into halves (x1, x2) and rotated as (x1 cos - x2 sin, x2 cos + x1 sin) with frequencies
inv_freq_j = 10000^{-2j/head_dim} at integer positions 0..L-1. Rotation runs in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dlm_jax.models.layers import Dense

ROPE_BASE = 10000.0


def rotary_cos_sin(length: int, head_dim: int) -> tuple[jax.Array, jax.Array]:
    """cos, sin tables [L, head_dim] (float32) for positions 0..L-1."""
    inv_freq = 1.0 / (ROPE_BASE ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate x [B, L, H, D] by position; cos/sin [L, D]. Computed in float32, returned in x.dtype."""
    xf = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return (xf * c + rotated * s).astype(x.dtype)


class Attention(nnx.Module):
    """qkv projection [width -> 3 x heads x head_dim] (no bias), rotary q/k, softmax attention, out projection.

    Uses `jax.nn.dot_product_attention` (no mask: bidirectional); its logits and softmax are float32.
    """

    def __init__(self, width: int, heads: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        hd = width // heads
        self.qkv = Dense((width,), (3, heads, hd), ("embed", None, "heads", "kv"), use_bias=False,
                         dtype=dtype, rngs=rngs)
        self.out = Dense((heads, hd), (width,), ("heads", "kv", "embed"), use_bias=False, dtype=dtype, rngs=rngs)

    def qkv_rotated(self, x: jax.Array, cos: jax.Array, sin: jax.Array):
        """q, k (rotated) and v, each [B, L, heads, head_dim] in the compute dtype."""
        qkv = self.qkv(x)
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        q, k, v = self.qkv_rotated(x, cos, sin)
        o = jax.nn.dot_product_attention(q, k, v, is_causal=False)
        return self.out(o)
