"""Demo: a small MDLM on the Python standard library sources, offline, on a laptop CPU.

    python -m dlm_jax train                                   # preset "demo" (about 5 min, 2 cores)
    python -m dlm_jax train --config configs/demo.py:tiny     # under a minute, used by the tests

The tokenizer (sentencepiece BPE, 1k pieces) is trained on the fly into the workdir; running the
same command again resumes from the last checkpoint.
"""

import ml_collections

from dlm_jax import config_blocks

PRESETS = ("demo", "tiny")


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
    if arg not in PRESETS:
        raise ValueError(f"config preset: {arg!r}; expected one of {PRESETS}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = "runs/demo" if arg == "demo" else "runs/demo_tiny"

    c.data = config_blocks.data(seq_len=128 if arg == "demo" else 64, source="stdlib", tokenizer_vocab_size=1024)

    c.model = ml_collections.ConfigDict()
    c.model.name = "dit"
    c.model.vocab_size = config_blocks.vocab_size()  # None: the tokenizer's
    c.model.width = 128 if arg == "demo" else 64
    c.model.depth = 4 if arg == "demo" else 2
    c.model.heads = 4 if arg == "demo" else 2
    c.model.cond_dim = 64 if arg == "demo" else 32
    c.model.conditioning = "none"
    c.model.dropout = 0.0
    c.model.dtype = "float32"

    c.method = ml_collections.ConfigDict()
    c.method.name = "mdlm"
    c.method.schedule = "loglinear"
    c.method.time_conditioning = False

    c.train = ml_collections.ConfigDict()
    c.train.steps = 400 if arg == "demo" else 30
    c.train.batch_size = 32 if arg == "demo" else 8
    c.train.lr = 3e-3 if arg == "demo" else 3e-3
    c.train.warmup_steps = 50 if arg == "demo" else 5
    c.train.schedule = "cosine"
    c.train.weight_decay = 0.0
    c.train.b1, c.train.b2 = 0.9, 0.999
    c.train.grad_clip = 1.0
    c.train.ema_decay = 0.99 if arg == "demo" else 0.9
    c.train.microbatches = 1
    c.train.log_every = 10

    c.mesh = config_blocks.mesh()
    c.checkpoint = config_blocks.checkpoint(every=200 if arg == "demo" else 15, keep=2)
    c.evals = config_blocks.evals(batches=8 if arg == "demo" else 2, every=200 if arg == "demo" else 15)
    c.init_from = config_blocks.init_from()
    c.sample = config_blocks.sample("mdlm_cache", steps=(8, 32, 128) if arg == "demo" else (8,),
                                    num_samples=3 if arg == "demo" else 2, use_ema=arg == "demo")
    return c
