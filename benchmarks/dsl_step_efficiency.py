"""DSL's headline claim at small scale (issue 9 item 7, METHODS §4.5): "fine-tuning a pretrained MDLM
with DSL lets ReMDM-style remasking reach the same sample quality with ~4x fewer denoiser calls".

On the synthetic Markov-chain language (``configs/mdlm_markov.py``: V = 8, L = 16; the samples'
exact NLL under the true chain from ``markov_language(config.data, L).log_prob``), with the real
trainer ``dlm_jax.train.loop.train``:

1. an MDLM (``configs/mdlm_markov.py:default``, DiT 128/3/4, no time input) for ``--mdlm-steps`` N;
2. two continuations of ``--extra-steps`` M each, with the same optimiser settings (lr
   ``--ft-lr``, warm-up ``--ft-warmup``, cosine to 0.1·lr, batch 64):
   (a) the MDLM control: ``init_from`` mapping ``"copy"``, same method;
   (b) the DSL fine-tune: ``configs/dsl.py`` settings (d = 48, frozen random anchors, β_init = 1,
       s_max = 100, roar_frac = 10, LogNormal(1.69, 0.9) clamped at 40, CE at all positions) on
       the same DiT, ``init_from`` mapping ``"mdlm_to_dsl"``;
3. samples each (``load_run`` + ``method.sample`` under ``jax.jit``; **raw params**, not EMA: the
   continuations are shorter than the EMA horizon of the preset, 1/(1 − 0.999) = 1,000 steps) and
   scores them: mean exact NLL per token ± s.e. over samples, the mean per-sample unigram entropy
   (bits) so that degenerate low-NLL samples show, and the reference H/L (the exact entropy rate:
   the mean NLL of the true chain's own samples; samplers with top-p < 1 go below it):
   MDLM + ``remdm_loop`` and DSL + ``dsl_remdm_loop`` at T ∈ {8, 16, 32, 64, 128} (NFE = T + 1;
   ReMDM defaults: η = 0.02, t_on = 0.55, t_off = 0.05, α_on = 0.9, top-p 0.9; DSL also with
   ``self_correct=True``), DSL + ``dsl_sde``
   at K ∈ {8, 16, 32} (NFE = 2K + 1; sampler defaults: "sensitive" grid, norm start, s_max = 80,
   η = 0.3, top-k 512), ``dsl_hybrid`` at 48 NFE and ``dsl_roar`` at T = L;
4. the NFE ratio at equal quality: for each DSL ReMDM-loop point, the MDLM NFE reaching the same NLL
   (linear interpolation of NLL in log NFE along the MDLM curve; a bound when outside its range),
   divided by the DSL NFE; and the self-correction probe (METHODS §4.6(6)): true sequences with 10%
   of positions replaced by a different uniformly random token, every position then encoded as a
   decoded token at s_c ~ U[0.8, 1]·s_max (the ReMDM-loop encoding) and read by one denoiser call;
   "fixed" = argmax equals the truth at corrupted positions, "clean preserved" = argmax equals the
   truth elsewhere. The MDLM control reads the corrupted tokens as visible tokens through its raw
   logits (mask class dropped, no SUBS carry-over: with carry-over it would be 0% / 100% by
   construction).

Prints a markdown table, writes a PNG and a JSON beside it.

    python benchmarks/dsl_step_efficiency.py --workdir /tmp/dsl_eff    # N = 1500, M = 1000: see BENCHMARKS.md
    python benchmarks/dsl_step_efficiency.py --workdir /tmp/smoke --mdlm-steps 20 --extra-steps 10 --samples 64

Re-running with the same ``--workdir`` reuses the finished runs (the trainer resumes).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.data.pipeline import markov_language
from dlm_jax.eval.baselines import sample_unigram_entropy_bits
from dlm_jax.runs import load_run
from dlm_jax.samplers.localization import encode_state
from dlm_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T_GRID = (8, 16, 32, 64, 128)
K_GRID = (8, 16, 32)


def _config_module(name):
    spec = importlib.util.spec_from_file_location(f"dlm_bench_cfg_{name}", os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module




def mdlm_config(steps, batch, seq_len):
    c = _config_module("mdlm_markov").get_config("default")
    c.data.seq_len = c.model.max_len = seq_len
    c.train.steps, c.train.batch_size = steps, batch
    c.evals.eval.every = max(steps // 2, 1)
    c.checkpoint.every = steps
    c.sample.num_samples = 2
    return c


def continuation(base, kind, src, steps, lr, warmup):
    """(a) ``kind="mdlm"``: the MDLM config continued with mapping "copy"; (b) ``kind="dsl"``: the
    DSL config (configs/dsl.py) on the same data and DiT, mapping "mdlm_to_dsl"."""
    if kind == "mdlm":
        c = mdlm_config(steps, base.train.batch_size, base.data.seq_len)
        c.init_from.mapping = "copy"
    else:
        c = _config_module("dsl").get_config("tiny")
        c.data = base.data.copy_and_resolve_references()
        for k in ("width", "depth", "heads", "cond_dim", "max_len", "vocab_size"):
            c.model[k] = base.model[k]
        c.train.batch_size = base.train.batch_size
        c.sample.num_samples, c.sample.steps = 2, (8,)
        c.init_from.mapping = "mdlm_to_dsl"
    c.workdir = ""
    c.init_from.workdir, c.init_from.weights = src, "params"
    c.train.steps, c.train.lr, c.train.warmup_steps = steps, lr, warmup
    c.train.ema_decay = base.train.ema_decay
    c.train.log_every = max(steps // 10, 1)
    c.evals.eval.every = max(steps // 2, 1)
    c.checkpoint.every = steps
    return c


def _train(cfg, workdir):
    t0 = time.perf_counter()
    out = loop.train(cfg, workdir)
    return time.perf_counter() - t0, int(out["step"])


def _score(tokens, oracle):
    tokens = np.asarray(tokens)
    nll = -np.asarray(oracle.log_prob(tokens), np.float64) / tokens.shape[1]
    return {"nll": float(nll.mean()), "nll_se": float(nll.std(ddof=1) / np.sqrt(len(nll))),
            "entropy_bits": sample_unigram_entropy_bits(tokens)}


def _evaluate(run, key, *, sampler, steps, samples, oracle, **kw):
    fn = jax.jit(lambda k: run.method.sample(run.params, k, num_samples=samples, steps=steps, sampler=sampler, **kw))
    t0 = time.perf_counter()
    tokens, info = jax.block_until_ready(fn(key))
    wall = time.perf_counter() - t0  # compile + run
    res = _score(tokens, oracle)
    res.update(nfe=int(info["nfe"]), wall_s=wall)
    if "kept" in info:
        res["kept"] = float(info["kept"])
    return res


def equal_quality_nfe(curve, nll):
    """The NFE at which the piecewise-linear (in log NFE) curve ``[(nfe, nll), ...]`` first reaches
    ``nll``: ``(nfe, how)`` with how = "interp", "below_min" (curve already as good at its first
    point: an upper bound) or "never" (not reached: a lower bound, the largest NFE returned)."""
    curve = sorted(curve)
    if curve[0][1] <= nll:
        return float(curve[0][0]), "below_min"
    for (n0, q0), (n1, q1) in zip(curve, curve[1:]):
        if q1 <= nll:
            f = (q0 - nll) / (q0 - q1)
            return float(np.exp(np.log(n0) + f * (np.log(n1) - np.log(n0)))), "interp"
    return float(curve[-1][0]), "never"


def self_correction(run, kind, oracle, key, *, n, frac=0.1, s_max=100.0, snr=None):
    """METHODS §4.6(6): ``frac`` of positions replaced by a different random token; every position
    read as a decoded token (DSL: ``encode_state`` noisy at s_c ~ U[0.8,1]·s_max, or at the fixed SNR
    ``snr`` with noise when given; MDLM: the token itself, raw logits without the mask class and
    without carry-over). Returns fixed / preserved, and for DSL the same figures for the exact
    posterior ``p*(x_i | z)`` of the true chain given that z (the Bayes answer to the same input)."""
    k_x, k_pos, k_tok, k_enc = jax.random.split(key, 4)
    x = oracle.sample(k_x, n)
    v = oracle.vocab_size
    bad = jax.random.uniform(k_pos, x.shape) < frac
    shift = jax.random.randint(k_tok, x.shape, 1, v)
    xc = jnp.where(bad, (x + shift) % v, x).astype(jnp.int32)
    preds = {}
    if kind == "dsl":
        from dlm_jax.methods import dsl as dsl_method
        from dlm_jax.processes import localization as loc

        anchors = dsl_method.anchors_from_config(run.config, run.params)
        if snr is None:
            z = encode_state(k_enc, xc, anchors, jnp.zeros(xc.shape, bool), s_max=s_max)
        else:
            z = loc.encode(k_enc, xc, snr, anchors)
        preds["model"] = jax.jit(lambda p, z: run.apply(p, z, {}))(run.params, z)
        preds["exact"] = jnp.log(jnp.maximum(oracle.posteriors(loc.log_evidence(z, anchors)), 1e-300))
    else:
        preds["model"] = jax.jit(lambda p, t: run.apply(p, t, {}))(run.params, xc)[..., :v]
    x, bad = np.asarray(x), np.asarray(bad)
    out = {"corrupted_positions": int(bad.sum())}
    for name, logits in preds.items():
        ok = np.asarray(jnp.argmax(logits, -1)) == x
        sfx = "" if name == "model" else "_exact"
        out.update({f"fixed{sfx}": float(ok[bad].mean()), f"fixed_se{sfx}": float(ok[bad].std() / np.sqrt(bad.sum())),
                    f"preserved{sfx}": float(ok[~bad].mean()),
                    f"preserved_se{sfx}": float(ok[~bad].std() / np.sqrt((~bad).sum()))})
    return out


def self_correct_rows(dsl_run, oracle, args, key):
    """DSL + ReMDM-loop with ``self_correct=True`` (a remasked decoded position is re-drawn from the
    model's distribution at that visible position instead of being masked)."""
    return [("DSL", "dsl_remdm_loop+self_correct", f"T={t}",
             _evaluate(dsl_run, key, sampler="dsl_remdm_loop", steps=t, samples=args.samples, oracle=oracle,
                       self_correct=True)) for t in T_GRID]


def sample_rows(ctrl, dsl_run, oracle, args):
    """Every (model, sampler, setting, result) row of the sweep."""
    key = jax.random.key(2026)
    rows = []  # (model, sampler, setting, result)
    for t in T_GRID:
        rows.append(("MDLM control", "remdm_loop", f"T={t}",
                     _evaluate(ctrl, key, sampler="remdm_loop", steps=t, samples=args.samples, oracle=oracle)))
    for t in T_GRID:
        rows.append(("DSL", "dsl_remdm_loop", f"T={t}",
                     _evaluate(dsl_run, key, sampler="dsl_remdm_loop", steps=t, samples=args.samples, oracle=oracle)))
    for k in K_GRID:
        rows.append(("DSL", "dsl_sde", f"K={k}",
                     _evaluate(dsl_run, key, sampler="dsl_sde", steps=k, samples=args.samples, oracle=oracle)))
    rows += self_correct_rows(dsl_run, oracle, args, key)
    rows.append(("DSL", "dsl_hybrid", "T=48",
                 _evaluate(dsl_run, key, sampler="dsl_hybrid", steps=48, samples=args.samples, oracle=oracle)))
    rows.append(("DSL", "dsl_roar", f"T=L={args.seq_len}",
                 _evaluate(dsl_run, key, sampler="dsl_roar", steps=args.seq_len, samples=args.samples,
                           oracle=oracle)))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/dsl_step_efficiency")
    ap.add_argument("--mdlm-steps", type=int, default=1500, help="N: MDLM pre-training steps")
    ap.add_argument("--extra-steps", type=int, default=1000, help="M: steps of each continuation")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=16)
    ap.add_argument("--ft-lr", type=float, default=1e-3)
    ap.add_argument("--ft-warmup", type=int, default=50)
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--probe", type=int, default=2048, help="sequences for the self-correction probe")
    ap.add_argument("--probe-snr", type=float, default=5.0,
                    help="second probe: every token encoded at this SNR (5 ≈ the LogNormal median e^1.69)")
    ap.add_argument("--reuse-samples", action="store_true",
                    help="take the sample rows from the JSON of a previous run with the same settings (re-does "
                         "the probe, the ratios, the table and the plot only)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "dsl_step_efficiency.png"))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    dirs = {k: os.path.join(args.workdir, k) for k in ("mdlm", "mdlm_control", "dsl")}
    base = mdlm_config(args.mdlm_steps, args.batch, args.seq_len)
    train_s = {"mdlm": _train(base, dirs["mdlm"])[0]}
    for kind, name in (("mdlm", "mdlm_control"), ("dsl", "dsl")):
        cfg = continuation(base, kind, dirs["mdlm"], args.extra_steps, args.ft_lr, args.ft_warmup)
        train_s[name] = _train(cfg, dirs[name])[0]

    oracle = markov_language(base.data, args.seq_len)
    floor = float(oracle.entropy()) / args.seq_len
    data = np.asarray(oracle.sample(jax.random.key(7), args.samples))
    reference = _score(data, oracle)
    ctrl, dsl_run = load_run(dirs["mdlm_control"], use_ema=False), load_run(dirs["dsl"], use_ema=False)
    s_max = float(dsl_run.config.method.s_max)

    json_path = os.path.splitext(args.out)[0] + ".json"
    if args.reuse_samples:
        with open(json_path) as f:
            prev = json.load(f)
        rows = [(r.pop("model"), r.pop("sampler"), r.pop("setting"), r) for r in prev["rows"]]
        train_s = prev["train_s"]  # the training times of the call that made the rows
        if not any(r[1] == "dsl_remdm_loop+self_correct" for r in rows):  # rows added after the first call
            rows += self_correct_rows(dsl_run, oracle, args, jax.random.key(2026))
    else:
        rows = sample_rows(ctrl, dsl_run, oracle, args)
    for m, s, setting, r in rows:
        print(f"{m:13s} {s:15s} {setting:8s} NFE {r['nfe']:4d}  NLL {r['nll']:.4f} ± {r['nll_se']:.4f}  "
              f"H1 {r['entropy_bits']:.3f} bits  ({r['wall_s']:.1f} s)", flush=True)

    mdlm_curve = [(r["nfe"], r["nll"]) for m, s, _, r in rows if s == "remdm_loop"]
    ratios = []
    for m, s, setting, r in rows:
        if m != "DSL":
            continue
        nfe_eq, how = equal_quality_nfe(mdlm_curve, r["nll"])
        ratios.append((s, setting, r["nfe"], r["nll"], nfe_eq, how, nfe_eq / r["nfe"]))

    probe = {"dsl": self_correction(dsl_run, "dsl", oracle, jax.random.key(11), n=args.probe, s_max=s_max),
             "dsl_low_snr": self_correction(dsl_run, "dsl", oracle, jax.random.key(11), n=args.probe,
                                            snr=args.probe_snr),
             "mdlm_control": self_correction(ctrl, "mdlm", oracle, jax.random.key(11), n=args.probe)}
    wall = time.perf_counter() - t_start

    bound = {"interp": "", "below_min": " (≤: MDLM's first point is already as good)",
             "never": " (≥: MDLM never reaches it)"}
    lines = [f"DSL step efficiency: Markov chain V={base.data.markov_vocab}, L={args.seq_len}, DiT "
             f"{base.model.width}/{base.model.depth}/{base.model.heads}; MDLM {args.mdlm_steps} steps "
             f"({train_s['mdlm']:.0f} s), then {args.extra_steps} extra steps each: MDLM control "
             f"({train_s['mdlm_control']:.0f} s), DSL fine-tune ({train_s['dsl']:.0f} s); raw params; "
             f"{args.samples} samples per point; wall-clock of this call {wall / 60:.1f} min"
             + (" (sample rows reused from the previous call's JSON)" if args.reuse_samples else ""),
             "", "| model | sampler | setting | NFE | NLL/token (nats) ± s.e. | unigram entropy (bits) | "
             "MDLM NFE at equal NLL | NFE ratio |", "|---|---|---|---|---|---|---|---|"]
    ratio_of = {(s, st): (eq, how, q) for s, st, _, _, eq, how, q in ratios}
    for m, s, setting, r in rows:
        eq = ratio_of.get((s, setting))
        cells = ("—", "—") if eq is None else (f"{eq[0]:.1f}{bound[eq[1]]}", f"{eq[2]:.2f}")
        lines.append(f"| {m} | {s} | {setting} | {r['nfe']} | {r['nll']:.4f} ± {r['nll_se']:.4f} | "
                     f"{r['entropy_bits']:.3f} | {cells[0]} | {cells[1]} |")
    lines.append(f"| true chain samples | — | — | — | {reference['nll']:.4f} ± {reference['nll_se']:.4f} "
                 f"(H/L = {floor:.4f}) | {reference['entropy_bits']:.3f} | — | — |")
    lines += ["", "| self-correction probe (10% replaced) | fixed | clean preserved |", "|---|---|---|"]
    probe_rows = (("DSL fine-tune, every token at s_c ~ U[0.8,1]·s_max (ReMDM-loop encoding)", probe["dsl"], ""),
                  ("exact posterior of the true chain, same z", probe["dsl"], "_exact"),
                  (f"DSL fine-tune, every token at s = {args.probe_snr:g}", probe["dsl_low_snr"], ""),
                  ("exact posterior of the true chain, same z", probe["dsl_low_snr"], "_exact"),
                  ("MDLM control (raw logits at visible tokens, no carry-over)", probe["mdlm_control"], ""))
    for name, p, sfx in probe_rows:
        lines.append(f"| {name} | {100 * p['fixed' + sfx]:.1f}% ± {100 * p['fixed_se' + sfx]:.1f} | "
                     f"{100 * p['preserved' + sfx]:.2f}% ± {100 * p['preserved_se' + sfx]:.2f} |")
    print("\n".join(lines), flush=True)

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump({"rows": [dict(model=m, sampler=s, setting=st, **r) for m, s, st, r in rows],
                   "reference": reference, "entropy_rate": floor, "ratios": ratios, "probe": probe,
                   "train_s": train_s, "wall_s": wall, "args": vars(args), "table": lines}, f, indent=1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = (("MDLM control", "remdm_loop", "s-", "MDLM + ReMDM-loop"),
              ("DSL", "dsl_remdm_loop", "o-", "DSL + ReMDM-loop"),
              ("DSL", "dsl_remdm_loop+self_correct", "o:", "DSL + ReMDM-loop, self-correct"), ("DSL", "dsl_sde", "^--", "DSL SL-SDE (2K+1)"),
              ("DSL", "dsl_hybrid", "D", "DSL hybrid (48)"), ("DSL", "dsl_roar", "*", "DSL random-order AR"))
    for ax, key_, label in ((axes[0], "nll", "exact NLL per token under the true chain (nats)"),
                            (axes[1], "entropy_bits", "unigram entropy per sample (bits)")):
        for who, sampler, marker, name in styles:
            pts = sorted((r["nfe"], r[key_], r.get("nll_se", 0.0) if key_ == "nll" else 0.0)
                         for m, s, _, r in rows if m == who and s == sampler)
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=e, fmt=marker, label=name, ms=5, capsize=2)
        ax.axhline(floor if key_ == "nll" else reference[key_], color="gray", lw=1,
                   label="entropy rate H/L (what the true chain's samples score)" if key_ == "nll" else "true samples")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE (denoiser calls)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"DSL vs MDLM control on the Markov language (V={base.data.markov_vocab}, L={args.seq_len}; "
                 f"{args.mdlm_steps} + {args.extra_steps} steps)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")
    return rows, ratios, probe


if __name__ == "__main__":
    main()
