"""PyTorch pickles (``.pth`` / ``.bin``), read weights-only and written with ``torch.save``.

torch is imported lazily (optional extra ``dlm_jax[torch]``). Reading uses
``torch.load(path, map_location="cpu", weights_only=True)``: a pickle that needs anything beyond
tensors and plain containers (a class to construct, a function to call) is refused with one
line suggesting safetensors, and nothing in it runs. Tensors come back as numpy arrays
(bfloat16 through ``ml_dtypes``, bit for bit).
"""

from __future__ import annotations

import numpy as np

from dlm_jax import checks

PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel and torch.compile wrappers

__all__ = ["PREFIXES", "require_torch", "load_pickle", "load_state_dict", "strip_prefixes", "save_pickle"]


def require_torch(path: str):
    """The torch module, or a one-line error naming ``path`` when it is not installed."""
    try:
        import torch
    except ImportError:
        checks.fail("--from", path, "a safetensors checkpoint, or torch installed (pip install 'dlm_jax[torch]') "
                    "to read or write PyTorch pickles")
    return torch


def _to_numpy(value, torch):
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            import ml_dtypes

            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()
    if isinstance(value, dict):
        return {k: _to_numpy(v, torch) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy(v, torch) for v in value)
    return value


def _reason(error: Exception) -> str:
    """The line of torch's refusal that names what the pickle asked for."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            return line[:160]
    return (lines[0] if lines else type(error).__name__)[:160]


def load_pickle(path: str):
    """The object in a PyTorch pickle, loaded weights-only, with tensors as numpy arrays."""
    torch = require_torch(path)
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle-protocol notes; the refusal is the error
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        checks.fail("--from", path, f"a weights-only PyTorch checkpoint; this pickle needs more than tensors to load "
                    f"({_reason(e)}) and was not run — convert it to safetensors")
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        checks.fail("--from", path, f"a readable PyTorch checkpoint ({type(e).__name__}: {str(e)[:120]})")
    return _to_numpy(obj, torch)


def strip_prefixes(state: dict) -> dict:
    """Keys without leading ``module.`` / ``_orig_mod.`` (in any order, repeated)."""
    out = {}
    for key, value in state.items():
        name = key
        while name.startswith(PREFIXES):
            name = name[len(next(p for p in PREFIXES if name.startswith(p))):]
        if name in out:
            checks.fail("state dict key", key, f"keys unique after stripping {PREFIXES} (two give {name!r})")
        out[name] = value
    return out


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """A flat ``{name: array}`` state dict from a ``.bin`` / ``.pth`` file (prefixes stripped)."""
    obj = load_pickle(path)
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        checks.fail("--from", path, "a PyTorch state dict (a mapping of names to tensors)")
    return strip_prefixes(obj)


def save_pickle(obj, path: str) -> None:
    """``torch.save`` of ``obj`` with every numpy array turned into a tensor (bfloat16 kept)."""
    torch = require_torch(path)

    def convert(value):
        if isinstance(value, np.ndarray):
            if value.dtype.name == "bfloat16":
                return torch.from_numpy(np.array(value).view(np.int16)).view(torch.bfloat16)
            return torch.from_numpy(np.array(value))  # a writable copy
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    torch.save(convert(obj), path)
