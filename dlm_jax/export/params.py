"""A model's params (an ``nnx.State``) as ``{"a.b.c": numpy array}`` and back, checked against the model.

``flatten`` uses ``nnx.to_pure_dict``; ``unflatten`` builds the model's abstract params
(``jax.eval_shape`` of its pure ``init``), checks every name, shape and dtype against the flat
dict (one-line error naming the first difference) and fills them with ``nnx.replace_by_pure_dict``,
so the result has exactly the structure the trainer and ``runs.load_params`` restore.
``place_sharded`` does the same onto a mesh, each process reading only its devices' boxes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from dlm_jax import checks

__all__ = ["flatten", "unflatten", "place_sharded", "abstract_names"]


def _name(path) -> str:
    return ".".join(str(k) for k in path)


def flatten(params) -> dict[str, np.ndarray]:
    """``{"blocks.0.attn.qkv.kernel": array, ...}`` (host numpy copies, dtypes kept)."""
    pure = traverse_util.flatten_dict(nnx.to_pure_dict(params))
    return {_name(path): np.asarray(jax.device_get(leaf)) for path, leaf in pure.items()}


def abstract_names(model) -> dict[str, jax.ShapeDtypeStruct]:
    """``{name: ShapeDtypeStruct}`` of ``model``'s params (nothing allocated)."""
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    pure = traverse_util.flatten_dict(nnx.to_pure_dict(abstract))
    return {_name(path): leaf for path, leaf in pure.items()}


def _check(flat: dict, model, what: str):
    """The model's abstract params and ``{name: path}`` after checking ``flat`` (values with
    ``.shape`` / ``.dtype``: arrays, ``LazyTensor``s, ``OwnTensor``s) name for name."""
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    paths = traverse_util.flatten_dict(nnx.to_pure_dict(abstract))
    names = {_name(p): p for p in paths}
    for name, path in names.items():
        want = paths[path]
        if name not in flat:
            checks.fail(f"{what} parameter {name}", "missing", f"present, shape {tuple(want.shape)}")
        got = flat[name]
        if tuple(got.shape) != tuple(want.shape):
            checks.fail(f"{what} parameter {name}", tuple(got.shape), f"shape {tuple(want.shape)} (the model's)")
        if np.dtype(got.dtype) != np.dtype(want.dtype):
            checks.fail(f"{what} parameter {name}", str(np.dtype(got.dtype)), f"dtype {np.dtype(want.dtype)} (the model's)")
    extra = sorted(set(flat) - set(names))
    if extra:
        checks.fail(f"{what} parameter {extra[0]}", tuple(flat[extra[0]].shape), "only parameters of the model "
                    "(an extra tensor)")
    return abstract, names


def unflatten(flat: dict[str, np.ndarray], model, *, what: str = "checkpoint"):
    """The params State of ``model`` holding ``flat``'s arrays (device arrays, dtypes unchanged)."""
    abstract, names = _check(flat, model, what)
    filled = traverse_util.unflatten_dict({path: jnp.asarray(np.asarray(flat[name])) for name, path in names.items()})
    nnx.replace_by_pure_dict(abstract, filled)
    return abstract


def place_sharded(flat: dict, model, mesh, strategy: str = "fsdp", *, what: str = "checkpoint"):
    """The params State of ``model`` as global arrays sharded on ``mesh`` by their logical names
    (``mesh.param_shardings``), each built by ``jax.make_array_from_callback`` from ``flat[name][box]``
    for the boxes this process's devices hold — with lazy values (``read_checkpoint(lazy=True)``)
    a process reads only its own slices from disk and never holds more than one box on the host
    beyond its devices' shards. Every name, shape and dtype is checked before anything is read."""
    from dlm_jax import mesh as mesh_lib

    abstract, names = _check(flat, model, what)
    shardings = traverse_util.flatten_dict(nnx.to_pure_dict(mesh_lib.param_shardings(abstract, mesh, strategy)))
    arrays = {}
    for name, path in names.items():
        source, seen = flat[name], {}

        def box(index, source=source, seen=seen):  # replicas on this process's devices are read once
            key = tuple((s.start, s.stop) for s in index)
            if key not in seen:
                seen[key] = np.asarray(source[index])
            return seen[key]

        arrays[path] = jax.make_array_from_callback(tuple(source.shape), shardings[path], box)
        seen.clear()
    filled = traverse_util.unflatten_dict(arrays)
    nnx.replace_by_pure_dict(abstract, filled)
    return abstract
