"""A model's params (an ``nnx.State``) as ``{"a.b.c": numpy array}`` and back, checked against the model.

``flatten`` uses ``nnx.to_pure_dict``; ``unflatten`` builds the model's abstract params
(``jax.eval_shape`` of its pure ``init``), checks every name, shape and dtype against the flat
dict (one-line error naming the first difference) and fills them with ``nnx.replace_by_pure_dict``,
so the result has exactly the structure the trainer and ``runs.load_params`` restore.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from dlm_jax import checks

__all__ = ["flatten", "unflatten", "abstract_names"]


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


def unflatten(flat: dict[str, np.ndarray], model, *, what: str = "checkpoint"):
    """The params State of ``model`` holding ``flat``'s arrays (device arrays, dtypes unchanged)."""
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    paths = traverse_util.flatten_dict(nnx.to_pure_dict(abstract))
    names = {_name(p): p for p in paths}
    for name, path in names.items():
        want = paths[path]
        if name not in flat:
            checks.fail(f"{what} parameter {name}", "missing", f"present, shape {tuple(want.shape)}")
        got = np.asarray(flat[name])
        if tuple(got.shape) != tuple(want.shape):
            checks.fail(f"{what} parameter {name}", tuple(got.shape), f"shape {tuple(want.shape)} (the model's)")
        if got.dtype != np.dtype(want.dtype):
            checks.fail(f"{what} parameter {name}", str(got.dtype), f"dtype {np.dtype(want.dtype)} (the model's)")
    extra = sorted(set(flat) - set(names))
    if extra:
        checks.fail(f"{what} parameter {extra[0]}", tuple(np.shape(flat[extra[0]])), "only parameters of the model "
                    "(an extra tensor)")
    filled = traverse_util.unflatten_dict({path: jnp.asarray(flat[name]) for name, path in names.items()})
    nnx.replace_by_pure_dict(abstract, filled)
    return abstract
