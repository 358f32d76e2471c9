"""The sampled-quality run: sample a run at each step count, score the samples, write JSON + a plot.

    python -m dlm_jax eval --workdir DIR --sampler S --steps 8,32,128 --metrics gen_ppl,entropy \
        --judge run:DIR2 [--num-samples N --batch-size B --out result.json]

Metrics by name (``metric_names()``; ``register_metric`` adds one): ``gen_ppl`` (judge NLL/PPL,
``eval.judges``), ``entropy`` (unigram + sequence entropy), ``distinct`` (distinct-1..4),
``repetition`` (repetition-1..4; all three from ``eval.quality``), ``exact_nll`` (the true chain's NLL
of samples of a Markov-language run), ``mauve`` (optional extra ``mauve-text``, judge features of the
samples against as many validation texts). Everything a request names is checked before sampling.

Seeds are per example: sample ``i`` is drawn alone (``vmap`` over keys ``fold_in(key(seed), i)``,
``num_samples=1`` each), so a result does not move with ``batch_size``. Sampling runs under
``jax.enable_x64`` so categorical draws are float64 Gumbel (``samplers.categorical``, "auto").
Wall-clock excludes compilation (compiled ahead of time per step count). Samples are cut at the run's first
EOS before every metric.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from dlm_jax import checks
from dlm_jax.eval import judges, quality

__all__ = ["register_metric", "metric_names", "check_request", "sample_tokens", "score", "run_quality", "plot"]

MAUVE_MIN_PER_CLUSTER = 10  # MAUVE's default: k-means with num_samples / 10 clusters, at least 2


@dataclasses.dataclass(frozen=True)
class Metric:
    """``fn(ctx) -> {name: float}``; ``ctx`` has rows, texts, ended, judge, run, num_samples."""

    fn: Callable[[dict], dict]
    needs_judge: bool = False
    check: Callable[[Any, int], None] | None = None  # (run_config, num_samples) -> None, before sampling


def _gen_ppl(ctx):
    r = judges.gen_nll(ctx["judge"], ctx["texts"], ctx["ended"])
    return {k: r[k] for k in ("gen_nll", "gen_nll_se", "gen_ppl", "judge_tokens", "per_sample_nll",
                              "per_sample_tokens")}


def _entropy(ctx):
    m = quality.diversity_metrics(ctx["rows"])
    return {k: m[k] for k in ("unigram_entropy", "unigram_entropy_bits", "sequence_entropy")}


def _prefixed(prefix):
    return lambda ctx: {k: v for k, v in quality.diversity_metrics(ctx["rows"]).items() if k.startswith(prefix)}


def _check_markov(config, num_samples):
    if config is not None and config.data.get("source") != "markov":
        checks.fail("--metrics", "exact_nll", "a run on the Markov language (data.source='markov')")


def _exact_nll(ctx):
    from dlm_jax.eval.generate import exact_score

    s = exact_score(ctx["run"], ctx["tokens"])
    return {"exact_nll": -s["log_prob_per_token"], "exact_nll_stderr": s["stderr"],
            "exact_entropy_per_token": -s["exact_per_token"]}


def _check_mauve(config, num_samples):
    if num_samples < 2 * MAUVE_MIN_PER_CLUSTER:
        checks.fail("--num-samples", num_samples, f">= {2 * MAUVE_MIN_PER_CLUSTER} for mauve (num_samples/"
                                                  f"{MAUVE_MIN_PER_CLUSTER} k-means clusters, at least 2)")
    if importlib.util.find_spec("mauve") is None:
        checks.fail("--metrics", "mauve", "mauve-text installed for it: pip install dlm_jax[mauve]")


def _mauve(ctx):
    import mauve  # optional extra (GPL): never vendored

    judge, run = ctx["judge"], ctx["run"]
    if judge.features_fn is None:
        checks.fail("--judge", judge.name, "a judge with features for mauve (hf:<folder>)")
    refs = _reference_texts(run, len(ctx["texts"]))
    p = _features(judge, refs)
    q = _features(judge, ctx["texts"])
    out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=max(2, len(q) // MAUVE_MIN_PER_CLUSTER),
                              verbose=False)
    return {"mauve": float(out.mauve)}


def _features(judge, texts):
    """Final hidden state at the last token of each text's first window (MAUVE's feature)."""
    feats = []
    for text in texts:
        ids = judges.check_encodes(judge, text, "text")[: judge.context - 1] or [judge.bos_id]
        h = np.asarray(judge.features_fn(np.asarray([[judge.bos_id] + ids], np.int32)))
        feats.append(h[0, len(ids)])
    return np.stack(feats)


def _reference_texts(run, n):
    from dlm_jax.train import loop

    it = loop.grain_data(run.config, split="validation", process_index=0, process_count=1, workdir=run.workdir)
    rows = []
    for batch in it:
        rows.extend(np.asarray(batch["tokens"]))
        if len(rows) >= n:
            break
    return [run.tokenizer.decode(r) for r in rows[:n]]


_METRICS: dict[str, Metric] = {
    "gen_ppl": Metric(_gen_ppl, needs_judge=True),
    "entropy": Metric(_entropy),
    "distinct": Metric(_prefixed("distinct_")),
    "repetition": Metric(_prefixed("repetition_")),
    "exact_nll": Metric(_exact_nll, check=_check_markov),
    "mauve": Metric(_mauve, needs_judge=True, check=_check_mauve),
}


def register_metric(name: str, metric: Metric) -> None:
    _METRICS[checks.check_str("metric name", name)] = metric


def metric_names() -> tuple[str, ...]:
    return tuple(sorted(_METRICS))


def check_request(metrics, judge: str | None, num_samples: int, config=None) -> list[str]:
    """Every name and option of a request checked (one-line errors), before anything is sampled."""
    names = [metrics] if isinstance(metrics, str) else list(metrics or [])
    if not names:
        checks.fail("--metrics", "", f"comma-separated names from {metric_names()}")
    for name in names:
        checks.check_choice("--metrics", name, metric_names())
    checks.check_int("--num-samples", num_samples, min=1)
    if any(_METRICS[n].needs_judge for n in names):
        if not judge:
            needing = [n for n in names if _METRICS[n].needs_judge]
            checks.fail("--judge", judge, f"a judge for {needing}: run:<workdir> (an 'ar' run) or hf:<folder>")
    if judge:
        judges.check_judge_spec(judge)
    for name in names:
        if _METRICS[name].check is not None:
            _METRICS[name].check(config, num_samples)
    return names


def sample_tokens(method, params, *, steps: int, sampler: str | None, num_samples: int, seed: int = 0,
                  batch_size: int = 16, mesh=None, **sampler_kw):
    """``(tokens [N, L] numpy, nfe [N], seconds)``: sample ``i`` drawn alone with key ``fold_in(key(seed), i)``,
    ``batch_size`` of them per vmapped call; float64 categorical draws. ``seconds`` excludes compiling
    (the first call of a compiled program may still pay one-off allocation costs)."""
    checks.check_int("--batch-size", batch_size, min=1)
    b = min(batch_size, num_samples)

    def one(key):
        tokens, info = method.sample(params, key, num_samples=1, steps=steps, sampler=sampler, **sampler_kw)
        return tokens[0], info["nfe"].reshape(-1)[0]

    draw = jax.jit(jax.vmap(one))
    base = jax.random.key(seed)
    chunks = [list(range(s, min(s + b, num_samples))) for s in range(0, num_samples, b)]
    ctx = jax.set_mesh(mesh) if mesh is not None else _Null()
    with jax.enable_x64(True), ctx:
        keys = lambda idx: jax.vmap(lambda i: jax.random.fold_in(base, i))(np.asarray(idx + idx[:1] * (b - len(idx))))  # noqa: E731
        compiled = draw.lower(keys(chunks[0])).compile()  # compiled ahead, not run: the clock counts sampling only
        t0 = time.perf_counter()
        outs = [jax.block_until_ready(compiled(keys(idx))) for idx in chunks]
        seconds = time.perf_counter() - t0
    tokens = np.concatenate([np.asarray(t)[: len(idx)] for (t, _), idx in zip(outs, chunks)])
    nfe = np.concatenate([np.asarray(n)[: len(idx)] for (_, n), idx in zip(outs, chunks)])
    return tokens, nfe, seconds


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def cut_at_eos(tokens, eos_id) -> tuple[list[np.ndarray], list[bool]]:
    """Rows cut before the first ``eos_id`` (dropped) and whether each row had one."""
    rows, ended = [], []
    for row in np.asarray(tokens):
        hit = np.flatnonzero(row == eos_id) if eos_id is not None else np.zeros(0, int)
        rows.append(row[: hit[0]] if hit.size else row)
        ended.append(bool(hit.size))
    return rows, ended


def score(run, tokens, names, judge=None) -> dict[str, float]:
    """Every metric in ``names`` on ``tokens`` ``[N, L]`` of ``run`` (cut at the run's first EOS)."""
    from dlm_jax.eval.generate import decode

    eos = getattr(run.tokenizer, "eos_id", None)
    rows, ended = cut_at_eos(tokens, eos)
    texts = [decode(run, r[None])[0] for r in rows]
    ctx = {"run": run, "tokens": np.asarray(tokens), "rows": rows, "ended": ended, "texts": texts, "judge": judge,
           "num_samples": len(rows)}
    out = {}
    for name in names:
        out.update(_METRICS[name].fn(ctx))
    return out


def probe_judge(run, judge) -> None:
    """Before sampling: the judge's tokenizer must encode every text piece of the run's vocabulary."""
    tok = run.tokenizer
    if not hasattr(tok, "id_to_piece"):
        pieces = [tok.decode(np.arange(tok.vocab_size))]
    else:
        ids = [i for i in range(tok.vocab_size) if not tok.id_to_piece(i).startswith(("<0x", "<"))]
        pieces = [tok.decode(np.asarray([i])) for i in ids]
    judges.check_encodes(judge, "".join(p for p in pieces if "\ufffd" not in p), "the run's vocabulary")


def run_quality(run, *, steps_list, sampler=None, metrics=("entropy",), judge=None, num_samples=16, seed=0,
                batch_size=16, out=None, make_plot=True, **sampler_kw) -> dict:
    """Sample ``run`` at each step count, score, and write ``out`` (JSON) and ``out`` with ``.png``."""
    from dlm_jax.runs.checkpoint import git_sha, library_versions

    names = check_request(metrics, judge, num_samples, run.config)
    if sampler is not None:
        from dlm_jax.samplers import get_sampler

        get_sampler(sampler)
    judge_obj = judges.load_judge(judge) if judge else None
    if judge_obj is not None:
        probe_judge(run, judge_obj)
    name = sampler or run.config.get("sample", {}).get("sampler", None)
    for steps in steps_list:  # a step count the sampler refuses fails here, traced only, before any sampling
        with jax.enable_x64(True):
            jax.eval_shape(lambda k, s=int(steps): run.method.sample(run.params, k, num_samples=1, steps=s, sampler=name,
                                                                     **sampler_kw), jax.random.key(0))
    rows = []
    for steps in steps_list:
        tokens, nfe, seconds = sample_tokens(run.method, run.params, steps=int(steps), sampler=name,
                                             num_samples=num_samples, seed=seed, batch_size=batch_size,
                                             mesh=run.mesh, **sampler_kw)
        row = {"steps": int(steps), "nfe": float(nfe.mean()), "nfe_max": int(nfe.max()), "seconds": seconds,
               "seconds_per_sample": seconds / num_samples}
        row.update(score(run, tokens, names, judge_obj))
        rows.append(row)
    result = {"workdir": run.workdir, "checkpoint_step": int(run.step), "method": run.config.method.name,
              "sampler": name, "metrics": names, "judge": judge, "num_samples": num_samples, "seed": seed,
              "seeds": f"per example: fold_in(key({seed}), i), i < {num_samples}", "batch_size": batch_size,
              "categorical": "gumbel64 (float64, jax.enable_x64)", "sampler_options": sampler_kw,
              "rows": rows, "config": run.config.to_dict(), "git_sha": git_sha(), "versions": library_versions()}
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=1, default=str)
        if make_plot:
            result["plot"] = plot(result, os.path.splitext(out)[0] + ".png")
    return result


PLOTTED = ("gen_ppl", "exact_nll", "unigram_entropy", "sequence_entropy", "distinct_4", "repetition_4", "mauve")


def plot(result: dict, path: str) -> str:
    """Quality vs NFE: one panel per plotted metric present, NFE on a log axis. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in PLOTTED if k in result["rows"][0]]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.2 * max(1, len(keys)), 3), squeeze=False)
    nfe = [r["nfe"] for r in result["rows"]]
    for ax, key in zip(axes[0], keys):
        ax.plot(nfe, [r[key] for r in result["rows"]], "o-")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE")
        ax.set_title(key)
    fig.suptitle(f"{result['method']} / {result['sampler']} (judge {result['judge']})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


SHOWN = ("gen_nll", "gen_nll_se", "gen_ppl", "exact_nll", "unigram_entropy", "sequence_entropy", "distinct_4", "repetition_4", "mauve")


def summary_lines(result: dict) -> list[str]:
    """A small text table of ``result``: one line per step count."""
    keys = [k for k in SHOWN if k in result["rows"][0]]
    head = f"{'steps':>6} {'NFE':>7} {'s/sample':>9} " + " ".join(f"{k:>16}" for k in keys)
    lines = [f"{result['workdir']} (step {result['checkpoint_step']}), sampler {result['sampler']}, "
             f"judge {result['judge']}, {result['num_samples']} samples", head]
    for r in result["rows"]:
        lines.append(f"{r['steps']:>6} {r['nfe']:>7.1f} {r['seconds_per_sample']:>9.4f} "
                     + " ".join(f"{r[k]:>16.4f}" for k in keys))
    return lines
