"""The method seam: what the one trainer needs from a method, and the method registry.

A method is a module (or any object) with two functions, registered by name:

``model_spec(config) -> ModelSpec``
    what it needs of its model (input kind, input ids, output classes, conditioning); the trainer,
    the run loader and the exporters build the model from it (``dlm_jax.models.registry.build``).
``build(config, apply_fn[, inputs=...]) -> Method``
    a bundle of pure functions bound to the model's ``apply``. A module that also defines
    ``checkpoint_inputs(config) -> {name: {"workdir", "step", "weights"}}`` receives those runs'
    params, resolved by ``dlm_jax.runs`` before anything is traced, as ``inputs[name]`` (an object
    with ``.params``, ``.apply`` and ``.config``; e.g. FS-DFM's frozen teacher).

The trainer never branches on the method: it calls ``loss`` inside the train step, ``evaluate``
inside the evaluators, ``init_extra`` once when it builds the train state (frozen teachers and
other method state live there, under ``TrainState.extra``), and hands ``sample`` to the CLI.

Signatures of a ``Method``'s functions (all pure, jit-able):

``loss(params, batch, rng, step, aux) -> (scalar, metrics: dict[str, scalar])``
    ``batch`` is a dict of named fields (``"tokens"`` int32 ``[B, L]``, ``"loss_mask"`` float
    ``[B, L]`` with 1 = real token, or a method's own). ``aux`` holds ``"ema_params"`` (the
    trainer's EMA of params) and every entry of ``extra``.
``evaluate(params, batch, rng) -> sums`` — ``<name>_sum`` values and their ``num_tokens``
    denominator, reduced by ``dlm_jax.eval.evaluators``.
``init_extra(params) -> pytree`` — extra method state; ``{}`` by default.
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


@dataclasses.dataclass(frozen=True)
class Method:
    """A bundle of pure functions that the trainer and CLI call; see the module docstring."""

    name: str
    loss: Callable[..., tuple[Any, Metrics]]
    evaluate: Callable[..., Metrics]
    sample: Callable[..., tuple[Any, Metrics]]
    init_extra: Callable[[Any], Any] = _no_extra
    samplers: tuple[str, ...] = ()  # the sampler names ``sample`` accepts (empty: any)


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


# name -> a method module (or object) with ``model_spec`` and ``build``, or its import path.
_REGISTRY: dict[str, Any] = {
    "mdlm": "dlm_jax.methods.mdlm",
    "dfm": "dlm_jax.methods.dfm",
    "fsdfm": "dlm_jax.methods.fsdfm",
    "dsl": "dlm_jax.methods.dsl",
    "ar": "dlm_jax.methods.ar",
    "fastdiss": "dlm_jax.methods.fastdiss",
}


def register_method(name: str, module: Any) -> None:
    """Make ``config.method.name = name`` use ``module`` (an object with ``model_spec`` and
    ``build``, or the import path of one) — a method added outside dlm_jax, e.g. from a test."""
    for attr in ("model_spec", "build"):
        if not isinstance(module, str) and not callable(getattr(module, attr, None)):
            raise ValueError(f"method {name!r}: {module!r}; expected an object with a {attr}() function")
    _REGISTRY[name] = module


def method_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def method_module(config_or_name) -> Any:
    """The module registered for ``config.method.name`` (or a name)."""
    name = config_or_name if isinstance(config_or_name, str) else config_or_name.method.get("name")
    if name not in _REGISTRY:
        raise ValueError(f"method.name: {name!r}; expected one of {method_names()}")
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        entry = _REGISTRY[name] = importlib.import_module(entry)
    return entry


def model_spec(config):
    """What ``config``'s method needs of its model (``ModelSpec``)."""
    return method_module(config).model_spec(config)


def checkpoint_inputs(config) -> dict:
    """``{name: {"workdir", "step", "weights"}}`` of runs the method reads (default none)."""
    fn = getattr(method_module(config), "checkpoint_inputs", None)
    return {} if fn is None else dict(fn(config))


def build_method(config, apply_fn, inputs: dict | None = None) -> Method:
    """Build the method named ``config.method.name`` for a model ``apply_fn``; ``inputs``: the
    resolved ``checkpoint_inputs`` (only passed to methods that declare them)."""
    module = method_module(config)
    if getattr(module, "checkpoint_inputs", None) is not None:
        return module.build(config, apply_fn, inputs=inputs or {})
    return module.build(config, apply_fn)
