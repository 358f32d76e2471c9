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
# # 07 · FastDiSS: few-step seq2seq diffusion and translation
#
# FastDiSS (METHODS §2.4, §3) generates a target sentence by denoising Gaussian noise in embedding
# space, conditioned on an encoded source, with self-conditioning on its previous estimate. Its two
# training fixes — **SCP** (perturb the self-conditioning pass's latent to match the few-step
# sampler's error) and **MANS** (larger per-token noise for tokens the model already gets right) —
# aim at making ≈5 DDIM steps as good as hundreds.
#
# Here: train `configs/fastdiss.py:tiny` (the synthetic reversal task, exact answers), translate its
# validation sources at several step counts K with the same function the `translate` command uses,
# and look at the machine's own offline translation data (gettext catalogs, English → German) that
# the `demo` preset trains on. At `DLM_NOTEBOOK_SCALE ≥ 0.5` the notebook also trains the demo and
# reports BLEU.
#
# `DLM_NOTEBOOK_SCALE` (default 1): `600 × SCALE` training steps for the tiny run (at least 40);
# CI runs 0.025.

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
import io
import json
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from absl import logging

from configs import fastdiss as fastdiss_configs
from dlm_jax.cli_translate import translate_command
from dlm_jax.data.seq2seq import pair_texts
from dlm_jax.eval.text_metrics import corpus_bleu, exact_match
from dlm_jax.train import loop

logging.set_verbosity(logging.ERROR)

# %% [markdown]
# ## Train on the reversal task

# %%
config = fastdiss_configs.get_config("tiny")
config.train.steps = max(40, round(600 * SCALE))
config.workdir = tempfile.mkdtemp(prefix="dlm_fastdiss_")
out = loop.train(config, config.workdir)
print("trained", out["step"], "steps in", config.workdir)

rows = [json.loads(line) for line in open(os.path.join(config.workdir, "metrics.jsonl"))]
steps = [r["step"] for r in rows if "loss" in r]
losses = [r["loss"] for r in rows if "loss" in r]
plt.figure(figsize=(5, 3))
plt.plot(steps, losses)
plt.xlabel("step")
plt.ylabel("training loss")
plt.title("FastDiSS (SCP + MANS) on reversal")
plt.show()
assert np.isfinite(losses).all()

# %% [markdown]
# ## Translate at K = 1, 2, 5, 20 steps
#
# `translate_command` is the CLI's `python -m dlm_jax translate --workdir DIR --steps K` (sources one
# per line, hypotheses back); exact match and SacreBLEU against the references.

# %%
pairs = pair_texts(config.data, "validation")[:48]
sources = "\n".join(s for s, _ in pairs) + "\n"
references = [t for _, t in pairs]
ks = (1, 2, 5, 20)
scores = {}
for k in ks:
    hyps = translate_command(config.workdir, [k], stdin=io.StringIO(sources), stdout=io.StringIO())
    scores[k] = (100 * exact_match(hyps, references), corpus_bleu(hyps, references))
    print(f"K = {k:2d}: exact match {scores[k][0]:5.1f} %, BLEU {scores[k][1]:5.1f}")
for (s, t), h in list(zip(pairs, hyps))[:4]:
    print(f"  {s}  ->  {h}   (reference {t})")

plt.figure(figsize=(5, 3))
plt.bar([str(k) for k in ks], [scores[k][0] for k in ks])
plt.xlabel("DDIM steps K (= NFE)")
plt.ylabel("exact match (%)")
plt.ylim(0, 100)
plt.title("few steps vs more steps")
plt.show()
assert all(0.0 <= scores[k][0] <= 100.0 for k in ks)

# %% [markdown]
# ## The offline translation data: the machine's gettext catalogs
#
# Every Debian/Ubuntu system (Colab included) carries human-translated UI strings as `.mo` files;
# `data.source = "gettext"` reads English → German pairs from them (placeholders checked, accelerators
# stripped, de-duplicated, split by a hash of the source). The `demo` preset trains on them.

# %%
demo = fastdiss_configs.get_config("demo")
try:
    train_pairs = pair_texts(demo.data, "train")
except ValueError as err:  # a machine without German catalogs: the one-line error says what to do
    print(err)
    train_pairs = []
print(len(train_pairs), "English -> German training pairs on this machine")
for s, t in train_pairs[:5]:
    print(f"  {s!r} -> {t!r}")
if train_pairs:
    lengths = np.array([len(s.split()) for s, _ in train_pairs])
    plt.figure(figsize=(5, 3))
    plt.hist(lengths, bins=range(1, 25))
    plt.xlabel("source words")
    plt.ylabel("pairs")
    plt.show()

# %% [markdown]
# ## Train the demo (`SCALE ≥ 0.5`; about 25 CPU minutes at scale 1)
#
# `python -m dlm_jax train --config configs/fastdiss.py:demo` does the same from the command line and
# prints source → hypothesis → reference lines and BLEU at the end.

# %%
if SCALE >= 0.5 and train_pairs:
    demo.train.steps = round(1200 * SCALE)
    demo.workdir = tempfile.mkdtemp(prefix="dlm_fastdiss_demo_")
    loop.train(demo, demo.workdir)
    test = pair_texts(demo.data, "test")[:128]
    hyps = translate_command(demo.workdir, [5], stdin=io.StringIO("\n".join(s for s, _ in test) + "\n"),
                             stdout=io.StringIO())
    print("test BLEU (intl):", corpus_bleu(hyps, [t for _, t in test], tokenize="intl"))
    for (s, t), h in list(zip(test, hyps))[:5]:
        print(f"  {s}\n    -> {h}\n    (reference: {t})")
