"""Reading a run's workdir, read-only, onto any mesh: the one restore path outside the trainer.

``read_config(workdir)`` gives the config stored with the newest complete checkpoint;
``load_params(workdir, weights=...)`` rebuilds the run's model (``models.registry.build`` with its
method's ``model_spec``) and restores only its raw or EMA params, sharded on the mesh given (any
device count: Orbax reshards); ``load_run`` adds the tokenizer and the method (``sample`` /
``eval`` / export); ``resolve_inputs`` loads the runs a method declares (``checkpoint_inputs``).
Nothing here writes or deletes a file, so it is safe beside a running trainer. A damaged newest
checkpoint is skipped with a warning naming it, as in the trainer.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from dlm_jax import checks
from dlm_jax import mesh as mesh_lib

WEIGHTS = ("params", "ema")
_FIELD = {"params": "params", "ema": "ema_params"}


@dataclasses.dataclass
class Loaded:
    """Params of one run: ``apply(params, x, cond)`` is its model's pure function."""

    config: ml_collections.ConfigDict
    step: int
    params: Any
    apply: Any
    graphdef: Any
    model: Any


@dataclasses.dataclass
class Run(Loaded):
    """A run ready to sample and evaluate: ``method`` is built on ``apply``; ``mesh`` holds params."""

    method: Any = None
    mesh: Any = None
    tokenizer: Any = None
    workdir: str = ""


def _reader(workdir: str) -> ocp.CheckpointManager:
    """A read-only manager: never deletes or writes."""
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False))


def saved_steps(workdir: str) -> list[int]:
    """Complete checkpoint steps of ``workdir`` (one-line error when it is not a run)."""
    if not isinstance(workdir, str) or not os.path.isdir(workdir):
        checks.fail("workdir", workdir, "an existing run directory")
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        checks.fail("workdir", workdir, "a trained run (no checkpoints/ inside); train one with "
                    "`python -m dlm_jax train`")
    manager = _reader(workdir)
    try:
        steps = sorted(manager.all_steps())
    finally:
        manager.close()
    if not steps:
        checks.fail("workdir", workdir, "a trained run (no complete checkpoint)")
    return steps


def _candidates(workdir: str, step: int | None) -> list[int]:
    steps = saved_steps(workdir)
    if step is None:
        return steps[::-1]
    if step not in steps:
        checks.fail("step", step, f"one of the saved steps {steps} of {workdir}")
    return [int(step)]


def _read_meta(manager, step: int) -> dict:
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def read_config(workdir: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, int]:
    """The config saved with checkpoint ``step`` (default: the newest readable), and that step."""
    manager = _reader(workdir)
    try:
        for s in _candidates(workdir, step):
            try:
                return ml_collections.ConfigDict(_read_meta(manager, s)["config"]), s
            except Exception as e:  # noqa: BLE001 - damaged metadata: try the previous step
                _warn_damaged(workdir, s, e)
    finally:
        manager.close()
    checks.fail("workdir", workdir, "a run with at least one readable checkpoint")


def _warn_damaged(workdir: str, step: int, error: Exception) -> None:
    text = str(error).splitlines()[0][:300] if str(error) else ""
    warnings.warn(f"checkpoint {os.path.join(workdir, 'checkpoints', str(step))} could not be restored "
                  f"({type(error).__name__}: {text}); falling back to the previous checkpoint", RuntimeWarning)


def local_mesh(config=None):
    """A data-parallel mesh over this process's devices (sampling, evaluation, export)."""
    del config
    return mesh_lib.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1}))


def build_model(config):
    """The run's model, exactly as the trainer built it: ``models.registry.build(config, spec)``."""
    from dlm_jax.methods.base import model_spec
    from dlm_jax.models import registry

    return registry.build(config, model_spec(config))


def restore_params(workdir: str, step: int, model, *, weights: str, mesh, strategy: str = "dp"):
    """Only the raw (``"params"``) or EMA (``"ema"``) params of checkpoint ``step``, sharded on
    ``mesh`` by their logical names. A shape that differs from ``model`` raises."""
    checks.check_choice("weights", weights, WEIGHTS)
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    shards = mesh_lib.param_shardings(abstract, mesh, strategy)
    target = {_FIELD[weights]: jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                            abstract, shards)}
    manager = _reader(workdir)
    try:
        args = ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                      partial_restore=True)
        out = manager.restore(step, args=ocp.args.Composite(state=args))["state"]
    finally:
        manager.close()
    return out[_FIELD[weights]]


def load_params(workdir: str, *, step: int | None = None, weights: str = "params", mesh=None) -> Loaded:
    """Rebuild ``workdir``'s model from its stored config and restore its params (newest readable
    checkpoint unless ``step``); a damaged checkpoint is skipped with a warning."""
    checks.check_choice("weights", weights, WEIGHTS)
    mesh = mesh or local_mesh()
    last_error = None
    for s in _candidates(workdir, step):
        try:
            config, _ = read_config(workdir, s)
            model = build_model(config)
            with jax.set_mesh(mesh):
                params = restore_params(workdir, s, model, weights=weights, mesh=mesh)
            return Loaded(config=config, step=s, params=params, apply=model.apply, graphdef=model.graphdef,
                          model=model)
        except ValueError as e:
            if str(e).startswith(("model.", "method.", "data.", "weights:")):
                raise  # a bad config, not a damaged checkpoint
            last_error = e
            _warn_damaged(workdir, s, e)
        except Exception as e:  # noqa: BLE001 - damaged: try the previous one
            last_error = e
            _warn_damaged(workdir, s, e)
    checks.fail("workdir", workdir, f"a run with a restorable checkpoint (last error: "
                f"{type(last_error).__name__}: {str(last_error).splitlines()[0][:200] if last_error else ''})")


def resolve_inputs(declared: dict, mesh=None) -> dict:
    """``{name: Loaded}`` for a method's ``checkpoint_inputs`` (``{name: {workdir, step, weights}}``)."""
    out = {}
    for name, spec in declared.items():
        out[name] = load_params(spec["workdir"], step=spec.get("step"), weights=spec.get("weights") or "params",
                                mesh=mesh)
    return out


def load_tokenizer(config, workdir: str):
    """The run's tokenizer: the sentencepiece model the trainer saved in ``workdir``, or the
    source's own (synthetic languages)."""
    from dlm_jax.data.pipeline import train_or_load_tokenizer

    return train_or_load_tokenizer(config.data, workdir)


def load_run(workdir: str, *, step: int | None = None, use_ema: bool | None = None) -> Run:
    """Restore ``workdir`` for sampling and evaluation on this process's devices. ``use_ema``
    defaults to ``config.sample.use_ema`` (False when absent)."""
    config, _ = read_config(workdir, step)
    if use_ema is None:
        use_ema = bool(config.get("sample", {}).get("use_ema", False))
    mesh = local_mesh(config)
    loaded = load_params(workdir, step=step, weights="ema" if use_ema else "params", mesh=mesh)
    from dlm_jax.methods.base import build_method

    method = build_method(loaded.config, loaded.apply, inputs={})
    return Run(config=loaded.config, step=loaded.step, params=loaded.params, apply=loaded.apply,
               graphdef=loaded.graphdef, model=loaded.model, method=method, mesh=mesh,
               tokenizer=load_tokenizer(loaded.config, workdir), workdir=workdir)
