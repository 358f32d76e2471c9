"""Functional seam over the NNX DiT: build once, then apply as a pure function of (params, x, cond).

Params are built with eager sharding off (`nnx.use_eager_sharding(False)`), so building works outside any
mesh (and under one); the logical names stay in each Param's `out_sharding` metadata for the trainer to map
onto mesh axes (`nnx.get_partition_spec(params)` gives the logical PartitionSpecs).
"""

from __future__ import annotations

import math

import jax
from flax import nnx

from dlm_jax.models.config import DiTConfig
from dlm_jax.models.dit import DiT


def _check_config(config) -> DiTConfig:
    if isinstance(config, DiTConfig):
        return config
    if hasattr(config, "keys") or hasattr(config, "to_dict"):
        return DiTConfig.from_dict(config)
    raise ValueError(f"config: {type(config).__name__}; expected a DiTConfig or a mapping of its fields")


def make_init(config: DiTConfig):
    """(graphdef, init) with a pure `init(key) -> params`; jit it with out_shardings to initialise a large
    model directly sharded (no host copy)."""
    from dlm_jax.models.registry import module_init

    config = _check_config(config)
    return module_init(lambda rngs: DiT(config, rngs=rngs))


def build_model(config: DiTConfig, seed: int):
    """Initialise a DiT → (graphdef, params). params is the nnx.State of every model variable (all float32
    Params). The input adapter is `config.input_adapter` (adapters.py). Initialisation runs as one jitted
    program."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: {seed!r}; expected an int")
    graphdef, init = make_init(config)
    return graphdef, jax.jit(init)(jax.random.key(seed))


def abstract_model(config: DiTConfig):
    """(graphdef, params) with jax.ShapeDtypeStruct leaves: shapes without allocating. Uses jax.eval_shape
    (not nnx.eval_shape, which under an ambient mesh would resolve the logical names as mesh axes)."""
    config = _check_config(config)
    graphdef = []

    def init():
        with nnx.use_eager_sharding(False):
            g, state = nnx.split(DiT(config, rngs=nnx.Rngs(params=0)))
        graphdef.append(g)
        return state

    state = jax.eval_shape(init)
    return graphdef[0], state


def make_apply(graphdef):
    """Pure `apply(params, x, cond=None, *, dropout_rng=None) -> float32 [B, L, num_classes]`.

    jit-able and differentiable w.r.t. params. Dropout (config.dropout > 0) is on only when dropout_rng is
    given. cond: {"t": [B] or [B, L], "h": [B] (or [B, L]), "self_cond": [B, L, d_sc], "padding_mask": [B, L]
    (True/1 = real token; absent = all real)}; t/h are in the calling method's time direction (masked:
    0 = clean; flow: 0 = source). Bad inputs raise ValueError before anything compiles (token-id range and
    mask values only when concrete)."""

    def apply(params, x, cond=None, *, dropout_rng=None):
        model = nnx.merge(graphdef, params)
        return model(x, cond, dropout_rng=dropout_rng)

    return apply


def count_params(params) -> int:
    """Number of scalars in a params State (works on concrete arrays and ShapeDtypeStructs)."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)))
