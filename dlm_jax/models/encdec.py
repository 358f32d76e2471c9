"""Encoder–decoder denoiser for continuous seq2seq diffusion (DINOISER's base, METHODS §2.4 / §3.2).

* Encoder: source ids → token embedding + sinusoidal positions → ``enc_depth`` pre-LN Transformer
  blocks (rotary self-attention with the source padding mask, tanh-GELU MLP) → LayerNorm = memory.
* Length predictor: the masked mean of the memory → logits over target lengths ``0..max_tgt_len``.
* Decoder (the denoiser): per target position ``up([z_t ; ẑ_sc]) + time(τ_k) + position``, where
  ``τ`` is the per-token time ``[B, n]`` (or ``[B]``, broadcast) embedded like the DiT's and
  ``ẑ_sc`` the self-conditioning estimate (zeros when absent) → ``dec_depth`` blocks (self-attention
  with the target padding mask, cross-attention to the memory with the source mask, MLP) →
  LayerNorm → ``down`` = the x0 estimate in embedding space ``[B, n, d]``.
* Target embedding table ``[V, d]`` (init std 1e-3), used normalised to norm √d: ``z_0 = E[y]`` and
  the rounding logits ``ẑ_0 Eᵀ``.

Time direction: t = 0 clean, t = 1 noise (the model only embeds it). Every weight carries logical
axis names (``dlm_jax.models``: vocab, embed, mlp, heads, kv, cond, norm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlm_jax.checks import fail
from dlm_jax.models.attention import ATTENTIONS, Attention, rotary_cos_sin
from dlm_jax.models.blocks import MLP
from dlm_jax.models.conditioning import TimestepEmbedder, timestep_embedding
from dlm_jax.models.layers import Dense, LayerNorm, dropout, make_param
from dlm_jax.processes.embedding_diffusion import normalize_embeddings

OUTPUTS = ("x0", "encode", "all")
COND_KEYS = ("t", "self_cond", "padding_mask", "source", "source_mask", "memory", "outputs")


def _normal(std: float):
    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.normal(key, shape, dtype)

    return init


def _positions(length: int, width: int) -> jax.Array:
    """Sinusoidal absolute positions ``[L, width]`` (the DiT's time features of raw positions)."""
    return timestep_embedding(jnp.arange(length, dtype=jnp.float32), width)


class CrossAttention(nnx.Module):
    """Queries from the decoder, keys/values from the memory; ``mem_mask [B, Ls]`` hides padded sources."""

    def __init__(self, width: int, heads: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        hd = width // heads
        self.q = Dense((width,), (heads, hd), ("embed", "heads", "kv"), use_bias=False, dtype=dtype, rngs=rngs)
        self.kv = Dense((width,), (2, heads, hd), ("embed", None, "heads", "kv"), use_bias=False, dtype=dtype,
                        rngs=rngs)
        self.out = Dense((heads, hd), (width,), ("heads", "kv", "embed"), use_bias=False, dtype=dtype, rngs=rngs)

    def __call__(self, x, memory, mem_mask):
        kv = self.kv(memory)
        mask = None if mem_mask is None else mem_mask[:, None, None, :]
        return self.out(ATTENTIONS["xla"](self.q(x), kv[..., 0, :, :], kv[..., 1, :, :], mask))


class Block(nnx.Module):
    """Pre-LN block: self-attention (+ cross-attention when ``cross``) and MLP, dropout on each branch."""

    def __init__(self, cfg, *, cross: bool, rngs: nnx.Rngs):
        dt = cfg.compute_dtype
        self.rate = float(cfg.dropout)
        self.norm1 = LayerNorm(cfg.width, dtype=dt, rngs=rngs)
        self.attn = Attention(cfg.width, cfg.heads, dtype=dt, rngs=rngs)
        self.norm_c = LayerNorm(cfg.width, dtype=dt, rngs=rngs) if cross else None
        self.cross = CrossAttention(cfg.width, cfg.heads, dtype=dt, rngs=rngs) if cross else None
        self.norm2 = LayerNorm(cfg.width, dtype=dt, rngs=rngs)
        self.mlp = MLP(cfg.width, cfg.mlp_ratio, dtype=dt, rngs=rngs)

    def __call__(self, x, cos, sin, key_mask, rng=None, memory=None, mem_mask=None):
        r = [None] * 3 if rng is None else list(jax.random.split(rng, 3))
        x = x + dropout(self.attn(self.norm1(x), cos, sin, key_mask), self.rate, r[0]).astype(x.dtype)
        if self.cross is not None:
            x = x + dropout(self.cross(self.norm_c(x), memory, mem_mask), self.rate, r[1]).astype(x.dtype)
        return x + dropout(self.mlp(self.norm2(x)), self.rate, r[2]).astype(x.dtype)


def _mask(m, shape):
    return jnp.ones(shape, bool) if m is None else jnp.asarray(m) != 0


class EncDec(nnx.Module):
    """See the module docstring; ``config`` is an ``EncDecConfig`` (``encdec_def``)."""

    def __init__(self, config, *, rngs: nnx.Rngs):
        c = self.config = config
        dt = c.compute_dtype
        self.src_embed = make_param(rngs, _normal(1.0), (c.vocab_size, c.width), ("vocab", "embed"))
        self.tgt_embed = make_param(rngs, _normal(c.embed_init_std), (c.vocab_size, c.latent_dim), ("vocab", None))
        self.encoder = nnx.List([Block(c, cross=False, rngs=rngs) for _ in range(c.enc_depth)])
        self.enc_norm = LayerNorm(c.width, dtype=dt, rngs=rngs)
        self.length = Dense((c.width,), (c.max_tgt_len + 1,), ("embed", None), dtype=dt, rngs=rngs)
        self.up = Dense(((2 if c.self_cond else 1) * c.latent_dim,), (c.width,), (None, "embed"), dtype=dt, rngs=rngs)
        self.time = TimestepEmbedder(c.width, rngs=rngs)
        self.decoder = nnx.List([Block(c, cross=True, rngs=rngs) for _ in range(c.dec_depth)])
        self.dec_norm = LayerNorm(c.width, dtype=dt, rngs=rngs)
        self.down = Dense((c.width,), (c.latent_dim,), ("embed", None), dtype=dt, rngs=rngs)

    def embedding(self) -> jax.Array:
        """The target table normalised to norm √d, ``[V, d]`` float32."""
        return normalize_embeddings(self.tgt_embed[...])

    def encode(self, source, source_mask, rng=None):
        """``(memory [B, Ls, W], length_logits [B, max_tgt_len + 1])``."""
        c = self.config
        b, ls = source.shape
        mask = _mask(source_mask, (b, ls))
        h = jnp.take(self.src_embed[...], source, axis=0) + _positions(ls, c.width)[None]
        cos, sin = rotary_cos_sin(ls, c.head_dim)
        for i, block in enumerate(self.encoder):
            h = block(h, cos, sin, mask, None if rng is None else jax.random.fold_in(rng, i))
        memory = self.enc_norm(h).astype(jnp.float32)
        w = mask.astype(jnp.float32)[..., None]
        pooled = jnp.sum(memory * w, 1) / jnp.maximum(jnp.sum(w, 1), 1.0)
        return memory, self.length(pooled, out_dtype=jnp.float32)

    def denoise(self, z, t, self_cond, tgt_mask, memory, source_mask, rng=None):
        """The x0 estimate ``[B, n, d]`` (float32) of latents ``z [B, n, d]`` at per-token time ``t``."""
        c = self.config
        b, n, _ = z.shape
        tk = jnp.broadcast_to(jnp.asarray(t, jnp.float32).reshape(b, -1), (b, n))
        x = z.astype(jnp.float32)
        if c.self_cond:
            sc = jnp.zeros_like(x) if self_cond is None else jnp.asarray(self_cond, jnp.float32)
            x = jnp.concatenate([x, sc], axis=-1)
        h = self.up(x).astype(jnp.float32) + self.time(tk) + _positions(n, c.width)[None]
        cos, sin = rotary_cos_sin(n, c.head_dim)
        mask = _mask(tgt_mask, (b, n))
        mem_mask = _mask(source_mask, memory.shape[:2])
        for i, block in enumerate(self.decoder):
            key = None if rng is None else jax.random.fold_in(rng, 1000 + i)
            h = block(h, cos, sin, mask, key, memory, mem_mask)
        return self.down(self.dec_norm(h), out_dtype=jnp.float32)

    def __call__(self, x, cond=None, *, dropout_rng=None):
        """``x``: latents ``z_t [B, n, d]`` (ignored, may be None, for ``outputs="encode"``).
        cond: ``source`` ids ``[B, Ls]`` + ``source_mask`` (or a precomputed ``memory``), ``t``
        ``[B]`` | ``[B, n]``, ``self_cond [B, n, d]``, ``padding_mask [B, n]`` (1 = real target
        token), ``outputs``: ``"x0"`` (the array), ``"encode"`` (``{memory, length_logits,
        embedding}``) or ``"all"`` (those and ``x0``)."""
        cond = dict(cond or {})
        validate(self.config, x, cond)
        rng = None if self.config.dropout == 0.0 else dropout_rng
        outputs = cond.get("outputs", "x0")
        out = {"embedding": self.embedding()}
        if cond.get("memory") is None:
            out["memory"], out["length_logits"] = self.encode(jnp.asarray(cond["source"]), cond.get("source_mask"),
                                                              None if rng is None else jax.random.fold_in(rng, 1))
        else:
            out["memory"] = jnp.asarray(cond["memory"], jnp.float32)
        if outputs == "encode":
            return out
        x0 = self.denoise(x, cond["t"], cond.get("self_cond"), cond.get("padding_mask"), out["memory"],
                          cond.get("source_mask"), None if rng is None else jax.random.fold_in(rng, 2))
        return x0 if outputs == "x0" else dict(out, x0=x0)


def _shape(a):
    return tuple(jnp.shape(a))


def validate(c, x, cond) -> None:
    """One-line ValueErrors for inputs the model cannot take (shapes always; id ranges when concrete)."""
    for key in cond:
        if key not in COND_KEYS:
            fail("cond", key, f"keys from {COND_KEYS}")
    outputs = cond.get("outputs", "x0")
    if outputs not in OUTPUTS:
        fail("cond['outputs']", outputs, f"one of {OUTPUTS}")
    if cond.get("memory") is None:
        if cond.get("source") is None:
            fail("cond['source']", None, "source ids [B, Ls] (or a precomputed cond['memory'])")
        src = cond["source"]
        if len(_shape(src)) != 2 or not jnp.issubdtype(jnp.result_type(src), jnp.integer):
            fail("cond['source']", _shape(src), "integer ids [B, Ls]")
        if _shape(src)[1] > c.max_src_len:
            fail("source", f"length {_shape(src)[1]}", f"<= model.max_src_len={c.max_src_len}")
        if not isinstance(src, jax.core.Tracer):
            lo, hi = int(np.min(np.asarray(src))), int(np.max(np.asarray(src)))
            if lo < 0 or hi >= c.vocab_size:
                fail("cond['source']", f"ids in [{lo}, {hi}]", f"ids in [0, {c.vocab_size})")
    if outputs == "encode":
        return
    shp = _shape(x)
    if len(shp) != 3 or shp[-1] != c.latent_dim:
        fail("x", shp, f"latents [B, n, latent_dim={c.latent_dim}]")
    if shp[1] > c.max_tgt_len:
        fail("target", f"length {shp[1]}", f"<= model.max_tgt_len={c.max_tgt_len}")
    if cond.get("t") is None or _shape(cond["t"]) not in ((shp[0],), shp[:2]):
        fail("cond['t']", None if cond.get("t") is None else _shape(cond["t"]), f"shape {[shp[0]]} or {list(shp[:2])}")
    if cond.get("self_cond") is not None and _shape(cond["self_cond"]) != shp:
        fail("cond['self_cond']", _shape(cond["self_cond"]), f"shape {list(shp)}")
    if cond.get("padding_mask") is not None and _shape(cond["padding_mask"]) != shp[:2]:
        fail("cond['padding_mask']", _shape(cond["padding_mask"]), f"shape {list(shp[:2])}")
