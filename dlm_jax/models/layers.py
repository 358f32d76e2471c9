"""Small building blocks: initialisers, a general dense layer, weight-only LayerNorm, modulation, dropout.

Every weight is created through `nnx.with_partitioning(init, names)` so it carries logical axis names
(see `dlm_jax.models` for the list). Params are float32; layers cast them to the compute dtype at use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

LN_EPS = 1e-5  # torch.nn.functional.layer_norm default, as in MDLM's LayerNorm


def torch_uniform(fan_in: int):
    """PyTorch's nn.Linear / kaiming_uniform(a=sqrt(5)) default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def zeros_init(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype)


def ones_init(key, shape, dtype=jnp.float32):
    del key
    return jnp.ones(shape, dtype)


def make_param(rngs: nnx.Rngs, init, shape: Sequence[int], names: Sequence[str | None]) -> nnx.Param:
    """A float32 `nnx.Param` with logical partitioning `names` (one per axis)."""
    shape, names = tuple(shape), tuple(names)
    if len(shape) != len(names):
        raise ValueError(f"names: {names}; expected one logical name per axis of shape {shape}")
    return nnx.Param(nnx.with_partitioning(init, names)(rngs.params(), shape, jnp.float32))


class Dense(nnx.Module):
    """y = x . W (+ b), contracting the last len(in_shape) axes of x with the first axes of W.

    W has shape in_shape + out_shape, so fused projections keep a structured output (e.g. qkv as
    [width, 3, heads, head_dim]) and every axis gets its own logical name.
    init: "torch" (U(+-1/sqrt(fan_in)) for W and b, PyTorch's default) or "zeros" (adaLN-zero, final layer).
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], names: Sequence[str | None], *,
                 use_bias: bool = True, init: str = "torch", dtype=jnp.float32, rngs: nnx.Rngs):
        in_shape, out_shape = tuple(in_shape), tuple(out_shape)
        fan_in = math.prod(in_shape)
        w_init = zeros_init if init == "zeros" else torch_uniform(fan_in)
        self.kernel = make_param(rngs, w_init, in_shape + out_shape, names)
        self.bias = (make_param(rngs, w_init, out_shape, tuple(names)[len(in_shape):]) if use_bias else None)
        self.n_in = len(in_shape)
        self.dtype = dtype

    def __call__(self, x: jax.Array, out_dtype=None) -> jax.Array:
        n = self.n_in
        kernel = self.kernel[...].astype(self.dtype)
        dims = (tuple(range(x.ndim - n, x.ndim)), tuple(range(n)))
        y = jax.lax.dot_general(x.astype(self.dtype), kernel, (dims, ((), ())),
                                preferred_element_type=out_dtype or self.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y


class LayerNorm(nnx.Module):
    """Weight-only LayerNorm (no bias, MDLM/FS-DFM): statistics in float32, output in `dtype`."""

    def __init__(self, dim: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.scale = make_param(rngs, ones_init, (dim,), ("norm",))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + LN_EPS) * self.scale[...]
        return y.astype(self.dtype)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN modulation x * (1 + scale) + shift; shift/scale broadcast as [B, 1 | L, width]."""
    return x * (1 + scale.astype(x.dtype)) + shift.astype(x.dtype)


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Inverted dropout with an explicit key; identity when rng is None or rate == 0."""
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))
