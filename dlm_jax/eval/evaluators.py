"""Evaluators as data (big_vision's ``config.evals``): declared in the config, run by the trainer's
periodic eval and the CLI's ``eval`` alike, so a new metric is a new evaluator, not a new branch.

Config::

    config.evals.<name> = {"kind": "sums", "split": "validation", "batches": 8, "every": 200,
                           "ema": False, ...kind-specific keys}

``every`` (trainer steps; 0 = only at the end / on request) and ``ema`` (score the EMA params)
are read by the callers; the rest by the evaluator. Metrics are reported as ``<name>/<metric>``.

An evaluator kind is registered as ``register_evaluator(kind, factory)`` with
``factory(block) -> evaluator`` and ``evaluator.run(ctx, params) -> dict[str, float]``; ``ctx`` is
an ``EvalContext`` (the method, the config, batches of a split, a jit helper and a key).

Built in: ``"sums"`` — the method's ``evaluate`` sums reduced over batches
(``eval.reduce``): ``<x>_sum / num_tokens`` for every sum, plus bits/token and the PPL bound
beside a NELBO; ``"unigram"`` (``eval.baselines``) — the split's cross-entropy under the train
unigram, the score of a model that ignores context.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
import ml_collections

from dlm_jax import checks
from dlm_jax.eval.reduce import nelbo_units, ratios, reduce_sums

__all__ = ["EvalContext", "register_evaluator", "evaluator_kinds", "eval_blocks", "build_evaluators",
           "run_evaluators", "default_evals", "SumsEvaluator"]

_KINDS: dict[str, Callable[[dict], Any]] = {}
_COMMON = dict(kind="sums", split="validation", batches=8, every=0, ema=False)


@dataclasses.dataclass
class EvalContext:
    """What an evaluator may use. ``batches(split)`` yields process-local batches (dicts of named
    fields); ``compile(fn)`` jits ``fn(params, batch, rng) -> sums`` for this mesh (sharded params
    and batch); ``to_device(batch)`` makes a local batch global; ``rng`` is the evaluation key."""

    config: Any
    method: Any
    batches: Callable[[str], Iterator[dict]]
    compile: Callable[[Callable], Callable]
    to_device: Callable[[dict], dict]
    rng: Any
    workdir: str = ""


def register_evaluator(kind: str, factory: Callable[[dict], Any]) -> None:
    """Make ``config.evals.<name>.kind = kind`` build ``factory(block)``."""
    _KINDS[checks.check_str("evals kind", kind)] = factory


def evaluator_kinds() -> tuple[str, ...]:
    return tuple(sorted(_KINDS))


def default_evals(batches: int = 8, every: int = 0, ema: bool = False) -> ml_collections.ConfigDict:
    """The default block: the method's own sums (e.g. the NELBO) on the validation split."""
    return ml_collections.ConfigDict({"eval": dict(_COMMON, batches=batches, every=every, ema=ema)})


def eval_blocks(config) -> dict[str, dict]:
    """``config.evals`` checked, each block completed with the common defaults (written back)."""
    if "evals" not in config:
        with config.unlocked():
            config.evals = default_evals()
    blocks = {}
    for name, block in config.evals.items():
        if not hasattr(block, "get"):
            checks.fail(f"evals.{name}", block, "a dict with a 'kind'")
        for key, default in _COMMON.items():
            checks.resolve(block, key, default, prefix=f"evals.{name}")
        checks.check_choice(f"evals.{name}.kind", block.kind, evaluator_kinds())
        checks.check_int(f"evals.{name}.batches", block.batches, min=1)
        checks.check_int(f"evals.{name}.every", block.every, min=0)
        checks.check_bool(f"evals.{name}.ema", block.ema)
        checks.check_str(f"evals.{name}.split", block.split)
        blocks[name] = block.to_dict() if hasattr(block, "to_dict") else dict(block)
    return blocks


def build_evaluators(config) -> dict[str, tuple[dict, Any]]:
    """``{name: (block, evaluator)}`` for ``config.evals`` (validated before anything compiles)."""
    return {name: (block, _KINDS[block["kind"]](block)) for name, block in eval_blocks(config).items()}


def run_evaluators(evaluators: dict, ctx: EvalContext, params_for: Callable[[dict], Any], *,
                   names=None, batches: int | None = None) -> dict[str, float]:
    """Run the named evaluators (all by default); ``params_for(block)`` picks raw or EMA params;
    ``batches`` overrides every block's count. Returns ``{"<name>/<metric>": value}``."""
    out = {}
    for name, (block, evaluator) in evaluators.items():
        if names is not None and name not in names:
            continue
        if batches is not None:
            block = dict(block, batches=batches)
            evaluator = _KINDS[block["kind"]](block)
        for key, value in evaluator.run(ctx, params_for(block)).items():
            out[f"{name}/{key}"] = value
    return out


class SumsEvaluator:
    """The method's ``evaluate`` sums over ``batches`` batches of ``split``, reduced once."""

    def __init__(self, block: dict):
        self.split, self.batches = block["split"], int(block["batches"])

    def run(self, ctx: EvalContext, params) -> dict[str, float]:
        step = ctx.compile(ctx.method.evaluate)
        totals, done = reduce_sums(step, params, ctx.batches(self.split), ctx.rng, max_batches=self.batches,
                                   prepare=ctx.to_device)
        if not done:
            checks.fail(f"data split {self.split!r}", 0, "at least one batch to evaluate")
        return nelbo_units(dict(ratios(totals), num_batches=float(done)))


register_evaluator("sums", SumsEvaluator)


def plain_context(config, method, batches, rng, mesh=None, workdir: str = "") -> EvalContext:
    """A context for one process without explicit shardings (CLI ``eval``, tests): ``jax.jit``."""
    import jax.numpy as jnp

    def compile_fn(fn):
        jitted = jax.jit(fn)

        def run(params, batch, key):
            if mesh is None:
                return jitted(params, batch, key)
            with jax.set_mesh(mesh):
                return jitted(params, batch, key)

        return run

    return EvalContext(config=config, method=method, batches=batches, compile=compile_fn,
                       to_device=lambda b: {k: jnp.asarray(v) for k, v in b.items()}, rng=rng, workdir=workdir)


from dlm_jax.eval import baselines  # noqa: E402,F401 - registers "unigram"
from dlm_jax.eval import translation  # noqa: E402,F401 - registers "bleu"
