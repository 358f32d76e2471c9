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
# # 01 · Quickstart: train a masked diffusion LM, watch it learn, sample it, judge the samples
#
# The offline demo of the README (`python -m dlm_jax train`), step by step through the library:
# an MDLM (masked diffusion, continuous-time NELBO) with a small DiT, trained on the Python
# standard library's sources with a sentencepiece tokenizer trained on the fly — no download.
#
# * `DLM_NOTEBOOK_SCALE` (default 1): 1 trains the full demo (`configs/demo.py:demo`, 1,200 steps:
#   9 min on a loaded 2-core CPU, validation NELBO 3.98 nats/token); below 0.25 the tiny preset
#   (`configs/demo.py:tiny`, a 64-wide 2-block DiT) with `1200 × SCALE` steps. CI runs 0.025
#   (30 steps: the samples are noise, the plumbing is the point). The AR judge of the last section
#   trains `1500 × SCALE` steps likewise (`configs/ar.py:judge` at full scale: about 10 more min).

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

from configs import demo
from dlm_jax.eval import evaluators
from dlm_jax.eval import generate as gen
from dlm_jax.runs import load_run
from dlm_jax.train import loop

logging.set_verbosity(logging.ERROR)  # as the CLI: Orbax's INFO/WARNING lines would drown the output

# %% [markdown]
# ## The config
# Configs are code: `get_config(preset)` returns an `ml_collections.ConfigDict`; every key can be
# changed before training (the CLI's `--config.train.steps=...` does the same).

# %%
PRESET = "demo" if SCALE >= 0.25 else "tiny"
config = demo.get_config(PRESET)
config.train.steps = max(10, round(1200 * SCALE))
config.train.log_every = max(1, config.train.steps // 100)  # enough points for the loss curve
config.checkpoint.every = config.train.steps
WORKDIR = tempfile.mkdtemp(prefix="dlm_quickstart_")
m = config.model
print(f"preset {PRESET}: DiT width {m.width}, depth {m.depth}, heads {m.heads}; {config.train.steps} steps of "
      f"{config.train.batch_size} x {config.data.seq_len} tokens; {len(jax.devices())} device(s); workdir {WORKDIR}")

# %% [markdown]
# ## Train
# `dlm_jax.train.loop.train(config, workdir)` is the one trainer (the CLI's `train` calls it): it
# trains the tokenizer, prints the effective config, checkpoints, evaluates `config.evals` and
# resumes when the workdir already holds a checkpoint.

# %%
result = loop.train(config, WORKDIR)
print(f"stopped at step {result['step']}")

# %% [markdown]
# ## Watch the loss
# The trainer writes one JSON line per logged step to `<workdir>/metrics.jsonl`: the training loss
# (the NELBO of one batch, nats/token), and at each evaluation the validation NELBO.

# %%
with open(os.path.join(WORKDIR, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
train_pts = [(r["step"], r["loss"]) for r in records if "loss" in r]
eval_pts = [(r["step"], r["eval/nelbo"]) for r in records if "eval/nelbo" in r]
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(*zip(*train_pts), lw=1, label="train loss (one batch)")
ax.plot(*zip(*eval_pts), "o-", label="validation NELBO")
ax.set_xlabel("step")
ax.set_ylabel("nats / token")
ax.set_title(f"MDLM on the Python stdlib ({PRESET}, {config.train.steps} steps)")
ax.legend()
plt.show()

# %% [markdown]
# ## Sample at 8, 32 and 128 steps
# `load_run` reads the workdir (config, tokenizer, raw or EMA params) onto this machine's devices;
# `dlm_jax.eval.generate` samples it as `python -m dlm_jax sample` does. The demo's sampler is
# `mdlm_cache`: a step that unmasks nothing reuses the previous prediction, so NFE ≤ steps + 1.

# %%
run = load_run(WORKDIR)
samples, timings = {}, []
for steps in (8, 32, 128):
    tokens, info = gen.generate(run, steps=steps, num_samples=8, seed=0)
    samples[steps] = tokens
    nfe = int(info["nfe"].max())
    timings.append((steps, nfe, info["seconds"]))
    print(f"=== {steps} steps: NFE {nfe}, {1e3 * info['seconds']:.0f} ms for {len(tokens)} samples ===")
    print(gen.decode(run, tokens[:1])[0][:300], "\n")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
steps_, nfe_, secs_ = zip(*timings)
axes[0].bar([str(s) for s in steps_], nfe_)
axes[0].set_title("model calls (NFE)")
axes[1].bar([str(s) for s in steps_], [1e3 * s for s in secs_])
axes[1].set_title("ms per batch of 8")
for ax in axes:
    ax.set_xlabel("sampling steps")
plt.show()

# %% [markdown]
# ## NELBO
# The run's evaluators (`config.evals`), as `python -m dlm_jax eval --workdir ...` runs them: the
# validation NELBO (an upper bound on the negative log-likelihood, nats/token) beside the
# cross-entropy of the train unigram (a model that ignores context: the bar to clear).

# %%
ctx = evaluators.plain_context(
    run.config, run.method,
    lambda split: loop.grain_data(run.config, split=split, process_index=0, process_count=1, workdir=WORKDIR),
    jax.random.key(1), mesh=run.mesh, workdir=WORKDIR)
metrics = evaluators.run_evaluators(evaluators.build_evaluators(run.config), ctx, lambda block: run.params)
nelbo, uni = metrics["eval/nelbo"], metrics["unigram/unigram_ce"]
print(f"validation NELBO {nelbo:.4f} nats/token ({metrics['eval/bits_per_token']:.3f} bits/token, "
      f"PPL bound {metrics['eval/ppl_bound']:.1f}); train unigram {uni:.4f} nats/token")
fig, ax = plt.subplots(figsize=(4, 3))
ax.bar(["MDLM NELBO", "unigram"], [nelbo, uni], color=["C0", "gray"])
ax.set_ylabel("nats / token")
plt.show()
assert np.isfinite(nelbo) and nelbo > 0

# %% [markdown]
# ## Judge perplexity
# The NELBO scores the model; **generative perplexity** scores its samples: the samples are decoded
# to text, retokenised by a *judge* language model and scored by it (`dlm_jax.eval.judges`, as
# `python -m dlm_jax eval --workdir RUN --metrics gen_ppl,entropy --judge run:JUDGE` does). The
# judge here is the AR baseline (`configs/ar.py`: the same DiT with causal attention and a
# next-token loss), trained on the same corpus: `judge` preset (1,500 steps) at full scale, `tiny`
# for `1500 × SCALE` steps below — a judge that has barely trained, so in CI its perplexities mean
# little. Low gen-PPL from degenerate, repetitive text shows up as low entropy, so both are shown,
# beside the same figures for real validation text.

# %%
from configs import ar
from dlm_jax.eval import judges, quality, quality_run

judge_config = ar.get_config("judge" if PRESET == "demo" else "tiny")
judge_config.train.steps = max(10, round(1500 * SCALE))
judge_config.checkpoint.every = judge_config.train.steps
del judge_config.evals  # its validation NLL is not needed here
JUDGE_DIR = tempfile.mkdtemp(prefix="dlm_judge_")
loop.train(judge_config, JUDGE_DIR)

# %%
judge = judges.load_judge(f"run:{JUDGE_DIR}")
quality_run.probe_judge(run, judge)  # the judge's tokenizer must encode every piece of the run's vocabulary
names = quality_run.check_request(("gen_ppl", "entropy"), judge.name, len(samples[8]), run.config)
scores = {steps: quality_run.score(run, tokens, names, judge) for steps, tokens in samples.items()}
batch = next(loop.grain_data(run.config, split="validation", process_index=0, process_count=1, workdir=WORKDIR))
real = np.asarray(batch["tokens"])[: len(samples[8])]
real_ppl = judges.gen_nll(judge, gen.decode(run, real))["gen_ppl"]
real_entropy = quality.diversity_metrics(real)["unigram_entropy_bits"]
print("| steps | gen-PPL (judge) | unigram entropy (bits) |\n|---|---|---|")
for steps, r in scores.items():
    print(f"| {steps} | {r['gen_ppl']:.1f} | {r['unigram_entropy_bits']:.3f} |")
print(f"| validation text | {real_ppl:.1f} | {real_entropy:.3f} |")
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for ax, key, ref, label in ((axes[0], "gen_ppl", real_ppl, "gen-PPL under the judge"),
                            (axes[1], "unigram_entropy_bits", real_entropy, "unigram entropy (bits)")):
    ax.plot(list(scores), [r[key] for r in scores.values()], "o-", label="MDLM samples")
    ax.axhline(ref, color="gray", ls="--", label="validation text")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sampling steps")
    ax.set_title(label)
    ax.legend(fontsize=8)
plt.show()
assert all(np.isfinite(r["gen_ppl"]) and r["gen_ppl"] > 1 for r in scores.values())
