"""Pure train / eval steps, generic over the method (no per-method branches).

``train_step(state, batch) -> (state, metrics)``:
  1. per-step key ``fold_in(state.rng, state.step)``; micro-batch ``i`` uses ``fold_in(key, i)``;
  2. ``method.loss(params, batch, rng, step, aux)`` with ``aux = {"ema_params", **state.extra}``,
     params optionally cast to a compute dtype (bf16) — gradients flow back to float32 params;
  3. gradient accumulation: the batch ``[B, ...]`` is viewed as ``k`` micro-batches and a
     ``lax.scan`` sums loss, metrics and grads, then divides by ``k`` (micro-batch ``i`` holds rows
     ``i, i+k, i+2k, ...`` so every device keeps its own rows: no resharding);
  4. one optimizer update, EMA update, ``step + 1``.

Two parallel forms give the same update: ``make_train_step`` (``jax.jit`` with explicit
in/out shardings, GSPMD inserts the collectives; any strategy) and
``make_train_step_shard_map`` (per-device program over the local batch shard with explicit
``lax.pmean`` of loss, metrics and grads; ``check_vma=False`` so grads are local, then
averaged; replicated params, i.e. the "dp" strategy).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dlm_jax import mesh as mesh_lib
from dlm_jax.train import optim
from dlm_jax.train.state import TrainState

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, None: None}


def resolve_dtype(name):
    """``None`` / "float32" / "bfloat16" -> dtype (None = leave params as they are)."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"train.compute_dtype: {name!r}; expected one of {tuple(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


def _cast(tree, dtype):
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _micro(batch, k: int):
    """``[B, ...] -> [k, B/k, ...]`` with micro-batch ``i`` = rows ``i, i+k, ...``."""
    def one(x):
        return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)
    return jax.tree.map(one, batch)


def step_key(state: TrainState):
    return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def loss_and_grads(method, state: TrainState, batch, *, microbatches: int = 1, dtype=None):
    """Mean loss, metrics and grads over ``microbatches`` micro-batches (lax.scan)."""
    aux = {"ema_params": state.ema_params, **dict(state.extra)}
    key = step_key(state)

    def loss_fn(params, mb, rng):
        loss, metrics = method.loss(_cast(params, dtype), mb, rng, state.step, aux)
        return loss.astype(jnp.float32), jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), metrics)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if microbatches == 1:
        (loss, metrics), grads = grad_fn(state.params, batch, key)
        return loss, metrics, grads

    def body(carry, xs):
        mb, i = xs
        out = grad_fn(state.params, mb, jax.random.fold_in(key, i))
        return jax.tree.map(jnp.add, carry, out), None

    micro = _micro(batch, microbatches)
    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                         jax.eval_shape(grad_fn, state.params, first, key))
    ((loss, metrics), grads), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(microbatches)))
    return jax.tree.map(lambda x: x / microbatches, (loss, metrics, grads))


def apply_grads(state: TrainState, loss, metrics, grads, optimizer, schedule, ema_decay: float,
                guard: bool = True):
    """Optimizer update + EMA; returns ``(new_state, metrics)`` with loss, grad_norm, lr and
    ``skipped`` added. A step whose loss or gradient norm is not finite changes nothing but the
    step counter (``skipped = 1``): a good state is never replaced by a bad one. The update runs
    under ``lax.cond``, so a finite step pays no select over the state. ``guard=False`` applies the
    update unconditionally (benchmarks measure the guard's cost side by side)."""
    grad_norm = optax.tree.norm(grads)

    def update(_):
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return params, opt_state, optim.ema_update(state.ema_params, params, ema_decay)

    def skip(_):
        return state.params, state.opt_state, state.ema_params

    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    params, opt_state, ema = jax.lax.cond(ok, update, skip, None) if guard else update(None)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, lr=jnp.asarray(schedule(state.step), jnp.float32),
                   skipped=1.0 - (ok if guard else jnp.asarray(True)).astype(jnp.float32))
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema)
    return new, metrics


def _parts(optimizer_config, total_steps):
    optim.validate(optimizer_config)
    return (optim.make_optimizer(optimizer_config, total_steps),
            optim.make_schedule(optimizer_config, total_steps),
            float(optimizer_config.get("ema_decay", 0.0)))


def make_train_step(method, optimizer_config, *, mesh: Mesh, state_shardings: TrainState,
                    total_steps: int | None = None, microbatches: int = 1,
                    compute_dtype: str | None = None, donate: bool = True,
                    nonfinite_guard: bool = True) -> Callable:
    """``jax.jit`` train step with explicit in/out shardings (GSPMD); donates the state."""
    optimizer, schedule, ema_decay = _parts(optimizer_config, total_steps)
    dtype = resolve_dtype(compute_dtype)
    rep = mesh_lib.replicated(mesh)

    def train_step(state, batch):
        loss, metrics, grads = loss_and_grads(method, state, batch, microbatches=microbatches,
                                              dtype=dtype)
        return apply_grads(state, loss, metrics, grads, optimizer, schedule, ema_decay, nonfinite_guard)

    return jax.jit(train_step, in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh)),
                   out_shardings=(state_shardings, rep), donate_argnums=(0,) if donate else ())


def make_train_step_shard_map(method, optimizer_config, *, mesh: Mesh,
                              state_shardings: TrainState | None = None,
                              total_steps: int | None = None, microbatches: int = 1,
                              compute_dtype: str | None = None, donate: bool = True) -> Callable:
    """Data-parallel train step as a per-device program (``jax.shard_map``).

    Each device computes loss and grads on its local batch shard; ``lax.pmean`` over
    ``("data", "fsdp")`` averages grads, loss and metrics (``check_vma=False``: grads are the
    local ones, so pmean — not psum/N of already-summed grads — is right). Params replicated.
    """
    if state_shardings is not None:
        for s in jax.tree.leaves(state_shardings):
            if any(a is not None for a in s.spec):
                raise ValueError(f"shard_map step: a state sharding is {s.spec}; expected a "
                                 "replicated state (mesh.strategy='dp')")
    optimizer, schedule, ema_decay = _parts(optimizer_config, total_steps)
    dtype = resolve_dtype(compute_dtype)
    axes = mesh_lib.BATCH_AXES

    def per_device(state, batch):
        loss, metrics, grads = loss_and_grads(method, state, batch, microbatches=microbatches,
                                              dtype=dtype)
        loss, metrics, grads = jax.lax.pmean((loss, metrics, grads), axes)
        return apply_grads(state, loss, metrics, grads, optimizer, schedule, ema_decay)

    f = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(axes)), out_specs=(P(), P()),
                      check_vma=False)
    rep = mesh_lib.replicated(mesh)
    return jax.jit(f, in_shardings=(rep, mesh_lib.batch_sharding(mesh)), out_shardings=(rep, rep),
                   donate_argnums=(0,) if donate else ())


def make_eval_step(fn: Callable, *, mesh: Mesh, params_shardings: Any,
                   compute_dtype: str | None = None) -> Callable:
    """``eval_step(params, batch, rng) -> sums`` for any ``fn(params, batch, rng) -> sums`` (e.g. a
    method's ``evaluate``), jitted with the params' and the batch's shardings, in the compute dtype."""
    dtype = resolve_dtype(compute_dtype)

    def eval_step(params, batch, rng):
        metrics = fn(_cast(params, dtype), batch, rng)
        return jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), metrics)

    return jax.jit(eval_step, in_shardings=(params_shardings, mesh_lib.batch_sharding(mesh), None),
                   out_shardings=mesh_lib.replicated(mesh))


def global_batch(local_batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Process-local numpy batch -> global jax.Arrays sharded over ``("data", "fsdp")``."""
    sharding = NamedSharding(mesh, P(mesh_lib.BATCH_AXES))
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
