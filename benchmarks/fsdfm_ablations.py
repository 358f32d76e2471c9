"""FS-DFM ablations at equal compute on the Markov-chain language (issue 13; METHODS §6.6 check 5, §6.7).

Each ablation is one student distillation run (``configs/fsdfm.py:demo_mask``, same number of optimiser
steps, same batch, same data) that changes one knob of the baseline recipe (mask source, EMA
self-teacher, RK-4 with faithful time labels, inverse-h policy, N_ref = 64, identity fusers); every
student starts from the same DFM teacher (one per source, trained once and reused). Each student is
scored at N ∈ {1, 2, 4, 8} cumulative-scalar steps by the exact per-token NLL of its samples under
the true chain and their mean unigram entropy (bits); each teacher at N = 8 (cumulative-scalar and
Euler) and N = 1,024 (Euler). Runs are sequential (the CPU is shared) and the JSON is rewritten
after every run, so partial results survive; rerunning with the same ``--workdir`` skips finished
runs (the trainer resumes) and reuses scores already in the JSON.

    python benchmarks/fsdfm_ablations.py --workdir /tmp/fsdfm_abl --out benchmarks/results/fsdfm_ablations.json
    python benchmarks/fsdfm_ablations.py --only baseline,heun --student-steps 10 --teacher-steps 20 --samples 16

"Equal compute" is equal optimiser steps: Heun's target costs 2 EMA forwards per step against
RK-4's 4, so Heun is cheaper per step; the wall-clock of each run is reported.
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
sys.path[:0] = [ROOT, os.path.join(ROOT, "configs")]

import fsdfm as fsdfm_configs  # noqa: E402  (configs/fsdfm.py)

from dlm_jax.data.builtin import markov_language  # noqa: E402
from dlm_jax.eval.baselines import sample_unigram_entropy_bits  # noqa: E402
from dlm_jax.runs import load_run  # noqa: E402
from dlm_jax.train import loop  # noqa: E402

# name -> (source, {"section.key": value}, steps multiplier); the baseline is the demo preset.
ABLATIONS = {  # in the order they run (most informative first)
    "baseline": ("mask", {}, 1),
    "uniform_source": ("uniform", {}, 1),
    "frozen_teacher": ("mask", {"method.just_student": False}, 1),
    "heun": ("mask", {"method.teacher": "heun"}, 1),
    "consistent_labels": ("mask", {"method.rk4_labels": "consistent"}, 1),
    "policy_large_h": ("mask", {"method.policy": "large_h"}, 1),
    "policy_annealed": ("mask", {"method.policy": "annealed", "method.anneal_every": "steps/6"}, 1),
    "policy_uniform": ("mask", {"method.policy": "uniform"}, 1),
    "n_ref_16": ("mask", {"method.n_ref": 16}, 1),
    "n_ref_256": ("mask", {"method.n_ref": 256}, 1),
    "random_fusers": ("mask", {"model.identity_h_init": False}, 1),
    "length_x3.3": ("mask", {}, 10 / 3),
    "length_x10": ("mask", {}, 10),
}


def _train(cfg, workdir, steps):
    """Train (or resume) ``cfg``; a run stopped early (signal) is not scored as if it had finished."""
    t0 = time.perf_counter()
    out = loop.train(cfg, workdir)
    if out["preempted"] or int(out["step"]) < steps:
        raise SystemExit(f"{workdir}: stopped at step {int(out['step'])} of {steps}; rerun to resume")
    return time.perf_counter() - t0


def _teacher(workdir, source, steps):
    cfg = fsdfm_configs.get_config(f"teacher_demo_{source}")
    cfg.train.steps, cfg.checkpoint.every = steps, steps
    cfg.evals.eval.every = steps
    return cfg, _train(cfg, workdir, steps)


def _student(workdir, teacher_dir, source, overrides, steps):
    cfg = fsdfm_configs.get_config(f"demo_{source}")
    cfg.init_from.workdir = teacher_dir
    cfg.method.teacher_workdir = teacher_dir
    cfg.train.steps, cfg.checkpoint.every = steps, steps
    cfg.evals.eval.every = steps
    for path, value in overrides.items():
        section, key = path.split(".")
        cfg[section][key] = max(steps // 6, 1) if value == "steps/6" else value
    return cfg, _train(cfg, workdir, steps)


def score(method, params, key, *, steps, sampler, samples, oracle):
    """Exact NLL/token (nats, mean ± s.e.) and mean unigram entropy (bits) of ``samples`` draws."""
    fn = jax.jit(lambda k: method.sample(params, k, num_samples=samples, steps=steps, sampler=sampler)[0])
    tokens = np.asarray(fn(key))
    nll = -np.asarray(oracle.log_prob(tokens), np.float64) / tokens.shape[1]
    return {"nll": float(nll.mean()), "nll_se": float(nll.std() / np.sqrt(len(nll))),
            "entropy_bits": float(sample_unigram_entropy_bits(tokens))}


def table(results) -> list[str]:
    """Markdown rows: NLL at N = 1/2/4/8, entropy at 8, gaps at 8 vs the teacher's Euler@1024."""
    lines = ["| run | source | steps | train (s) | NLL@1 | NLL@2 | NLL@4 | NLL@8 ± s.e. | entropy@8 (bits) | "
             "ΔNLL@8 vs T@1024 | Δentropy@8 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["students"].items():
        base = results["teachers"][r["source"]]["dfm_euler@1024"]
        s8 = r["fsdfm@8"]
        lines.append(f"| {name} | {r['source']} | {r['steps']} | {r['train_s']:.0f} | "
                     + " | ".join(f"{r[f'fsdfm@{n}']['nll']:.4f}" for n in (1, 2, 4))
                     + f" | {s8['nll']:.4f} ± {s8['nll_se']:.4f} | {s8['entropy_bits']:.4f} | "
                     f"{100 * (s8['nll'] / base['nll'] - 1):+.1f}% | "
                     f"{100 * (s8['entropy_bits'] / base['entropy_bits'] - 1):+.1f}% |")
    for source, r in results["teachers"].items():
        for k in ("fsdfm@8", "dfm_euler@8", "dfm_euler@1024"):
            lines.append(f"| teacher {k} | {source} | {r['steps']} | {r['train_s']:.0f} | | | | "
                         f"{r[k]['nll']:.4f} ± {r[k]['nll_se']:.4f} | {r[k]['entropy_bits']:.4f} | | |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/fsdfm_abl")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "fsdfm_ablations.json"))
    ap.add_argument("--teacher-steps", type=int, default=2000)
    ap.add_argument("--student-steps", type=int, default=1500)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--only", default="", help="comma-separated ablation names (default: all, in table order)")
    ap.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    args = ap.parse_args()
    if args.table:
        print("\n".join(table(json.load(open(args.out)))))
        return
    names = [n for n in args.only.split(",") if n] or list(ABLATIONS)
    bad = [n for n in names if n not in ABLATIONS]
    if bad:
        raise ValueError(f"--only: {bad}; expected names from {list(ABLATIONS)}")
    results = json.load(open(args.out)) if os.path.exists(args.out) else {"teachers": {}, "students": {}}
    results["args"] = vars(args)

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(args.out + ".tmp", args.out)

    key = jax.random.key(2026)
    oracle = None
    for name in names:
        if name in results["students"]:
            continue
        source, overrides, mult = ABLATIONS[name]
        t_dir = os.path.join(args.workdir, f"teacher_{source}")
        if source not in results["teachers"]:
            t_cfg, t_s = _teacher(t_dir, source, args.teacher_steps)
            oracle = markov_language(t_cfg.data, t_cfg.data.seq_len)
            run = load_run(t_dir, use_ema=True)
            rows = {f"{s}@{n}": score(run.method, run.params, key, steps=n, sampler=s, samples=args.samples,
                                      oracle=oracle) for s, n in (("fsdfm", 8), ("dfm_euler", 8), ("dfm_euler", 1024))}
            results["teachers"][source] = {"train_s": t_s, "steps": args.teacher_steps, **rows}
            save()
            print(source, "teacher", rows, flush=True)
        steps = int(round(args.student_steps * mult))
        s_cfg, s_s = _student(os.path.join(args.workdir, name), t_dir, source, overrides, steps)
        oracle = oracle or markov_language(s_cfg.data, s_cfg.data.seq_len)
        run = load_run(os.path.join(args.workdir, name), use_ema=True)
        rows = {f"fsdfm@{n}": score(run.method, run.params, key, steps=n, sampler="fsdfm", samples=args.samples,
                                    oracle=oracle) for n in (1, 2, 4, 8)}
        results["students"][name] = {"source": source, "overrides": overrides, "steps": steps, "train_s": s_s,
                                     **rows}
        save()
        print(name, steps, f"{s_s:.0f}s", {k: round(v["nll"], 4) for k, v in rows.items()}, flush=True)


if __name__ == "__main__":
    main()
