"""FastDiSS's claim on real translation (issue 10 item 9, the gettext en->de half): trained runs of
base, +SCP and +SCP+MANS scored by the project's ``bleu`` evaluator (SacreBLEU intl + chrF) on a
fixed test subset at K DDIM steps, against K = 200 and 2,000 and against the 2,000-step
DiffuSeq-style ancestral sampler (``sampler="diffuseq"``); NFE and wall-clock ratios; the
self-conditioning gap along the sampler.

    # three equal-compute trainings through the real trainer (same seed, data, steps, batch):
    python -m dlm_jax train --config configs/fastdiss.py:demo --workdir W/base --config.train.steps=3000 \\
        --config.method.beta_phases="(1000,2000)" --config.method.scp=False --config.method.mans=False
    #   ... W/scp with scp=True mans=False, W/scp_mans with scp=True mans=True (the demo's own setting)
    python benchmarks/fastdiss_translate.py --runs base=W/base,+SCP=W/scp,+SCP+MANS=W/scp_mans

Every row translates the same ``--batches`` batches of the deterministic ``test`` split (sources
never seen in training; the run's batch size, 32) with the run's EMA weights, length beam and MBR
(``method.length_beam`` candidates per source, NFE counted per candidate, as K). Wall-clock: one
batch, after compilation. Writes ``benchmarks/results/fastdiss_translate.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="name=workdir,... (the variants, in table order)")
    p.add_argument("--ks", default="1,2,5,10,20,200,2000", help="DDIM step counts")
    p.add_argument("--diffuseq-ks", default="2000", help="DiffuSeq-style ancestral step counts")
    p.add_argument("--show-k", type=int, default=2000, help="also print examples for this DiffuSeq K (and DDIM 5)")
    p.add_argument("--gap-ks", default="5,20", help="K values whose self-conditioning gap is traced")
    p.add_argument("--split", default="test")
    p.add_argument("--batches", type=int, default=8, help="test batches (of the run's batch size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "fastdiss_translate"))
    return p.parse_args()


def score(run, sampler, k, a):
    """The ``bleu`` evaluator's metrics for one (sampler, K) on the fixed subset, + seconds per batch."""
    import jax

    from dlm_jax.eval import evaluators
    from dlm_jax.eval.translation import TranslationEvaluator
    from dlm_jax.train import loop

    ctx = evaluators.plain_context(
        run.config, run.method, lambda split: loop.grain_data(run.config, split=split, process_index=0,
                                                              process_count=1, workdir=run.workdir),
        jax.random.key(a.seed), mesh=run.mesh, workdir=run.workdir)
    ev = TranslationEvaluator({"kind": "bleu", "split": a.split, "batches": a.batches, "steps": (k,),
                               "sampler": sampler,
                               "print_examples": 3 if (sampler, k) in (("ddim", 5), ("diffuseq", a.show_k)) else 0})
    out = ev.run(ctx, run.params)
    batch = ctx.to_device(next(ctx.batches(a.split)))
    fn = jax.jit(lambda p, b, key: run.method.sample(p, key, steps=k, sampler=sampler, source=b["source"],
                                                     source_mask=b["source_mask"])[0])
    with jax.set_mesh(run.mesh):
        jax.block_until_ready(fn(run.params, batch, jax.random.key(1)))
        t0 = time.perf_counter()
        jax.block_until_ready(fn(run.params, batch, jax.random.key(1)))
    out["seconds_per_batch"] = time.perf_counter() - t0
    return out


def sc_gaps(run, k, a):
    """Mean per-token ‖D(z, ẑ_prev) − D(z, D(z, 0))‖ at each of the K DDIM steps (first test batch)."""
    import jax
    import numpy as np

    from dlm_jax.train import loop

    batch = next(loop.grain_data(run.config, split=a.split, process_index=0, process_count=1, workdir=run.workdir))
    fn = jax.jit(lambda p, key: run.method.sample(p, key, steps=k, sampler="ddim", source=batch["source"],
                                                  source_mask=batch["source_mask"], record_gap=True)[1]["sc_gap"])
    with jax.set_mesh(run.mesh):
        return [float(g) for g in np.asarray(fn(run.params, jax.random.key(a.seed)))]


def main():
    a = parse()
    import jax

    from dlm_jax import runs

    variants = [item.split("=", 1) for item in a.runs.split(",")]
    ks = [int(k) for k in a.ks.split(",")]
    dks = [int(k) for k in a.diffuseq_ks.split(",") if k]
    results = {"args": vars(a), "jax": jax.__version__, "variants": {}}
    for name, workdir in variants:
        run = runs.load_run(workdir, use_ema=True)
        rows = []
        for sampler, k in [("ddim", k) for k in ks] + [("diffuseq", k) for k in dks]:
            m = score(run, sampler, k, a)
            rows.append(dict(sampler=sampler, k=k, nfe=int(m["nfe"]), bleu=m["bleu"], chrf=m["chrf"],
                             exact_match=m["exact_match"], sentences=int(m["num_sentences"]),
                             seconds_per_batch=m["seconds_per_batch"]))
            print(f"{name} {sampler} K={k}: BLEU {m['bleu']:.2f} chrF {m['chrf']:.2f} exact {m['exact_match']:.3f} "
                  f"({int(m['num_sentences'])} sentences), {m['seconds_per_batch'] * 1e3:.0f} ms/batch", flush=True)
        gaps = {str(k): sc_gaps(run, k, a) for k in (int(k) for k in a.gap_ks.split(",") if k)}
        print(f"{name} SC gap: " + "; ".join(f"K={k}: " + " ".join(f"{g:.3f}" for g in v) for k, v in gaps.items()))
        results["variants"][name] = dict(workdir=workdir, step=int(run.step), rows=rows, sc_gap=gaps)
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out + ".json", "w") as f:  # after every variant: a long run keeps what it has
            json.dump(results, f, indent=1)
    print_table(results)
    plot(results, a.out + ".png")


def print_table(results):
    names = list(results["variants"])
    first = results["variants"][names[0]]["rows"]
    slow = max(first, key=lambda r: r["nfe"])
    print("\n| sampler | K (NFE) | " + " | ".join(f"{n} BLEU / chrF" for n in names)
          + f" | s / batch ({names[0]}) | speed-up vs {slow['sampler']} {slow['k']} |")
    print("|---|---:|" + "---:|" * len(names) + "---:|---:|")
    for i, r in enumerate(first):
        cells = " | ".join(f"{results['variants'][n]['rows'][i]['bleu']:.2f} / {results['variants'][n]['rows'][i]['chrf']:.1f}"
                           for n in names)
        print(f"| {r['sampler']} | {r['k']} | {cells} | {r['seconds_per_batch']:.3f} | "
              f"{slow['seconds_per_batch'] / r['seconds_per_batch']:.0f}x |")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for j, (name, v) in enumerate(results["variants"].items()):
        rows = [r for r in v["rows"] if r["sampler"] == "ddim"]
        line, = ax[0].plot([r["k"] for r in rows], [r["bleu"] for r in rows], "o-", label=f"{name} (DDIM)")
        for r in v["rows"]:
            if r["sampler"] == "diffuseq":
                ax[0].plot([r["k"]], [r["bleu"]], "*", ms=11, color=line.get_color(),
                           label=f"{name} (DiffuSeq {r['k']})")
        gap = v["sc_gap"].get("5") or next(iter(v["sc_gap"].values()))
        ax[1].plot(range(1, len(gap) + 1), gap, "o-", label=name)
    ax[0].set_xscale("log")
    ax[0].set_xlabel("sampler steps K (= NFE per candidate)")
    ax[0].set_ylabel("SacreBLEU (intl), gettext en->de test")
    ax[0].legend(fontsize=7)
    ax[1].set_xlabel("DDIM step (K = 5)")
    ax[1].set_ylabel("SC gap per token")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
