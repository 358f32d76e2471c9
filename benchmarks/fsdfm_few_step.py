"""FS-DFM few-step claim at small scale (METHODS §6.6 check 5): "8 student steps ≈ 1,024 teacher steps".

On the synthetic Markov-chain language (``data.source="markov"``, V = 8, L = 32) it trains, with the
real trainer ``dlm_jax.train.loop.train``:

1. the DFM teacher (``configs/fsdfm.py:teacher_demo_mask``: generalized KL, mask source, κ = t);
2. the FS-DFM student (``configs/fsdfm.py:demo_mask``: initialised from the teacher with identity fusers,
   RK-4 shortcut distillation from its EMA, data anchor at h = 1/N_ref, N_ref = 64);

then samples both (EMA weights) and reports, per setting, the exact per-token NLL of the samples under
the true chain (``MarkovChainLanguage.log_prob``), the mean per-sample unigram entropy (bits), the
NFE and the wall-clock of one compiled sampling call (compile excluded): the student with the
FS-DFM cumulative-scalar sampler at N ∈ {1, 2, 4, 8}, the teacher with the original DFM Euler
solver at N ∈ {8, 64, 1024} (and with the cumulative-scalar sampler at N = 8 for contrast), and
true samples of the chain as the reference. Prints a markdown table, saves a PNG and a JSON.

    python benchmarks/fsdfm_few_step.py --workdir /tmp/fsdfm_bench   # 2000 + 1500 steps: ≈ 17 min on 2 busy cores
    python benchmarks/fsdfm_few_step.py --workdir /tmp/smoke --teacher-steps 20 --student-steps 10 --samples 32

(§6.6 suggests 3k teacher + 2k student steps; the defaults are smaller to fit a 20-minute CPU budget.)

Re-running with the same ``--workdir`` resumes/reuses the finished runs (the trainer resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))

import fsdfm as fsdfm_configs  # noqa: E402  (configs/fsdfm.py)

from dlm_jax.data.pipeline import markov_language  # noqa: E402
from dlm_jax.eval.baselines import sample_unigram_entropy_bits  # noqa: E402
from dlm_jax.runs import load_run  # noqa: E402
from dlm_jax.train import loop  # noqa: E402




def _train(preset: str, workdir: str, steps: int, init_from: str = "", **method):
    cfg = fsdfm_configs.get_config(preset)
    if init_from:
        cfg.init_from.workdir = init_from
    cfg.train.steps = steps
    cfg.evals.eval.every = max(steps // 2, 1)
    cfg.checkpoint.every = steps
    for k, v in method.items():
        cfg.method[k] = v
    start = time.perf_counter()
    out = loop.train(cfg, workdir)  # the student starts from config.init_from (the teacher run)
    return cfg, time.perf_counter() - start, out["step"]


def _load(workdir: str, weights: str):
    run = load_run(workdir, use_ema=weights == "ema")
    return run.method, run.params, run.config


def _evaluate(method, params, key, *, steps, sampler, samples, oracle):
    fn = jax.jit(lambda k: method.sample(params, k, num_samples=samples, steps=steps, sampler=sampler))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(key))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens, info = fn(jax.random.fold_in(key, 1))
    tokens = np.asarray(jax.block_until_ready(tokens))
    wall = time.perf_counter() - t0
    nll = -np.asarray(oracle.log_prob(tokens), np.float64) / tokens.shape[1]
    return {"nll": float(nll.mean()), "nll_se": float(nll.std() / np.sqrt(len(nll))),
            "entropy_bits": sample_unigram_entropy_bits(tokens), "nfe": int(info["nfe"]), "wall_s": wall,
            "compile_s": compile_s}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/fsdfm_bench")
    ap.add_argument("--teacher-steps", type=int, default=2000)
    ap.add_argument("--student-steps", type=int, default=1500)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--weights", default="ema", choices=("ema", "params"))
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "fsdfm_few_step.png"))
    args = ap.parse_args()

    t_dir, s_dir = os.path.join(args.workdir, "teacher"), os.path.join(args.workdir, "student")
    t_cfg, t_train_s, _ = _train("teacher_demo_mask", t_dir, args.teacher_steps)
    s_cfg, s_train_s, _ = _train("demo_mask", s_dir, args.student_steps, init_from=t_dir)
    oracle = markov_language(t_cfg.data, t_cfg.data.seq_len)
    teacher, t_params, _ = _load(t_dir, args.weights)
    student, s_params, _ = _load(s_dir, args.weights)

    key = jax.random.key(2026)
    rows = []
    for n in (1, 2, 4, 8):
        rows.append(("FS-DFM student", "fsdfm", n, _evaluate(student, s_params, key, steps=n, sampler="fsdfm",
                                                             samples=args.samples, oracle=oracle)))
    for n, sampler in ((8, "fsdfm"), (8, "dfm_euler"), (64, "dfm_euler"), (1024, "dfm_euler")):
        rows.append(("DFM teacher", sampler, n, _evaluate(teacher, t_params, key, steps=n, sampler=sampler,
                                                          samples=args.samples, oracle=oracle)))
    data = np.asarray(oracle.sample(jax.random.key(7), args.samples))
    data_nll = -np.asarray(oracle.log_prob(data), np.float64) / data.shape[1]
    reference = {"nll": float(data_nll.mean()), "nll_se": float(data_nll.std() / np.sqrt(len(data_nll))),
                 "entropy_bits": sample_unigram_entropy_bits(data), "entropy_rate": oracle.entropy() / data.shape[1]}

    base = next(r for _, s, n, r in rows if s == "dfm_euler" and n == 1024)
    s8 = next(r for who, _, n, r in rows if who.startswith("FS") and n == 8)
    nll_gap = (s8["nll"] - base["nll"]) / base["nll"]
    ent_gap = (s8["entropy_bits"] - base["entropy_bits"]) / base["entropy_bits"]

    lines = [f"FS-DFM few-step benchmark: Markov chain V={t_cfg.data.markov_vocab}, L={t_cfg.data.seq_len}, "
             f"DiT {t_cfg.model.width}/{t_cfg.model.depth}/{t_cfg.model.heads}, source={t_cfg.method.source}, "
             f"teacher {args.teacher_steps} steps ({t_train_s:.0f} s), student {args.student_steps} steps "
             f"({s_train_s:.0f} s), N_ref={s_cfg.method.n_ref}, {args.weights} weights, {args.samples} samples",
             "", "| model | sampler | N | NFE | NLL/token (nats) | unigram entropy (bits) | wall-clock (s) |",
             "|---|---|---|---|---|---|---|"]
    for who, sampler, n, r in rows:
        lines.append(f"| {who} | {sampler} | {n} | {r['nfe']} | {r['nll']:.4f} ± {r['nll_se']:.4f} | "
                     f"{r['entropy_bits']:.4f} | {r['wall_s']:.3f} |")
    lines.append(f"| data (true chain) | — | — | — | {reference['nll']:.4f} ± {reference['nll_se']:.4f} "
                 f"(entropy rate {reference['entropy_rate']:.4f}) | {reference['entropy_bits']:.4f} | — |")
    lines += ["", f"student@8 vs teacher@1024 (DFM Euler): NLL {100 * nll_gap:+.2f}% (target within 5%: "
              f"{'met' if abs(nll_gap) <= 0.05 else 'NOT met'}), entropy {100 * ent_gap:+.2f}% (target within 2%: "
              f"{'met' if abs(ent_gap) <= 0.02 else 'NOT met'}); speed-up in NFE 128x, wall-clock "
              f"{base['wall_s'] / s8['wall_s']:.0f}x"]
    print("\n".join(lines), flush=True)

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"rows": [dict(model=w, sampler=s, steps=n, **r) for w, s, n, r in rows], "data": reference,
                   "nll_gap": nll_gap, "entropy_gap": ent_gap, "teacher_train_s": t_train_s,
                   "student_train_s": s_train_s, "args": vars(args), "table": lines}, f, indent=1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key_, label in ((axes[0], "nll", "NLL per token under the true chain (nats)"),
                            (axes[1], "entropy_bits", "unigram entropy (bits)")):
        for who, sampler, marker in (("FS-DFM student", "fsdfm", "o-"), ("DFM teacher", "dfm_euler", "s--"),
                                     ("DFM teacher", "fsdfm", "^")):
            pts = [(n, r[key_]) for w, s, n, r in rows if w == who and s == sampler]
            if pts:
                ax.plot(*zip(*pts), marker, label=f"{who} ({sampler})")
        ax.axhline(reference[key_], color="gray", lw=1, label="true samples")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps N (= NFE)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("FS-DFM vs DFM on the Markov-chain language (small scale)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
