"""Why the demo DSL run's I-MMSE bound is loose (issue 9 item 3): the bound as a function of its
truncation S, the mmse and CE of the trained denoiser per SNR, against the exact context-free
denoiser, and the estimator's spread and grid error.

For a DSL run (default: ``configs/dsl.py:demo`` fine-tuned from the demo MDLM) and ``--batches``
validation batches (EMA params), on an SNR grid (``--dense`` linear points on [0, 1] then
``--geometric`` points up to ``--s-max``), with a fresh ``z_s = s e(x) + √s ε`` per grid point:

* ``mmse(s) = E||e(x) − x̂(z_s)||²`` and ``ce(s) = E[−log p_θ(x | z_s)]`` of the model;
* the same for the exact *context-free* denoiser ``p(v | z) ∝ π_v e^{⟨z, e(v)⟩}`` with π = the
  unigram of the same tokens: a Bayes denoiser, so its bound is ``H(π)`` at every S (METHODS §4.6
  check 2): a reference that any denoiser using context should beat at every s;
* ``R(S) = ∫_0^S ½ mmse ds + ce(S)``: the bound at truncation S (every S gives a valid bound on
  the model "SL-SDE up to S, then decode with p_θ(x | z_S)"; constant in S for a Bayes denoiser);
  the integral split into SNR ranges, so the range that makes the bound loose shows;
* the method's own estimator (``localization.immse_bound`` on the run's grid, Brownian and common
  noise, ``--seeds`` draws) against the same on a 2× denser grid: variance and trapezoid error.

    python benchmarks/dsl_immse_diagnostics.py --workdir runs/demo_dsl
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANGES = ((0.0, 1.0), (1.0, 5.0), (5.0, 20.0), (20.0, 40.0), (40.0, 100.0))


def _batches(run, n):
    from dlm_jax.train import loop

    it = loop.grain_data(run.config, split="validation", process_index=0, process_count=1, workdir=run.workdir)
    out = []
    for batch in it:
        out.append(np.asarray(batch["tokens"]))
        if len(out) == n:
            break
    return np.concatenate(out)


def profile(denoise, tokens, anchors, grid, key):
    """``(mmse [G], ce [G])``: per-token means at each SNR of ``grid`` (fresh z per point)."""
    from dlm_jax.processes import localization as loc

    e = anchors[tokens]

    @jax.jit
    def point(s, k):
        z = s * e + jnp.sqrt(s) * jax.random.normal(k, e.shape)
        logp = denoise(z)
        err = e - loc.posterior_mean(logp, anchors)
        ce = -jnp.take_along_axis(logp, tokens[..., None], -1)[..., 0]
        return jnp.mean(jnp.sum(err**2, -1)), jnp.mean(ce)

    vals = [point(jnp.float32(s), jax.random.fold_in(key, i)) for i, s in enumerate(grid)]
    return np.asarray([float(m) for m, _ in vals]), np.asarray([float(c) for _, c in vals])


def bound_curve(grid, mmse, ce):
    """``R(S_k) = ∫_0^{S_k} ½ mmse ds + ce(S_k)`` (trapezoid) for every grid point."""
    integral = np.concatenate([[0.0], np.cumsum(0.25 * np.diff(grid) * (mmse[1:] + mmse[:-1]))])
    return integral + ce, integral


def range_shares(grid, mmse, s_max):
    """``∫ ½ mmse ds`` over each SNR range in ``RANGES`` (clipped at ``s_max``)."""
    fine = np.linspace(0.0, s_max, 20001)
    m = np.interp(fine, grid, mmse)
    out = {}
    for lo, hi in RANGES:
        sel = (fine >= lo) & (fine <= min(hi, s_max))
        if sel.sum() > 1:
            out[f"{lo:g}-{min(hi, s_max):g}"] = float(np.trapezoid(0.5 * m[sel], fine[sel]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="runs/demo_dsl")
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--dense", type=int, default=20)
    ap.add_argument("--geometric", type=int, default=60)
    ap.add_argument("--s-max", type=float, default=100.0)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "dsl_immse_diagnostics.json"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    from dlm_jax.methods import dsl
    from dlm_jax.processes import localization as loc
    from dlm_jax.runs import load_run

    run = load_run(args.workdir, step=args.step)
    tokens = jnp.asarray(_batches(run, args.batches))
    anchors = dsl.anchors_from_config(run.config, run.params)
    v = anchors.shape[0]
    model = dsl.denoise_fn(run.apply, run.params)
    counts = np.bincount(np.asarray(tokens).ravel(), minlength=v).astype(np.float64)
    prior = counts / counts.sum()
    h_unigram = float(-(prior[prior > 0] * np.log(prior[prior > 0])).sum())
    log_prior = jnp.asarray(np.log(np.maximum(prior, 1e-300)), jnp.float32)
    unigram = lambda z: jax.nn.log_softmax(loc.log_evidence(z, anchors) + log_prior, -1)  # noqa: E731

    grid = loc.immse_grid(args.s_max, num_dense=args.dense, num_geometric=args.geometric)
    key = jax.random.key(0)
    res = {"workdir": args.workdir, "step": int(run.step), "tokens": int(tokens.size), "grid": grid.tolist(),
           "h_unigram": h_unigram}
    for name, fn in (("model", model), ("unigram_exact", unigram)):
        mmse, ce = profile(fn, tokens, anchors, grid, key)
        r, integral = bound_curve(grid, mmse, ce)
        res[name] = {"mmse": mmse.tolist(), "ce": ce.tolist(), "R": r.tolist(), "integral": integral.tolist(),
                     "ranges": range_shares(grid, mmse, args.s_max), "best_S": float(grid[int(np.argmin(r))]),
                     "best_R": float(r.min()), "R_at_S_max": float(r[-1])}
        print(f"{name}: R(S_max={args.s_max:g}) = {r[-1]:.3f}, min_S R = {r.min():.3f} at S = {grid[np.argmin(r)]:.2f}; "
              f"½∫mmse by range {res[name]['ranges']}", flush=True)

    # The method's estimator on the run's own grid and on a 4x denser one, both noises, several seeds.
    mc = run.config.method
    run_grid = loc.immse_grid(float(mc.immse_s_max or mc.s_max), num_dense=int(mc.immse_dense),
                              num_geometric=int(mc.immse_geometric))
    dense_grid = loc.immse_grid(float(mc.immse_s_max or mc.s_max), num_dense=2 * int(mc.immse_dense),
                                num_geometric=2 * int(mc.immse_geometric))

    def save():
        res["wall_s"] = time.perf_counter() - t0
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)

    save()
    est = {}
    for gname, g in (("run_grid", run_grid), ("dense_grid", dense_grid)) if args.seeds > 0 else ():
        for noise in ("brownian", "common"):
            f = jax.jit(lambda k, g=g, noise=noise: jnp.mean(loc.immse_bound(model, tokens, anchors, k, grid=g,
                                                                             noise=noise)))
            vals = [float(f(jax.random.key(100 + i))) for i in range(args.seeds)]
            est[f"{gname}/{noise}"] = {"values": vals, "mean": float(np.mean(vals)),
                                       "spread": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                                       "points": int(len(g))}
            print(f"estimator {gname} ({len(g)} points) {noise}: {np.round(vals, 3).tolist()}", flush=True)
            res["estimator"] = est
            save()
    print(f"saved {args.out} ({res['wall_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
