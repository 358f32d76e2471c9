"""Input adapters: map the model input x to the float32 residual stream [B, L, width].

The DiT takes its adapter through a hook (`build_model(..., input_adapter=factory)`), so a method can plug in
its own `nnx.Module` (DSL's soft-retrieval converter, FastDiSS's embedding up-projection) without forking the
model. The contract of an adapter module: `adapter(x) -> [B, L, width]` array (any float dtype; the DiT casts
to float32), with its weights annotated by `nnx.with_partitioning` like every other weight. A factory is a
callable `(config: DiTConfig, rngs: nnx.Rngs) -> nnx.Module`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dlm_jax.models.layers import Dense, make_param, torch_uniform


class TokenEmbedding(nnx.Module):
    """Lookup table [vocab_size, width] (MDLM `EmbeddingLayer`, init U(±1/sqrt(width)))."""

    def __init__(self, vocab_size: int, width: int, *, rngs: nnx.Rngs):
        self.embedding = make_param(rngs, torch_uniform(width), (vocab_size, width), ("vocab", "embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], x, axis=0)


class VectorAdapter(nnx.Module):
    """Linear map R^input_dim → R^width (with bias), float32."""

    def __init__(self, input_dim: int, width: int, *, rngs: nnx.Rngs):
        self.proj = Dense((input_dim,), (width,), (None, "embed"), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj(x)


class SelfCondProjection(nnx.Module):
    """Self-conditioning input [B, L, d_sc] → [B, L, width] (no bias), added to the input embedding.

    Equivalent to concatenating [x_emb; ẑ_sc] before one up-projection (FastDiSS/DINOISER).
    """

    def __init__(self, self_cond_dim: int, width: int, *, rngs: nnx.Rngs):
        self.proj = Dense((self_cond_dim,), (width,), (None, "embed"), use_bias=False, rngs=rngs)

    def __call__(self, sc: jax.Array) -> jax.Array:
        return self.proj(sc)


def default_input_adapter(config, rngs: nnx.Rngs) -> nnx.Module:
    """Token embedding for input="tokens", a linear map for input="vectors"."""
    if config.input == "tokens":
        return TokenEmbedding(config.vocab_size, config.width, rngs=rngs)
    return VectorAdapter(config.input_dim, config.width, rngs=rngs)
