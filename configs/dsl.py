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

Anchors: frozen random unit rows of ``method.anchor_seed`` (default), or ``--config.method.anchors=pca``
(with ``init_from`` mapping ``"mdlm_to_dsl"``): the PCA of the source MDLM's token embedding, stored
in the run's params, so sampling and eval need only the DSL workdir.
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
        demo = config_blocks.sibling(__file__, "demo.py", "demo")
        c.data = demo.data
        c.data.tokenizer_path = f"{DEMO_MDLM}/tokenizer/spm_bpe{demo.data.tokenizer_vocab_size}.model"
    else:  # OpenWebText: point tfds_name / tfds_data_dir at a prepared copy
        c.data = config_blocks.data(seq_len=1024, source="tfds", tfds_name="openwebtext", tokenizer_vocab_size=50257)

    paper = arg == "paper"
    width, depth, heads, cond_dim = {"tiny": (32, 1, 2, 16), "paper": (768, 12, 12, 128)}.get(arg, (0, 0, 0, 0))
    if arg == "demo":  # the MDLM demo's DiT, whose weights it starts from
        width, depth, heads, cond_dim = (demo.model[k] for k in ("width", "depth", "heads", "cond_dim"))
    # input="vectors" and input_dim = method.dim come from the method; "dsl_linear" is the h = Wz + c ablation
    # (no init_from mapping); the converter's options (seed, β, residual) are method keys, written back here.
    c.model = config_blocks.dit(width=width, depth=depth, heads=heads, cond_dim=cond_dim, conditioning="none",
                                input_adapter="dsl_converter", max_len=16 if arg == "tiny" else 1024,
                                dtype="bfloat16" if paper else "float32")
    # β_init: 1/√d at paper scale (METHODS §4.7); 1 (the exact single-token posterior's β, DSL-LLaDA's
    # "Beta1") for the short CPU runs, where 1/√d leaves LogNormal-SNR tokens near-invisible to the
    # converter for hundreds of steps (demo, 300 steps: train CE 5.72 vs 4.93 with β = 1, lr 3e-3).
    c.method = config_blocks.method(
        "dsl", dim=48, anchors="random", anchor_seed=42, **({} if paper else {"beta_init": 1.0}), highpass=False,
        snr_gate=False, s_max=100.0, roar_frac=10.0, mu=1.69, sigma=0.9, ln_clamp=40.0, per_token=True, loss="all",
        immse_dense=4 if arg == "tiny" else 16, immse_geometric=8 if arg == "tiny" else 48,
        sampler="dsl_remdm_loop")
    if paper:  # the suggested fine-tuning optimiser (METHODS §4.3)
        c.train = config_blocks.train(steps=100_000, batch_size=512, lr=3e-4, warmup_steps=1000, ema_decay=0.9999,
                                      compute_dtype="bfloat16", log_every=100)
    else:
        c.train = config_blocks.train(steps=20 if arg == "tiny" else 400, batch_size=8 if arg == "tiny" else 32,
                                      lr=3e-3, warmup_steps=2 if arg == "tiny" else 30,
                                      ema_decay=0.9 if arg == "tiny" else 0.99, log_every=5 if arg == "tiny" else 10)

    c.mesh = config_blocks.mesh()
    c.checkpoint = config_blocks.checkpoint(every={"tiny": 10, "demo": 200, "paper": 5000}[arg], keep=2)
    c.evals = config_blocks.evals(batches={"tiny": 1, "demo": 2, "paper": 16}[arg],
                                  every={"tiny": 10, "demo": 200, "paper": 5000}[arg], unigram=arg == "demo")
    c.init_from = config_blocks.init_from(workdir={"tiny": "", "demo": DEMO_MDLM, "paper": "runs/mdlm_owt"}[arg],
                                          weights="ema" if arg == "demo" else "params", mapping="mdlm_to_dsl")
    c.sample = config_blocks.sample("dsl_remdm_loop", steps=(8,) if arg == "tiny" else (8, 32, 128),
                                    num_samples=2 if arg == "tiny" else 3, use_ema=arg != "tiny")
    return c
