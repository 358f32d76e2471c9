"""DSL (METHODS §4): one SNR-invariant denoiser over mixed ROAR + LogNormal SNRs, fine-tuned from MDLM.

    python -m dlm_jax train                                   # the MDLM demo run -> runs/demo (README)
    python -m dlm_jax train --config configs/dsl.py:demo      # fine-tunes it with DSL -> runs/demo_dsl
    python -m dlm_jax sample --workdir runs/demo_dsl --sampler dsl_sde --steps 16

Presets:

* ``tiny`` — tests (under a minute): the Markov-chain language (V = 8, L = 16), a 1-block DiT
  trained from scratch, a short I-MMSE grid;
* ``demo`` — a few CPU minutes: starts from ``runs/demo`` (``init_from`` mapping ``"mdlm_to_dsl"``:
  the backbone copied, the converter's W from the MDLM token embedding) with the same stdlib corpus,
  DiT size and tokenizer (``data.tokenizer_path`` = the demo run's sentencepiece model);
* ``paper`` — MDLM-OWT scale (TPU/GPU): L = 1,024, DiT 768/12/12 cond 128, d = 48, s_max = 100,
  LogNormal(1.69, 0.9) clamped at 40, roar_frac = 10, β_init = 1/√d (§4.7), the suggested fine-tuning
  optimiser (§4.3); ``init_from.workdir`` must hold an MDLM-OWT run (trained or imported).
"""

import ml_collections

from dlm_jax import config_blocks

PRESETS = ("tiny", "demo", "paper")
DEMO_MDLM = "runs/demo"  # the README's `python -m dlm_jax train` (configs/demo.py:demo)


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
    if arg not in PRESETS:
        raise ValueError(f"config preset: {arg!r}; expected one of {PRESETS}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = {"tiny": "runs/dsl_tiny", "demo": "runs/demo_dsl", "paper": "runs/dsl_owt"}[arg]

    if arg == "tiny":
        c.data = config_blocks.data(seq_len=16, source="markov", markov_vocab=8, markov_seed=0,
                                    markov_concentration=0.5)
    elif arg == "demo":  # configs/demo.py's data and tokenizer, so token ids mean the same thing
        c.data = config_blocks.data(seq_len=128, source="stdlib", tokenizer_vocab_size=1024,
                                    tokenizer_path=f"{DEMO_MDLM}/tokenizer/spm_bpe1024.model")
    else:  # OpenWebText: point tfds_name / tfds_data_dir at a prepared copy
        c.data = config_blocks.data(seq_len=1024, source="tfds", tfds_name="openwebtext", tokenizer_vocab_size=50257)

    c.model = ml_collections.ConfigDict()
    c.model.name = "dit"
    c.model.vocab_size = config_blocks.vocab_size()  # None: the tokenizer's
    c.model.width, c.model.depth, c.model.heads, c.model.cond_dim = {
        "tiny": (32, 1, 2, 16), "demo": (128, 4, 4, 64), "paper": (768, 12, 12, 128)}[arg]  # demo = configs/demo.py
    c.model.input = "vectors"
    c.model.input_dim = 48
    c.model.input_adapter = "dsl_converter"  # "dsl_linear": the h = Wz + c ablation (no init_from mapping)
    c.model.conditioning = "none"
    c.model.dropout = 0.0
    c.model.dtype = "bfloat16" if arg == "paper" else "float32"

    c.method = ml_collections.ConfigDict()
    c.method.name = "dsl"
    c.method.dim = 48
    c.method.anchors = "random"
    c.method.anchor_seed = 42
    c.method.beta_init = None  # 1/sqrt(d)
    c.method.highpass = False
    c.method.snr_gate = False
    c.method.s_max = 100.0
    c.method.roar_frac = 10.0
    c.method.mu = 1.69
    c.method.sigma = 0.9
    c.method.ln_clamp = 40.0
    c.method.per_token = True
    c.method.loss = "all"
    c.method.immse_dense = 4 if arg == "tiny" else 16
    c.method.immse_geometric = 8 if arg == "tiny" else 48
    c.method.sampler = "dsl_remdm_loop"

    c.train = ml_collections.ConfigDict()
    if arg == "paper":
        c.train.steps = 100_000
        c.train.batch_size = 512
        c.train.lr = 3e-4
        c.train.warmup_steps = 1000
        c.train.ema_decay = 0.9999
        c.train.compute_dtype = "bfloat16"
        c.train.log_every = 100
    else:
        c.train.steps = 20 if arg == "tiny" else 300
        c.train.batch_size = 8 if arg == "tiny" else 32
        c.train.lr = 3e-3 if arg == "tiny" else 1e-3
        c.train.warmup_steps = 2 if arg == "tiny" else 30
        c.train.ema_decay = 0.9 if arg == "tiny" else 0.99
        c.train.log_every = 5 if arg == "tiny" else 10
    c.train.schedule = "cosine"
    c.train.weight_decay = 0.0
    c.train.b1, c.train.b2 = 0.9, 0.999
    c.train.grad_clip = 1.0
    c.train.microbatches = 1

    c.mesh = config_blocks.mesh()
    c.checkpoint = config_blocks.checkpoint(every={"tiny": 10, "demo": 150, "paper": 5000}[arg], keep=2)
    c.evals = config_blocks.evals(batches={"tiny": 1, "demo": 2, "paper": 16}[arg],
                                  every={"tiny": 10, "demo": 150, "paper": 5000}[arg])
    c.init_from = config_blocks.init_from(workdir={"tiny": "", "demo": DEMO_MDLM, "paper": "runs/mdlm_owt"}[arg],
                                          weights="ema" if arg == "demo" else "params", mapping="mdlm_to_dsl")
    c.sample = config_blocks.sample("dsl_remdm_loop", steps=(8,) if arg == "tiny" else (8, 32, 128),
                                    num_samples=2 if arg == "tiny" else 3, use_ema=arg != "tiny")
    return c
