"""Loading at scale (issue 12 item 3): host memory and bytes read when each process reads only its slices.

    python benchmarks/sliced_load_memory.py --measure        # a scaled-down LLaDA-layout checkpoint, CPU
    python benchmarks/sliced_load_memory.py --plan           # LLaDA-8B on a TPU v5e-16 slice and on 8 GPUs

``--measure`` writes a random LLaDA-layout checkpoint in bfloat16 safetensors shards (the Hub's
dtype; default width 768, depth 6, vocabulary 32,000: 92 M params, 184 MB on disk) and loads it
onto an fsdp mesh of fake CPU devices, in fresh processes, two ways:

* ``sliced`` — ``read_checkpoint(lazy=True)`` + ``params.place_sharded`` (what ``import`` does):
  each process reads the boxes its devices hold;
* ``whole`` — the usual way: every process reads the whole checkpoint into float32 numpy, then
  ``jax.make_array_from_callback`` cuts its shards out of it.

for 1 process × 8 devices and 2 processes × 4 devices (``jax.distributed`` on 127.0.0.1). Per
process: bytes read from the files, the bytes its devices hold (on fake CPU devices these live in
host memory too), and the peak RSS increase over the process before loading (``ru_maxrss``).

``--plan`` needs no weights: it builds LLaDA-8B's abstract params (d_model 4,096, 32 layers, 32
heads, SwiGLU 12,288, vocabulary 126,464: 8.0 B params), shards them with the fsdp rules over the
mesh, and prints per host / per device: bytes read (bfloat16 files), float32 params per device,
fine-tuning state per device (params + EMA + Adam's two moments), and the largest single box a
host holds in transit. Exact from the shardings, nothing estimated.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LLADA_8B = dict(vocab_size=126464, width=4096, depth=32, heads=32, kv_heads=32, mlp_dim=12288, max_len=4096,
                rope_theta=500000.0, norm_eps=1e-5, mask_token_id=126336)


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--measure", action="store_true")
    p.add_argument("--plan", action="store_true")
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--src", default=None, help=argparse.SUPPRESS)
    p.add_argument("--procs", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--pid", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the results here")
    return p.parse_args()


def _fields(a) -> dict:
    return dict(vocab_size=a.vocab, width=a.width, depth=a.depth, heads=a.width // 64, kv_heads=a.width // 64,
                mlp_dim=a.width * 8 // 3 // 64 * 64, max_len=1024, rope_theta=500000.0, norm_eps=1e-5,
                mask_token_id=a.vocab - 1)


def write_checkpoint(a, out: str) -> int:
    import ml_dtypes
    import numpy as np

    from dlm_jax.export import files, llada_layout

    f = _fields(a)
    rng = np.random.default_rng(0)
    flat = {k: (0.02 * rng.standard_normal(s, dtype=np.float32)).astype(ml_dtypes.bfloat16)
            for k, s in llada_layout.llada_shapes(f).items()}
    llada_layout.write_llada(files.Checkpoint("llada", f, f["vocab_size"] - 1, llada_layout.llada_method(), flat),
                             out, max_shard_bytes=50_000_000)
    return sum(int(x.size) for x in flat.values())


def _model(fields: dict):
    from dlm_jax.export import files, llada_layout
    from dlm_jax.export.run_config import build_config
    from dlm_jax.runs.workdir import build_model

    ckpt = files.Checkpoint("llada", fields, fields["vocab_size"] - 1, llada_layout.llada_method(), {})
    return build_model(build_config(ckpt, "/tmp/unused", seq_len=8))


def worker(a) -> dict:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={a.devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    if a.procs > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{a.port}", num_processes=a.procs,
                                   process_id=a.pid)
    import ml_collections
    import numpy as np
    from flax import nnx, traverse_util

    from dlm_jax import mesh as mesh_lib
    from dlm_jax.export import files, formats, params

    lazy = formats.read_checkpoint(a.src, "llada", lazy=True)
    model = _model(lazy.model_fields)
    mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, strategy="fsdp")))
    jax.block_until_ready(jax.device_put(np.zeros(4, np.float32)))  # the runtime is up before the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    files.READ_STATS.update(bytes=0, reads=0)
    if a.worker == "sliced":
        out = params.place_sharded(lazy.params, model, mesh, "fsdp")
    else:
        whole = formats.read_checkpoint(a.src, "llada")  # every tensor, float32
        abstract = jax.eval_shape(model.init, jax.random.key(0))
        paths = traverse_util.flatten_dict(nnx.to_pure_dict(abstract))
        shards = traverse_util.flatten_dict(nnx.to_pure_dict(mesh_lib.param_shardings(abstract, mesh, "fsdp")))
        arrays = {p: jax.make_array_from_callback(v.shape, shards[p], lambda i, n=".".join(map(str, p)): whole.params[n][i])
                  for p, v in paths.items()}
        out = arrays
        del whole
    leaves = jax.tree.leaves(out)
    jax.block_until_ready(leaves)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    held = sum(s.data.nbytes for x in leaves for s in x.addressable_shards)
    return {"mode": a.worker, "processes": a.procs, "process": a.pid, "devices_here": a.devices,
            "read_bytes": files.READ_STATS["bytes"], "device_bytes": int(held), "peak_rss_increase": int(after - before)}


def measure(a) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "llada")
        os.makedirs(src)
        n = write_checkpoint(a, src)
        print(f"checkpoint: {n / 1e6:.1f} M params, {n * 2 / 1e6:.0f} MB bfloat16 on disk, "
              f"{n * 4 / 1e6:.0f} MB as float32 params", flush=True)
        for mode in ("whole", "sliced"):
            for procs, devices in ((1, 8), (2, 4)):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                jobs = [subprocess.Popen([sys.executable, __file__, "--worker", mode, "--src", src, "--procs",
                                          str(procs), "--pid", str(i), "--port", str(port), "--devices", str(devices)],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                        for i in range(procs)]
                for j in jobs:
                    out, err = j.communicate(timeout=900)
                    if j.returncode != 0:
                        raise SystemExit(err[-3000:])
                    row = json.loads(out.strip().splitlines()[-1])
                    row["params"] = n
                    rows.append(row)
                    print(f"{mode:6s} {procs} process(es) x {devices} devices, process {row['process']}: read "
                          f"{row['read_bytes'] / 1e6:7.1f} MB, devices hold {row['device_bytes'] / 1e6:7.1f} MB, "
                          f"peak RSS +{row['peak_rss_increase'] / 1e6:7.1f} MB", flush=True)
    return rows


def plan() -> list[dict]:
    """LLaDA-8B's shards under the fsdp rules for two machines (fake devices: shapes only)."""
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=16"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import ml_collections
    import numpy as np
    from flax import nnx, traverse_util

    from dlm_jax import mesh as mesh_lib

    model = _model(dict(LLADA_8B))
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    paths = traverse_util.flatten_dict(nnx.to_pure_dict(abstract))
    n = sum(int(np.prod(v.shape)) for v in paths.values())
    rows = []
    for name, hosts, per_host in (("TPU v5e-16 (4 hosts x 4 chips, 16 GiB HBM each)", 4, 4),
                                  ("8 GPUs (1 host x 8, e.g. H100/H200)", 1, 8)):
        devices = jax.devices()[:hosts * per_host]
        mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, strategy="fsdp")), devices)
        shards = traverse_util.flatten_dict(nnx.to_pure_dict(mesh_lib.param_shardings(abstract, mesh, "fsdp")))
        host_read, per_device, largest = [0] * hosts, [0] * len(devices), 0
        for p, v in paths.items():
            index_map = shards[p].devices_indices_map(tuple(v.shape))
            for h in range(hosts):
                boxes = {tuple((s.start, s.stop) for s in index_map[d]) for d in devices[h * per_host:(h + 1) * per_host]}
                for box in boxes:
                    size = int(np.prod([(b or n_) - (a_ or 0) for (a_, b), n_ in zip(box, v.shape)]))
                    host_read[h] += 2 * size  # bfloat16 on disk
                    largest = max(largest, size)
            for i, d in enumerate(devices):
                per_device[i] += 4 * int(np.prod(shards[p].shard_shape(tuple(v.shape))))
        row = {"machine": name, "params": n, "read_per_host": max(host_read), "params_per_device": max(per_device),
               "train_state_per_device": 4 * max(per_device), "largest_box_f32": 4 * largest,
               "whole_read_per_host_f32": 4 * n}
        rows.append(row)
        gib = 2 ** 30
        print(f"{name}: LLaDA-8B {n / 1e9:.2f} B params; per host read {row['read_per_host'] / gib:.2f} GiB of "
              f"{2 * n / gib:.1f} GiB bf16; per device {row['params_per_device'] / gib:.2f} GiB float32 params, "
              f"{row['train_state_per_device'] / gib:.2f} GiB with EMA + Adam; largest box in transit "
              f"{row['largest_box_f32'] / 2 ** 20:.0f} MiB float32 (the whole-read way: "
              f"{row['whole_read_per_host_f32'] / gib:.1f} GiB float32 per host)")
    return rows


def main():
    a = parse()
    if a.worker:
        print(json.dumps(worker(a)))
        return
    if not (a.measure or a.plan):
        a.measure = a.plan = True
    results = {}
    if a.measure:
        results["measure"] = measure(a)
    if a.plan:
        results["plan"] = plan()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
