"""Train-step throughput of dlm_jax (MDLM on the DiT) against the identical model in PyTorch eager.

    python benchmarks/train_throughput.py --preset tiny --steps 10 --repeats 7
    python benchmarks/train_throughput.py --preset small --breakdown --json out.json
    python benchmarks/train_throughput.py --preset tiny --variant onehot_embed,einsum_attn

The JAX step is the real trainer step: `dlm_jax.train.state.create_train_state` + `dlm_jax.train.step.
make_train_step` (jit, state donated, 1-device mesh, strategy "dp") over `dlm_jax.methods.mdlm.build`'s loss.
The PyTorch step is `benchmarks/torch_dit.py` (same architecture and parameter count — asserted — same MDLM
loss, global-norm clipping, AdamW, EMA). Both run in the same process, INTERLEAVED: each repeat times
`--steps` JAX steps, then `--steps` torch steps; medians over repeats and the ratio are reported, so machine
noise (shared CPUs) hits both alike. Compile time (lower + compile) is measured apart from step time.

`--breakdown` also times the pieces in both frameworks (forward loss, forward+backward, optimizer update).
`--variant` sets DiTConfig compute switches (attention_impl, qkv_impl, rope_impl, embed_impl; see VARIANTS) to
measure an alternative implementation of the same model; with `--breakdown` the default model is timed in the
same run.

MFU (GPU only): FLOPs per step = 6·N·T + 12·depth·L·width·T  (T = B·L tokens, N = non-embedding params:
every matmul weight; the embedding lookup is a gather; the factor 12 = 3 (fwd+bwd) × 2 matmuls (QKᵀ, PV)
× 2 FLOPs per MAC), divided by step time and `--peak-tflops` (default 989 = H100/H200 SXM dense bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

PRESETS = {
    "tiny": dict(width=128, depth=4, heads=4, cond_dim=128, seq_len=128, batch=32, vocab=1024),
    "small": dict(width=256, depth=4, heads=4, cond_dim=128, seq_len=128, batch=32, vocab=1024),
    "mdlm-small": dict(width=768, depth=12, heads=12, cond_dim=128, seq_len=1024, batch=8, vocab=50257),
}


# ------------------------------------------------------------------------------------------------------------
# Variants: DiTConfig compute switches (same params, same function up to float rounding; see DiTConfig).
# ------------------------------------------------------------------------------------------------------------
VARIANTS = {  # name: (DiTConfig field, value, what it measures)
    "qkv_split": ("qkv_impl", "split", "q, k, v as three dots on kernel slices (no slicing of the [B,L,3,H,D] "
                                       "activation)"),
    "onehot_embed": ("embed_impl", "onehot", "token embedding as one_hot(x) @ table instead of a gather"),
    "einsum_attn": ("attention_impl", "einsum", "plain einsum/softmax attention instead of "
                                                "jax.nn.dot_product_attention"),
    "rope_split": ("rope_impl", "split_halves", "rotary on halves (one concat) instead of rotate-half concat + "
                                                "full multiply"),
}


def variant_fields(variants) -> dict:
    """{DiTConfig field: value} for a list of VARIANTS names."""
    return {VARIANTS[v][0]: VARIANTS[v][1] for v in variants}


# ------------------------------------------------------------------------------------------------------------
# JAX side: the real trainer step.
# ------------------------------------------------------------------------------------------------------------
def make_config(p, dtype: str, switches=None):
    v = p["vocab"]
    return ml_collections.ConfigDict({
        "seed": 0,
        "model": dict(vocab_size=v, width=p["width"], depth=p["depth"], heads=p["heads"],
                      cond_dim=p["cond_dim"], max_len=p["seq_len"], dtype=dtype, **(switches or {})),
        "method": dict(name="mdlm", time_conditioning=False),
        "data": dict(seq_len=p["seq_len"]),
        "train": dict(lr=3e-4, schedule="constant", warmup_steps=0, grad_clip=1.0, weight_decay=0.0,
                      ema_decay=0.9999, steps=10_000),
    })


def dit_config(p, dtype: str, switches=None):
    from dlm_jax.models import DiTConfig

    v = p["vocab"]  # clean tokens; the mask id is V, so the model sees V + 1 ids and outputs V + 1 classes
    return DiTConfig(vocab_size=v + 1, num_classes=v + 1, width=p["width"], depth=p["depth"], heads=p["heads"],
                     cond_dim=p["cond_dim"], max_len=p["seq_len"], conditioning="none", dtype=dtype,
                     **(switches or {}))


class JaxBench:
    def __init__(self, p, dtype: str, donate: bool = True, switches=None, guard: bool = True):
        from dlm_jax.methods import mdlm
        from dlm_jax.models import build_model, count_params, make_apply
        from dlm_jax import mesh as mesh_lib
        from dlm_jax.train import optim
        from dlm_jax.train import state as state_lib
        from dlm_jax.train import step as step_lib

        self.p, self.cfg = p, make_config(p, dtype, switches)
        mcfg = dit_config(p, dtype, switches)
        self.mesh = mesh_lib.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
        # As dlm_jax.train.loop.train: model traced and state created outside the mesh context, mesh around steps.
        graphdef, init_params = state_lib.trace_model(lambda: build_model(mcfg, 0))
        self.apply = make_apply(graphdef)
        self.method = mdlm.build(self.cfg, self.apply)
        self.optimizer = optim.make_optimizer(self.cfg.train, 10_000)
        self.state, shards = state_lib.create_train_state(
            init_params, self.optimizer, self.method.init_extra, 0, self.mesh, "dp")
        with jax.set_mesh(self.mesh):
            self.step_fn = step_lib.make_train_step(self.method, self.cfg.train, mesh=self.mesh,
                                                    state_shardings=shards, total_steps=10_000, donate=donate,
                                                    nonfinite_guard=guard)
        self.n_params = count_params(self.state.params)
        self.graphdef = graphdef
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, p["vocab"], (p["batch"], p["seq_len"]), dtype=np.int32)
        self.batch = step_lib.global_batch({"tokens": tokens}, self.mesh)
        self.tokens_np = tokens

    def compile(self) -> float:
        t0 = time.perf_counter()
        with jax.set_mesh(self.mesh):
            self.compiled = self.step_fn.lower(self.state, self.batch).compile()
        return time.perf_counter() - t0

    def run(self, n: int) -> float:
        """Seconds per step over n steps (host loop, as the trainer's loop)."""
        t0 = time.perf_counter()
        for _ in range(n):
            self.state, metrics = self.compiled(self.state, self.batch)
        jax.block_until_ready((self.state, metrics))
        self.last_loss = float(metrics["loss"])
        return (time.perf_counter() - t0) / n

    # Pieces (for --breakdown): forward loss, forward + backward, optimizer update.
    def pieces(self):
        import optax

        params, batch, key = self.state.params, self.batch, jax.random.key(1)
        loss = lambda prm: self.method.loss(prm, batch, key)[0]  # noqa: E731
        fwd = jax.jit(loss)
        fwdbwd = jax.jit(jax.value_and_grad(loss))
        grads = fwdbwd(params)[1]

        def opt(params, opt_state, grads):
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        opt_j = jax.jit(opt)
        jax.block_until_ready((fwd(params), grads, opt_j(params, self.state.opt_state, grads)))
        return {
            "forward (loss)": lambda: fwd(params).block_until_ready(),
            "forward+backward": lambda: jax.block_until_ready(fwdbwd(params)),
            "optimizer (clip+AdamW)": lambda: jax.block_until_ready(opt_j(params, self.state.opt_state, grads)),
        }


# ------------------------------------------------------------------------------------------------------------
# PyTorch side.
# ------------------------------------------------------------------------------------------------------------
class TorchBench:
    def __init__(self, p, tokens_np, jax_params=None, device: str = "cpu", autocast_bf16: bool = False):
        import contextlib

        import torch

        from benchmarks import torch_dit

        self.torch, self.td, self.p = torch, torch_dit, p
        torch.manual_seed(0)
        self.model = torch_dit.TorchDiT.from_config(dit_config(p, "float32"))
        if jax_params is not None:
            torch_dit.load_jax_params(self.model, jax_params)
        self.model.to(device)
        self.n_params = torch_dit.count_params(self.model)
        self.opt = torch_dit.make_optimizer(self.model, lr=3e-4, weight_decay=0.0)
        self.ema = [q.detach().clone() for q in self.model.parameters()]
        self.x = torch.from_numpy(tokens_np).long().to(device)
        self.gen = torch.Generator(device=device).manual_seed(0)
        # bfloat16 compute with float32 master weights, as the JAX side's dtype=bfloat16 (GPU only)
        self.autocast = ((lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if autocast_bf16
                         else contextlib.nullcontext)

    def step(self):
        with self.autocast():
            return self.td.train_step(self.model, self.opt, self.x, self.p["vocab"], grad_clip=1.0, ema=self.ema,
                                      ema_decay=0.9999, generator=self.gen)

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            loss = self.step()
        self.last_loss = float(loss)
        return (time.perf_counter() - t0) / n

    def pieces(self):
        torch, td = self.torch, self.td
        m, x, v = self.model, self.x, self.p["vocab"]

        def fwd():
            with torch.no_grad():
                td.mdlm_loss(m, x, v, generator=self.gen)

        def fwdbwd():
            m.zero_grad(set_to_none=True)
            td.mdlm_loss(m, x, v, generator=self.gen).backward()

        def opt():
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0, foreach=True)
            self.opt.step()

        fwdbwd()
        return {"forward (loss)": fwd, "forward+backward": fwdbwd, "optimizer (clip+AdamW)": opt}


# ------------------------------------------------------------------------------------------------------------
def interleaved(fns: dict, repeats: int, n: int) -> dict:
    """{name: [seconds per call, one per repeat]}; each repeat runs every fn n times, in turn."""
    out = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            out[k].append(f(n))
    return out


def per_call(f):
    def timed(n):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        return (time.perf_counter() - t0) / n
    return timed


def flops_per_step(p, n_nonembed: int) -> float:
    tokens = p["batch"] * p["seq_len"]
    return 6.0 * n_nonembed * tokens + 12.0 * p["depth"] * p["seq_len"] * p["width"] * tokens


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS) + ["all"],
                    help="model/batch preset; 'all' = tiny and small (and mdlm-small on a GPU)")
    ap.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats (medians reported)")
    ap.add_argument("--batch", type=int, default=None, help="override the preset batch size")
    ap.add_argument("--seq-len", type=int, default=None, help="override the preset sequence length")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="DiT compute dtype on the JAX side (torch always float32 eager)")
    ap.add_argument("--no-torch", action="store_true", help="JAX only")
    ap.add_argument("--torch-device", default="cpu", help="PyTorch device (cuda on a GPU machine: bf16 autocast "
                                                          "when --dtype bfloat16)")
    ap.add_argument("--no-donate", action="store_true", help="do not donate the train state")
    ap.add_argument("--breakdown", action="store_true", help="also time forward / backward / optimizer")
    ap.add_argument("--breakdown-only", action="store_true", help="only the component timings (no full step)")
    ap.add_argument("--variant", default="", help="comma list of DiTConfig switches: " + ", ".join(
        f"{k} ({f}={v!r})" for k, (f, v, _) in VARIANTS.items()))
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="chip bf16 dense peak for MFU on GPU (989 = H100/H200 SXM)")
    ap.add_argument("--threads", type=int, default=None,
                    help="compute threads for both: torch.set_num_threads(N) and, for N=1, XLA's "
                         "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1 (default: each "
                         "framework's own, i.e. all cores)")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--guard-cost", action="store_true",
                    help="JAX only: time the step with and without the non-finite guard, interleaved")
    args = ap.parse_args(argv)

    variants = [v for v in args.variant.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"--variant: {v!r}; expected a comma list of {tuple(VARIANTS)}")

    if args.threads == 1:  # before the backend starts (the first jax call below)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
        # XLA_FLAGS alone does not hold jax 0.10.2 to one core (it keeps ~1.9 busy): pin the process.
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    backend = jax.default_backend()
    presets = [args.preset] if args.preset != "all" else ["tiny", "small"] + (["mdlm-small"] if backend == "gpu"
                                                                              else [])
    try:
        import torch
        have_torch = not args.no_torch
        if args.threads:
            torch.set_num_threads(args.threads)
    except ImportError:
        have_torch = False

    env = {"backend": backend, "jax": jax.__version__, "devices": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "python": platform.python_version(),
           "variant": args.variant, "dtype": args.dtype, "donate": not args.no_donate}
    if have_torch:
        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    print("# " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)

    results = []
    for name in presets:
        p = dict(PRESETS[name])
        if args.batch:
            p["batch"] = args.batch
        if args.seq_len:
            p["seq_len"] = args.seq_len
        base_pieces = {}
        if variants and (args.breakdown or args.breakdown_only):
            # The default model: base and variant are timed in the same run.
            base_pieces = {f"jax base {k}": per_call(f) for k, f in JaxBench(p, args.dtype).pieces().items()}
        jb = JaxBench(p, args.dtype, donate=not args.no_donate, switches=variant_fields(variants))
        row = dict(preset=name, **p, params=jb.n_params)
        tb = None
        if have_torch:
            tb = TorchBench(p, jb.tokens_np, device=args.torch_device,
                            autocast_bf16=args.dtype == "bfloat16" and args.torch_device != "cpu")
            if tb.n_params != jb.n_params:
                raise AssertionError(f"torch twin has {tb.n_params} params; JAX DiT has {jb.n_params}")
        if args.guard_cost:
            off = JaxBench(p, args.dtype, donate=not args.no_donate, switches=variant_fields(variants), guard=False)
            jb.compile(), off.compile()
            jb.run(2), off.run(2)
            times = interleaved({"guard": jb.run, "no_guard": off.run}, args.repeats, args.steps)
            row.update({f"{k}_ms": 1e3 * statistics.median(v) for k, v in times.items()})
            row["guard_over_no_guard"] = row["guard_ms"] / row["no_guard_ms"]
            print(f"{name}: step with the non-finite guard {row['guard_ms']:.1f} ms, without "
                  f"{row['no_guard_ms']:.1f} ms: ratio {row['guard_over_no_guard']:.3f} "
                  f"(medians of {args.repeats} interleaved repeats)", flush=True)
            results.append(row)
            continue
        if not args.breakdown_only:
            row["compile_s"] = jb.compile()
            jb.run(2)  # warm-up
            fns = {"jax": jb.run}
            if tb is not None:
                tb.run(2)
                fns["torch"] = tb.run
            times = interleaved(fns, args.repeats, args.steps)
            tokens = p["batch"] * p["seq_len"]
            for k, ts in times.items():
                med = statistics.median(ts)
                row[f"{k}_ms"] = 1e3 * med
                row[f"{k}_ms_all"] = [round(1e3 * t, 2) for t in ts]
                row[f"{k}_tok_s"] = tokens / med
            if tb is not None:
                row["ratio_jax_over_torch"] = row["jax_ms"] / row["torch_ms"]
            if backend == "gpu":
                n_embed = p["vocab"] + 1
                flops = flops_per_step(p, jb.n_params - n_embed * p["width"])
                row["mfu"] = flops / (row["jax_ms"] / 1e3) / (args.peak_tflops * 1e12)
        if args.breakdown or args.breakdown_only:
            pf = dict(base_pieces, **{f"jax {k}": per_call(f) for k, f in jb.pieces().items()})
            if tb is not None:
                pf.update({f"torch {k}": per_call(f) for k, f in tb.pieces().items()})
            bt = interleaved(pf, args.repeats, args.steps)
            row["breakdown_ms"] = {k: 1e3 * statistics.median(v) for k, v in bt.items()}
            row["breakdown_ms_all"] = {k: [round(1e3 * t, 2) for t in v] for k, v in bt.items()}
        results.append(row)
        print_row(row, have_torch, backend == "gpu", args)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "results": results}, f, indent=1)
    return results


def print_row(r, have_torch, gpu, args):
    if "jax_ms" not in r:
        return print_breakdown(r)
    cols = ["preset", "B×L", "params", "compile s", "JAX ms/step", "JAX tok/s"]
    vals = [r["preset"], f"{r['batch']}×{r['seq_len']}", f"{r['params'] / 1e6:.2f} M", f"{r['compile_s']:.1f}",
            f"{r['jax_ms']:.1f}", f"{r['jax_tok_s']:.0f}"]
    if have_torch:
        cols += ["torch ms/step", "torch tok/s", "JAX/torch"]
        vals += [f"{r['torch_ms']:.1f}", f"{r['torch_tok_s']:.0f}", f"{r['ratio_jax_over_torch']:.2f}"]
    if gpu:
        cols.append(f"MFU (peak {args.peak_tflops:g} TF)")
        vals.append(f"{100 * r['mfu']:.1f} %")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n| " + " | ".join(vals) + " |", flush=True)
    print_breakdown(r)


def print_breakdown(r):
    if "breakdown_ms" in r:
        b = r["breakdown_ms"]
        print("\n| component | JAX ms | torch ms | JAX/torch |\n|---|---|---|---|")
        for k in ("forward (loss)", "forward+backward", "optimizer (clip+AdamW)"):
            j, t = b.get(f"jax {k}"), b.get(f"torch {k}")
            print(f"| {k} | {j:.1f} | " + (f"{t:.1f} | {j / t:.2f} |" if t else "– | – |"))
        for k in ("forward (loss)", "forward+backward", "optimizer (clip+AdamW)"):
            if f"jax base {k}" in b:
                print(f"| {k}, default JAX model (same run) | {b[f'jax base {k}']:.1f} | – | variant/base "
                      f"{b[f'jax {k}'] / b[f'jax base {k}']:.2f} |")
    print(flush=True)


if __name__ == "__main__":
    main()
