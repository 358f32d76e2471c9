"""Load a trained run from its workdir for sampling and evaluation.

``load_run(workdir)`` reads the config stored with the newest complete checkpoint, rebuilds the
model and method exactly as the trainer did, restores the train state onto a mesh of the devices
present now (any count: Orbax reshards), and returns what ``sample``/``eval`` need.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from dlm_jax.train import loop
from dlm_jax.train import mesh as mesh_lib
from dlm_jax.train import optim
from dlm_jax.train import state as state_lib


@dataclasses.dataclass
class Run:
    """A restored run: ``params`` are the EMA params when ``use_ema`` else the raw ones."""

    config: ml_collections.ConfigDict
    step: int
    params: Any
    method: Any
    graphdef: Any
    mesh: Any
    tokenizer: Any
    workdir: str


def _reader(workdir: str) -> ocp.CheckpointManager:
    """A read-only manager: never deletes or writes, so it is safe beside a running trainer."""
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False))


def read_config(workdir: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, int]:
    """The config saved with checkpoint ``step`` (default: the newest), and that step."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise ValueError(f"workdir: {workdir!r}; expected a trained run (no checkpoints/ inside); "
                         "train one with `python -m dlm_jax train`")
    manager = _reader(workdir)
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            raise ValueError(f"workdir: {workdir!r}; expected a trained run (no complete checkpoint)")
        step = steps[-1] if step is None else int(step)
        if step not in steps:
            raise ValueError(f"step: {step}; expected one of the saved steps {steps}")
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    finally:
        manager.close()
    return ml_collections.ConfigDict(meta["config"]), step


def _local_mesh_config(config):
    """The run's mesh config re-targeted at the devices of this process (no multi-host)."""
    with config.unlocked():
        config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
        config.mesh.distributed = "off"
    return config


def load_run(workdir: str, *, step: int | None = None, use_ema: bool | None = None) -> Run:
    """Restore ``workdir``'s newest (or ``step``) checkpoint. ``use_ema`` defaults to
    ``config.sample.use_ema`` (False when absent)."""
    if not os.path.isdir(workdir):
        raise ValueError(f"workdir: {workdir!r}; expected an existing run directory")
    config, step = read_config(workdir, step)
    config = _local_mesh_config(config)
    if use_ema is None:
        use_ema = bool(config.get("sample", {}).get("use_ema", False))
    if config.data.get("source") == "markov":
        from dlm_jax.data.tokenizer import MarkovTokenizer

        tokenizer = MarkovTokenizer(config.model.vocab_size)
    else:  # the sentencepiece model the trainer saved in the workdir
        from dlm_jax.data.pipeline import train_or_load_tokenizer

        tokenizer = train_or_load_tokenizer(loop._pipeline_config(config), workdir)

    from dlm_jax.methods.base import build_method
    from dlm_jax.models import make_apply

    mesh = mesh_lib.make_mesh(config.mesh)
    graphdef, init_params = state_lib.trace_model(lambda: loop.dit_model(config))
    with jax.set_mesh(mesh):
        method = build_method(config, make_apply(graphdef))
        optimizer = optim.make_optimizer(config.train, int(config.train.steps))
        target, _ = state_lib.abstract_train_state(init_params, optimizer, method.init_extra,
                                                   int(config.seed), mesh, config.mesh.get("strategy", "dp"))
        manager = _reader(workdir)
        try:
            state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
        finally:
            manager.close()
    params = state.ema_params if use_ema else state.params
    return Run(config=config, step=step, params=params, method=method, graphdef=graphdef, mesh=mesh,
               tokenizer=tokenizer, workdir=workdir)


def generate(run: Run, *, steps: int, sampler: str | None = None, num_samples: int = 4, seed: int = 0,
             **sampler_kw) -> tuple[Any, dict]:
    """Sample ``num_samples`` sequences with ``steps`` steps; returns ``(tokens [B, L] numpy,
    info)`` with ``info["nfe"]`` and ``info["seconds"]`` (compile excluded: one warm-up call)."""
    import time

    import numpy as np

    from dlm_jax.samplers import get_sampler

    name = sampler or run.config.get("sample", {}).get("sampler", None)
    if name is not None:
        get_sampler(name)  # unknown names fail here, before compiling

    @jax.jit
    def draw(params, key):
        return run.method.sample(params, key, num_samples=num_samples, steps=steps, sampler=name, **sampler_kw)

    key = jax.random.key(seed)
    with jax.set_mesh(run.mesh):
        jax.block_until_ready(draw(run.params, key))
        t0 = time.perf_counter()
        tokens, info = jax.block_until_ready(draw(run.params, key))
    info = {k: np.asarray(v) for k, v in info.items()}
    info["seconds"] = time.perf_counter() - t0
    return np.asarray(tokens), info


def decode(run: Run, tokens) -> list[str]:
    """Token rows -> text (sentencepiece) or space-separated ids (synthetic languages)."""
    if hasattr(run.tokenizer, "decode") and run.config.data.get("source") != "markov":
        return [run.tokenizer.decode(row) for row in tokens]
    return [" ".join(str(int(t)) for t in row) for row in tokens]


def evaluate(run: Run, *, num_batches: int | None = None, seed: int = 0) -> dict[str, float]:
    """Average the method's ``evaluate`` sums over validation batches: ``<name>_sum / num_tokens``
    for every summed metric (e.g. NELBO in nats/token), plus bits/token and the PPL bound."""
    import math

    import numpy as np

    config = run.config
    num_batches = num_batches or int(config.train.get("eval_batches", 8))
    batches = loop.grain_data(config, split="validation", process_index=0, process_count=1, workdir=run.workdir)
    step = jax.jit(run.method.evaluate)
    totals: dict[str, float] = {}
    key = jax.random.key(seed + 1)
    done = 0
    with jax.set_mesh(run.mesh):
        for i in range(num_batches):
            try:
                batch = next(batches)
            except StopIteration:
                break
            out = step(run.params, {k: jax.numpy.asarray(v) for k, v in batch.items()}, jax.random.fold_in(key, i))
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(np.asarray(v))
            done += 1
    count = totals.get("num_tokens", 0.0)
    result = {"num_tokens": count, "num_batches": float(done)}
    for k, v in totals.items():
        if k.endswith("_sum") and count:
            result[k[:-4]] = v / count
    if "nelbo" in result:
        result["bits_per_token"] = result["nelbo"] / math.log(2)
        result["ppl_bound"] = math.exp(result["nelbo"])
    return result


def exact_score(run: Run, tokens) -> dict[str, float] | None:
    """For runs on the synthetic Markov language: the exact per-token log-likelihood of ``tokens``
    under the true chain, beside the best achievable (−H/L). ``None`` for other sources."""
    if run.config.data.get("source") != "markov":
        return None
    import numpy as np

    from dlm_jax.data.pipeline import markov_language

    length = int(np.shape(tokens)[-1])
    lang = markov_language(loop._pipeline_config(run.config), length)
    ll = np.asarray(lang.log_prob(jax.numpy.asarray(tokens)), np.float64) / length
    return {"log_prob_per_token": float(ll.mean()),
            "stderr": float(ll.std(ddof=1) / np.sqrt(len(ll))) if len(ll) > 1 else float("nan"),
            "exact_per_token": -lang.entropy() / length}
