"""FeF-DLLM exactness and cost on the Markov-chain language (METHODS §5.6.4).

Compares, with one model, at steps ∈ {1, 2, 4, 16}:

* FeF-DLLM (speculative, marginal-confidence selection, temperature 1);
* the standard sampler (independent marginals, same selection);
* exact one-token-per-step decoding (standard sampler with L steps, K = 1): the exactness reference.

Models: ``--model oracle`` is the exact forward–backward posterior of a random chain (FeF must
match −H(p*) at every step count; the oracle is nearly free to evaluate, so its wall-clock measures
sampler overhead, not model cost). ``--model checkpoint --workdir DIR`` is a trained MDLM DiT
(``configs/mdlm_markov.py``); FeF is then exact w.r.t. the model, so its E log p* must match exact
K = 1 decoding with the same model (Δ column), and samples are scored under the TRUE chain.

Reported per sampler: E log p*(x) ± s.e.; sequential model calls (NFE) and useful batch rows per
sample; the batched program's calls and physically evaluated rows per sample (padding included);
FeF rounds per step beside ``R(K − 1, â)``; wall-clock ms per sample for the batch of ``--samples``
(best of ``--repeats`` compiled runs) and ms per sequence generated alone (batch 1, ``--latency``
sequences). Prints a markdown table and saves a PNG.

    python benchmarks/fef_exactness.py --model oracle --samples 1000 --out benchmarks/results/fef_exactness.png
    python benchmarks/fef_exactness.py --model checkpoint --workdir runs/mdlm_markov --samples 1000 \\
        --out benchmarks/results/fef_exactness_dit.png
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from dlm_jax.samplers import fef_rounds, get_sampler


def _prepare(name, fn, n, length, steps, vocab):
    """The public sampler jitted whole, ``key -> (tokens, info)``: its arguments are validated once,
    while tracing, so timings run only compiled code, for every sampler alike. Marginal-confidence
    selection and temperature 1 (exact sampling) for both."""
    sampler = get_sampler("fef" if name == "FeF" else "llada")
    kw = dict(num_samples=n, length=length, steps=steps, vocab_size=vocab, selection="confidence", temperature=1.0)
    return jax.jit(lambda key: sampler(fn, key, **kw))


def _timed(run, key, repeats):
    jax.block_until_ready(run(key))  # compile + warm up
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        tokens, info = jax.block_until_ready(run(key))
        best = min(best, time.perf_counter() - start)
    return tokens, info, best


def _latency(name, fn, length, steps, vocab, count):
    """ms per sequence generated alone (batch 1), after one compiled warm-up."""
    run = _prepare(name, fn, 1, length, steps, vocab)
    jax.block_until_ready(run(jax.random.key(0)))
    start = time.perf_counter()
    for i in range(count):
        jax.block_until_ready(run(jax.random.key(i + 1)))
    return 1e3 * (time.perf_counter() - start) / count


def evaluate(fn, score, args, length, vocab):
    """All samplers at all step counts; ``score(tokens) -> log p*(x) [B]`` (nats per sequence)."""
    n, rows = args.samples, []
    step_list = [int(s) for s in args.steps.split(",")]
    plan = [("FeF", s) for s in step_list] + [("standard", s) for s in step_list if s != length] + [("exact K=1", length)]
    for name, steps in plan:
        run = _prepare("FeF" if name == "FeF" else "standard", fn, n, length, steps, vocab)
        tokens, info, wall = _timed(run, jax.random.key(1000 * (name == "FeF") + steps), args.repeats)
        lp = np.asarray(score(tokens), np.float64)
        info = {k: np.asarray(v) for k, v in info.items()}
        row = dict(sampler=name, steps=steps, ll=lp.mean(), se=lp.std(ddof=1) / np.sqrt(n), nfe=info["nfe"].mean(),
                   rows=info["rows"].mean(), calls=int(info["nfe_batched"]), phys=float(info["rows_batched"]) / n,
                   ms=1e3 * wall / n, rounds="", pred="", lat=np.nan)
        if name == "FeF":
            a_hat = fef_rounds.acceptance_rate(info)
            row["rounds"] = f"{info['rounds'].mean():.2f}"
            proposals = info["accepted"].sum() + info["rejected"].sum()
            row["pred"] = (f"{float(np.mean(fef_rounds.step_rounds(info['k'][0], a_hat))):.2f} (â={a_hat:.3f})"
                           if proposals else "0.00 (K=1: no proposals)")
        if args.latency:
            row["lat"] = _latency("FeF" if name == "FeF" else "standard", fn, length, steps, vocab, args.latency)
        rows.append(row)
        print(f"  {name:9s} steps {steps:2d}: E log p* {row['ll']:.3f} ± {row['se']:.3f}, nfe {row['nfe']:.2f}, "
              f"rows {row['rows']:.2f}, {row['ms']:.4f} ms/sample, {row['lat']:.2f} ms/sequence", flush=True)
    return rows


def run_oracle(args):
    from dlm_jax.testing.oracles import MarkovChainLanguage

    chain = MarkovChainLanguage.random(args.seed, vocab_size=args.vocab, length=args.length)
    rows = evaluate(jax.jit(chain.denoise_fn(args.vocab)), chain.log_prob, args, args.length, args.vocab)
    return -chain.entropy(), None, rows


def run_checkpoint(args):
    from dlm_jax.data.pipeline import markov_language
    from dlm_jax.methods import mdlm
    from dlm_jax.runs import load_run

    run = load_run(args.workdir)
    cfg, vocab, length = run.config, int(run.config.model.vocab_size), int(run.config.data.seq_len)
    method = cfg.method
    fn = jax.jit(mdlm.denoise_fn(run.apply, run.params, vocab, mdlm.schedule_from_config(method),
                                 time_conditioning=bool(method.get("time_conditioning", False)),
                                 time_input=method.get("time_input", "t")))
    chain = markov_language(cfg.data, length)
    print(f"checkpoint {args.workdir} step {run.step}: V={vocab}, L={length}")
    with jax.set_mesh(run.mesh):
        rows = evaluate(fn, chain.log_prob, args, length, vocab)
    ref = next(r for r in rows if r["sampler"] == "exact K=1")
    return -chain.entropy(), ref, rows


def _table(neg_h, ref, rows, latency):
    what = "exact K=1 with the same model" if ref else "−H(p*)"
    out = [f"−H(p*) = {neg_h:.3f} nats/sequence; Δ/s.e. against {what}\n",
           "| sampler | steps | E log p* ± s.e. | Δ/s.e. | NFE/sample | rows/sample | batched calls | batched rows/sample | "
           "rounds/step | predicted R(K−1, â) | ms/sample (batch) |" + (" ms/sequence (batch 1) |" if latency else ""),
           "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if latency else "")]
    for r in rows:
        mu, se = (ref["ll"], np.hypot(r["se"], ref["se"])) if ref else (neg_h, r["se"])
        delta = "ref" if r is ref else f"{(r['ll'] - mu) / se:+.1f}"
        out.append(f"| {r['sampler']} | {r['steps']} | {r['ll']:.3f} ± {r['se']:.3f} | {delta} | {r['nfe']:.2f} | "
                   f"{r['rows']:.2f} | {r['calls']} | {r['phys']:.2f} | {r['rounds']} | {r['pred']} | {r['ms']:.4f} |"
                   + (f" {r['lat']:.3f} |" if latency else ""))
    return "\n".join(out)


def _plot(neg_h, rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exact = next(r for r in rows if r["sampler"] == "exact K=1")
    panels = (("ll", "E log p*(x)  (±3 s.e.)"), ("ms", "ms / sample, batch of samples"), ("lat", "ms / sequence, batch 1"))
    panels = panels if np.isfinite(exact["lat"]) else panels[:2]  # --latency 0: no latency panel
    fig, axes = plt.subplots(1, len(panels), figsize=(14 * len(panels) / 3, 4))
    for ax, (key, label) in zip(axes, panels):
        for name, style in (("FeF", "o-"), ("standard", "s--")):
            sel = [r for r in rows if r["sampler"] == name]
            ys = [r[key] for r in sel]
            if key == "ll":
                ax.errorbar([r["steps"] for r in sel], ys, yerr=[3 * r["se"] for r in sel], fmt=style, label=name, capsize=3)
            else:
                ax.plot([r["steps"] for r in sel], ys, style, label=name)
        if key == "ll":
            ax.errorbar([exact["steps"]], [exact["ll"]], yerr=[3 * exact["se"]], fmt="k^", label="exact K=1", capsize=3)
            ax.axhline(neg_h, color="k", lw=1, label="−H(p*)")
        else:
            ax.axhline(exact[key], color="k", lw=1, ls=":", label="exact K=1 (16 steps)")
            ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("denoising steps")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("oracle", "checkpoint"), default="oracle")
    p.add_argument("--workdir", default=None, help="trained run directory (with --model checkpoint)")
    p.add_argument("--vocab", type=int, default=8, help="oracle only")
    p.add_argument("--length", type=int, default=16, help="oracle only")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--steps", default="1,2,4,16")
    p.add_argument("--repeats", type=int, default=3, help="timed compiled runs (best of)")
    p.add_argument("--latency", type=int, default=20, help="sequences timed one at a time (0: skip, no latency panel)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/fef_exactness.png")
    args = p.parse_args(argv)
    if args.model == "checkpoint" and not args.workdir:
        raise SystemExit("--workdir: None; expected a trained run directory with --model checkpoint")
    # The oracle needs float64 for an exact chain; the DiT runs as deployed (float32).
    jax.config.update("jax_enable_x64", args.model == "oracle")
    cpus = sorted(os.sched_getaffinity(0))
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, CPUs {cpus} (not pinned)")
    neg_h, ref, rows = run_oracle(args) if args.model == "oracle" else run_checkpoint(args)
    print(_table(neg_h, ref, rows, args.latency))
    fef4 = next((r for r in rows if r["sampler"] == "FeF" and r["steps"] == 4), None)
    exact = next(r for r in rows if r["sampler"] == "exact K=1")
    if fef4:
        lat = f"; batch 1: {exact['lat'] / fef4['lat']:.2f}x" if args.latency else ""
        print(f"\nwall-clock speed-up of FeF@4 over exact one-token-per-step decoding: batch {args.samples}: "
              f"{exact['ms'] / fef4['ms']:.2f}x{lat} (sequential calls {exact['nfe']:.1f} vs {fef4['nfe']:.2f}; "
              f"rows {exact['rows']:.1f} vs {fef4['rows']:.2f} useful, {fef4['phys']:.2f} run)")
    _plot(neg_h, rows, args.out, f"FeF-DLLM on the Markov chain (model: {args.model})")
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
