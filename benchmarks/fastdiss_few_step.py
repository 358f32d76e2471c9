"""FastDiSS's claim at small scale (METHODS §3.6 check 4): base vs +SCP vs +SCP+MANS trained with
equal compute on the synthetic reversal task, exact match at few DDIM steps against many.

    python benchmarks/fastdiss_few_step.py                       # defaults below, a few CPU minutes each
    python benchmarks/fastdiss_few_step.py --train-steps 300 --ks 1,2,5 --eval-n 128   # smoke

Task (``--task``): ``reverse`` a sequence of ``--length`` symbols over ``--symbols`` (ids + EOS, one
fixed length; deterministic, so a strongly conditioned model needs one step), or ``flip``: the
reversal, shifted by half the alphabet in half the pairs (a hidden coin per pair), so every source
has exactly two right answers and a sampler must keep the tokens coherent (exact match counts
either answer; one denoising step averages the two modes token by token).
Model: the ``encdec`` (2+2 layers, width 64, d 16), trained by the real ``fastdiss`` method's loss
with Adam, ``--train-steps`` steps of ``--batch`` pairs drawn on device, identical for every
variant (same seeds, same number of model calls per step: SC pass + main pass + the 50 % first
pass), so compute is equal. Evaluation: exact match (whole sequence right, predicted length) of
``--eval-n`` held-out pairs at K in ``--ks`` (deterministic DDIM with self-conditioning), NFE and
wall-clock per batch after compilation, and the ratio to the largest K (2,000 = DiffuSeq's step
count: the same DDIM run with 2,000 steps; ``--sampler diffuseq`` runs every row with the DiffuSeq-style
ancestral sampler instead). The self-conditioning
gap ‖D(z, ẑ_prev) − D(z, D(z, 0))‖ (per token, mean over the batch) is traced along K = 5 and 20.
Writes ``benchmarks/results/fastdiss_few_step_<task>_<time sampler>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VARIANTS = {"base": dict(scp=False, mans=False), "+SCP": dict(scp=True, mans=False),
            "+SCP+MANS": dict(scp=True, mans=True)}


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="reverse", choices=("reverse", "flip"))
    p.add_argument("--time-sampler", default="clipped", choices=("clipped", "uniform"),
                   help="method.time_sampler: DINOISER's clipped U[t_min, 1] or U[0, 1]")
    p.add_argument("--symbols", type=int, default=16)
    p.add_argument("--length", type=int, default=8)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--train-steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ks", default="1,2,5,10,20,200,2000")
    p.add_argument("--sampler", default="ddim", choices=("ddim", "cedi", "diffuseq"),
                   help="the rows' sampler (diffuseq: DiffuSeq-style ancestral); the SC gap is always DDIM's")
    p.add_argument("--eval-n", type=int, default=256)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=0, help="pin to this many CPUs (0: no pinning)")
    p.add_argument("--out", default=None, help="default benchmarks/results/fastdiss_few_step_<task>")
    return p.parse_args()


def make_config(a, **method):
    import ml_collections

    n = a.length + 1
    m = dict(name="fastdiss", dim=a.dim, time_sampler=a.time_sampler, first_pass=0.5, length_weight=0.5, sampler="ddim", length_beam=1,
             beta_phases=(a.train_steps // 3, 2 * a.train_steps // 3), mans_betas=(2.0, 3.0, 4.0))
    m.update(method)
    return ml_collections.ConfigDict({
        "model": dict(name="encdec", vocab_size=4 + a.symbols, width=a.width, heads=4, enc_depth=a.depth,
                      dec_depth=a.depth, mlp_ratio=4, max_src_len=n, max_tgt_len=n),
        "method": m, "data": dict(seq_len=n), "train": dict(steps=a.train_steps)})


def reversal_batch(key, b, symbols, length, task="reverse"):
    """Source = symbols + EOS, target = reversed symbols + EOS (``flip``: + symbols/2 mod symbols in
    a random half of the rows); ids = symbol + 4 (EOS 2). Also returns the other right answer."""
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(key)
    sym = jax.random.randint(k1, (b, length), 0, symbols)
    rev = sym[:, ::-1]
    shifted = (rev + symbols // 2) % symbols
    coin = jax.random.bernoulli(k2, 0.5, (b, 1)) if task == "flip" else jnp.zeros((b, 1), bool)
    eos = jnp.full((b, 1), 2, jnp.int32)
    mask = jnp.ones((b, length + 1), jnp.float32)
    tgt = jnp.where(coin, shifted, rev) + 4
    other = (jnp.where(coin, rev, shifted) if task == "flip" else rev) + 4
    return {"source": jnp.concatenate([sym + 4, eos], 1), "source_mask": mask,
            "target": jnp.concatenate([tgt, eos], 1), "target_mask": mask}, jnp.concatenate([other, eos], 1)


def train_variant(a, name):
    import jax
    import jax.numpy as jnp
    import optax

    from dlm_jax.methods.base import build_method, model_spec
    from dlm_jax.models import registry

    cfg = make_config(a, **VARIANTS[name])
    model = registry.build(cfg, model_spec(cfg))
    method = build_method(cfg, model.apply)
    params = model.init(jax.random.key(0))
    opt = optax.adam(a.lr, b1=0.9, b2=0.98)
    state = opt.init(params)
    chunk = 100

    @jax.jit
    def train(params, state, start):
        def one(carry, i):
            p, s = carry
            k = jax.random.fold_in(jax.random.key(1), start + i)
            batch = reversal_batch(jax.random.fold_in(k, 7), a.batch, a.symbols, a.length, a.task)[0]
            (loss, m), g = jax.value_and_grad(lambda q: method.loss(q, batch, k, start + i, {}), has_aux=True)(p)
            upd, s = opt.update(g, s, p)
            return (optax.apply_updates(p, upd), s), loss

        (p, s), losses = jax.lax.scan(one, (params, state), jnp.arange(chunk))
        return p, s, losses.mean()

    t0 = time.perf_counter()
    for start in range(0, a.train_steps, chunk):
        params, state, loss = train(params, state, start)
        if (start // chunk) % 5 == 4:
            print(f"  {name}: step {start + chunk}, loss {float(loss):.4f}", flush=True)
    return method, params, time.perf_counter() - t0


def evaluate(a, method, params, ks):
    import jax
    import jax.numpy as jnp
    import numpy as np

    test, other = reversal_batch(jax.random.key(12345), a.eval_n, a.symbols, a.length, a.task)
    rows = []
    for k in ks:
        fn = jax.jit(lambda p, key, k=k: method.sample(p, key, steps=k, sampler=a.sampler, source=test["source"],
                                                       source_mask=test["source_mask"]))
        jax.block_until_ready(fn(params, jax.random.key(0)))
        t0 = time.perf_counter()
        tokens, info = jax.block_until_ready(fn(params, jax.random.key(0)))
        secs = time.perf_counter() - t0
        right = np.asarray(jnp.all(tokens == test["target"], -1) | jnp.all(tokens == other, -1))
        tok_acc = float(np.mean(np.asarray(jnp.maximum(jnp.mean(tokens == test["target"], -1),
                                                       jnp.mean(tokens == other, -1)))))
        rows.append(dict(k=k, nfe=int(info["nfe"]), exact_match=float(right.mean()), token_acc=tok_acc, seconds=secs))
        print(f"    K={k:5d}: exact match {right.mean():.3f}, token acc {tok_acc:.3f}, {secs * 1e3:.0f} ms", flush=True)
    gaps = {}
    for k in (5, 20):
        fn = jax.jit(lambda p, key, k=k: method.sample(p, key, steps=k, sampler="ddim", source=test["source"],
                                                       source_mask=test["source_mask"], record_gap=True)[1]["sc_gap"])
        gaps[k] = [float(g) for g in np.asarray(fn(params, jax.random.key(0)))]
    return rows, gaps


def main():
    a = parse()
    if a.threads:
        os.sched_setaffinity(0, set(range(a.threads)))
    import jax

    ks = [int(k) for k in a.ks.split(",")]
    a.out = a.out or os.path.join(ROOT, "benchmarks", "results", f"fastdiss_few_step_{a.task}_{a.time_sampler}"
                                                       + ("" if a.sampler == "ddim" else f"_{a.sampler}"))
    results = {"args": vars(a), "jax": jax.__version__, "variants": {}}
    for name in a.variants.split(","):
        print(f"{name}: training {a.train_steps} steps", flush=True)
        method, params, secs = train_variant(a, name)
        rows, gaps = evaluate(a, method, params, ks)
        results["variants"][name] = dict(train_seconds=secs, rows=rows, sc_gap=gaps)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out + ".json", "w") as f:
        json.dump(results, f, indent=1)
    print_table(results, ks)
    plot(results, a.out + ".png")


def print_table(results, ks):
    names = list(results["variants"])
    kmax = max(ks)
    print("\n| K | NFE | " + " | ".join(f"{n} exact match" for n in names) + f" | ms / batch | time vs K={kmax} |")
    print("|---:|---:|" + "---:|" * len(names) + "---:|---:|")
    first = results["variants"][names[0]]["rows"]
    slow = next(r["seconds"] for r in first if r["k"] == kmax)
    for i, k in enumerate(ks):
        cells = " | ".join(f"{results['variants'][n]['rows'][i]['exact_match']:.3f}" for n in names)
        secs = first[i]["seconds"]
        print(f"| {k} | {first[i]['nfe']} | {cells} | {secs * 1e3:.0f} | {slow / secs:.0f}x faster |")
    for k in (5, 20):
        print(f"\nSC gap along K={k} (per step): " + "; ".join(
            f"{n}: " + " ".join(f"{g:.2f}" for g in results["variants"][n]["sc_gap"][str(k) if str(k) in
                                                                                   results["variants"][n]["sc_gap"]
                                                                                   else k]) for n in names))


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, v in results["variants"].items():
        ax[0].plot([r["k"] for r in v["rows"]], [r["exact_match"] for r in v["rows"]], "o-", label=name)
        ax[1].plot(range(1, len(v["sc_gap"][5]) + 1), v["sc_gap"][5], "o-", label=f"{name}, K=5")
    ax[0].set_xscale("log")
    ax[0].set_xlabel("DDIM steps K (= NFE)")
    ax[0].set_ylabel("exact match")
    ax[0].legend()
    ax[1].set_xlabel("sampler step")
    ax[1].set_ylabel("SC gap per token")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
