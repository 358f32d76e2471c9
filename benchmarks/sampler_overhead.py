"""Sampler overhead: wall-clock of each scan sampler vs K x one jitted forward of the same DiT.

For each model shape and step count K, in the same process: time one jitted forward
``denoise_fn(z, t)`` (the MDLM denoiser: DiT logits over V+1 classes, mask class dropped), then
each jitted sampler (``jax.jit(lambda params, key: sampler(partial(denoise_fn, params), key, ...))``).
Every timing is warm (one untimed call first, which compiles), ``block_until_ready``, median of
``--repeats``.

The DiT has random weights (N(0, 0.02) added to its initialisation, whose zero output layer would
predict uniform) and its params are jit arguments: closed over as constants, a freshly initialised
DiT makes XLA CPU return uninitialised memory (jax 0.10.2), and constant folding would flatter
the timings.

Threads: ``--threads 1`` (default) pins the whole process to one CPU with ``sched_setaffinity``
before JAX starts (XLA's intra-op flags do not hold jax 0.10.2 to one thread); the header states
the CPUs and the measured process-CPU / wall ratio of the forward timing. ``--threads 0``: no pin.

Columns: ``ratio_K = t_sampler / (K t_fwd)`` (target <= 1.10 for the uncached samplers: the scan
costs little beyond its model calls; they make K + 1 calls, so 1 + 1/K is the floor) and
``ratio_nfe = t_sampler / (nfe t_fwd)`` (overhead per real call; the cached sampler makes fewer
calls when K > L). Samplers whose NFE is per sample (``llada``, ``fef``) report the max over the
batch, marked ``*``. Prints a markdown table.

    python benchmarks/sampler_overhead.py                      # tiny + small, K in {8, 64, 256}
    python benchmarks/sampler_overhead.py --shapes tiny --ks 8,64 --repeats 3
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.models import DiTConfig, build_model, make_apply
from dlm_jax.samplers import get_sampler

SHAPES = {
    # name: (vocab V, length L, batch B, width, depth, heads, cond_dim)
    "tiny": (128, 32, 4, 64, 2, 4, 32),
    "small": (1024, 128, 4, 256, 4, 4, 64),
}
SAMPLERS = ("mdlm", "mdlm_cache", "remdm_cap", "remdm_rescale", "remdm_conf", "remdm_loop")


def pin_threads(threads: int) -> list[int]:
    """Restrict every thread of this process to its first ``threads`` allowed CPUs (threads made
    later, e.g. XLA's pool, inherit it); ``0`` leaves the affinity alone. Returns the CPUs."""
    allowed = sorted(os.sched_getaffinity(0))
    if threads <= 0:
        return allowed
    cpus = set(allowed[:threads])
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:  # the thread ended meanwhile
            pass
    return sorted(cpus)


def _median_time(fn, *args, repeats: int) -> tuple[float, object, float]:
    """(median wall seconds, output, process-CPU / wall over the timed calls)."""
    out = jax.block_until_ready(fn(*args))  # warm-up (compiles)
    times, cpu0, wall0 = [], time.process_time(), time.perf_counter()
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times), out, (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def _random_weights(params, key, scale=0.02):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [a + scale * jax.random.normal(k, a.shape, a.dtype)
                                     if jnp.issubdtype(a.dtype, jnp.floating) else a for a, k in zip(leaves, keys)])


def bench_shape(name: str, ks, samplers, repeats: int, top_p: float | None):
    v, length, batch, width, depth, heads, cond_dim = SHAPES[name]
    config = DiTConfig(vocab_size=v + 1, num_classes=v + 1, width=width, depth=depth, heads=heads,
                       cond_dim=cond_dim, max_len=length, conditioning="none")
    graphdef, params = build_model(config, 0)
    params = _random_weights(params, jax.random.key(3))
    apply = make_apply(graphdef)

    def denoise_fn(p, z, t):  # t: 1 = masked, 0 = clean (ignored: conditioning "none", as MDLM-OWT)
        return apply(p, z, {"t": t})[..., :v]

    z = jax.random.randint(jax.random.key(1), (batch, length), 0, v + 1)
    t = jnp.full((batch,), 0.5, jnp.float32)
    t_fwd, _, cpu_ratio = _median_time(jax.jit(denoise_fn), params, z, t, repeats=max(repeats, 20))
    rows = []
    for k in ks:
        for sampler in samplers:
            fn = get_sampler(sampler)
            kwargs = dict(num_samples=batch, length=length, steps=k, vocab_size=v)
            if top_p is not None:
                kwargs["top_p"] = top_p
            run = jax.jit(lambda p, key, fn=fn, kwargs=kwargs: fn(functools.partial(denoise_fn, p), key, **kwargs))
            t_s, (_, info), _ = _median_time(run, params, jax.random.key(2), repeats=repeats)
            nfe_arr = np.asarray(info["nfe"])
            nfe = int(nfe_arr.max())  # per-sample NFE (llada, fef): the max over the batch
            mark = "*" if nfe_arr.ndim else ""
            rows.append((name, sampler, k, f"{nfe}{mark}", t_fwd * 1e3, t_s * 1e3, t_s / (k * t_fwd),
                         t_s / (nfe * t_fwd)))
    return rows, (v, length, batch, width, depth, heads), cpu_ratio


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tiny,small")
    parser.add_argument("--ks", default="8,64,256")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top_p", type=float, default=None, help="override every sampler's top_p")
    parser.add_argument("--threads", type=int, default=1,
                        help="pin the process to this many CPUs before JAX starts (default 1; 0: no pinning)")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads: {args.threads}; expected >= 0")
    cpus = pin_threads(args.threads)  # before the first JAX computation starts XLA's threads
    ks = [int(k) for k in args.ks.split(",")]
    samplers = args.samplers.split(",")
    for s in samplers:
        get_sampler(s)  # fail fast on a bad name
    pin = f"pinned to CPU {cpus} (--threads {args.threads})" if args.threads else f"not pinned (CPUs {cpus})"
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.device_count()}, "
          f"x64 {jax.config.jax_enable_x64}, {pin}")
    print("| shape | sampler | K | nfe | fwd ms | sampler ms | ratio_K | ratio_nfe |")
    print("|---|---|---|---|---|---|---|---|")
    starred = False
    for shape in args.shapes.split(","):
        rows, dims, cpu_ratio = bench_shape(shape, ks, samplers, args.repeats, args.top_p)
        starred |= any("*" in r[3] for r in rows)
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.3f} | {r[5]:.1f} | {r[6]:.3f} | {r[7]:.3f} |",
                  flush=True)
        print(f"<!-- {shape}: V={dims[0]} L={dims[1]} B={dims[2]} width={dims[3]} depth={dims[4]} heads={dims[5]}; "
              f"forward process-CPU/wall {cpu_ratio:.2f} -->")
    if starred:
        print("* nfe is per sample for this sampler: the max over the batch (ratio_nfe uses it)")


if __name__ == "__main__":
    main()
