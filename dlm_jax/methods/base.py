"""The method seam: what the one trainer needs from a method, and the method registry.

A method is a set of pure functions bound to a model's ``apply`` function and its config.
The trainer never branches on the method: it calls ``loss`` inside the train step, ``evaluate``
inside the eval step, ``init_extra`` once when it builds the train state (frozen teachers and
other method state live there, under ``TrainState.extra``), and hands ``sample`` to the CLI.

Signatures (all pure, jit-able):

``loss(params, batch, rng, step, aux) -> (scalar, metrics: dict[str, scalar])``
    ``batch`` is a dict with ``"tokens"`` int32 ``[B, L]`` and optionally ``"loss_mask"``
    float ``[B, L]`` (1 = real token) and method-specific keys. ``aux`` is a dict holding
    ``"ema_params"`` (the trainer's EMA of params) and every entry of ``extra``.
``evaluate(params, batch, rng) -> metrics`` — sums that the caller averages (e.g. NELBO).
``init_extra(params) -> pytree`` — extra method state; ``{}`` by default.
``init_params(params) -> params`` — applied to freshly initialised params before the optimizer
    and EMA see them (e.g. copy a pretrained teacher into a student); identity by default. It runs
    inside the trainer's (traced) init, so it must close over host arrays, not load lazily in jit.
``sample(params, rng, *, num_samples, steps, sampler, **kw) -> (tokens, info)``.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import jax.numpy as jnp

Metrics = dict[str, Any]


def _no_extra(params):
    del params
    return {}


def _same_params(params):
    return params


@dataclasses.dataclass(frozen=True)
class Method:
    """A bundle of pure functions that the trainer and CLI call; see the module docstring."""

    name: str
    loss: Callable[..., tuple[Any, Metrics]]
    evaluate: Callable[..., Metrics]
    sample: Callable[..., tuple[Any, Metrics]]
    init_extra: Callable[[Any], Any] = _no_extra
    init_params: Callable[[Any], Any] = _same_params


def masked_mean(values, loss_mask=None):
    """Per-token mean over ``loss_mask`` (1 = real token): ``(Σ v·mask / Σ mask, Σ v·mask, Σ mask)``; the mean is 0 when the mask is empty."""
    values = jnp.asarray(values)
    mask = jnp.ones_like(values) if loss_mask is None else jnp.asarray(loss_mask, values.dtype)
    total = jnp.sum(jnp.where(mask > 0, values * mask, 0.0))
    count = jnp.sum(mask)
    return total / jnp.maximum(count, 1e-12), total, count


def vocab_size_from_config(config) -> int:
    """V, the number of clean classes (the mask id is V): ``model.vocab_size``, else the
    tokenizer's ``data.tokenizer_vocab_size``; one-line ValueError otherwise."""
    v = config.model.get("vocab_size", None) if "model" in config else None
    if v is None and "data" in config:
        v = config.data.get("tokenizer_vocab_size", None)
    if not isinstance(v, int) or isinstance(v, bool) or v < 2:
        raise ValueError(f"model.vocab_size: {v!r}; expected an int >= 2 (clean classes, mask id = V)")
    return v


# name -> "module:builder"; a builder is ``build(config, apply_fn) -> Method``.
_REGISTRY: dict[str, str] = {
    "mdlm": "dlm_jax.methods.mdlm:build",
    "dfm": "dlm_jax.methods.dfm:build",
    "fsdfm": "dlm_jax.methods.fsdfm:build",
}


def method_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def build_method(config, apply_fn) -> Method:
    """Build the method named ``config.method.name`` for a model ``apply_fn``."""
    name = config.method.name
    if name not in _REGISTRY:
        raise ValueError(f"method.name: {name!r}; expected one of {method_names()}")
    module, fn = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), fn)(config, apply_fn)
