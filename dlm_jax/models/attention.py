"""Bidirectional multi-head self-attention with rotary q/k (MDLM / FS-DFM DDiT), with an optional key mask.

Rotary follows MDLM's `Rotary` + flash-attn `apply_rotary_emb_qkv_` (non-interleaved): the head vector is split
into halves (x1, x2) and rotated as (x1 cos - x2 sin, x2 cos + x1 sin) with frequencies
inv_freq_j = 10000^{-2j/head_dim} at integer positions 0..L-1. Rotation runs in float32.

Each computation has interchangeable implementations (same params, same function up to float rounding),
chosen by `DiTConfig.attention_impl / qkv_impl / rope_impl`; the first of each is the reference.
"""

from __future__ import annotations

import math

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


def apply_rotary_split(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """`apply_rotary` on the two halves (half-width tables, one concatenation): the "split_halves" rope_impl."""
    xf = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    x1, x2 = xf[..., :half], xf[..., half:]
    c, s = cos[None, :, None, :half], sin[None, :, None, :half]
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x.dtype)


ROPES = {"rotate_half": apply_rotary, "split_halves": apply_rotary_split}


def xla_attention(q, k, v, mask=None):
    """`jax.nn.dot_product_attention` (float32 logits and softmax). q, k, v [B, L, H, D]; mask [B, 1, 1|L, L]."""
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=False)


def causal_mask(length: int, key_mask=None):
    """[1 | B, 1, L, L] bool: query i sees key j iff j <= i (and the key is real when `key_mask` [B, L] is given)."""
    tri = jnp.tril(jnp.ones((length, length), bool))[None, None]
    return tri if key_mask is None else tri & key_mask[:, None, None, :]


def einsum_attention(q, k, v, mask=None):
    """softmax(QK^T / sqrt(D)) V written as two einsums, logits and softmax in float32; masked logits get the
    same large negative value as `jax.nn.dot_product_attention`, so an all-masked row stays finite."""
    s = jnp.einsum("blhd,bmhd->bhlm", q, k, preferred_element_type=jnp.float32) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = jnp.where(mask, s, jnp.asarray(-0.7 * float(jnp.finfo(jnp.float32).max), jnp.float32))
    p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
    return jnp.einsum("bhlm,bmhd->blhd", p, v)


ATTENTIONS = {"xla": xla_attention, "einsum": einsum_attention}


class Attention(nnx.Module):
    """qkv projection [width -> 3 x heads x head_dim] (no bias), rotary q/k, softmax attention, out projection.

    Bidirectional unless `causal` (then query i sees keys <= i only); `key_mask` [B, L] (True = real token) stops every query attending to padded keys.
    impl / qkv_impl / rope_impl: see `DiTConfig` (defaults: the reference implementations).
    """

    def __init__(self, width: int, heads: int, *, dtype=jnp.float32, impl: str = "xla", qkv_impl: str = "fused",
                 rope_impl: str = "rotate_half", causal: bool = False, rngs: nnx.Rngs):
        hd = width // heads
        self.qkv = Dense((width,), (3, heads, hd), ("embed", None, "heads", "kv"), use_bias=False,
                         dtype=dtype, rngs=rngs)
        self.out = Dense((heads, hd), (width,), ("heads", "kv", "embed"), use_bias=False, dtype=dtype, rngs=rngs)
        self.impl, self.qkv_impl, self.rope_impl, self.causal = impl, qkv_impl, rope_impl, causal

    def qkv_rotated(self, x: jax.Array, cos: jax.Array, sin: jax.Array):
        """q, k (rotated) and v, each [B, L, heads, head_dim] in the compute dtype."""
        if self.qkv_impl == "split":  # three dots on kernel slices: no slicing of the [B, L, 3, H, D] activation
            kernel = self.qkv.kernel[...].astype(self.qkv.dtype)  # [W, 3, H, D]
            xd = x.astype(self.qkv.dtype)
            q, k, v = (jnp.einsum("blw,whd->blhd", xd, kernel[:, i]) for i in range(3))
        else:
            qkv = self.qkv(x)
            q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        rope = ROPES[self.rope_impl]
        return rope(q, cos, sin), rope(k, cos, sin), v

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, key_mask: jax.Array | None = None):
        q, k, v = self.qkv_rotated(x, cos, sin)
        if self.causal:
            mask = causal_mask(x.shape[1], key_mask)
        else:
            mask = None if key_mask is None else key_mask[:, None, None, :]
        return self.out(ATTENTIONS[self.impl](q, k, v, mask))
