"""The DiT's registry entry (``config.model.name = "dit"``): the method's spec fills its shape.

The spec decides the input kind, the input ids (or vector width) and the output classes; the user's
``config.model`` decides the rest (width, depth, heads, ...). A user key that contradicts the spec
(e.g. ``conditioning='t'`` for a method that feeds (t, h)) is a one-line error, not a silent pick.
"""

from __future__ import annotations

from dlm_jax import checks
from dlm_jax.models.api import make_apply, make_init
from dlm_jax.models.config import DiTConfig
from dlm_jax.models.registry import ModelDef, ModelSpec


def configure(fields: dict, spec: ModelSpec) -> DiTConfig:
    """``DiTConfig`` from the user's ``config.model`` fields and the method's ``spec``."""
    fields = dict(fields)
    needed = {"input": spec.input, "num_classes": spec.num_outputs}
    if spec.input == "tokens":
        needed["vocab_size"] = spec.num_input_ids  # DiTConfig.vocab_size counts input ids (mask included)
    else:
        needed["input_dim"] = spec.input_dim
    if spec.conditioning is not None:
        needed["conditioning"] = spec.conditioning
    for key, value in needed.items():
        if key == "vocab_size":
            fields[key] = value
            continue
        given = fields.get(key, value)
        if given != value:
            checks.fail(f"model.{key}", given, f"{value!r} (what the method needs of its model)")
        fields[key] = value
    try:
        return DiTConfig.from_dict(fields)
    except ValueError as e:  # DiTConfig names its own fields: say where they live in the run config
        raise ValueError(f"model.{e}") from None


MODEL = ModelDef(configure=configure, make_init=make_init, make_apply=make_apply)
