"""DiT block and final layer with adaLN-zero modulation (MDLM `DDiTBlock` / `DDitFinalLayer`).

Block:  x += gate_msa * drop(Attn(modulate(LN1(x), shift_msa, scale_msa)))
        x += gate_mlp * drop(MLP(modulate(LN2(x), shift_mlp, scale_mlp)))
Final:  logits = Linear(modulate(LN(x), shift, scale))
The adaLN projections and the final Linear are zero-initialised, so a fresh model outputs exactly 0.
The residual stream is float32 (as under MDLM's bf16 autocast); branch matmuls run in the compute dtype.
Conditioning c is [B, 1 | L, cond_in]: per sequence or per position. `key_mask` [B, L] (True = real token)
hides padded keys from attention; everything else is per position.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dlm_jax.models.attention import Attention
from dlm_jax.models.conditioning import BlockFuser
from dlm_jax.models.layers import Dense, LayerNorm, dropout, modulate


class MLP(nnx.Module):
    """Linear(width → ratio·width) → tanh-GELU → Linear(ratio·width → width), with biases."""

    def __init__(self, width: int, ratio: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.fc_in = Dense((width,), (ratio * width,), ("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.fc_out = Dense((ratio * width,), (width,), ("mlp", "embed"), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc_out(jax.nn.gelu(self.fc_in(x), approximate=True))


def _fuser(cfg, rngs):
    if cfg.conditioning == "th":
        return BlockFuser(cfg.cond_dim, identity_init=cfg.identity_h_init, rngs=rngs)
    return None


class DiTBlock(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        dt = cfg.compute_dtype
        self.dropout_rate = float(cfg.dropout)
        self.fuse = _fuser(cfg, rngs)
        self.norm1 = LayerNorm(cfg.width, dtype=dt, rngs=rngs)
        self.attn = Attention(cfg.width, cfg.heads, dtype=dt, impl=cfg.attention_impl, qkv_impl=cfg.qkv_impl,
                              rope_impl=cfg.rope_impl, causal=cfg.causal, rngs=rngs)
        self.norm2 = LayerNorm(cfg.width, dtype=dt, rngs=rngs)
        self.mlp = MLP(cfg.width, cfg.mlp_ratio, dtype=dt, rngs=rngs)
        # [cond, 6, width]; chunk order (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp) as MDLM.
        self.adaln = Dense((cfg.cond_dim,), (6, cfg.width), ("cond", None, "embed"), init="zeros",
                           dtype=dt, rngs=rngs)

    def __call__(self, x, c, cos, sin, rng=None, key_mask=None):
        if self.fuse is not None:
            c = self.fuse(c)
        mod = self.adaln(c)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (mod[..., i, :] for i in range(6))
        r1, r2 = (None, None) if rng is None else tuple(jax.random.split(rng))
        h = self.attn(modulate(self.norm1(x), shift_msa, scale_msa), cos, sin, key_mask)
        x = x + (gate_msa * dropout(h, self.dropout_rate, r1)).astype(x.dtype)
        h = self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        x = x + (gate_mlp * dropout(h, self.dropout_rate, r2)).astype(x.dtype)
        return x


class FinalLayer(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        dt = cfg.compute_dtype
        self.fuse = _fuser(cfg, rngs)
        self.norm = LayerNorm(cfg.width, dtype=dt, rngs=rngs)
        self.adaln = Dense((cfg.cond_dim,), (2, cfg.width), ("cond", None, "embed"), init="zeros",
                           dtype=dt, rngs=rngs)
        self.linear = Dense((cfg.width,), (cfg.num_classes,), ("embed", "vocab"), init="zeros",
                            dtype=dt, rngs=rngs)

    def __call__(self, x, c):
        if self.fuse is not None:
            c = self.fuse(c)
        mod = self.adaln(c)
        h = modulate(self.norm(x), mod[..., 0, :], mod[..., 1, :])
        return self.linear(h, out_dtype=jnp.float32)
