"""samplers layer of dlm_jax (see DESIGN.md): one scan driver + step kernels.

``get_sampler(name)`` returns a sampler ``(denoise_fn, key, **kwargs) -> (tokens, info)``; the
registry maps names to ``"module:function"`` strings imported lazily, so a family's module (and
its dependencies) loads only when asked for. Every public ``sample_*`` sampler is registered
(tests/samplers/test_registry.py). Every sampler takes the same conditioning, ``fixed`` /
``fixed_tokens`` (``driver.check_fixed``), and validates its arguments (steps >= 1, length >= 1,
top_p in (0, 1], strategy, ...) and its denoiser's output width (``driver.check_denoise_fn``)
before anything is traced or compiled.
"""

from __future__ import annotations

import importlib
from typing import Callable

from dlm_jax.checks import fail

SAMPLERS: dict[str, str] = {
    "mdlm": "dlm_jax.samplers.masked:sample_mdlm",
    "mdlm_cache": "dlm_jax.samplers.masked:sample_mdlm_cache",
    "remdm_cap": "dlm_jax.samplers.remdm:sample_remdm_cap",
    "remdm_rescale": "dlm_jax.samplers.remdm:sample_remdm_rescale",
    "remdm_conf": "dlm_jax.samplers.remdm:sample_remdm_conf",
    "remdm_loop": "dlm_jax.samplers.remdm:sample_remdm_loop",
    "remdm": "dlm_jax.samplers.remdm:sample_remdm",
    "llada": "dlm_jax.samplers.llada:sample_llada",
    "fef": "dlm_jax.samplers.speculative:sample_fef",
    "fsdfm": "dlm_jax.samplers.jump:sample_fsdfm",
    "dfm_euler": "dlm_jax.samplers.jump:sample_dfm_euler",
    "dsl_remdm_loop": "dlm_jax.samplers.localization:sample_dsl_remdm_loop",
    "dsl_roar": "dlm_jax.samplers.localization:sample_dsl_roar",
    "dsl_sde": "dlm_jax.samplers.localization_sde:sample_dsl_sde",
    "dsl_hybrid": "dlm_jax.samplers.localization_sde:sample_dsl_hybrid",
}

# Families: which samplers drive a denoiser of which kind (a method lists its family's names).
MASKED = ("mdlm", "mdlm_cache", "remdm_cap", "remdm_rescale", "remdm_conf", "remdm_loop", "remdm", "llada", "fef")
FLOW = ("fsdfm", "dfm_euler")
DSL = ("dsl_remdm_loop", "dsl_sde", "dsl_roar", "dsl_hybrid")  # denoise_fn(z [B, L, d]) and anchors=

__all__ = ["SAMPLERS", "MASKED", "FLOW", "DSL", "get_sampler"]


def get_sampler(name: str) -> Callable:
    """The sampler registered as ``name`` (lazy import of its module)."""
    if name not in SAMPLERS:
        fail("sampler", name, f"one of {tuple(SAMPLERS)}")
    module, function = SAMPLERS[name].split(":")
    return getattr(importlib.import_module(module), function)
