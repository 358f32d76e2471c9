"""Models by name: ``config.model.name`` selects a model module; the method says what it needs.

A method declares its needs as a ``ModelSpec`` (input kind, input ids or width, output classes,
conditioning); ``build(config, spec)`` merges it with the user's ``config.model`` keys and returns
a ``Model``: the model's own validated config, its static ``graphdef``, a pure
``init(key) -> params`` and a pure ``apply(params, x, cond, *, dropout_rng=None) -> out``. The
trainer, the run loader and the exporters all build models through here, so none of them knows a
model or method by name.

Registering a model (from any module, a test included)::

    register_model("my_net", ModelDef(configure=..., make_init=..., make_apply=...))

``configure(fields: dict, spec: ModelSpec) -> model config`` validates and resolves the fields,
``make_init(model_config) -> (graphdef, init)`` and ``make_apply(graphdef) -> apply`` are pure.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from dlm_jax import checks

__all__ = ["ModelSpec", "ModelDef", "Model", "register_model", "model_names", "get_model_def", "build", "module_init", "resolve_name",
           "model_fields"]

INPUTS = ("tokens", "vectors")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a method needs of its model (``methods.<name>.model_spec(config)``).

    input: ``"tokens"`` (ids ``[B, L]``) or ``"vectors"`` (``[B, L, input_dim]``).
    num_input_ids: ids the model must embed (tokens input; e.g. V + 1 with the mask id V).
    input_dim: vector width (vectors input).
    num_outputs: size of the output axis (classes, or the vector width of continuous methods).
    conditioning: the conditioning the method feeds (``"none"``, ``"t"``, ``"th"``), or None to
        leave it to ``config.model``.
    """

    num_outputs: int
    input: str = "tokens"
    num_input_ids: int = 0
    input_dim: int = 0
    conditioning: str | None = None

    def __post_init__(self):
        checks.check_choice("spec.input", self.input, INPUTS)
        checks.check_int("spec.num_outputs", self.num_outputs, min=1)
        if self.input == "tokens":
            checks.check_int("spec.num_input_ids", self.num_input_ids, min=1)
        else:
            checks.check_int("spec.input_dim", self.input_dim, min=1)


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """A registered model family: pure ``configure``, ``make_init`` and ``make_apply``."""

    configure: Callable[[dict, ModelSpec], Any]
    make_init: Callable[[Any], tuple[Any, Callable]]
    make_apply: Callable[[Any], Callable]


@dataclasses.dataclass(frozen=True)
class Model:
    """A built model: ``init(key) -> params`` and ``apply(params, x, cond, *, dropout_rng=None)``."""

    name: str
    config: Any
    graphdef: Any
    init: Callable[[Any], Any]
    apply: Callable[..., Any]


def module_init(factory: Callable[[Any], Any]):
    """``(graphdef, init)`` for an NNX module ``factory(rngs) -> module``: the graphdef traced without
    allocating, and a pure ``init(key) -> params`` (jit it with out_shardings to build a large model
    directly sharded). Eager sharding is off, so the logical names stay metadata for the trainer."""
    import jax
    from flax import nnx

    box = []

    def build(key):
        with nnx.use_eager_sharding(False):
            graphdef, state = nnx.split(factory(nnx.Rngs(params=key)))
        box.append(graphdef)
        return state

    jax.eval_shape(build, jax.random.key(0))
    return box[0], lambda key: build(key)


# name -> ModelDef, or "module:attribute" of one (imported on first use).
_REGISTRY: dict[str, Any] = {"dit": "dlm_jax.models.dit_def:MODEL", "llada": "dlm_jax.models.llada:MODEL",
                              "encdec": "dlm_jax.models.encdec_def:MODEL"}
# Keys of config.model that belong to the method or the data, not to the model's own config.
_SHARED_KEYS = ("name", "vocab_size")


def register_model(name: str, model_def: ModelDef | str) -> None:
    """Make ``config.model.name = name`` build ``model_def`` (a ModelDef or "module:attr")."""
    checks.check_str("model name", name)
    _REGISTRY[name] = model_def


def model_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_model_def(name: str) -> ModelDef:
    checks.check_choice("model.name", name, model_names())
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        module, attr = entry.split(":")
        entry = _REGISTRY[name] = getattr(importlib.import_module(module), attr)
    return entry


def model_fields(config) -> dict:
    """``config.model`` as a plain dict, without the keys shared with the method/data."""
    m = config.model.to_dict() if hasattr(config.model, "to_dict") else dict(config.model)
    return {k: v for k, v in m.items() if k not in _SHARED_KEYS}


DEFAULT_MODEL = "dit"


def resolve_name(config) -> str:
    """``config.model.name`` (default ``DEFAULT_MODEL``, written back), checked against the registry."""
    return checks.resolve(config.model, "name", DEFAULT_MODEL, prefix="model", check=checks.check_choice,
                          allowed=model_names())


def build(config, spec: ModelSpec) -> Model:
    """The model named ``config.model.name`` (default ``DEFAULT_MODEL``), shaped by the method's ``spec``."""
    name = resolve_name(config)
    model_def = get_model_def(name)
    model_config = model_def.configure(model_fields(config), spec)
    graphdef, init = model_def.make_init(model_config)
    return Model(name=name, config=model_config, graphdef=graphdef, init=init,
                 apply=model_def.make_apply(graphdef))
