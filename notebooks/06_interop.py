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
# # 06 · Interop: export to the MDLM / Hugging Face layout, import it back, check parity
#
# `dlm_jax.export` moves checkpoints between dlm_jax runs and the PyTorch world (details, key
# mappings and tolerances: `docs/INTEROP.md`). This notebook trains a tiny MDLM, exports it in the
# layout of `kuleshov-group/mdlm-owt` (a Hugging Face folder: `config.json` + `model.safetensors`,
# keys `backbone.*`), imports that folder into a fresh workdir, and checks that the imported run is
# the same model: same params, same logits, same samples. With PyTorch installed, the last cell
# also runs the exported weights in dlm_jax's plain-PyTorch twin of the MDLM DiT (`check-parity`);
# without it, that cell says so and the notebook still runs.
#
# The CLI does the same: `python -m dlm_jax export | import | check-parity` (README).
#
# `DLM_NOTEBOOK_SCALE` (default 1): `400 × SCALE` training steps (at least 10); CI runs 0.025.

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

from dlm_jax.notebook import setup

ROOT, SCALE = setup()  # the checkout (put on sys.path for `configs`) and DLM_NOTEBOOK_SCALE

# %%
import json
import tempfile

import jax
import matplotlib.pyplot as plt
import numpy as np
from absl import logging
from safetensors.numpy import load_file

from configs import mdlm_markov
from dlm_jax.eval import generate as gen
from dlm_jax.export import commands
from dlm_jax.runs import load_run
from dlm_jax.train import loop

logging.set_verbosity(logging.ERROR)
BASE = tempfile.mkdtemp(prefix="dlm_interop_")
RUN, EXPORTED, IMPORTED = (os.path.join(BASE, name) for name in ("run", "mdlm_hf", "imported"))

# %% [markdown]
# ## A run to export
# `configs/mdlm_markov.py:tiny`: an MDLM DiT (no time conditioning, as MDLM-OWT) on the Markov-chain
# language with V = 8 tokens.

# %%
config = mdlm_markov.get_config("tiny")
config.train.steps = max(10, round(400 * SCALE))
config.checkpoint.every = config.train.steps
config.evals.eval.every = config.train.steps
loop.train(config, RUN)

# %% [markdown]
# ## Export (`python -m dlm_jax export --workdir RUN --format mdlm --out DIR`)

# %%
summary = commands.export_command(RUN, "mdlm", EXPORTED)
with open(os.path.join(EXPORTED, "config.json")) as f:
    hf_config = json.load(f)
print(json.dumps(hf_config, indent=1)[:800])
tensors = load_file(os.path.join(EXPORTED, "model.safetensors"))
print(f"\n{len(tensors)} tensors, e.g.:")
for key in sorted(tensors)[:12]:
    print(f"  {key:45s} {tensors[key].shape}")

# %% [markdown]
# Where the parameters sit, by the top-level module of the exported keys:

# %%
groups = {}
for key, value in tensors.items():
    group = ".".join(key.split(".")[:2]) if key.startswith("backbone.blocks") else key.rsplit(".", 1)[0]
    groups[group] = groups.get(group, 0) + value.size
fig, ax = plt.subplots(figsize=(8, 3.5))
names = sorted(groups, key=groups.get, reverse=True)
ax.barh(names, [groups[n] for n in names])
ax.set_xlabel("parameters")
ax.invert_yaxis()
plt.show()

# %% [markdown]
# ## Import (`python -m dlm_jax import --from DIR --format mdlm --workdir NEW`)
# The imported run has no tokenizer of its own: `data` says it is the same Markov language, so it
# samples and evaluates like the original.

# %%
data = {k: config.data[k] for k in ("source", "markov_vocab", "markov_seed", "markov_concentration")}
commands.import_command(EXPORTED, "mdlm", IMPORTED, seq_len=config.data.seq_len, data=json.dumps(data))

# %% [markdown]
# ## Same model?
# Params tensor by tensor, logits on random partially masked inputs, and samples drawn with the same
# key.

# %%
original, imported = load_run(RUN, use_ema=False), load_run(IMPORTED, use_ema=False)
a_leaves = jax.tree_util.tree_flatten_with_path(original.params)[0]
b_leaves = jax.tree.leaves(imported.params)
param_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for (_, a), b in zip(a_leaves, b_leaves))
print(f"{len(a_leaves)} tensors; largest |difference| {param_diff}")

V, L = int(config.model.vocab_size), int(config.data.seq_len)
key_x, key_m = jax.random.split(jax.random.key(0))
x = jax.random.randint(key_x, (4, L), 0, V)
x = np.where(jax.random.bernoulli(key_m, 0.5, (4, L)), V, x)  # the mask id is V
t = np.full((4,), 0.5, np.float32)
logits = [np.asarray(run.apply(run.params, x, {"t": t})) for run in (original, imported)]
logit_diff = float(np.max(np.abs(logits[0] - logits[1])))
fig, ax = plt.subplots(figsize=(4, 4))
ax.scatter(logits[0].ravel(), logits[1].ravel(), s=3)
ax.set_xlabel("logit, trained run")
ax.set_ylabel("logit, imported run")
ax.set_title(f"max |Δ| = {logit_diff:.2g}")
plt.show()

samples = [gen.generate(run, steps=8, sampler="mdlm", num_samples=8, seed=3)[0] for run in (original, imported)]
same = bool((samples[0] == samples[1]).all())
print(f"logits max |difference| {logit_diff:.3g}; 8 samples at 8 steps identical: {same}")
assert param_diff == 0.0 and logit_diff < 1e-5 and same

# %% [markdown]
# ## Parity with PyTorch (`python -m dlm_jax check-parity --workdir RUN --format mdlm`)
# Needs `torch` (`pip install -e '.[torch]'`); skipped without it.

# %%
try:
    import torch  # noqa: F401
except ImportError:
    torch = None
if torch is None:
    print("torch is not installed: parity with the PyTorch twin skipped (pip install -e '.[torch]')")
else:
    figures = commands.parity_command(RUN, "mdlm", num_sequences=4)
    assert figures["passes"], figures
