"""MDLM on the synthetic Markov-chain language, whose exact likelihood is known.

    python -m dlm_jax train --config configs/mdlm_markov.py --workdir runs/mdlm_markov

Samples can be scored exactly (``dlm_jax.data.pipeline.markov_language(config.data, L)``): the
reference for FeF and sampler benchmarks on a trained model. Presets: ``default`` (V = 8, L = 16,
a few CPU minutes), ``tiny`` (tests).
"""

from dlm_jax import config_blocks

PRESETS = ("default", "tiny")


def get_config(arg: str = "default"):
    if arg not in PRESETS:
        raise ValueError(f"config preset: {arg!r}; expected one of {PRESETS}")
    c = config_blocks.sibling(__file__, "demo.py", "tiny")
    c.workdir = "runs/mdlm_markov" if arg == "default" else "runs/mdlm_markov_tiny"
    c.data.source = "markov"
    c.data.markov_vocab = 8
    c.data.markov_seed = 0
    c.data.markov_concentration = 0.5
    c.data.seq_len = 16
    c.model.vocab_size = 8
    c.model.max_len = 16
    c.model.width, c.model.depth, c.model.heads, c.model.cond_dim = (128, 3, 4, 64) if arg == "default" else (32, 1, 2, 16)
    c.train.steps = 2000 if arg == "default" else 20
    c.train.batch_size = 64 if arg == "default" else 8
    c.train.lr = 2e-3
    c.train.warmup_steps = 100 if arg == "default" else 2
    c.train.ema_decay = 0.999 if arg == "default" else 0.9
    c.evals.eval.every = 500 if arg == "default" else 10
    c.checkpoint.every = 500 if arg == "default" else 10
    c.sample.steps = (4, 16)
    c.sample.num_samples = 4
    return c
