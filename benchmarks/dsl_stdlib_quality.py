"""DSL's claim on the stdlib corpus (issue 9 item 7, second half): judge NLL, entropy and distinct-4
of samples against NFE for an MDLM control and a DSL fine-tune of the same demo MDLM.

Both continuations start from the README's demo MDLM (``configs/demo.py:demo``, 1,200 steps; its
EMA weights) and run ``--steps`` M steps through the real trainer with the same optimiser (lr
``--lr``, warm-up ``--warmup``, cosine, batch 32, EMA 0.99) and the source run's tokenizer:

(a) the MDLM control: ``configs/demo.py:demo``, ``init_from`` mapping ``"copy"``;
(b) the DSL fine-tune: ``configs/dsl.py:demo`` (d = 48, random anchors, β_init = 1, s_max = 100,
    roar_frac = 10, LogNormal(1.69, 0.9) clamped at 40, CE at all positions), mapping
    ``"mdlm_to_dsl"``.

Then, with each run's EMA params (the presets' ``sample.use_ema``; horizon 100 steps < M), per
example seeds (``quality_run.sample_tokens``, float64 Gumbel): MDLM + ``remdm_loop`` and DSL +
``dsl_remdm_loop`` at T ∈ {8, 16, 32, 64, 128} (ReMDM defaults, top-p 0.9, NFE = T + 1), DSL +
``dsl_sde`` at K ∈ {8, 16, 32} (NFE = 2K + 1), ``dsl_hybrid`` at 48, and the validation texts as
the floor. Scored by the AR judge (``configs/ar.py:judge``; ``judges.gen_nll`` over the decoded
texts, token-weighted mean ± a ratio-estimator s.e. over samples), unigram entropy (nats) and
distinct-4 (``quality.diversity_metrics``). The NFE ratio at equal judge NLL is that of
``dsl_step_efficiency.equal_quality_nfe`` on the MDLM curve.

    python benchmarks/dsl_stdlib_quality.py --source runs/demo --judge run:runs/ar_judge --workdir /tmp/dsl

Rows are saved to the JSON as they finish; re-running skips them (and the trainer resumes finished
runs), so an interrupted call continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

T_GRID = (8, 16, 32, 64, 128)
K_GRID = (8, 16, 32)
SWEEP = ((("MDLM control", "ctrl"), "remdm_loop", T_GRID), (("DSL", "dsl"), "dsl_remdm_loop", T_GRID),
         (("DSL", "dsl"), "dsl_sde", K_GRID), (("DSL", "dsl"), "dsl_hybrid", (48,)))


def configs(source: str, steps: int, lr: float, warmup: int):
    """``{"ctrl": config, "dsl": config}``: the two continuations of ``source`` (module docstring)."""
    from dlm_jax.config_blocks import sibling

    out = {}
    for name, (file, preset, mapping) in {"ctrl": ("demo.py", "demo", "copy"),
                                          "dsl": ("dsl.py", "demo", "mdlm_to_dsl")}.items():
        c = sibling(os.path.join(ROOT, "configs", "x.py"), file, preset)
        c.train.steps, c.train.lr, c.train.warmup_steps = steps, lr, warmup
        c.train.batch_size, c.train.ema_decay = 32, 0.99
        c.init_from.workdir, c.init_from.weights, c.init_from.mapping = source, "ema", mapping
        c.data.tokenizer_path = os.path.join(source, "tokenizer", f"spm_bpe{c.data.tokenizer_vocab_size}.model")
        c.checkpoint.every = 200
        out[name] = c
    return out


def judged(run, tokens, judge) -> dict:
    """Judge NLL (token-weighted) ± s.e., entropy and distinct-n of ``tokens`` from ``run``."""
    from dlm_jax.eval import quality, quality_run
    from dlm_jax.eval.generate import decode

    rows, ended = quality_run.cut_at_eos(tokens, getattr(run.tokenizer, "eos_id", None))
    texts = [decode(run, r[None])[0] for r in rows]
    return score_texts(texts, ended, judge, quality.diversity_metrics(rows))


def score_texts(texts, ended, judge, diversity) -> dict:
    from dlm_jax.eval import judges

    r = judges.gen_nll(judge, texts, ended)
    nll, tok = np.asarray(r["per_sample_nll"]), np.asarray(r["per_sample_tokens"], np.float64)
    mean = nll.sum() / tok.sum()
    resid = (nll - mean * tok) / tok.mean()  # ratio estimator: s.e. of Σ nll / Σ tokens
    out = {"gen_nll": float(mean), "gen_nll_se": float(resid.std(ddof=1) / np.sqrt(len(nll))),
           "judge_tokens": float(tok.sum())}
    out.update({k: float(diversity[k]) for k in ("unigram_entropy", "distinct_4", "sequence_entropy")})
    return out


def reference_row(run, judge, n) -> dict:
    """The floor: ``n`` validation sequences through the same decode/judge path."""
    from dlm_jax.eval import quality, quality_run

    texts = quality_run._reference_texts(run, n)
    rows = [np.asarray(run.tokenizer.encode(t)) for t in texts]
    return score_texts(texts, [False] * n, judge, quality.diversity_metrics(rows))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="runs/demo", help="the demo MDLM run (configs/demo.py:demo)")
    ap.add_argument("--judge", default="run:runs/ar_judge")
    ap.add_argument("--workdir", default="/tmp/dsl_stdlib")
    ap.add_argument("--steps", type=int, default=400, help="M: steps of each continuation")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--num-samples", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "dsl_stdlib_quality.png"))
    args = ap.parse_args(argv)

    from dlm_jax.eval import judges, quality_run
    from dlm_jax.runs import load_run
    from dlm_jax.train import loop
    from dsl_step_efficiency import equal_quality_nfe

    t_start = time.perf_counter()
    json_path = os.path.splitext(args.out)[0] + ".json"
    saved = json.load(open(json_path)) if os.path.isfile(json_path) else {"rows": [], "train_s": {}}
    cfgs = configs(args.source, args.steps, args.lr, args.warmup)
    dirs = {k: os.path.join(args.workdir, k) for k in cfgs}
    for name, cfg in cfgs.items():
        t0 = time.perf_counter()
        loop.train(cfg, dirs[name])
        saved["train_s"].setdefault(name, time.perf_counter() - t0)
    runs = {k: load_run(d) for k, d in dirs.items()}
    judge = judges.load_judge(args.judge)
    done = {(r["model"], r["sampler"], r["steps"]) for r in saved["rows"]}

    def save():
        saved.update(args=vars(args), wall_s=saved.get("wall_s", 0.0))
        os.makedirs(os.path.dirname(json_path), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(saved, f, indent=1)

    if "reference" not in saved:
        saved["reference"] = reference_row(runs["ctrl"], judge, args.num_samples)
        save()
    for (model, key), sampler, grid in SWEEP:
        run = runs[key]
        for steps in grid:
            if (model, sampler, steps) in done:
                continue
            tokens, nfe, seconds = quality_run.sample_tokens(run.method, run.params, steps=steps, sampler=sampler,
                                                             num_samples=args.num_samples, seed=args.seed,
                                                             batch_size=args.batch_size, mesh=run.mesh)
            row = {"model": model, "sampler": sampler, "steps": steps, "nfe": float(nfe.mean()),
                   "seconds_per_sample": seconds / args.num_samples, **judged(run, tokens, judge)}
            print(f"{model:13s} {sampler:15s} {steps:4d}  NFE {row['nfe']:5.0f}  judge NLL {row['gen_nll']:.3f} ± "
                  f"{row['gen_nll_se']:.3f}  H1 {row['unigram_entropy']:.3f}  d4 {row['distinct_4']:.3f}", flush=True)
            saved["rows"].append(row)
            saved["wall_s"] = saved.get("wall_s", 0.0) + seconds
            save()
    saved["eval"] = {k: _last_eval(d) for k, d in dirs.items()}
    lines = table(saved, equal_quality_nfe)
    saved["table"] = lines
    saved["total_call_s"] = time.perf_counter() - t_start
    save()
    print("\n".join(lines))
    plot(saved, args.out)
    print(f"saved {args.out}")
    return saved


def _last_eval(workdir) -> dict:
    """The last validation metrics the trainer logged for ``workdir`` (metrics.jsonl)."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            out.update({k: v for k, v in rec.items() if k.startswith("eval/")})
    return out


def table(saved, equal_quality_nfe) -> list[str]:
    """Markdown rows with the MDLM NFE at equal judge NLL and the ratio (> 1: DSL needs fewer calls)."""
    rows = saved["rows"]
    curve = [(r["nfe"], r["gen_nll"]) for r in rows if r["sampler"] == "remdm_loop"]
    bound = {"interp": "", "below_min": " (≤)", "never": " (≥)"}
    lines = ["| model | sampler | steps | NFE | judge NLL ± s.e. | entropy (nats) | distinct-4 | MDLM NFE at equal NLL "
             "| NFE ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = ("—", "—")
        if r["model"] == "DSL" and len(curve) > 1:
            eq, how = equal_quality_nfe(curve, r["gen_nll"])
            cells = (f"{eq:.1f}{bound[how]}", f"{eq / r['nfe']:.2f}")
        lines.append(f"| {r['model']} | {r['sampler']} | {r['steps']} | {r['nfe']:.0f} | {r['gen_nll']:.3f} ± "
                     f"{r['gen_nll_se']:.3f} | {r['unigram_entropy']:.3f} | {r['distinct_4']:.3f} | {cells[0]} | "
                     f"{cells[1]} |")
    ref = saved["reference"]
    lines.append(f"| validation data | — | — | — | {ref['gen_nll']:.3f} ± {ref['gen_nll_se']:.3f} | "
                 f"{ref['unigram_entropy']:.3f} | {ref['distinct_4']:.3f} | — | — |")
    return lines


def plot(saved, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    styles = (("MDLM control", "remdm_loop", "s-", "MDLM + ReMDM-loop"), ("DSL", "dsl_remdm_loop", "o-", "DSL + ReMDM-loop"),
              ("DSL", "dsl_sde", "^--", "DSL SL-SDE (2K+1)"), ("DSL", "dsl_hybrid", "D", "DSL hybrid (48)"))
    for ax, key, label in ((axes[0], "gen_nll", "judge NLL (nats/token)"), (axes[1], "unigram_entropy",
                                                                            "unigram entropy (nats)"),
                           (axes[2], "distinct_4", "distinct-4")):
        for model, sampler, marker, name in styles:
            pts = sorted((r["nfe"], r[key], r["gen_nll_se"] if key == "gen_nll" else 0.0)
                         for r in saved["rows"] if r["model"] == model and r["sampler"] == sampler)
            if pts:
                x, y, e = zip(*pts)
                ax.errorbar(x, y, yerr=e, fmt=marker, label=name, ms=5, capsize=2)
        ax.axhline(saved["reference"][key], color="gray", lw=1, label="validation data")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE (denoiser calls)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    a = saved["args"]
    fig.suptitle(f"DSL vs MDLM control on the stdlib corpus (demo MDLM + {a['steps']} steps each; "
                 f"{a['num_samples']} samples per point; judge {a['judge']})", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
