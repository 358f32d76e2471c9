"""The one trainer: ``train(config, workdir)``.

Reads (``ml_collections.ConfigDict``; optional keys in brackets with their default):

* ``seed``
* ``model``: ``name`` (a ``models.registry`` name, default the DiT) + that model's fields;
  ``vocab_size`` is V, the number of clean classes (default: the tokenizer's). The method's
  ``model_spec`` decides input ids, outputs and conditioning; ``max_len`` bounds ``data.seq_len``.
* ``method``: ``name`` (``methods.base`` registry) + the method's own keys (defaults written back).
* [``init_from``]: start from another run's params (``runs.init_from``), on a fresh start only.
* ``data``: ``seq_len`` + the keys of ``dlm_jax.data.pipeline`` (``source``, ...).
* ``train``: ``steps``, ``batch_size`` (global), ``lr``, ``warmup_steps``, ``schedule``,
  [``final_lr_frac`` 0.1], ``weight_decay``, ``b1``, ``b2``, [``eps`` 1e-8], ``grad_clip``,
  ``ema_decay``, ``microbatches``, [``compute_dtype`` None], [``step_impl`` "jit" | "shard_map"],
  ``log_every``, [``max_nonfinite_steps`` 10]: a step with a non-finite loss or gradient
  is skipped (state unchanged, ``skipped`` = 1 in the metrics); this many in a row halt the run
  with a one-line error, the last good checkpoint untouched (0 = never halt).
* [``evals``]: evaluators (``eval.evaluators``), each run every ``every`` steps and at the end.
* ``mesh``: ``data``, ``fsdp``, ``tensor`` (one may be -1), ``strategy``, [``distributed`` "off"
  | "auto" | "explicit" (+ ``coordinator_address``, ``num_processes``, ``process_id``)].
* ``checkpoint``: ``every``, ``keep``, [``async_save`` True], [``save_on_signal`` True].
* [``sample``: ``sampler`` is checked against ``dlm_jax.samplers.SAMPLERS``].

Writes ``<workdir>/metrics.jsonl``, TensorBoard events under ``<workdir>/tb`` and Orbax
checkpoints under ``<workdir>/checkpoints``; resumes from the newest complete checkpoint. The
trainer knows no model or method by name: it builds both through their registries.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from dlm_jax import checks
from dlm_jax import mesh as mesh_lib
from dlm_jax.eval import evaluators
from dlm_jax.runs import checkpoint as ckpt_lib
from dlm_jax.runs import init_from
from dlm_jax.train import optim
from dlm_jax.train import state as state_lib
from dlm_jax.train import step as step_lib

STEP_IMPLS = ("jit", "shard_map")


# ----------------------------------------------------------------------------------------------
# Config validation (before anything compiles).
# ----------------------------------------------------------------------------------------------
def validate_config(config, num_devices: int, process_count: int = 1, *,
                    check_method: bool = True, check_source: bool = True):
    """One-line ValueErrors naming key, value and what is allowed, before anything is written or
    compiled. ``check_method`` / ``check_source``: check names against the registries (off for
    injected components). Returns the method built on a probe copy (``check_buildable``), or None."""
    from dlm_jax.methods.base import method_names
    from dlm_jax.models.registry import resolve_name as resolve_model_name

    for section in ("model", "method", "data", "train", "mesh", "checkpoint"):
        if section not in config:
            checks.fail(section, None, "a config section")
    if check_method:
        checks.check_choice("method.name", config.method.get("name"), method_names())
    resolve_model_name(config)
    t = config.train
    for key in ("steps", "batch_size"):
        checks.check_int(f"train.{key}", t.get(key), min=1)
    optim.validate(t)
    step_lib.resolve_dtype(t.get("compute_dtype", None))
    impl = checks.resolve(t, "step_impl", "jit", prefix="train", check=checks.check_choice, allowed=STEP_IMPLS)
    checks.resolve(t, "max_nonfinite_steps", 10, prefix="train", check=checks.check_int, min=0)
    sizes = mesh_lib.mesh_shape(config.mesh, num_devices)
    dp = sizes[0] * sizes[1]
    if impl == "shard_map" and config.mesh.get("strategy", "dp") != "dp":
        checks.fail("mesh.strategy", config.mesh.strategy, "'dp' with train.step_impl='shard_map'")
    k = t.get("microbatches", 1) or 1
    if t.batch_size % dp:
        checks.fail("train.batch_size", t.batch_size, f"a multiple of the data-parallel size {dp} "
             f"(mesh data x fsdp = {sizes[0]} x {sizes[1]})")
    if t.batch_size % process_count:
        checks.fail("train.batch_size", t.batch_size, f"a multiple of the process count {process_count}")
    if (t.batch_size // dp) % k:
        checks.fail("train.microbatches", k, f"a divisor of the per-device batch {t.batch_size // dp}")
    seq_len, max_len = config.data.get("seq_len"), config.model.get("max_len", 1024)
    if not isinstance(seq_len, int) or seq_len < 1:
        checks.fail("data.seq_len", seq_len, "an int >= 1")
    if seq_len > max_len:
        checks.fail("data.seq_len", seq_len, f"<= model.max_len={max_len}")
    if check_source:
        from dlm_jax.data.pipeline import validate_data_config

        validate_data_config(config.data)
    if "sample" in config and config.sample.get("sampler"):
        from dlm_jax.samplers import SAMPLERS

        if config.sample.sampler not in SAMPLERS:
            checks.fail("sample.sampler", config.sample.sampler, f"one of {tuple(SAMPLERS)}")
    for key in ("every", "keep"):
        checks.check_int(f"checkpoint.{key}", config.checkpoint.get(key), min=0)
    init_from.validate(config.get("init_from", None))
    evaluators.eval_blocks(config)
    method = check_buildable(config) if check_method else None
    sampler = config.get("sample", {}).get("sampler", None) if "sample" in config else None
    if method is not None and sampler and method.samplers and sampler not in method.samplers:
        checks.fail("sample.sampler", sampler, f"a sampler for method {config.method.name!r}: one of {method.samplers}")
    return method


def check_buildable(config):
    """Build the model and the method on a copy of ``config`` (no params are made, no file is
    written), so a bad model or method key stops the run before the workdir or the tokenizer is
    touched. V is provisional when the tokenizer does not exist yet."""
    from dlm_jax.methods.base import build_method, model_spec
    from dlm_jax.models import registry

    probe = ml_collections.ConfigDict(config.to_dict())
    if probe.model.get("vocab_size", None) is None:
        with probe.unlocked():
            probe.model.vocab_size = _provisional_vocab(probe.data)
    model = registry.build(probe, model_spec(probe))
    return build_method(probe, model.apply, inputs={})


def _provisional_vocab(data) -> int:
    """V of a source's own tokenizer (synthetic sources), else the sentencepiece target size."""
    try:
        from dlm_jax.data.registry import get_source, validate_data_config

        cfg = validate_data_config(data)
        tokenizer = get_source(cfg["source"]).tokenizer
        if tokenizer is not None:
            return int(tokenizer(cfg).vocab_size)
        return int(cfg.get("tokenizer_vocab_size") or 2)
    except (ValueError, KeyError, ImportError):
        return int(data.get("tokenizer_vocab_size", 2) or 2)


# ----------------------------------------------------------------------------------------------
# Default components: the grain pipeline.
# ----------------------------------------------------------------------------------------------
def grain_data(config, *, split: str, process_index: int, process_count: int, workdir: str):
    """The grain iterator of local batches for this process (``dlm_jax.data.pipeline``)."""
    from dlm_jax.data.pipeline import build_pipeline, train_or_load_tokenizer

    tok = train_or_load_tokenizer(config.data, workdir)
    ds = build_pipeline(config.data, tok, batch_size=config.train.batch_size // process_count,
                        seq_len=config.data.seq_len, seed=int(config.seed), process_index=process_index,
                        process_count=process_count, split=split)
    return iter(ds)


def _prepare_vocab(config, workdir: str) -> None:
    """Fill ``model.vocab_size`` (V) from the tokenizer (trained once, by process 0)."""
    from dlm_jax.data.pipeline import train_or_load_tokenizer
    from jax.experimental import multihost_utils

    if jax.process_index() == 0:
        tok = train_or_load_tokenizer(config.data, workdir)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("tokenizer")
    tok = train_or_load_tokenizer(config.data, workdir)
    v = config.model.get("vocab_size", None)
    if v is not None and v != tok.vocab_size:
        checks.fail("model.vocab_size", v, f"the tokenizer's vocab_size {tok.vocab_size}")
    with config.unlocked():
        config.model.vocab_size = tok.vocab_size


# ----------------------------------------------------------------------------------------------
# Metrics output.
# ----------------------------------------------------------------------------------------------
class MetricWriter:
    """JSONL + TensorBoard (tensorboardX) on process 0; a no-op elsewhere.

    Opened at the step training resumes from, it drops every record beyond that step (they were
    written by a run that crashed or was cut after its last checkpoint), so each step appears once;
    non-finite values are written as ``null`` (valid JSON)."""

    def __init__(self, workdir: str, start_step: int = 0):
        self.active = jax.process_index() == 0
        if self.active:
            from tensorboardX import SummaryWriter

            path = os.path.join(workdir, "metrics.jsonl")
            if os.path.exists(path):
                kept = [line for line in open(path) if _record_step(line) <= start_step]
                with open(path + ".tmp", "w") as f:
                    f.writelines(kept)
                os.replace(path + ".tmp", path)
            self.jsonl = open(path, "a")
            self.tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=start_step + 1)

    def write(self, step: int, metrics: dict[str, float]):
        if not self.active:
            return
        clean = {k: (v if np.isfinite(v) else None) for k, v in metrics.items()}
        self.jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
        self.jsonl.flush()
        for k, v in metrics.items():
            self.tb.add_scalar(k, v, int(step))

    def close(self):
        if self.active:
            self.jsonl.close()
            self.tb.close()


def _record_step(line: str) -> float:
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a torn last line: drop it


class NonFiniteGuard:
    """Counts consecutive skipped (non-finite) steps without a per-step host sync: the flags are
    read in one batch at log / checkpoint steps; ``check`` raises after ``limit`` in a row."""

    def __init__(self, limit: int):
        self.limit, self.pending, self.streak, self.total, self.first = limit, [], 0, 0, None

    def add(self, step: int, skipped) -> None:
        self.pending.append((step, skipped))

    def check(self) -> None:
        if not self.pending:
            return
        flags = jax.device_get([s for _, s in self.pending])
        for (step, _), flag in zip(self.pending, flags):
            if float(np.asarray(flag)) > 0:
                self.total += 1
                self.first = step if self.streak == 0 else self.first
                self.streak += 1
            else:
                self.streak = 0
        self.pending = []
        if self.limit and self.streak >= self.limit:
            raise ValueError(f"train.max_nonfinite_steps: {self.limit}; exceeded: steps {self.first}.."
                             f"{self.first + self.streak - 1} all had a non-finite loss or gradient and were skipped "
                             "(lower train.lr or check the data); no state was changed or saved")


def _floats(tree) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(tree).items()}


# ----------------------------------------------------------------------------------------------
# The trainer.
# ----------------------------------------------------------------------------------------------
def train(config, workdir: str, *, data_fn: Callable | None = None) -> dict[str, Any]:
    """Train (or resume) ``config`` in ``workdir``. Returns ``{"state", "step", "preempted"}``.

    The model and the method come from their registries (``config.model.name``,
    ``config.method.name``); ``data_fn(config, *, split, process_index, process_count) -> iterator``
    replaces the grain pipeline (tests, forks).
    """
    config = ml_collections.ConfigDict(config.to_dict() if hasattr(config, "to_dict") else config)
    mesh_lib.maybe_initialize_distributed(config)
    pid, nproc = jax.process_index(), jax.process_count()
    validate_config(config, jax.device_count(), nproc, check_source=data_fn is None)
    os.makedirs(workdir, exist_ok=True)  # only once the config is known to be good
    if data_fn is None:
        _prepare_vocab(config, workdir)
        data_fn = lambda c, **kw: grain_data(c, workdir=workdir, **kw)  # noqa: E731
    from dlm_jax.methods.base import build_method, checkpoint_inputs, model_spec
    from dlm_jax.models import registry
    from dlm_jax.runs.workdir import resolve_inputs

    t, mc = config.train, config.mesh
    strategy, total = mc.get("strategy", "dp"), int(t.steps)
    mesh = mesh_lib.make_mesh(mc)
    # Model, method, optimizer, sharded state: traced outside the mesh context (nnx.eval_shape
    # under jax.set_mesh would read the logical names as mesh axes); shardings are explicit.
    model = registry.build(config, model_spec(config))
    method = build_method(config, model.apply, inputs=resolve_inputs(checkpoint_inputs(config), mesh))
    evals = evaluators.build_evaluators(config)
    with config.unlocked():
        config.workdir = workdir
    if pid == 0:
        print(f"dlm_jax train: workdir={workdir}\n{config}", flush=True)
    optimizer = optim.make_optimizer(t, total)

    # Data, checkpoint, resume.
    train_iter = data_fn(config, split="train", process_index=pid, process_count=nproc)
    ck = config.checkpoint
    checkpointer = ckpt_lib.Checkpointer(workdir, every=ck.every, keep=ck.keep,
                                         async_save=ck.get("async_save", True))
    key = jax.random.key(int(config.seed))
    base = (lambda: model.init(key), optimizer, method.init_extra, int(config.seed), mesh, strategy)
    target, shards = state_lib.abstract_train_state(*base)
    restored = checkpointer.restore_latest(target, train_iter)
    if restored is not None:
        state, _ = restored
        if pid == 0:
            print(f"resumed from {checkpointer.step_dir(int(state.step))}", flush=True)
    else:
        init_params, inputs = init_from.initializer(config, model, mesh)
        state, _ = state_lib.create_train_state(init_params, *base[1:], inputs=inputs)
    start = int(jax.device_get(state.step))
    if start >= total and pid == 0:
        print(f"{workdir} is already trained to step {start} (train.steps={total}): nothing to train", flush=True)

    with jax.set_mesh(mesh):
        # Steps.
        make = (step_lib.make_train_step_shard_map if t.get("step_impl", "jit") == "shard_map"
                else step_lib.make_train_step)
        train_step = make(method, t, mesh=mesh, state_shardings=shards, total_steps=total,
                          microbatches=t.get("microbatches", 1) or 1,
                          compute_dtype=t.get("compute_dtype", None))
        ctx = evaluators.EvalContext(
            config=config, method=method, workdir=workdir, rng=jax.random.key(int(config.seed) + 1),
            batches=lambda split: data_fn(config, split=split, process_index=pid, process_count=nproc),
            compile=lambda fn: step_lib.make_eval_step(fn, mesh=mesh, params_shardings=shards.params,
                                                       compute_dtype=t.get("compute_dtype", None)),
            to_device=lambda local: step_lib.global_batch(local, mesh))

        def run_evals(step):
            due = [n for n, (b, _) in evals.items() if b["every"] and step % b["every"] == 0]
            if due:
                writer.write(step, evaluators.run_evaluators(
                    evals, ctx, lambda b: state.ema_params if b["ema"] else state.params, names=due))
            return bool(due)

        writer = MetricWriter(workdir, start)
        guard_nf = NonFiniteGuard(int(t.get("max_nonfinite_steps", 10)))
        preempted = False
        tokens_per_step = t.batch_size * config.data.seq_len
        log_every = max(int(t.get("log_every", 1)), 1)
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, disable=pid != 0, dynamic_ncols=True)
        t_log, steps_since = time.perf_counter(), 0
        with ckpt_lib.PreemptionGuard(enabled=ck.get("save_on_signal", True)) as guard:
            for step in range(start + 1, total + 1):
                batch = step_lib.global_batch(next(train_iter), mesh)
                state, metrics = train_step(state, batch)
                guard_nf.add(step, metrics["skipped"])
                steps_since += 1
                bar.update(1)
                if step % log_every == 0 or step == total or checkpointer.due(step):
                    try:
                        guard_nf.check()
                    except ValueError:
                        checkpointer.close()
                        bar.close()
                        writer.close()
                        raise
                if step % log_every == 0 or step == total:
                    m = _floats(metrics)
                    dt = time.perf_counter() - t_log
                    m["tokens_per_s"] = steps_since * tokens_per_step / dt
                    m["step_time_s"] = dt / steps_since
                    m["checkpoint/save_block_s"] = checkpointer.last_save_block_s
                    writer.write(step, m)
                    bar.set_postfix(loss=f"{m['loss']:.4f}", tok_s=f"{m['tokens_per_s']:.0f}")
                    t_log, steps_since = time.perf_counter(), 0
                evaluated = run_evals(step)
                if checkpointer.due(step):
                    checkpointer.save(step, state, train_iter, config)
                if evaluated or checkpointer.due(step):
                    t_log, steps_since = time.perf_counter(), 0  # eval / save time out of tokens/s
                if guard.should_stop():
                    preempted = True
                    break
        last = int(jax.device_get(state.step))
        checkpointer.save(last, state, train_iter, config)
        checkpointer.close()
        bar.close()
        writer.close()
        if pid == 0 and preempted:
            print(f"preempted: saved {checkpointer.step_dir(last)}", flush=True)
    return {"state": state, "step": last, "preempted": preempted}
