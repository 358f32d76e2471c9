"""Sampler throughput side by side: dlm_jax's jitted scan samplers vs PyTorch eager reference loops.

Same weights on both sides: a random-weight DiT (MDLM-OWT style, no time input) and a random-weight
LLaDA, copied into the PyTorch twins that ship with dlm_jax (``dlm_jax.export.torch_dit`` /
``torch_llada``). The PyTorch loops are written the way the reference repositories write theirs,
from their published algorithms (not their code):

* ``mdlm_cache`` vs MDLM's ``_ddpm_caching_update`` loop: a Python loop over K steps on
  ``linspace(1, eps, K + 1)``; the network is called only when the previous step changed a token
  (``p_x0`` cached otherwise); ``q(x_s) = p_x0 (t − s)`` with mass s on the mask, a Gumbel-style
  draw ``argmax q / −log u``, unmasked tokens carried over; a final noise-removal call takes the
  argmax at the still-masked positions.
* ``mdlm`` vs the same loop without the cache (one call per step + the final call).
* ``llada`` vs LLaDA's ``generate``: blocks of ``block_length`` tokens, K/blocks steps each, greedy
  ``argmax`` (temperature 0), confidence = float64 softmax probability of the argmax, per row the
  ``k_i`` most confident masked tokens of the current block committed (``k_i`` splits the block's
  masks evenly, remainder to the first steps).

Tokens/s = B·L / median wall seconds of a whole sample (warm: one untimed call first, which
compiles the JAX program), ``--repeats`` timings interleaved JAX / PyTorch so machine noise hits
both. ``--threads 1`` (default) pins the process to one CPU and ``torch.set_num_threads(1)``: on a
shared CPU this is the only stable comparison; ``--threads 0`` leaves both free (GPU: use
``benchmarks/gpu_suite.sh``, where the PyTorch loop runs on CUDA). Prints a markdown table; the
ratio column is JAX tokens/s ÷ PyTorch tokens/s; for greedy LLaDA (deterministic) the last column is
the share of tokens on which both sides agree (1.000: the same computation was timed).

    python benchmarks/sampler_throughput.py                          # small DiT + LLaDA, B 1,16, K 32
    python benchmarks/sampler_throughput.py --batches 1,64 --ks 64,256 --threads 0 --device cuda
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sampler_overhead import _random_weights, pin_threads  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from dlm_jax.export.params import flatten  # noqa: E402
from dlm_jax.models import DiTConfig, build_model, make_apply  # noqa: E402
from dlm_jax.samplers import get_sampler  # noqa: E402

SHAPES = {
    # name: (V clean tokens, L, width, depth, heads, cond_dim)
    "tiny": (128, 32, 64, 2, 4, 32),
    "small": (1024, 128, 256, 4, 4, 64),
    "gpt2s": (50257, 1024, 768, 12, 12, 128),  # MDLM-OWT's 170M DiT (GPU only)
}


# ----------------------------------------------------------------------------------------------
# PyTorch reference loops (eager, one Python iteration per step).
# ----------------------------------------------------------------------------------------------
def torch_mdlm(model, *, batch, length, steps, v, cache, device, generator, eps=1e-5):
    """MDLM's ancestral loop with (``cache``) or without prediction caching; returns (ids, nfe)."""
    import torch

    mask = v
    x = torch.full((batch, length), mask, dtype=torch.long, device=device)
    ts = torch.linspace(1.0, eps, steps + 1, device=device)
    dt = (1.0 - eps) / steps
    p_x0, nfe = None, 0
    with torch.no_grad():
        for i in range(steps):
            t = ts[i]
            if p_x0 is None:
                p_x0 = torch.softmax(model(x)[..., :v].double(), -1)
                nfe += 1
            q = p_x0 * (t - (t - dt))
            q = torch.cat([q, torch.full_like(q[..., :1], float(t - dt))], -1)
            u = torch.rand(q.shape, dtype=torch.float64, device=device, generator=generator)
            draw = (q / (1e-10 - torch.log(u + 1e-10))).argmax(-1)
            new = torch.where(x != mask, x, draw)
            if not cache or not torch.equal(new, x):
                p_x0 = None
            x = new
        still = x == mask
        if bool(still.any()):
            final = model(x)[..., :v].argmax(-1)
            nfe += 1
            x = torch.where(still, final, x)
    return x, nfe


def _transfer_counts(masked: int, steps: int) -> list[int]:
    base, rem = divmod(masked, steps)
    return [base + (1 if i < rem else 0) for i in range(steps)]


def torch_llada(model, *, batch, length, steps, mask_id, block_length, device):
    """LLaDA's ``generate`` (low confidence, temperature 0); returns (ids, nfe)."""
    import torch

    x = torch.full((batch, length), mask_id, dtype=torch.long, device=device)
    blocks = length // block_length
    per_block = steps // blocks
    nfe = 0
    with torch.no_grad():
        for b in range(blocks):
            end = (b + 1) * block_length
            counts = _transfer_counts(block_length, per_block)
            for i in range(per_block):
                masked = x == mask_id
                logits = model(x)
                logits[..., mask_id] = -float("inf")  # dlm_jax order: the mask class is never committed
                nfe += 1
                x0 = logits.argmax(-1)
                p = torch.softmax(logits.double(), -1)
                conf = torch.gather(p, -1, x0[..., None])[..., 0]
                conf[:, end:] = -float("inf")
                conf = torch.where(masked, conf, torch.full_like(conf, -float("inf")))
                x0 = torch.where(masked, x0, x)
                commit = torch.zeros_like(masked)
                for j in range(batch):
                    _, idx = torch.topk(conf[j], k=counts[i])
                    commit[j, idx] = True
                x = torch.where(commit, x0, x)
    return x, nfe


# ----------------------------------------------------------------------------------------------
# Models on both sides.
# ----------------------------------------------------------------------------------------------
def dit_pair(shape: str, device: str):
    from dlm_jax.export.torch_dit import TorchDiT
    from dlm_jax.export.dit_layout import dit_dims

    v, length, width, depth, heads, cond_dim = SHAPES[shape]
    cfg = DiTConfig(vocab_size=v + 1, num_classes=v + 1, width=width, depth=depth, heads=heads, cond_dim=cond_dim,
                    max_len=length, conditioning="none")
    graphdef, params = build_model(cfg, 0)
    params = _random_weights(params, jax.random.key(3))
    apply = make_apply(graphdef)
    twin = TorchDiT(dit_dims(cfg))
    twin.load_own(flatten(params))
    twin = twin.to(device).eval()

    def denoise(p, z, t):  # t ignored: no time input (MDLM-OWT)
        return apply(p, z, {"t": t})[..., :v]

    return params, denoise, twin, v, length


def llada_pair(shape: str, device: str):
    from dlm_jax.export.torch_llada import TorchLLaDA
    from dlm_jax.methods.base import model_spec
    from dlm_jax.models import registry

    v, length, width, depth, heads, _ = SHAPES[shape]
    config = ml_collections.ConfigDict({
        "model": dict(name="llada", vocab_size=v, width=width, depth=depth, heads=heads, kv_heads=heads,
                      mlp_dim=4 * width, max_len=length, mask_token_id=v),
        "method": {"name": "mdlm"}, "data": {"seq_len": length}})
    model = registry.build(config, model_spec(config))
    params = _random_weights(jax.jit(model.init)(jax.random.key(0)), jax.random.key(4))
    twin = TorchLLaDA(model.config.to_dict())
    twin.load_own(flatten(params))
    twin = twin.to(device).eval()

    def denoise(p, z, t):
        return model.apply(p, z, {})[..., :v]

    return params, denoise, twin, v, length


# ----------------------------------------------------------------------------------------------
# Timing.
# ----------------------------------------------------------------------------------------------
def _interleaved(fns: dict, repeats: int) -> dict:
    """{name: (median seconds, last output)}; one untimed call each first, then rounds in turn."""
    outs = {k: f() for k, f in fns.items()}
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            start = time.perf_counter()
            outs[k] = f()
            times[k].append(time.perf_counter() - start)
    return {k: (statistics.median(times[k]), outs[k]) for k in fns}


def bench(kind: str, shape: str, batch: int, k: int, repeats: int, device: str, block_length: int) -> dict:
    import torch

    pair = dit_pair if kind in ("mdlm", "mdlm_cache") else llada_pair
    params, denoise, twin, v, length = pair(shape, device)
    sampler = get_sampler(kind)
    kwargs = dict(num_samples=batch, length=length, steps=k, vocab_size=v)
    if kind == "llada":
        kwargs["block_length"] = block_length
    run = jax.jit(lambda p, key: sampler(functools.partial(denoise, p), key, **kwargs))
    keys = iter(jax.random.split(jax.random.key(2), 10_000))
    gen = torch.Generator(device=device).manual_seed(0)

    last = {}

    def jax_fn():
        tokens, info = jax.block_until_ready(run(params, next(keys)))
        last["jax"] = np.asarray(tokens)
        return int(np.asarray(info["nfe"]).max())

    def torch_fn():
        if kind == "llada":
            x, nfe = torch_llada(twin, batch=batch, length=length, steps=k, mask_id=v, block_length=block_length,
                                 device=device)
        else:
            x, nfe = torch_mdlm(twin, batch=batch, length=length, steps=k, v=v, cache=kind == "mdlm_cache",
                                device=device, generator=gen)
        if device != "cpu":
            torch.cuda.synchronize()
        last["torch"] = x.cpu().numpy()
        return nfe

    res = _interleaved({"jax": jax_fn, "torch": torch_fn}, repeats)
    tok = batch * length
    # greedy LLaDA is deterministic: both sides must produce the same tokens (the same work was timed)
    same = float((last["jax"] == last["torch"]).mean()) if kind == "llada" else float("nan")
    return dict(same=same, kind=kind, shape=shape, batch=batch, k=k, jax_s=res["jax"][0], torch_s=res["torch"][0],
                jax_nfe=res["jax"][1], torch_nfe=res["torch"][1], jax_tps=tok / res["jax"][0],
                torch_tps=tok / res["torch"][0], ratio=res["torch"][0] / res["jax"][0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="small", choices=sorted(SHAPES))
    ap.add_argument("--samplers", default="mdlm_cache,mdlm,llada")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--ks", default="32")
    ap.add_argument("--block-length", type=int, default=32, help="LLaDA block length (divides L; K divisible by "
                                                                    "the number of blocks)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="pin to this many CPUs (0: no pinning)")
    ap.add_argument("--device", default="cpu", help="PyTorch device (cpu, cuda)")
    args = ap.parse_args(argv)
    cpus = pin_threads(args.threads)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} ({args.device}), "
          f"shape {args.shape} {SHAPES[args.shape]}, " + (f"pinned to CPUs {cpus}" if args.threads else "not pinned"))
    print("| sampler | B | K | NFE jax / torch | jax tok/s | torch tok/s | jax ÷ torch | same tokens |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.samplers.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            for k in (int(x) for x in args.ks.split(",")):
                r = bench(kind, args.shape, batch, k, args.repeats, args.device, args.block_length)
                print(f"| {kind} | {batch} | {k} | {r['jax_nfe']} / {r['torch_nfe']} | {r['jax_tps']:.0f} | "
                      f"{r['torch_tps']:.0f} | {r['ratio']:.2f} | "
                      f"{'-' if r['same'] != r['same'] else format(r['same'], '.3f')} |", flush=True)


if __name__ == "__main__":
    main()
