"""FS-DFM diagnostics on the Markov-chain language (issue 13): what distillation can and cannot buy.

Uses ``dlm_jax.methods.fsdfm_diagnostics`` and the exact chain (``MarkovChainLanguage``) of
``configs/fsdfm.py:demo_mask`` (V = 8, L = 32). Prints markdown tables and writes a JSON:

1. **The oracle's few-step curve** — the exact posterior as the denoiser of the cumulative-scalar
   sampler at N ∈ {1, 2, 4, 8, 64} and of the Euler solver at N = 1,024 (mask and uniform source):
   a student that matches the per-position marginals of an exact step can do no better, because
   every position of a step moves independently (the factorisation error).
2. **Sharpening**: the oracle at N = 8 with its log-probs divided by a temperature T < 1 — the only
   lever left to a per-position student on the mask source, and what it costs in entropy.
3. **The RK-4 target at the oracle**: ``KL(E[softmax ℓ_T] ‖ q)`` per (t, h), the bias of the shortcut
   target when the EMA student is the exact posterior (zero would mean q is a fixed point).
4. **Trained runs** (``--teacher`` DFM workdir, ``--student`` FS-DFM workdirs, EMA weights): per
   (t, h), the KL of the student (and of the teacher) to the ideal step (``ideal_student``, exact),
   to the teacher composed over 2/4/8 sub-steps, and the RK-4 consistency loss; the anchor loss at
   h = 1/N_ref against its analytic minimum; the policy's share of the batch per h.

    python benchmarks/fsdfm_diagnostics.py --teacher /tmp/fsdfm_abl/teacher_mask \\
        --student before=/tmp/fsdfm_abl/teacher_mask --student 1.5k=/tmp/fsdfm_abl/baseline
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "configs")]

import fsdfm as fsdfm_configs  # noqa: E402  (configs/fsdfm.py)

from dlm_jax.data.builtin import markov_language  # noqa: E402
from dlm_jax.eval.baselines import sample_unigram_entropy_bits  # noqa: E402
from dlm_jax.methods import dfm  # noqa: E402
from dlm_jax.methods import fsdfm_diagnostics as fd  # noqa: E402
from dlm_jax.methods import fsdfm_teacher as ft  # noqa: E402
from dlm_jax.processes import flow  # noqa: E402
from dlm_jax.runs import load_run  # noqa: E402
from dlm_jax.samplers.jump import sample_dfm_euler, sample_fsdfm  # noqa: E402

GRID = [(0.0, 0.5), (0.0, 0.125), (0.25, 0.5), (0.25, 0.125), (0.5, 0.5), (0.5, 0.125), (0.75, 0.25), (0.875, 0.125)]


def _score(lang, tokens):
    tokens = np.asarray(tokens)
    nll = -np.asarray(lang.log_prob(tokens), np.float64) / tokens.shape[1]
    return {"nll": float(nll.mean()), "nll_se": float(nll.std() / np.sqrt(len(nll))),
            "entropy_bits": float(sample_unigram_entropy_bits(tokens))}


def oracle_fn(lang, source, v, temperature=1.0):
    def fn(x, t, h=None):
        return jnp.log(lang.posteriors(flow.path_evidence(x, t, source=source, vocab_size=v))) / temperature
    return fn


def oracle_curves(lang, v, length, samples, key):
    rows = []
    for source in ("mask", "uniform"):
        fn = oracle_fn(lang, source, v)
        for name, sampler, n in [("fsdfm", sample_fsdfm, k) for k in (1, 2, 4, 8, 64)] + [
                ("dfm_euler", sample_dfm_euler, 1024)]:
            run = jax.jit(lambda k: sampler(fn, k, num_samples=samples, length=length, steps=n, vocab_size=v,
                                            source=source)[0])
            rows.append({"source": source, "sampler": name, "steps": n, **_score(lang, run(key))})
            print(rows[-1], flush=True)
    for temp in (0.9, 0.8, 0.7):
        fn = oracle_fn(lang, "mask", v, temp)
        run = jax.jit(lambda k: sample_fsdfm(fn, k, num_samples=samples, length=length, steps=8, vocab_size=v,
                                             source="mask")[0])
        rows.append({"source": "mask", "sampler": "fsdfm", "steps": 8, "temperature": temp, **_score(lang, run(key))})
        print(rows[-1], flush=True)
    return rows


def ideal_curves(lang, v, length, samples, key, sub=16, chains=32):
    """Uniform source: the sampler driven by the ideal one-step student, (a) the mixture path's own
    per-position transition (``ideal_student``, exact) and (b) the oracle composed over ``sub``
    sub-steps (the CTMC's, Monte Carlo) — the marginal-matching targets a student could reach."""
    q_fn = oracle_fn(lang, "uniform", v)

    def path_fn(x, t, h):
        return jnp.log(fd.ideal_student(jnp.exp(q_fn(x, t)), x, t, h))

    def composed_fn(x, t, h):
        k = jax.random.fold_in(key, (t[0] * 4096).astype(jnp.int32))
        m = fd.composed_marginal(q_fn, k, x, t, h, sub, num_chains=chains, source="uniform")
        return jnp.log(fd.implied_posterior(m, x, t, h))

    rows = []
    for name, fn in (("ideal_path", path_fn), (f"composed_{sub}", composed_fn)):
        for n in (2, 4, 8):
            run = jax.jit(lambda k: sample_fsdfm(fn, k, num_samples=samples, length=length, steps=n, vocab_size=v,
                                                 source="uniform")[0])
            rows.append({"source": "uniform", "sampler": "fsdfm", "denoiser": name, "steps": n,
                         **_score(lang, run(key))})
            print(rows[-1], flush=True)
    return rows


def rk4_bias(lang, v, x1, key, draws):
    q_fn = oracle_fn(lang, "mask", v)
    out = []
    for i, (t0, h0) in enumerate(GRID):
        b = x1.shape[0]
        k_path, k_t = jax.random.split(jax.random.fold_in(key, i))
        t, h = jnp.full((b,), t0), jnp.full((b,), h0)
        xt = flow.sample_path(k_path, x1, t, source="mask", vocab_size=v)
        masked = (xt == v).astype(jnp.float32)
        row = {"t": t0, "h": h0}
        lq = q_fn(xt, t)
        ent = lambda lp: jnp.sum(-jnp.sum(jnp.exp(lp) * jnp.where(jnp.isfinite(lp), lp, 0.0), -1) * masked)  # noqa: E731
        n_masked = jnp.maximum(jnp.sum(masked), 1)
        row["entropy_q"] = float(ent(lq) / n_masked)
        for teacher, labels in (("rk4", "faithful"), ("rk4", "consistent"), ("heun", "faithful")):
            target, conflict = fd.rk4_mean_target(q_fn, k_t, xt, t, h, num_draws=draws, teacher=teacher,
                                                  labels=labels)
            ok = masked * ~jnp.isnan(target).any(-1)
            terms = jnp.where(ok > 0, fd.kl(jnp.exp(target), lq), 0.0)
            row[f"{teacher}_{labels}"] = float(jnp.sum(terms) / jnp.maximum(jnp.sum(ok), 1))
            row[f"conflict_{teacher}_{labels}"] = float(jnp.sum(conflict * masked) / n_masked)
            safe = jnp.where(ok[..., None] > 0, target, lq)
            row[f"entropy_{teacher}_{labels}"] = float(ent(safe) / n_masked)
        out.append(row)
        print(row, flush=True)
    return out


def run_diagnostics(teacher_dir, students, lang, x1, key, chains):
    teacher = load_run(teacher_dir, use_ema=True)
    v = teacher.config.model.vocab_size
    source = teacher.config.method.source
    t_fn = dfm.denoise_fn(teacher.apply, teacher.params, v)
    q_fn = oracle_fn(lang, source, v)
    out = {}
    for label, workdir in students:
        run = load_run(workdir, use_ema=True)
        h_cond = run.config.model.conditioning == "th"
        s_fn = dfm.denoise_fn(run.apply, run.params, v, h_conditioned=h_cond)
        rep = fd.report(s_fn, s_fn, t_fn, key, x1, GRID, source=source, vocab_size=v, num_chains=chains,
                        oracle_q=lambda x, t: jnp.exp(q_fn(x, t)))
        n_ref = int(run.config.method.get("n_ref", 64)) if h_cond else 64
        h_min = jnp.full((x1.shape[0],), 1.0 / n_ref)
        anchor, minimum = [], []
        for i, t0 in enumerate(np.arange(0.0, 1.0, 1.0 / 8)):
            t = jnp.full((x1.shape[0],), t0)
            xt = flow.sample_path(jax.random.fold_in(key, 100 + i), x1, t, source=source, vocab_size=v)
            lp = jax.nn.log_softmax(s_fn(xt, t, h_min), -1)
            anchor.append(float(jnp.mean(flow.generalized_kl_loss(lp, x1, xt, t))))
            minimum.append(float(jnp.mean(flow.generalized_kl_minimum(jnp.exp(q_fn(xt, t)), xt, t))))
        rep["anchor_gkl"], rep["anchor_gkl_min"] = float(np.mean(anchor)), float(np.mean(minimum))
        out[label] = rep
        print(label, json.dumps(rep), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="")
    ap.add_argument("--student", action="append", default=[], help="label=workdir (repeatable)")
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64, help="sequences per (t, h) grid point")
    ap.add_argument("--chains", type=int, default=64)
    ap.add_argument("--draws", type=int, default=64)
    ap.add_argument("--skip-oracle", action="store_true")
    ap.add_argument("--skip-rk4", action="store_true")
    ap.add_argument("--ideal", action="store_true", help="uniform-source ideal-student sampler curves (slow)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "fsdfm_diagnostics.json"))
    args = ap.parse_args()
    cfg = fsdfm_configs.get_config("demo_mask")
    lang = markov_language(cfg.data, cfg.data.seq_len)
    v, length = cfg.data.markov_vocab, cfg.data.seq_len
    key = jax.random.key(13)
    x1 = jnp.asarray(lang.sample(jax.random.key(5), args.batch))
    out = json.load(open(args.out)) if os.path.exists(args.out) else {}
    if not args.skip_oracle:
        out["oracle"] = oracle_curves(lang, v, length, args.samples, key)
    if not args.skip_rk4:
        out["rk4_bias"] = rk4_bias(lang, v, x1, key, args.draws)
    if args.ideal:
        out["ideal"] = ideal_curves(lang, v, length, args.samples, key)
    out["policy_share"] = {p: ft.policy_probs(p, 64, 0).tolist() for p in ft.POLICIES}
    out["policy_share"]["annealed@end(1500 steps, every 250)"] = ft.policy_probs("annealed", 64, 1500, 250).tolist()
    if args.teacher:
        students = [tuple(s.split("=", 1)) for s in args.student]
        out.setdefault("runs", {}).update(run_diagnostics(args.teacher, students, lang, x1, key, args.chains))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print("saved", args.out)


if __name__ == "__main__":
    main()
