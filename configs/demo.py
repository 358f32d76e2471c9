"""Demo: a small MDLM on the Python standard library sources, offline, on a laptop CPU.

    python -m dlm_jax train                                   # preset "demo" (about 9 min, loaded 2 cores)
    python -m dlm_jax train --config configs/demo.py:tiny     # under a minute, used by the tests

The tokenizer (sentencepiece BPE: 512 pieces for the demo, 1,024 for tiny) is trained on the fly
into the workdir; running the same command again resumes from the last checkpoint.

The demo is sized to learn visibly on a CPU: a 96-wide 3-block DiT for 1,200 steps of 32 × 128
tokens. Measured: validation NELBO 3.98 nats/token (2026-12-02) against the 5.11 nats/token of the train
unigram (a model that ignores context); the wider 128 × 4 DiT of earlier versions, at 400 steps
with 1,024 pieces, stayed at the unigram level (5.85 vs 5.93).
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

    demo = arg == "demo"
    c.data = config_blocks.data(seq_len=128 if demo else 64, source="stdlib",
                                tokenizer_vocab_size=512 if demo else 1024)
    c.model = config_blocks.dit(width=96 if demo else 64, depth=3 if demo else 2, heads=4 if demo else 2,
                                cond_dim=48 if demo else 32, conditioning="none", max_len=1024)
    c.method = config_blocks.method("mdlm", schedule="loglinear", time_conditioning=False, sampler="mdlm_cache")
    c.train = config_blocks.train(steps=1200 if demo else 30, batch_size=32 if demo else 8, lr=3e-3,
                                  warmup_steps=60 if demo else 5, ema_decay=0.99 if demo else 0.9)

    c.mesh = config_blocks.mesh()
    c.checkpoint = config_blocks.checkpoint(every=600 if demo else 15, keep=2)
    c.evals = config_blocks.evals(batches=8 if demo else 2, every=400 if demo else 15, unigram=True)
    c.init_from = config_blocks.init_from()
    c.sample = config_blocks.sample("mdlm_cache", steps=(8, 32, 128) if arg == "demo" else (8,),
                                    num_samples=3 if arg == "demo" else 2, use_ema=arg == "demo")
    return c
