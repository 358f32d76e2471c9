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
# # 05 · DSL: one SNR-invariant denoiser, sampled three ways
#
# DSL (METHODS §4) corrupts tokens not by masking but by **localization**: each token becomes a
# noisy vector z = s·e(x) + √s·ε around its anchor e(x) ∈ ℝᵈ, at a signal-to-noise ratio s drawn
# from a mix of ROAR (s = 0 or large: mask-like) and log-normal SNRs. One denoiser learns
# p(x | z) at every SNR, so it can be sampled by remasking (`dsl_remdm_loop`), by the continuous
# SL-SDE (`dsl_sde`), or by a hybrid of the two (`dsl_hybrid`); its likelihood is bounded through
# the I-MMSE identity (½∫ mmse(s) ds).
#
# Here it trains from scratch on the synthetic Markov-chain language (`configs/dsl.py:tiny`:
# V = 8, L = 16), so the samples are scored exactly. For text, `configs/dsl.py:demo` fine-tunes the
# quickstart's MDLM run (README).
#
# `DLM_NOTEBOOK_SCALE` (default 1): `1500 × SCALE` training steps (at least 20) and, below 0.25, two
# step counts per sampler instead of four; CI runs 0.025.

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

from configs import dsl as dsl_configs
from dlm_jax.data.pipeline import markov_language
from dlm_jax.eval.baselines import sample_unigram_entropy_bits
from dlm_jax.runs import load_run
from dlm_jax.train import loop

logging.set_verbosity(logging.ERROR)

# %% [markdown]
# ## Train briefly

# %%
config = dsl_configs.get_config("tiny")
config.train.steps = max(20, round(1500 * SCALE))
config.train.log_every = max(1, config.train.steps // 100)
config.checkpoint.every = config.train.steps
config.evals.eval.every = config.train.steps  # once, at the end (the I-MMSE bound below)
config.evals.eval.batches = 4
WORKDIR = tempfile.mkdtemp(prefix="dlm_dsl_")
m = config.method
print(f"anchors: d = {m.dim}; SNRs: ROAR up to s_max = {m.s_max} mixed with LogNormal({m.mu}, {m.sigma}); "
      f"{config.train.steps} steps of {config.train.batch_size} x {config.data.seq_len} tokens")
loop.train(config, WORKDIR)

# %%
with open(os.path.join(WORKDIR, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
oracle = markov_language(config.data, config.data.seq_len)
rate = oracle.entropy() / config.data.seq_len  # nats/token: no model can do better on average
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(*zip(*[(r["step"], r["loss"]) for r in records if "loss" in r]), lw=1, label="train loss (localization CE)")
ax.plot(*zip(*[(r["step"], r["eval/nelbo"]) for r in records if "eval/nelbo" in r]), "o",
        label="validation I-MMSE bound")
ax.axhline(rate, color="k", ls="--", label=f"exact entropy rate ({rate:.3f})")
ax.set_xlabel("step")
ax.set_ylabel("nats / token")
ax.legend()
plt.show()

# %% [markdown]
# ## The I-MMSE bound
# The method's `evaluate` integrates the denoiser's MMSE over an SNR grid (½∫₀ˢ mmse(s) ds) and adds
# the truncation term −log p(x | z_S) at the top SNR S: an upper bound on the model's NLL in
# nats/token, which the exact entropy rate of the chain bounds from below. The trainer ran it at the
# end of training (`config.evals`; `python -m dlm_jax eval --workdir ...` runs the same evaluator).

# %%
metrics = next(r for r in reversed(records) if "eval/nelbo" in r)
bound, trunc = metrics["eval/nelbo"], metrics["eval/immse_trunc"]
print(f"I-MMSE bound {bound:.4f} nats/token (truncation term {trunc:.4f}); exact entropy rate {rate:.4f}")
fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(["I-MMSE integral", "truncation"], [bound - trunc, trunc], color=["C0", "C1"])
ax.bar(["entropy rate"], [rate], color="gray")
ax.set_ylabel("nats / token")
plt.show()
assert bound >= rate - 0.1, (bound, rate)  # a bound on the NLL cannot sit below the entropy rate

# %% [markdown]
# ## Sample it three ways
# The same params through `method.sample` with each DSL sampler; samples scored under the true
# chain (NLL per token; the data's own value is the entropy rate) and by their unigram entropy.

# %%
run = load_run(WORKDIR)
SAMPLES = max(64, round(512 * SCALE))
STEP_COUNTS = (8, 16, 32, 64) if SCALE >= 0.25 else (8, 32)  # fewer compilations at the CI scale
rows = []
for sampler in ("dsl_remdm_loop", "dsl_sde", "dsl_hybrid"):
    for steps in STEP_COUNTS:
        draw = jax.jit(lambda key: run.method.sample(run.params, key, num_samples=SAMPLES, steps=steps,
                                                     sampler=sampler))
        with jax.set_mesh(run.mesh):
            tokens, info = draw(jax.random.key(steps))
        tokens = np.asarray(tokens)
        nll = -np.asarray(oracle.log_prob(tokens), np.float64) / tokens.shape[1]
        rows.append(dict(sampler=sampler, steps=steps, nfe=float(np.max(info["nfe"])), nll=nll.mean(),
                         se=nll.std() / np.sqrt(len(nll)), entropy=sample_unigram_entropy_bits(tokens)))
data = np.asarray(oracle.sample(jax.random.key(7), SAMPLES))
data_entropy = sample_unigram_entropy_bits(data)
print("| sampler | steps | NFE | NLL/token (nats) | unigram entropy (bits) |\n|---|---|---|---|---|")
for r in rows:
    print(f"| {r['sampler']} | {r['steps']} | {r['nfe']:.0f} | {r['nll']:.4f} ± {r['se']:.4f} | {r['entropy']:.4f} |")
print(f"| true chain | | | {rate:.4f} (entropy rate) | {data_entropy:.4f} |")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, key, label, ref in ((axes[0], "nll", "NLL per token under the true chain (nats)", rate),
                            (axes[1], "entropy", "unigram entropy of samples (bits)", data_entropy)):
    for sampler, style in (("dsl_remdm_loop", "o-"), ("dsl_sde", "s--"), ("dsl_hybrid", "^:")):
        ax.plot(*zip(*[(r["nfe"], r[key]) for r in rows if r["sampler"] == sampler]), style, label=sampler)
    ax.axhline(ref, color="gray", lw=1, label="true chain")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("model calls (NFE)")
    ax.set_ylabel(label)
    ax.legend(fontsize=8)
fig.suptitle(f"DSL on the Markov chain ({config.train.steps} training steps)")
plt.show()
assert all(np.isfinite(r["nll"]) for r in rows)
