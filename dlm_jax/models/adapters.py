"""Input adapters: map the model input x to the float32 residual stream [B, L, width], chosen by config.

`DiTConfig.input_adapter` names a factory in a registry, so a method can plug in its own `nnx.Module` (DSL's
soft-retrieval converter, FastDiSS's embedding up-projection) from its own file without forking the model::

    register_input_adapter("dsl_soft_retrieval", SoftRetrieval)     # in methods/dsl.py, at import
    DiTConfig(..., input_adapter="dsl_soft_retrieval")              # or config.model.input_adapter

A factory is a callable `(config: DiTConfig, rngs: nnx.Rngs) -> nnx.Module`; the module's contract:
`adapter(x) -> [B, L, width]` array (any float dtype; the DiT casts to float32), its weights annotated by
`nnx.with_partitioning` like every other weight. Built-ins: "token_embedding" (ids), "linear" (vectors) and
"default" (the one matching `config.input`). The registry is read when a model is built (before anything
compiles), so a method module must be imported before its models are built.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from dlm_jax import checks
from dlm_jax.models.layers import Dense, make_param, torch_uniform

AdapterFactory = Callable[..., nnx.Module]


class TokenEmbedding(nnx.Module):
    """Lookup table [vocab_size, width] (MDLM `EmbeddingLayer`, init U(±1/sqrt(width))).

    impl: "gather" (`jnp.take`) or "onehot" (one_hot(x) @ table: a matmul, same numbers).
    """

    def __init__(self, vocab_size: int, width: int, *, impl: str = "gather", rngs: nnx.Rngs):
        self.embedding = make_param(rngs, torch_uniform(width), (vocab_size, width), ("vocab", "embed"))
        self.impl = impl

    def __call__(self, x: jax.Array) -> jax.Array:
        table = self.embedding[...]
        if self.impl == "onehot":
            return jax.nn.one_hot(x, table.shape[0], dtype=table.dtype) @ table
        return jnp.take(table, x, axis=0)


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


def token_embedding_adapter(config, rngs: nnx.Rngs) -> nnx.Module:
    """The "token_embedding" adapter: `TokenEmbedding(vocab_size, width)`, implemented as `config.embed_impl`."""
    return TokenEmbedding(config.vocab_size, config.width, impl=config.embed_impl, rngs=rngs)


def linear_adapter(config, rngs: nnx.Rngs) -> nnx.Module:
    """The "linear" adapter: `VectorAdapter(input_dim, width)` for input="vectors"."""
    return VectorAdapter(config.input_dim, config.width, rngs=rngs)


def default_input_adapter(config, rngs: nnx.Rngs) -> nnx.Module:
    """The "default" adapter: token embedding for input="tokens", a linear map for input="vectors"."""
    factory = token_embedding_adapter if config.input == "tokens" else linear_adapter
    return factory(config, rngs)


_ADAPTERS: dict[str, AdapterFactory] = {
    "default": default_input_adapter,
    "token_embedding": token_embedding_adapter,
    "linear": linear_adapter,
}
_BUILTIN = frozenset(_ADAPTERS)


def register_input_adapter(name: str, factory: AdapterFactory, *, replace: bool = False) -> None:
    """Make `input_adapter=name` build `factory(config, rngs)`. Registering the same factory again is a no-op;
    another factory under a taken name needs `replace=True` (built-in names cannot be replaced)."""
    checks.check_str("input adapter name", name)
    if not callable(factory):
        checks.fail("input adapter factory", factory, "a callable (config, rngs) -> nnx.Module")
    if name in _ADAPTERS and _ADAPTERS[name] is not factory and (not replace or name in _BUILTIN):
        checks.fail("input adapter name", name, "a name not yet registered (or replace=True for a non-built-in)")
    _ADAPTERS[name] = factory


def input_adapter_names() -> tuple[str, ...]:
    """Registered adapter names, sorted."""
    return tuple(sorted(_ADAPTERS))


def make_input_adapter(config, rngs: nnx.Rngs) -> nnx.Module:
    """The adapter module named by `config.input_adapter`; an unknown name raises a one-line ValueError."""
    name = config.input_adapter
    if name not in _ADAPTERS:
        checks.fail("input_adapter", name, f"a registered input adapter, one of {input_adapter_names()}")
    return _ADAPTERS[name](config, rngs)
