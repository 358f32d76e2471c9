"""Time / step-size conditioning (METHODS §6.2(b)), computed in float32.

* `timestep_embedding(τ)`: [cos(τ ω_k), sin(τ ω_k)]_{k<128}, ω_k = 10000^{-k/128}, on the RAW τ ∈ [0, 1]
  (no ×1000 scaling). The time direction is the caller's (masked family: 0 = clean; flow family: 0 = source).
* `TimestepEmbedder`: that embedding through MLP 256 → cond → cond with SiLU in between (MDLM `TimestepEmbedder`).
* `Conditioner`:
  * "none" / "t": c = SiLU(emb_t(t)) ∈ R^cond ("none" is fed t = 0, like MDLM-OWT with time_conditioning False);
  * "th": c = SiLU(W_f [emb_t(t); emb_h(h)]) ∈ R^{2 cond}; each block and the final layer then apply their own
    `BlockFuser` SiLU(W_b c) ∈ R^cond. In "none"/"t" mode there are no fusers (the teacher architecture).
* Identity init ("th", identity_h_init): W_f maps [e_t; e_h] → [e_t; −e_t] and every W_b maps [a; b] → a − b.
  Since SiLU(z) − SiLU(−z) = z, the fuser output is SiLU(e_t), exactly the teacher's c, while h has zero
  influence until training moves the zero h-columns of W_f (their gradient is nonzero).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from dlm_jax.models.layers import Dense

FREQ_DIM = 256
MAX_PERIOD = 10000.0


def timestep_embedding(t: jax.Array, dim: int = FREQ_DIM) -> jax.Array:
    """Sinusoidal features of raw t (any shape) → t.shape + (dim,), float32."""
    half = dim // 2
    freqs = jnp.exp(-math.log(MAX_PERIOD) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimestepEmbedder(nnx.Module):
    """emb(τ) = Linear_{cond→cond}(SiLU(Linear_{256→cond}(sinusoid(τ)))), float32."""

    def __init__(self, cond_dim: int, *, rngs: nnx.Rngs):
        self.mlp_in = Dense((FREQ_DIM,), (cond_dim,), (None, "cond"), rngs=rngs)
        self.mlp_out = Dense((cond_dim,), (cond_dim,), ("cond", None), rngs=rngs)

    def __call__(self, t: jax.Array) -> jax.Array:
        return self.mlp_out(jax.nn.silu(self.mlp_in(timestep_embedding(t))))


def identity_fuse_kernel(cond_dim: int) -> jax.Array:
    """W_f [2c, 2c] with [e_t; e_h] @ W_f = [e_t; −e_t] (h ignored)."""
    eye = jnp.eye(cond_dim, dtype=jnp.float32)
    top = jnp.concatenate([eye, -eye], axis=1)
    return jnp.concatenate([top, jnp.zeros_like(top)], axis=0)


def identity_block_fuser_kernel(cond_dim: int) -> jax.Array:
    """W_b [2c, c] with [a; b] @ W_b = a − b."""
    eye = jnp.eye(cond_dim, dtype=jnp.float32)
    return jnp.concatenate([eye, -eye], axis=0)


class BlockFuser(nnx.Module):
    """Per-block fuser of the "th" student: SiLU(W_b c), R^{2 cond} → R^cond."""

    def __init__(self, cond_dim: int, *, identity_init: bool = False, rngs: nnx.Rngs):
        self.proj = Dense((2 * cond_dim,), (cond_dim,), ("cond", None), rngs=rngs)
        if identity_init:
            self.proj.kernel[...] = identity_block_fuser_kernel(cond_dim)
            self.proj.bias[...] = jnp.zeros((cond_dim,), jnp.float32)

    def __call__(self, c: jax.Array) -> jax.Array:
        return jax.nn.silu(self.proj(c))


class Conditioner(nnx.Module):
    """Maps t (and h) of shape [B, 1] or [B, L] to the conditioning vector c [B, 1 | L, cond or 2 cond]."""

    def __init__(self, cond_dim: int, conditioning: str, *, identity_init: bool = False, rngs: nnx.Rngs):
        self.conditioning = conditioning
        self.t_embed = TimestepEmbedder(cond_dim, rngs=rngs)
        if conditioning == "th":
            self.h_embed = TimestepEmbedder(cond_dim, rngs=rngs)
            self.fuse = Dense((2 * cond_dim,), (2 * cond_dim,), ("cond", None), rngs=rngs)
            if identity_init:
                self.fuse.kernel[...] = identity_fuse_kernel(cond_dim)
                self.fuse.bias[...] = jnp.zeros((2 * cond_dim,), jnp.float32)
        else:
            self.h_embed = None
            self.fuse = None

    def __call__(self, t: jax.Array, h: jax.Array | None = None) -> jax.Array:
        if self.conditioning != "th":
            return jax.nn.silu(self.t_embed(t))
        e = jnp.concatenate([self.t_embed(t), self.h_embed(h)], axis=-1)
        return jax.nn.silu(self.fuse(e))
