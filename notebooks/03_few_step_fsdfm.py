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
# # 03 · Few-step generation with FS-DFM: teacher and student
#
# FS-DFM (METHODS §6) is two chained runs:
#
# 1. a **DFM teacher** (discrete flow matching, mask source, generalized-KL loss), sampled with the
#    Euler solver at many steps;
# 2. a **student** initialised from it that also sees the step size h, distilled with RK-4
#    shortcut targets so that a few large steps land where many small ones would — the claim is
#    "8 student steps ≈ 1,024 teacher steps".
#
# Both train on the synthetic Markov-chain language (V = 8), whose likelihood is known exactly,
# so samples are scored by their true per-token NLL and their unigram entropy (low entropy with
# low NLL would mean repetitive text).
#
# `DLM_NOTEBOOK_SCALE` (default 1): 1 trains `configs/fsdfm.py:teacher_demo_mask` / `demo_mask` for 2,000 /
# 1,500 steps (as `benchmarks/fsdfm_few_step.py`: about 17 min on 2 busy CPU cores); below 0.25 the
# `teacher_tiny` / `tiny` presets for `2000 × SCALE` / `1500 × SCALE` steps and the teacher sampled at
# 8 and 1,024 steps only. CI runs 0.025, where neither model has learned much: the plumbing is the point.

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
import tempfile
import time

import jax
import matplotlib.pyplot as plt
import numpy as np
from absl import logging

from configs import fsdfm as fsdfm_configs
from dlm_jax.data.pipeline import markov_language
from dlm_jax.eval.baselines import sample_unigram_entropy_bits
from dlm_jax.runs import load_run
from dlm_jax.train import loop

logging.set_verbosity(logging.ERROR)
SIZE = "demo_mask" if SCALE >= 0.25 else "tiny"  # the mask source of the text (plain demo: uniform)
TEACHER_STEPS, STUDENT_STEPS = max(10, round(2000 * SCALE)), max(10, round(1500 * SCALE))
SAMPLES = max(64, round(256 * SCALE))
TEACHER_SAMPLING = (8, 64, 1024) if SCALE >= 0.25 else (8, 1024)  # fewer compilations at the CI scale
BASE = tempfile.mkdtemp(prefix="dlm_fsdfm_")
TEACHER_DIR, STUDENT_DIR = os.path.join(BASE, "teacher"), os.path.join(BASE, "student")

# %% [markdown]
# ## 1. The DFM teacher

# %%
t_cfg = fsdfm_configs.get_config(f"teacher_{SIZE}")
t_cfg.train.steps = TEACHER_STEPS
t_cfg.checkpoint.every = TEACHER_STEPS
del t_cfg.evals  # the samples are scored exactly below
start = time.perf_counter()
loop.train(t_cfg, TEACHER_DIR)
print(f"teacher: {TEACHER_STEPS} steps in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## 2. The FS-DFM student
# `init_from` points at the teacher's workdir: the trainer copies the teacher into the (t, h)
# student (mapping `dit_t_to_th`, identity h-fusers, so the student starts equal to the teacher).

# %%
s_cfg = fsdfm_configs.get_config(SIZE)
s_cfg.init_from.workdir = TEACHER_DIR
s_cfg.train.steps = STUDENT_STEPS
s_cfg.checkpoint.every = STUDENT_STEPS
del s_cfg.evals  # the samples are scored exactly below
start = time.perf_counter()
loop.train(s_cfg, STUDENT_DIR)
print(f"student: {STUDENT_STEPS} steps in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## 3. NLL and entropy vs steps
# Each run is loaded with its EMA weights and sampled through its method (`method.sample`), the
# student with the FS-DFM cumulative-scalar sampler at 1–8 steps, the teacher with the DFM Euler
# solver at 8–1,024 steps. Samples are scored under the true chain.

# %%
oracle = markov_language(t_cfg.data, t_cfg.data.seq_len)
teacher, student = load_run(TEACHER_DIR, use_ema=True), load_run(STUDENT_DIR, use_ema=True)


def score(run, steps, sampler):
    draw = jax.jit(lambda key: run.method.sample(run.params, key, num_samples=SAMPLES, steps=steps, sampler=sampler))
    with jax.set_mesh(run.mesh):
        tokens, info = draw(jax.random.key(2026))
    tokens = np.asarray(tokens)
    nll = -np.asarray(oracle.log_prob(tokens), np.float64) / tokens.shape[1]
    return dict(nll=nll.mean(), se=nll.std() / np.sqrt(len(nll)), entropy=sample_unigram_entropy_bits(tokens),
                nfe=int(np.max(info["nfe"])))


rows = [("student", "fsdfm", n, score(student, n, "fsdfm")) for n in (1, 2, 4, 8)]
rows += [("teacher", "dfm_euler", n, score(teacher, n, "dfm_euler")) for n in TEACHER_SAMPLING]
data = np.asarray(oracle.sample(jax.random.key(7), SAMPLES))
ref_nll = float(-np.asarray(oracle.log_prob(data), np.float64).mean() / data.shape[1])
ref_entropy = sample_unigram_entropy_bits(data)
print("| model | sampler | steps | NFE | NLL/token (nats) | unigram entropy (bits) |\n|---|---|---|---|---|---|")
for who, sampler, n, r in rows:
    print(f"| {who} | {sampler} | {n} | {r['nfe']} | {r['nll']:.4f} ± {r['se']:.4f} | {r['entropy']:.4f} |")
print(f"| true chain | — | — | — | {ref_nll:.4f} (entropy rate {oracle.entropy() / data.shape[1]:.4f}) "
      f"| {ref_entropy:.4f} |")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, key, label, ref in ((axes[0], "nll", "NLL per token under the true chain (nats)", ref_nll),
                            (axes[1], "entropy", "unigram entropy of samples (bits)", ref_entropy)):
    for who, style in (("student", "o-"), ("teacher", "s--")):
        pts = [(n, r[key]) for w, _, n, r in rows if w == who]
        ax.plot(*zip(*pts), style, label=f"{who} ({'fsdfm' if who == 'student' else 'dfm_euler'})")
    ax.axhline(ref, color="gray", lw=1, label="true samples")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sampling steps (= NFE)")
    ax.set_ylabel(label)
    ax.legend(fontsize=8)
fig.suptitle(f"FS-DFM student vs DFM teacher ({SIZE}, {TEACHER_STEPS} + {STUDENT_STEPS} training steps)")
plt.show()

# %%
s8 = next(r for w, _, n, r in rows if w == "student" and n == 8)
t1024 = next(r for w, _, n, r in rows if w == "teacher" and n == 1024)
gap = (s8["nll"] - t1024["nll"]) / t1024["nll"]
print(f"student@8 vs teacher@1024: NLL {100 * gap:+.2f}% at 128x fewer model calls "
      f"(the benchmark's target at full scale: within 5%; see BENCHMARKS.md)")
assert all(np.isfinite(r["nll"]) and r["nfe"] == n for _, _, n, r in rows)
