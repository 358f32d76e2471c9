"""FeF-DLLM exactness and cost on the Markov-chain language (METHODS §5.6.4).

With the exact forward–backward oracle as the model, compares at steps ∈ {1, 2, 4, 16, L}:

* FeF-DLLM (speculative, marginal-confidence selection, temperature 1);
* the standard sampler (independent marginals, same selection);
* exact one-token-per-step decoding (L steps, K = 1) as the exactness reference;

reporting E log p*(samples) ± s.e. against −H(p*), model calls (sequential NFE per sample and the
batched program's calls), batch rows per sample, measured rounds per step beside the recursion
R(K, â), and wall-clock per sample (second, compiled run). Prints a markdown table and saves a PNG.

    python benchmarks/fef_exactness.py --model oracle --samples 2000 --out benchmarks/results/fef_exactness.png

``--model checkpoint --workdir DIR`` (a trained MDLM) is reserved for when the trainer lands.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from dlm_jax.samplers import fef_rounds  # noqa: E402
from dlm_jax.samplers.llada import sample_llada  # noqa: E402
from dlm_jax.samplers.speculative import sample_fef  # noqa: E402
from dlm_jax.testing.oracles import MarkovChainLanguage  # noqa: E402


def _timed(fn, *args, **kwargs):
    fn(*args, **kwargs)[0].block_until_ready()  # compile + warm up
    start = time.perf_counter()
    tokens, info = fn(*args, **kwargs)
    tokens.block_until_ready()
    return tokens, info, time.perf_counter() - start


def _row(name, steps, chain, tokens, info, wall, n):
    lp = np.asarray(chain.log_prob(tokens), np.float64)
    row = dict(sampler=name, steps=steps, ll=lp.mean(), se=lp.std(ddof=1) / np.sqrt(n),
               nfe=float(np.mean(np.asarray(info["nfe"]))), nfe_batched=int(np.asarray(info["nfe_batched"])),
               rows=float(np.mean(np.asarray(info["rows"]))), ms=1e3 * wall / n, rounds="", pred="")
    if "rounds" in info:
        a_hat = fef_rounds.acceptance_rate(info)
        k = np.asarray(info["k"])[0]
        row["rounds"] = f"{np.asarray(info['rounds'], np.float64).mean():.2f}"
        row["pred"] = f"{float(np.mean(fef_rounds.step_rounds(k, a_hat))):.2f} (â={a_hat:.3f})"
    return row


def run_oracle(args):
    chain = MarkovChainLanguage.random(args.seed, vocab_size=args.vocab, length=args.length)
    fn, n, length, vocab = chain.denoise_fn(args.vocab), args.samples, args.length, args.vocab
    neg_h = -chain.entropy()
    step_list = sorted({length if s == "L" else int(s) for s in args.steps.split(",")})
    rows = []
    for steps in step_list:
        common = dict(num_samples=n, length=length, steps=steps, mask_id=vocab, vocab_size=vocab)
        tok, info, wall = _timed(sample_fef, fn, jax.random.key(steps), **common)
        rows.append(_row("FeF", steps, chain, tok, info, wall, n))
        tok, info, wall = _timed(sample_llada, fn, jax.random.key(1000 + steps), selection="confidence", **common)
        rows.append(_row("exact K=1" if steps == length else "standard", steps, chain, tok, info, wall, n))
    return neg_h, rows


def _table(neg_h, rows):
    out = [f"-H(p*) = {neg_h:.3f} nats\n",
           "| sampler | steps | E log p* ± s.e. | Δ/s.e. | NFE/sample | batched calls | rows/sample | "
           "rounds/step | predicted (FeF step rec.) | ms/sample |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['sampler']} | {r['steps']} | {r['ll']:.3f} ± {r['se']:.3f} | {(r['ll'] - neg_h) / r['se']:+.1f} | "
                   f"{r['nfe']:.2f} | {r['nfe_batched']} | {r['rows']:.1f} | {r['rounds']} | {r['pred']} | {r['ms']:.4f} |")
    return "\n".join(out)


def _plot(neg_h, rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in (("FeF", "o-"), ("standard", "s--")):
        sel = [r for r in rows if r["sampler"] == name or (name == "standard" and r["sampler"] == "exact K=1")]
        steps = [r["steps"] for r in sel]
        ax1.errorbar(steps, [r["ll"] for r in sel], yerr=[3 * r["se"] for r in sel], fmt=style, label=name, capsize=3)
        ax2.plot(steps, [r["ms"] for r in sel], style, label=name)
    ax1.axhline(neg_h, color="k", lw=1, label="−H(p*)")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("denoising steps")
        ax.legend()
    ax1.set_ylabel("E log p*(x)  (±3 s.e.)")
    ax2.set_ylabel("wall-clock ms / sample")
    ax2.set_yscale("log")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("oracle", "checkpoint"), default="oracle")
    p.add_argument("--workdir", default=None, help="checkpoint directory (with --model checkpoint)")
    p.add_argument("--vocab", type=int, default=8)
    p.add_argument("--length", type=int, default=16)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--steps", default="1,2,4,16,L")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/fef_exactness.png")
    args = p.parse_args(argv)
    if args.model == "checkpoint":
        raise SystemExit("--model checkpoint: not implemented yet (needs the MDLM trainer's checkpoint loader); "
                         "use --model oracle")
    neg_h, rows = run_oracle(args)
    print(_table(neg_h, rows))
    fef4 = next((r for r in rows if r["sampler"] == "FeF" and r["steps"] == 4), None)
    exact = next((r for r in rows if r["sampler"] == "exact K=1"), None)
    if fef4 and exact:
        print(f"\nwall-clock speed-up of FeF@4 over exact one-token-per-step decoding: {exact['ms'] / fef4['ms']:.2f}x "
              f"(sequential model calls {exact['nfe']:.1f} vs {fef4['nfe']:.2f}; rows {exact['rows']:.1f} vs {fef4['rows']:.1f})")
    _plot(neg_h, rows, args.out)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
