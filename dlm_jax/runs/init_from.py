"""``config.init_from``: start a run's params from another run (fine-tuning, student from teacher).

Keys (``init_from_config`` returns the block with every default):

==========  ==========  ===========================================================================
``workdir`` ``""``      the source run ("" = off)
``step``    ``-1``      its checkpoint step (-1 = the newest readable)
``weights`` ``"params"`` ``"params"`` or ``"ema"``
``mapping`` ``"copy"``  how source params become this run's: a name registered here
==========  ==========  ===========================================================================

The trainer resolves it *before* anything is traced (the source is read once, on a fresh start
only; a resume never reads it) and passes the source params as an argument of the jitted init.
A mapping is ``fn(source: Loaded, fresh_params, config) -> params``, pure in the params; it may
check invariants between the two configs and raise the one-line error.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import ml_collections

from dlm_jax import checks

Mapping = Callable[[Any, Any, Any], Any]
_MAPPINGS: dict[str, Mapping] = {}


def register_mapping(name: str, fn: Mapping) -> None:
    """Make ``init_from.mapping = name`` use ``fn(source: Loaded, fresh_params, config) -> params``."""
    _MAPPINGS[checks.check_str("init_from.mapping", name)] = fn


def mapping_names() -> tuple[str, ...]:
    return tuple(sorted(_MAPPINGS))


def init_from_config(**overrides) -> ml_collections.ConfigDict:
    """The ``init_from`` block with its defaults (off)."""
    c = ml_collections.ConfigDict(dict(workdir="", step=-1, weights="params", mapping="copy"))
    c.update(overrides)
    return c


def validate(block) -> dict | None:
    """The checked ``init_from`` block as a dict, or None when off."""
    if block is None or not block.get("workdir", ""):
        return None
    from dlm_jax.runs.workdir import WEIGHTS

    from dlm_jax.runs.workdir import saved_steps

    workdir = checks.check_str("init_from.workdir", block.get("workdir"))
    try:
        saved_steps(workdir)
    except ValueError:
        checks.fail("init_from.workdir", workdir, "a trained run (a directory with complete checkpoints)")
    return {"workdir": workdir,
            "step": checks.check_int("init_from.step", block.get("step", -1), min=-1),
            "weights": checks.check_choice("init_from.weights", block.get("weights", "params"), WEIGHTS),
            "mapping": checks.check_choice("init_from.mapping", block.get("mapping", "copy"), mapping_names())}


def initializer(config, model, mesh):
    """``(init_params, inputs)`` for a fresh start: ``init_params(inputs) -> params`` is pure (jit
    it; ``inputs`` is an argument, never a baked-in constant). Without ``init_from`` it is the
    model's own init of ``config.seed`` and ``inputs`` is None (call ``init_params()``); with it,
    the source run is read here, once, onto ``mesh``, and mapped by ``init_from.mapping``."""
    key = jax.random.key(int(config.seed))
    block = validate(config.get("init_from", None))
    if block is None:
        return (lambda: model.init(key)), None
    from dlm_jax.runs.workdir import load_params

    source = load_params(block["workdir"], step=None if block["step"] < 0 else block["step"],
                         weights=block["weights"], mesh=mesh)
    mapping = _MAPPINGS[block["mapping"]]
    workdir = block["workdir"]

    def init_params(src_params):
        view = dataclasses.replace(source, params=src_params)
        view.workdir = workdir
        return mapping(view, model.init(key), config)

    if jax.process_index() == 0:
        print(f"init_from: {workdir} step {source.step} ({block['weights']}, mapping {block['mapping']!r})",
              flush=True)
    return init_params, source.params


def _path(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def copy_params(source, fresh, config):
    """The source params as they are: same structure and shapes as this run's model, else a one-line
    error naming the first differing parameter and both shapes."""
    del config
    src = dict(jax.tree_util.tree_flatten_with_path(source.params)[0])
    dst = jax.tree_util.tree_flatten_with_path(fresh)[0]
    src_by_name = {_path(p): v for p, v in src.items()}
    for path, leaf in dst:
        name = _path(path)
        if name not in src_by_name:
            checks.fail("init_from.workdir", source_workdir(source), f"a run whose params include {name!r}")
        if tuple(src_by_name[name].shape) != tuple(leaf.shape):
            checks.fail(f"init_from: parameter {name}", tuple(src_by_name[name].shape),
                        f"shape {tuple(leaf.shape)} (this run's model)")
    if len(src_by_name) != len(dst):
        extra = sorted(set(src_by_name) - {_path(p) for p, _ in dst})
        checks.fail("init_from.workdir", source_workdir(source), f"a run without extra params such as {extra[:2]}")
    return jax.tree.map(lambda _, s: s, fresh, jax.tree.unflatten(jax.tree.structure(fresh),
                                                                  [src_by_name[_path(p)] for p, _ in dst]))


def source_workdir(source) -> str:
    return getattr(source, "workdir", None) or str(source.config.get("workdir", "?"))


def dit_t_to_th(source, fresh, config):
    """An FS-DFM student ("th" DiT) from a DFM teacher ("t" DiT): the teacher's weights copied in,
    fusers identity-initialised when ``model.identity_h_init`` (``models.init_student_from_teacher``).
    Teacher and student must use the same source (mask/uniform) and vocabulary."""
    from dlm_jax.models import init_student_from_teacher

    src_m, dst_m = source.config.get("method", {}), config.method
    for key, default in (("source", "mask"),):
        a, b = src_m.get(key, default), dst_m.get(key, default)
        if a != b:
            checks.fail(f"method.{key}", b, f"{a!r}, the {key} of the init_from run {source_workdir(source)}")
    return init_student_from_teacher(source.params, fresh, _model_config(config))


def _model_config(config):
    from dlm_jax.runs.workdir import build_model

    return build_model(config).config


def mdlm_to_dsl(source, fresh, config):
    """A DSL run from an MDLM run: the DiT backbone copied, the converter's linear map W from the
    MDLM token-embedding rows (mask row included), the rest fresh (``methods.dsl.params_from_mdlm``)."""
    from dlm_jax.methods.dsl import params_from_mdlm

    return params_from_mdlm(source.params, source.config, fresh, config, workdir=source_workdir(source))


register_mapping("copy", copy_params)
register_mapping("dit_t_to_th", dit_t_to_th)
register_mapping("mdlm_to_dsl", mdlm_to_dsl)
