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

Every row translates the same ``--batches`` batches of the hash split's ``test`` pairs (sources never
seen in training; pairs longer than ``data.seq_len`` tokens dropped, as in training; the run's batch
size, 32), in order, with the run's EMA weights and one predicted length per source
(``--length-beam 1``: NFE per sentence = K; 0 keeps the run's beam), the same keys for every run.
Wall-clock: the median seconds per batch of the evaluator's batches after the first (which
compiles). Writes ``benchmarks/results/fastdiss_translate.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="", help="name=workdir,... (the variants, in table order)")
    p.add_argument("--ks", default="1,2,5,10,20,200", help="DDIM step counts")
    p.add_argument("--diffuseq-ks", default="2000", help="DiffuSeq-style ancestral step counts")
    p.add_argument("--show-k", type=int, default=2000, help="also print examples for this DiffuSeq K (and DDIM 5)")
    p.add_argument("--gap-ks", default="5,20", help="K values whose self-conditioning gap is traced")
    p.add_argument("--split", default="test")
    p.add_argument("--batches", type=int, default=4, help="test batches (of the run's batch size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--length-beam", type=int, default=1, help="lengths per source (0: the run's method.length_beam)")
    p.add_argument("--from-json", default=None, help="only print the table and plot of this results file")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "fastdiss_translate"))
    return p.parse_args()


def split_batches(run, split: str):
    """One pass over ``split`` ("train", "validation" or "test": the trainer's pipeline serves the
    first two) in the run's batch size, unshuffled, in the trainer's row layout."""
    import grain

    from dlm_jax.data.pipeline import train_or_load_tokenizer
    from dlm_jax.data.registry import get_source, validate_data_config
    from dlm_jax.data.rows import PadBatch

    cfg, b = run.config, int(run.config.train.batch_size)
    tok = train_or_load_tokenizer(cfg.data, run.workdir)
    data = validate_data_config(cfg.data)  # the seq2seq builders take the hash split's "test" too
    examples = get_source(data["source"]).builder(data, split, int(cfg.data.seq_len), int(cfg.seed))
    rows = examples.rows(grain.MapDataset.source(examples.source), tok, seq_len=int(cfg.data.seq_len),
                         seed=int(cfg.seed), training=False, read_options=grain.ReadOptions(num_threads=1))
    return iter(rows.batch(b, drop_remainder=False, batch_fn=PadBatch(b)))


def score(run, sampler, k, a):
    """The ``bleu`` evaluator's metrics for one (sampler, K) on the fixed subset, + seconds per batch
    (median over the evaluator's own batches after the first, which compiles)."""
    import dataclasses

    import jax
    import numpy as np

    from dlm_jax.eval import evaluators
    from dlm_jax.eval.translation import TranslationEvaluator

    ctx = evaluators.plain_context(run.config, run.method, lambda split: split_batches(run, split),
                                   jax.random.key(a.seed), mesh=run.mesh, workdir=run.workdir)
    seconds, compile_fn = [], ctx.compile

    def timed(fn):
        step = compile_fn(fn)

        def call(*args):
            t0 = time.perf_counter()
            out = jax.block_until_ready(step(*args))
            seconds.append(time.perf_counter() - t0)
            return out

        return call

    ev = TranslationEvaluator({"kind": "bleu", "split": a.split, "batches": a.batches, "steps": (k,),
                               "sampler": sampler,
                               "print_examples": 3 if (sampler, k) in (("ddim", 5), ("diffuseq", a.show_k)) else 0})
    out = ev.run(dataclasses.replace(ctx, compile=timed), run.params)
    out["seconds_per_batch"] = float(np.median(seconds[1:] if len(seconds) > 1 else seconds))
    return out


def sc_gaps(run, k, a):
    """Mean per-token ‖D(z, ẑ_prev) − D(z, D(z, 0))‖ at each of the K DDIM steps (first test batch)."""
    import jax
    import numpy as np

    batch = next(split_batches(run, a.split))
    fn = jax.jit(lambda p, key: run.method.sample(p, key, steps=k, sampler="ddim", source=batch["source"],
                                                  source_mask=batch["source_mask"], record_gap=True)[1]["sc_gap"])
    with jax.set_mesh(run.mesh):
        return [float(g) for g in np.asarray(fn(run.params, jax.random.key(a.seed)))]


def main():
    a = parse()
    if a.from_json:  # table and plot of a finished (or partial) run
        results = json.load(open(a.from_json))
        print_table(results)
        plot(results, a.from_json[:-len(".json")] + ".png")
        return
    import jax

    from dlm_jax import runs

    variants = [item.split("=", 1) for item in a.runs.split(",")]
    ks = [int(k) for k in a.ks.split(",")]
    dks = [int(k) for k in a.diffuseq_ks.split(",") if k]
    results = {"args": vars(a), "jax": jax.__version__, "variants": {}}
    loaded = {}
    for name, workdir in variants:
        run = runs.load_run(workdir, use_ema=True)
        if a.length_beam:  # candidates per source (NFE per sentence = K x beam x mbr)
            run = dataclasses.replace(run, method=dataclasses.replace(
                run.method, sample=functools.partial(run.method.sample, length_beam=a.length_beam)))
        loaded[name] = run
        results["variants"][name] = dict(workdir=workdir, step=int(run.step), rows=[], sc_gap={})
    # The few-step rows and gaps of every variant first, the slow many-step references last; the
    # JSON is rewritten after every row, so a long run keeps what it has.
    plan = [(n, "ddim", k) for n in loaded for k in ks] + [(n, "gap", 0) for n in loaded]
    plan += [(n, "diffuseq", k) for k in dks for n in loaded]
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    for name, sampler, k in plan:
        run, v = loaded[name], results["variants"][name]
        if sampler == "gap":
            v["sc_gap"] = {str(g): sc_gaps(run, g, a) for g in (int(g) for g in a.gap_ks.split(",") if g)}
            print(f"{name} SC gap: " + "; ".join(f"K={g}: " + " ".join(f"{x:.3f}" for x in row)
                                                 for g, row in v["sc_gap"].items()), flush=True)
        else:
            m = score(run, sampler, k, a)
            v["rows"].append(dict(sampler=sampler, k=k, nfe=int(m["nfe"]), bleu=m["bleu"], chrf=m["chrf"],
                                  exact_match=m["exact_match"], sentences=int(m["num_sentences"]),
                                  seconds_per_batch=m["seconds_per_batch"]))
            print(f"{name} {sampler} K={k}: BLEU {m['bleu']:.2f} chrF {m['chrf']:.2f} exact {m['exact_match']:.3f} "
                  f"({int(m['num_sentences'])} sentences), {m['seconds_per_batch'] * 1e3:.0f} ms/batch", flush=True)
        with open(a.out + ".json", "w") as f:
            json.dump(results, f, indent=1)
    print_table(results)
    plot(results, a.out + ".png")


def print_table(results):
    """The markdown table (a row missing from an unfinished run prints as "–")."""
    names = list(results["variants"])
    rows = {n: {(r["sampler"], r["k"]): r for r in v["rows"]} for n, v in results["variants"].items()}
    keys = list(dict.fromkeys(key for n in names for key in rows[n]))
    first = rows[names[0]]
    slow = max(first.values(), key=lambda r: r["nfe"])
    print("\n| sampler | K = NFE | " + " | ".join(f"{n} BLEU / chrF" for n in names)
          + f" | s / batch ({names[0]}) | NFE ratio vs {slow['sampler']} {slow['k']} | wall-clock ratio |")
    print("|---|---:|" + "---:|" * len(names) + "---:|---:|---:|")
    for key in keys:
        cells = " | ".join(f"{rows[n][key]['bleu']:.2f} / {rows[n][key]['chrf']:.1f}" if key in rows[n] else "–"
                           for n in names)
        r = first.get(key)
        tail = (f"{r['seconds_per_batch']:.2f} | {slow['nfe'] / r['nfe']:.0f}x | "
                f"{slow['seconds_per_batch'] / r['seconds_per_batch']:.0f}x") if r else "– | – | –"
        print(f"| {key[0]} | {key[1]} | {cells} | {tail} |")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for j, (name, v) in enumerate(results["variants"].items()):
        rows = sorted((r for r in v["rows"] if r["sampler"] == "ddim"), key=lambda r: r["k"])
        line, = ax[0].plot([r["k"] for r in rows], [r["bleu"] for r in rows], "o-", label=f"{name} (DDIM)")
        for r in v["rows"]:
            if r["sampler"] == "diffuseq":
                ax[0].plot([r["k"]], [r["bleu"]], "*", ms=11, color=line.get_color(),
                           label=f"{name} (DiffuSeq {r['k']})")
        gap = v["sc_gap"].get("5") or next(iter(v["sc_gap"].values()), [])
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
