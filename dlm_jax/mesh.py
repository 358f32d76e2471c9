"""Device mesh, partition rules (logical axis names -> mesh axes) and multi-process start-up.

The mesh always has the three axes ``("data", "fsdp", "tensor")``; a strategy decides which
logical weight axes land on which mesh axis:

* ``"dp"``   — every weight replicated; the batch is split over ``data`` x ``fsdp``.
* ``"fsdp"`` — every weight sharded along one of its dimensions over ``fsdp`` (``embed`` first);
  the batch is split over ``data`` x ``fsdp``; XLA all-gathers weights where they are used.
* ``"tp"``   — ``heads`` / ``mlp`` over ``tensor`` (Megatron-style), ``embed`` over ``fsdp``.

Logical names come from the model's nnx metadata (``out_sharding`` in flax 0.12, older
``sharding_names`` / ``sharding``) and are among "vocab", "embed", "mlp", "heads", "kv",
"cond", "norm" or None.  A dimension is only sharded when its size divides evenly; otherwise
it stays replicated, so tiny test models work on any mesh.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
STRATEGIES = ("dp", "fsdp", "tp")

# Ordered (logical name, mesh axis) pairs; earlier rules win.  A mesh axis is used at most once
# per weight.
RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "dp": (),
    "fsdp": (("embed", "fsdp"), ("mlp", "fsdp"), ("heads", "fsdp"), ("vocab", "fsdp"),
             ("cond", "fsdp"), ("kv", "fsdp")),
    "tp": (("heads", "tensor"), ("mlp", "tensor"), ("vocab", "tensor"), ("embed", "fsdp"),
           ("cond", "fsdp")),
}

_LOGICAL_KEYS = ("out_sharding", "sharding_names", "sharding")


def _get(cfg, key, default=None):
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


# ----------------------------------------------------------------------------------------------
# Mesh.
# ----------------------------------------------------------------------------------------------
def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
    """Sizes of ``(data, fsdp, tensor)``; at most one may be -1 (fill the remaining devices)."""
    sizes = [int(_get(mesh_config, a, 1)) for a in AXES]
    fills = [a for a, s in zip(AXES, sizes) if s == -1]
    for a, s in zip(AXES, sizes):
        if s == 0 or s < -1:
            raise ValueError(f"mesh.{a}: {s}; expected a positive size or -1 (fill)")
    if len(fills) > 1:
        raise ValueError(f"mesh: {fills} are all -1; expected at most one axis set to -1")
    known = math.prod(s for s in sizes if s != -1)
    if fills:
        if num_devices % known:
            raise ValueError(f"mesh: {dict(zip(AXES, sizes))} with {num_devices} devices; expected "
                             f"the fixed axes ({known}) to divide the device count")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh: {dict(zip(AXES, sizes))} (= {math.prod(sizes)} devices); expected "
                         f"a product equal to the {num_devices} available devices")
    strategy = _get(mesh_config, "strategy", "dp")
    if strategy not in STRATEGIES:
        raise ValueError(f"mesh.strategy: {strategy!r}; expected one of {STRATEGIES}")
    if sizes[2] > 1 and strategy != "tp":
        raise ValueError(f"mesh.tensor: {sizes[2]} with mesh.strategy={strategy!r}; expected "
                         "tensor=1 unless strategy is 'tp'")
    return tuple(sizes)


def make_mesh(mesh_config, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``("data", "fsdp", "tensor")`` mesh with Auto axes (GSPMD-style sharding propagation)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_config, len(devices))
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over ``data`` x ``fsdp``; the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


# ----------------------------------------------------------------------------------------------
# Logical names -> PartitionSpecs -> NamedShardings.
# ----------------------------------------------------------------------------------------------
def logical_to_spec(names: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh,
                    strategy: str) -> P:
    """PartitionSpec for one weight from its logical axis names under ``strategy``'s rules."""
    if strategy not in RULES:
        raise ValueError(f"mesh.strategy: {strategy!r}; expected one of {STRATEGIES}")
    if not names:
        return P()
    if len(names) != len(shape):
        raise ValueError(f"logical names: {tuple(names)}; expected one per dimension of {tuple(shape)}")
    spec: list[str | None] = [None] * len(shape)
    used: set[str] = set()
    for logical, axis in RULES[strategy]:
        size = mesh.shape[axis]
        if size == 1 or axis in used:
            continue
        for i, n in enumerate(names):
            if n == logical and spec[i] is None and shape[i] % size == 0:
                spec[i], _ = axis, used.add(axis)
                break
    return P(*spec)


def _logical_names(var) -> tuple | None:
    meta = var.get_metadata() if hasattr(var, "get_metadata") else {}
    for key in _LOGICAL_KEYS:
        names = meta.get(key)
        if isinstance(names, (tuple, list)):
            return tuple(names)
    return None


def _is_variable(x) -> bool:
    from flax import nnx  # local: keep mesh.py importable without flax for the CLI

    return isinstance(x, nnx.Variable)


def param_shardings(params, mesh: Mesh, strategy: str):
    """NamedShardings (same pytree structure as ``params``) from the params' nnx logical names.

    Works on concrete or abstract (``jax.eval_shape``) nnx.State; plain arrays without metadata
    are replicated.
    """
    def one(x):
        if _is_variable(x):
            names, shape = _logical_names(x), x.get_value().shape
            s = NamedSharding(mesh, logical_to_spec(names, shape, mesh, strategy))
            return jax.tree.map(lambda _: s, x)
        return NamedSharding(mesh, logical_to_spec(None, np.shape(x), mesh, strategy))

    return jax.tree.map(one, params, is_leaf=_is_variable)


def shardings_like(tree, params, param_shards, mesh: Mesh):
    """Shardings for a tree whose leaves mirror params (optimizer moments, EMA, teachers).

    A leaf whose key path ends with a param's key path and has that param's shape takes the
    param's sharding; everything else (counters, scalars) is replicated.
    """
    by_path = {}
    for (path, leaf), s in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                               jax.tree.leaves(param_shards)):
        by_path[tuple(path)] = (tuple(np.shape(leaf)), s)
    rep = replicated(mesh)

    def one(path, leaf):
        path = tuple(path)
        for k in range(len(path)):
            hit = by_path.get(path[k:])
            if hit is not None and hit[0] == tuple(np.shape(leaf)):
                return hit[1]
        return rep

    return jax.tree_util.tree_map_with_path(one, tree)


# ----------------------------------------------------------------------------------------------
# Multi-process start-up.
# ----------------------------------------------------------------------------------------------
def maybe_initialize_distributed(config) -> bool:
    """Call ``jax.distributed.initialize`` when ``config.mesh.distributed`` asks; before any JAX call.

    ``mesh.distributed``: ``"off"`` (default), ``"auto"`` (TPU pods, SLURM, ...: no arguments;
    JAX detects the cluster) or ``"explicit"`` with ``mesh.coordinator_address``,
    ``mesh.num_processes``, ``mesh.process_id`` (local multi-process; env ``DLM_PROCESS_ID`` may
    override the id so one config serves every worker). Returns whether it initialised.
    """
    mesh_cfg = _get(config, "mesh")
    mode = _get(mesh_cfg, "distributed", "off")
    if mode in ("off", None, False):
        return False
    kw = dict(initialization_timeout=int(_get(mesh_cfg, "initialization_timeout", 300)),
              heartbeat_timeout_seconds=int(_get(mesh_cfg, "heartbeat_timeout_seconds", 100)))
    if mode == "auto":
        jax.distributed.initialize(**kw)
    elif mode == "explicit":
        pid = int(os.environ.get("DLM_PROCESS_ID", _get(mesh_cfg, "process_id", 0)))
        jax.distributed.initialize(coordinator_address=_get(mesh_cfg, "coordinator_address"),
                                   num_processes=int(_get(mesh_cfg, "num_processes")),
                                   process_id=pid, **kw)
    else:
        raise ValueError(f"mesh.distributed: {mode!r}; expected one of ('off', 'auto', 'explicit')")
    from dlm_jax.peers import start_peer_watchdog  # a dead peer: one line and exit 75, not a C++ abort

    start_peer_watchdog(kw["heartbeat_timeout_seconds"])
    return True
