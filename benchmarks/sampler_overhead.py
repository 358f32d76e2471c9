"""Sampler overhead: wall-clock of each scan sampler vs K x one jitted forward of the same DiT.

For each model shape and step count K, in the same process: time one jitted forward
``denoise_fn(z, t)`` (the MDLM denoiser: DiT logits over V+1 classes, mask class dropped), then
each jitted sampler (``jax.jit(lambda key: sampler(denoise_fn, key, ...))``). Every timing is
warm (one untimed call first, which compiles), ``block_until_ready``, median of ``--repeats``.

Columns: ``ratio_K = t_sampler / (K t_fwd)`` (target <= 1.10 for the uncached samplers: the scan
costs little beyond its model calls; they make K + 1 calls, so 1 + 1/K is the floor) and
``ratio_nfe = t_sampler / (nfe t_fwd)`` (overhead per real call; the cached sampler makes fewer
calls when K > L). Prints a markdown table.

    python benchmarks/sampler_overhead.py                      # tiny + small, K in {8, 64, 256}
    python benchmarks/sampler_overhead.py --shapes tiny --ks 8,64 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from dlm_jax.models import DiTConfig, build_model, make_apply
from dlm_jax.samplers import get_sampler

SHAPES = {
    # name: (vocab V, length L, batch B, width, depth, heads, cond_dim)
    "tiny": (128, 32, 4, 64, 2, 4, 32),
    "small": (1024, 128, 4, 256, 4, 4, 64),
}
SAMPLERS = ("mdlm", "mdlm_cache", "remdm_cap", "remdm_rescale", "remdm_conf", "remdm_loop")


def _median_time(fn, *args, repeats: int) -> tuple[float, object]:
    out = jax.block_until_ready(fn(*args))  # warm-up (compiles)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench_shape(name: str, ks, samplers, repeats: int, top_p: float | None):
    v, length, batch, width, depth, heads, cond_dim = SHAPES[name]
    config = DiTConfig(vocab_size=v + 1, num_classes=v + 1, width=width, depth=depth, heads=heads,
                       cond_dim=cond_dim, max_len=length, conditioning="none")
    graphdef, params = build_model(config, 0)
    apply = make_apply(graphdef)

    def denoise_fn(z, t):  # t: 1 = masked, 0 = clean (ignored: conditioning "none", as MDLM-OWT)
        return apply(params, z, {"t": t})[..., :v]

    z = jax.random.randint(jax.random.key(1), (batch, length), 0, v + 1)
    t = jnp.full((batch,), 0.5, jnp.float32)
    t_fwd, _ = _median_time(jax.jit(denoise_fn), z, t, repeats=max(repeats, 20))
    rows = []
    for k in ks:
        for sampler in samplers:
            fn = get_sampler(sampler)
            kwargs = dict(num_samples=batch, length=length, steps=k, vocab_size=v)
            if top_p is not None:
                kwargs["top_p"] = top_p
            run = jax.jit(lambda key, fn=fn, kwargs=kwargs: fn(denoise_fn, key, **kwargs))
            t_s, (_, info) = _median_time(run, jax.random.key(2), repeats=repeats)
            nfe = int(info["nfe"])
            rows.append((name, sampler, k, nfe, t_fwd * 1e3, t_s * 1e3, t_s / (k * t_fwd), t_s / (nfe * t_fwd)))
    return rows, (v, length, batch, width, depth, heads)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tiny,small")
    parser.add_argument("--ks", default="8,64,256")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top_p", type=float, default=None, help="override every sampler's top_p")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    samplers = args.samplers.split(",")
    for s in samplers:
        get_sampler(s)  # fail fast on a bad name
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.device_count()}, "
          f"x64 {jax.config.jax_enable_x64}")
    print("| shape | sampler | K | nfe | fwd ms | sampler ms | ratio_K | ratio_nfe |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        rows, dims = bench_shape(shape, ks, samplers, args.repeats, args.top_p)
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.3f} | {r[5]:.1f} | {r[6]:.3f} | {r[7]:.3f} |",
                  flush=True)
        print(f"<!-- {shape}: V={dims[0]} L={dims[1]} B={dims[2]} width={dims[3]} depth={dims[4]} heads={dims[5]} -->")


if __name__ == "__main__":
    main()
