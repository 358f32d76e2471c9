# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · From one CPU to a TPU pod: meshes, shardings, the same trainer
#
# dlm_jax runs one trainer everywhere. Parallelism is not code but a **mesh** (axes `data`,
# `fsdp`, `tensor`; `config.mesh`) and **partition rules** that map each weight's logical axis
# names (`embed`, `mlp`, `heads`, `vocab`, ...) onto mesh axes (`dlm_jax.mesh`, strategy `dp`,
# `fsdp` or `tp`). Here 8 fake CPU devices stand in for a TPU slice: the same code, the same
# shardings, the same numbers.
#
# `DLM_NOTEBOOK_SCALE` (default 1) scales the training steps per mesh (`200 × SCALE`, at least 5);
# below 0.25 (CI: 0.025) only the dp and tp layouts are trained.
#
# The 8 devices must be requested **before JAX starts**: run this notebook in a fresh kernel (on a
# Colab TPU v2-8/v3-8 runtime, drop the two `os.environ` lines of the next code cell but one to see
# the 8 real cores instead).

# %% tags=["skip-execution"]
# Colab only (tagged skip-execution, and guarded): fetch the repository and install it.
import os
import subprocess
import sys

REPO = "https://github.com/YOUR_ORG/dlm_jax"  # placeholder organisation, see README
if "google.colab" in sys.modules:
    if not os.path.isdir("/content/dlm_jax"):
        subprocess.run(["git", "clone", "--depth", "1", REPO, "/content/dlm_jax"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "/content/dlm_jax/requirements.txt",
                    "-e", "/content/dlm_jax"], check=True)
    os.chdir("/content/dlm_jax")

# %%
import os

os.environ["XLA_FLAGS"] = " ".join([f for f in os.environ.get("XLA_FLAGS", "").split()
                                    if "xla_force_host_platform_device_count" not in f]
                                   + ["--xla_force_host_platform_device_count=8"])
os.environ["JAX_PLATFORMS"] = "cpu"  # the 8 fake devices are CPU devices

from dlm_jax.notebook import setup

ROOT, SCALE = setup()  # the checkout (put on sys.path for `configs`) and DLM_NOTEBOOK_SCALE

# %%
import json
import tempfile

import jax
import matplotlib.pyplot as plt
import numpy as np
from absl import logging
from flax import nnx

from configs import mdlm_markov
from dlm_jax import mesh as mesh_lib
from dlm_jax.methods.base import model_spec
from dlm_jax.models import registry
from dlm_jax.train import loop

logging.set_verbosity(logging.ERROR)
if jax.device_count() != 8:
    raise RuntimeError(f"jax.device_count(): {jax.device_count()}; expected 8 (restart the kernel: JAX started "
                       "before XLA_FLAGS was set)")
print(jax.devices())

# %% [markdown]
# ## Meshes
# `config.mesh` gives the axis sizes (one may be -1: "the rest"); `dlm_jax.mesh.make_mesh` lays the
# devices out. The three layouts used below, as device-id grids:

# %%
LAYOUTS = {"dp": dict(data=8, fsdp=1, tensor=1, strategy="dp"),
           "fsdp": dict(data=2, fsdp=4, tensor=1, strategy="fsdp"),
           "tp": dict(data=2, fsdp=2, tensor=2, strategy="tp")}
meshes = {name: mesh_lib.make_mesh(cfg) for name, cfg in LAYOUTS.items()}
for name, mesh in meshes.items():
    ids = np.vectorize(lambda d: d.id)(mesh.devices)
    print(f"{name:5s} mesh {dict(mesh.shape)}: data-parallel size {mesh_lib.data_parallel_size(mesh)}")
    for i in range(ids.shape[0]):
        print("        data=%d: %s" % (i, ids[i].tolist()))

# %% [markdown]
# ## Which weight goes where
# The weights of a tiny DiT (`configs/mdlm_markov.py:tiny`: an MDLM on the Markov-chain language,
# V = 8 tokens + the mask), their logical names and the `PartitionSpec` each strategy gives them: a
# dimension is sharded only when its size divides the mesh axis, otherwise it stays replicated (the
# 9-wide vocabulary here).

# %%
config = mdlm_markov.get_config("tiny")
model = registry.build(config, model_spec(config))
abstract = jax.eval_shape(model.init, jax.random.key(0))  # shapes only: nothing is allocated
variables = jax.tree_util.tree_flatten_with_path(abstract, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
specs = {name: jax.tree.leaves(mesh_lib.param_shardings(abstract, mesh, LAYOUTS[name]["strategy"]))
         for name, mesh in meshes.items()}
print(f"{'weight':30s} {'shape':16s} {'logical names':32s} " + " ".join(f"{n:26s}" for n in meshes))
per_device = {name: 0 for name in meshes}
for i, (path, var) in enumerate(variables):
    meta = var.get_metadata()
    names = meta.get("out_sharding") or meta.get("sharding_names") or meta.get("sharding")
    shape = var.get_value().shape
    row = []
    for name in meshes:
        sharding = specs[name][i]
        shard = sharding.shard_shape(shape)
        per_device[name] += 4 * int(np.prod(shard))
        row.append(f"{str(tuple(sharding.spec)):26s}")
    label = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    if not label.startswith("blocks.1."):  # block 1 is laid out as block 0
        print(f"{label:30s} {str(shape):16s} {str(names):32s} " + " ".join(row))
print("\nfloat32 weight bytes held per device: "
      + ", ".join(f"{name} {b / 1024:.0f} KiB" for name, b in per_device.items()))

# %% [markdown]
# ## A picture of who holds what
# Each panel is one array; each coloured block is one distinct piece, labelled with the devices
# that hold a copy of it (`sharding.devices_indices_map`). The batch is split over `data × fsdp`;
# weights follow the rules above.


# %%
def draw(ax, sharding, shape, title):
    pieces = {}
    for device, index in sharding.devices_indices_map(shape).items():
        key = tuple((s.start or 0, s.stop or n) for s, n in zip(index, shape))
        pieces.setdefault(key, []).append(device.id)
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for c, ((rows, cols), ids) in enumerate(sorted(pieces.items())):
        ax.add_patch(plt.Rectangle((cols[0], rows[0]), cols[1] - cols[0], rows[1] - rows[0],
                                   facecolor=colors[c % 10], edgecolor="k", alpha=0.7))
        ax.text((cols[0] + cols[1]) / 2, (rows[0] + rows[1]) / 2, "d" + ",".join(map(str, sorted(ids))),
                ha="center", va="center", fontsize=7)
    ax.set_xlim(0, shape[1])
    ax.set_ylim(shape[0], 0)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


fc_in = next(i for i, (p, _) in enumerate(variables) if "fc_in" in jax.tree_util.keystr(p)
             and "kernel" in jax.tree_util.keystr(p))
fc_shape = variables[fc_in][1].get_value().shape
batch_shape = (config.train.batch_size, config.data.seq_len)
fig, axes = plt.subplots(2, 3, figsize=(12, 6))
for col, (name, mesh) in enumerate(meshes.items()):
    draw(axes[0, col], mesh_lib.batch_sharding(mesh), batch_shape, f"{name}: batch {batch_shape} (rows = examples)")
    draw(axes[1, col], specs[name][fc_in], fc_shape, f"{name}: mlp.fc_in kernel {fc_shape} (embed x mlp)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The same trainer on 8 devices, three layouts
# `dlm_jax.train.loop.train` reads `config.mesh`; nothing else changes. The losses agree across
# layouts up to the order of floating-point reductions.

# %%
STEPS = max(5, round(200 * SCALE))
TRAINED = ("dp", "fsdp", "tp") if SCALE >= 0.25 else ("dp", "tp")  # tp's 2x2x2 mesh shards over fsdp too
losses = {}
for name in TRAINED:
    layout = LAYOUTS[name]
    cfg = mdlm_markov.get_config("tiny")
    cfg.mesh.update(layout)
    cfg.train.steps = STEPS
    cfg.train.log_every = 1
    cfg.checkpoint.every = STEPS
    del cfg.evals  # training only: evaluation is the same code on every mesh
    workdir = tempfile.mkdtemp(prefix=f"dlm_pod_{name}_")
    loop.train(cfg, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        losses[name] = [json.loads(line)["loss"] for line in f if '"loss"' in line]

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, style in zip(losses, ("o-", "s--", "^:")):
    ax.plot(range(1, len(losses[name]) + 1), losses[name], style, label=f"{name} {dict(meshes[name].shape)}")
ax.set_xlabel("step")
ax.set_ylabel("training loss (nats/token)")
ax.legend(fontsize=8)
plt.show()
gap = max(abs(a - b) for name in TRAINED[1:] for a, b in zip(losses["dp"], losses[name]))
print(f"largest loss difference to the dp run over {STEPS} steps: {gap:.2e}")
assert all(len(v) == STEPS for v in losses.values()) and gap < 1e-3

# %% [markdown]
# ## On a real pod
# The same entry point, launched once per host; JAX finds the other hosts by itself
# (`mesh.distributed=auto`), and the batch, checkpoints and data iterator state are split per
# process. From `launch/`:
#
# ```bash
# # a simulated pod on this machine: 2 processes x 4 fake devices, jax.distributed on 127.0.0.1
# launch/local.sh 2 4 --config configs/demo.py:tiny --workdir runs/local_pod
#
# # a TPU pod slice (every worker; the workdir on shared storage), FSDP over all chips
# TPU=my-v5e-64 ZONE=us-west4-a launch/tpu_pod.sh --config configs/demo.py --workdir gs://my-bucket/runs/demo \
#     --config.mesh.data=1 --config.mesh.fsdp=-1 --config.mesh.strategy=fsdp
#
# # a SLURM GPU cluster (one task per node, all its GPUs); requeued after a preemption (exit 75)
# sbatch launch/slurm.sbatch --config configs/demo.py --workdir /shared/runs/demo
# ```

# %%
for script in ("local.sh", "tpu_pod.sh", "slurm.sbatch"):
    with open(os.path.join(ROOT, "launch", script)) as f:
        head = [line.rstrip() for line in f if line.startswith("#") and not line.startswith(("#!", "#SBATCH"))]
    print(f"--- launch/{script}\n" + "\n".join(head[:8]) + "\n")
