"""safetensors checkpoints, one file or sharded, read and written with numpy (no JAX, no torch).

Sharded layout (the Hugging Face convention): ``model-00001-of-0000N.safetensors`` files and
``model.safetensors.index.json`` = ``{"metadata": {"total_size": bytes}, "weight_map": {tensor:
file}}``. A checkpoint is sharded when its tensors exceed ``max_shard_bytes`` (default 5 GB, as
``save_pretrained``). The split is ``huggingface_hub.split_numpy_state_dict_into_shards`` when
that package is installed, else the same greedy rule written here: tensors in order, a new shard
when the next tensor would overflow the current one, a tensor larger than the limit on its own.

Reading is confined to the checkpoint directory: an index entry must be a plain file name in it
(no ``..``, no absolute path, no separator, no symlink leading outside), else a one-line error
before any file is opened. ``pytorch_model.bin`` (and its index) is read by ``torch_files``.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from dlm_jax import checks

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
TORCH_INDEX_NAME = "pytorch_model.bin.index.json"
DEFAULT_MAX_SHARD_BYTES = 5_000_000_000

__all__ = ["Checkpoint", "WEIGHTS_NAME", "INDEX_NAME", "DEFAULT_MAX_SHARD_BYTES", "plan_shards",
           "write_safetensors", "read_safetensors_file", "read_weights_dir", "member_path", "read_json",
           "LazyTensor", "lazy_safetensors_file", "lazy_weights_dir", "READ_STATS"]


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint in dlm_jax's own param names, as read from (or written to) a layout's files.

    ``model_fields``: the model's own config (DiT: ``vocab_size`` = input ids, ``num_classes``);
    ``vocab_size``: V, the clean classes (``config.model.vocab_size``; the mask id is V);
    ``method``: ``config.method`` (name + keys); ``params`` / ``ema_params``: ``{name: array}``;
    ``run_config``: the whole run config when the files carry one (own layout);
    ``origin``: where it came from (format, path, options), stored in the imported config.
    """

    model_name: str
    model_fields: dict
    vocab_size: int
    method: dict
    params: dict
    ema_params: dict | None = None
    run_config: dict | None = None
    step: int = 0
    origin: dict = dataclasses.field(default_factory=dict)


def _own_split(sizes: list[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    shards, current, used = [], [], 0
    for name, size in sizes:
        if current and used + size > max_bytes:
            shards.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    if current:
        shards.append(current)
    return shards


def plan_shards(tensors: dict[str, np.ndarray], max_shard_bytes: int) -> dict[str, list[str]]:
    """``{file name: [tensor names]}``: one ``model.safetensors`` or N numbered shards."""
    checks.check_int("max_shard_bytes", max_shard_bytes, min=1)
    try:
        from huggingface_hub import split_numpy_state_dict_into_shards
    except ImportError:
        split_numpy_state_dict_into_shards = None
    if split_numpy_state_dict_into_shards is not None:
        split = split_numpy_state_dict_into_shards(tensors, filename_pattern="model{suffix}.safetensors",
                                                   max_shard_size=int(max_shard_bytes))
        return {f: list(names) for f, names in split.filename_to_tensors.items()}
    shards = _own_split([(k, int(v.nbytes)) for k, v in tensors.items()], int(max_shard_bytes))
    if len(shards) <= 1:
        return {WEIGHTS_NAME: shards[0] if shards else []}
    n = len(shards)
    return {f"model-{i + 1:05d}-of-{n:05d}.safetensors": names for i, names in enumerate(shards)}


def write_safetensors(tensors: dict[str, np.ndarray], out_dir: str, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                      metadata: dict[str, str] | None = None) -> list[str]:
    """Write ``tensors`` into the existing directory ``out_dir``; returns the file names written."""
    from safetensors.numpy import save_file

    plan = plan_shards(tensors, max_shard_bytes)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    for fname, names in plan.items():
        save_file({k: np.ascontiguousarray(tensors[k]) for k in names}, os.path.join(out_dir, fname), metadata=meta)
    written = list(plan)
    if len(plan) > 1:
        index = {"metadata": {"total_size": int(sum(int(t.nbytes) for t in tensors.values()))},
                 "weight_map": {k: fname for fname, names in plan.items() for k in names}}
        with open(os.path.join(out_dir, INDEX_NAME), "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)
        written.append(INDEX_NAME)
    return written


def member_path(directory: str, name, key: str) -> str:
    """``directory/name`` for a plain file name that stays inside ``directory`` (one-line error else)."""
    bad = (not isinstance(name, str) or not name or name in (".", "..") or os.path.isabs(name)
           or "/" in name or "\\" in name or ".." in name.split("/"))
    if bad:
        checks.fail(key, name, f"a plain file name inside {directory} (no '..', no absolute path, no separator)")
    root = os.path.realpath(directory)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.dirname(path) != root:
        checks.fail(key, name, f"a file inside {directory} (it resolves to {path})")
    if not os.path.isfile(path):
        checks.fail(key, name, f"an existing file in {directory}")
    return path


def read_json(path: str, key: str) -> dict:
    """A JSON object from ``path`` (one-line error when it is not one)."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        checks.fail(key, path, f"a readable JSON file ({type(e).__name__})")
    if not isinstance(value, dict):
        checks.fail(key, path, "a JSON object")
    return value


# Tensors read on demand: a process reads only the slices its devices hold (``params.place_sharded``).
READ_STATS = {"bytes": 0, "reads": 0}  # bytes copied out of safetensors files by this process
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
           "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _np_dtype(name: str) -> np.dtype:
    if name == "BF16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(_DTYPES.get(name, "V1"))


class LazyTensor:
    """One tensor of a safetensors file, known by its header; ``t[index]`` copies out only that
    slice (``safe_open(...).get_slice``), ``np.asarray(t)`` the whole tensor. Reads are counted in
    ``READ_STATS``."""

    def __init__(self, path: str, name: str, shape: tuple, dtype: np.dtype):
        self.path, self.name, self.shape, self.dtype = path, name, tuple(int(n) for n in shape), dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __getitem__(self, index) -> np.ndarray:
        from safetensors import safe_open

        with safe_open(self.path, framework="numpy") as f:
            out = f.get_tensor(self.name) if not self.shape else f.get_slice(self.name)[index]
        READ_STATS["bytes"] += int(out.nbytes)
        READ_STATS["reads"] += 1
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[tuple(slice(None) for _ in self.shape)]
        return out if dtype is None else out.astype(dtype)


def lazy_safetensors_file(path: str, names=None) -> dict[str, LazyTensor]:
    """Headers of one safetensors file (all tensors, or ``names``) as ``LazyTensor``s; nothing read."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            keys = list(f.keys())
            wanted = keys if names is None else list(names)
            missing = [k for k in wanted if k not in keys]
            if missing:
                checks.fail(f"tensor {missing[0]}", path, "the file the index names for it to hold it")
            out = {}
            for k in wanted:
                sl = f.get_slice(k)
                out[k] = LazyTensor(path, k, tuple(sl.get_shape()), _np_dtype(sl.get_dtype()))
            return out
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types on a bad header
        checks.fail("safetensors file", path, f"a valid safetensors file ({type(e).__name__}: {str(e)[:120]})")


def read_safetensors_file(path: str, names=None) -> dict[str, np.ndarray]:
    """Tensors of one safetensors file (all, or ``names``), as numpy arrays."""
    return {k: np.asarray(t) for k, t in lazy_safetensors_file(path, names).items()}


def _read_index(directory: str, index_name: str) -> dict[str, str]:
    index = read_json(os.path.join(directory, index_name), index_name)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        checks.fail(f"{index_name} weight_map", weight_map, "a non-empty mapping of tensor name to file name")
    for name, fname in weight_map.items():  # every path checked before any file is read
        member_path(directory, fname, f"{index_name} weight_map[{name!r}]")
    return weight_map


def lazy_weights_dir(directory: str) -> dict:
    """Every tensor of a checkpoint directory, safetensors ones as ``LazyTensor``s (nothing read
    yet): ``model.safetensors`` (or its index and shards), else ``pytorch_model.bin`` (or its index
    and shards, read whole and weights-only: a pickle cannot be read in slices)."""
    if not os.path.isdir(directory):
        checks.fail("--from", directory, "an existing checkpoint directory")
    if os.path.isfile(os.path.join(directory, INDEX_NAME)):
        weight_map = _read_index(directory, INDEX_NAME)
        out = {}
        for fname in sorted(set(weight_map.values())):
            names = [k for k, v in weight_map.items() if v == fname]
            out.update(lazy_safetensors_file(member_path(directory, fname, INDEX_NAME), names))
        return out
    if os.path.isfile(os.path.join(directory, WEIGHTS_NAME)):
        return lazy_safetensors_file(os.path.join(directory, WEIGHTS_NAME))
    from dlm_jax.export import torch_files

    if os.path.isfile(os.path.join(directory, TORCH_INDEX_NAME)):
        weight_map = _read_index(directory, TORCH_INDEX_NAME)
        out = {}
        for fname in sorted(set(weight_map.values())):
            out.update(torch_files.load_state_dict(member_path(directory, fname, TORCH_INDEX_NAME)))
        return out
    if os.path.isfile(os.path.join(directory, TORCH_WEIGHTS_NAME)):
        return torch_files.load_state_dict(os.path.join(directory, TORCH_WEIGHTS_NAME))
    checks.fail("--from", directory, f"a directory with {WEIGHTS_NAME}, {INDEX_NAME}, {TORCH_WEIGHTS_NAME} or "
                f"{TORCH_INDEX_NAME}")


def read_weights_dir(directory: str) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint directory (``lazy_weights_dir``), read whole into numpy arrays."""
    return {k: np.asarray(v) for k, v in lazy_weights_dir(directory).items()}
