"""TrainState: a plain pytree built directly sharded on the mesh.

``create_train_state`` never materialises the model on one device: it traces the initialiser
with ``jax.eval_shape``, derives NamedShardings from the partition rules (params by their
logical names; optimizer moments, EMA and method state by matching the params' key paths) and
runs the initialiser under ``jax.jit(out_shardings=...)``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from dlm_jax import mesh as mesh_lib


@struct.dataclass
class TrainState:
    """step: int32 scalar (optimizer updates done); rng: raw uint32[2] base key (per-step keys
    are ``fold_in(rng, step)``, so resume is deterministic); extra: method state."""

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    extra: Any
    rng: jax.Array


def _init_fn(init_params: Callable[..., Any], optimizer: optax.GradientTransformation,
             init_extra: Callable[[Any], Any], seed: int):
    """``init(inputs) -> TrainState``; ``inputs`` (e.g. the params of an ``init_from`` run) is passed
    to ``init_params(inputs)`` as a traced argument, never baked in as a constant; with
    ``inputs=None`` ``init_params()`` takes no argument."""
    def init(inputs=None):
        params = init_params() if inputs is None else init_params(inputs)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
            ema_params=jax.tree.map(jnp.copy, params), extra=init_extra(params),
            rng=jax.random.key_data(jax.random.key(seed)))
    return init


def state_shardings(abstract_state: TrainState, mesh: Mesh, strategy: str) -> TrainState:
    """NamedShardings for every leaf of a (possibly abstract) TrainState."""
    p = mesh_lib.param_shardings(abstract_state.params, mesh, strategy)
    like = lambda tree: mesh_lib.shardings_like(tree, abstract_state.params, p, mesh)  # noqa: E731
    rep = mesh_lib.replicated(mesh)
    return TrainState(step=rep, params=p, opt_state=like(abstract_state.opt_state),
                      ema_params=p, extra=like(abstract_state.extra), rng=rep)


def abstract_train_state(init_params, optimizer, init_extra, seed, mesh: Mesh, strategy: str, inputs=None):
    """``(abstract state with NamedShardings on the concrete mesh, shardings)`` — the restore
    target for Orbax and the in/out shardings of the train step."""
    abstract = jax.eval_shape(_init_fn(init_params, optimizer, init_extra, seed), inputs)
    shards = state_shardings(abstract, mesh, strategy)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shards)
    return target, shards


def create_train_state(init_params: Callable[..., Any], optimizer: optax.GradientTransformation,
                       init_extra: Callable[[Any], Any], seed: int, mesh: Mesh, strategy: str, inputs=None):
    """Initialise a sharded TrainState; returns ``(state, shardings)``.

    ``init_params()`` must be traceable (e.g. from ``trace_model``). Call it outside
    ``jax.set_mesh``: nnx builders that run ``nnx.eval_shape`` under a mesh read the logical
    names as mesh axes; the out_shardings carry the mesh.
    """
    _, shards = abstract_train_state(init_params, optimizer, init_extra, seed, mesh, strategy, inputs)
    init = jax.jit(_init_fn(init_params, optimizer, init_extra, seed), out_shardings=shards)
    return init(inputs), shards


def trace_model(build_model: Callable[[], tuple[Any, Any]]):
    """``(graphdef, init_params)`` from ``build_model() -> (graphdef, params)`` without
    allocating the params (graphdef is static; it is captured while tracing)."""
    box = {}

    def init_params():
        graphdef, params = build_model()
        box.setdefault("graphdef", graphdef)
        return params

    jax.eval_shape(init_params)
    return box["graphdef"], init_params
