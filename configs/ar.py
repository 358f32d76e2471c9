"""AR baseline (``dlm_jax.methods.ar``): the demo's DiT with causal attention and next-token loss.

    python -m dlm_jax train --config configs/ar.py:judge     # the offline judge of the stdlib corpus
    python -m dlm_jax train --config configs/ar.py:demo      # the AR row beside the demo MDLM
    python -m dlm_jax train --config configs/ar.py:tiny      # seconds, used by the tests

Data and tokenizer are configs/demo.py's (stdlib corpus, the same 512-piece sentencepiece settings,
128 tokens), so the judge reads demo samples in its own tokenizer's terms after a text round trip
(``--judge run:<workdir>``, ``dlm_jax.eval.judges``). ``demo`` is the demo MDLM's DiT and schedule
exactly (the fair AR row); ``judge`` trains the same DiT longer (1,500 steps), sized to stay under
about 10 min on a loaded 2-core CPU. ``tiny`` takes the tiny demo's data.
"""

import ml_collections

from dlm_jax import config_blocks

PRESETS = ("judge", "demo", "tiny")


def get_config(arg: str = "judge") -> ml_collections.ConfigDict:
    if arg not in PRESETS:
        raise ValueError(f"config preset: {arg!r}; expected one of {PRESETS}")
    base = config_blocks.sibling(__file__, "demo.py", "tiny" if arg == "tiny" else "demo")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = f"runs/ar_{arg}"
    c.data = base.data
    c.model = base.model
    c.model.causal = True
    c.model.conditioning = "none"
    c.method = config_blocks.method("ar")
    steps = {"judge": 1500, "demo": 1200, "tiny": 30}[arg]
    c.train = base.train
    c.train.steps = steps
    c.mesh = base.mesh
    c.checkpoint = config_blocks.checkpoint(every=500 if arg != "tiny" else 15, keep=2)
    c.evals = config_blocks.evals(batches=8 if arg != "tiny" else 2, every=500 if arg != "tiny" else 15,
                                  unigram=True)
    c.init_from = config_blocks.init_from()
    c.sample = config_blocks.sample(None, steps=(c.data.seq_len,), num_samples=3 if arg != "tiny" else 2,
                                    use_ema=arg != "tiny")
    return c
