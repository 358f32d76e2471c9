"""FS-DFM (METHODS §6): a DFM teacher is pretrained first, then the (t, h) student is distilled from a
copy of it. Two configs chained through the teacher's workdir (the student's ``init_from``):

    # 1. DFM teacher (stage 0): generalized KL, uniform source (demo/paper default), κ = t
    python -m dlm_jax train --config configs/fsdfm.py:teacher_demo     # -> runs/fsdfm_teacher_demo
    # 2. FS-DFM student (stage 1): initialised from the teacher, RK-4 shortcut distillation
    python -m dlm_jax train --config configs/fsdfm.py:demo             # -> runs/fsdfm_demo

Presets: ``teacher_tiny`` / ``tiny`` (tests, under a minute each), ``teacher_demo`` / ``demo`` (a few CPU
minutes each; both on the synthetic Markov-chain language, V = 8, L = 32, so samples can be scored
exactly), ``teacher_stdlib`` / ``stdlib`` (the demo's stdlib corpus, tokenizer and 96×3 DiT, 128 tokens;
the teacher trains with cross-entropy: with the reference parameterisation the generalized KL never
learns to copy visible tokens at V = 512 and stays at eval NELBO 9.8–10.0 nats/token, worse than the
unigram's 5.1, whatever the time draw; ``method.carry_over=True`` fixes that, 4.95 after 250 steps —
BENCHMARKS.md "DFM on real text"), ``teacher_paper`` /
``paper`` (1,024 tokens, DiT 768/12/12 cond 128, the paper's optimiser). Append ``_mask`` or
``_uniform`` to any preset to pick the source (``DEFAULT_SOURCE`` otherwise); teacher and student must
use the same source.

Student initialisation: when it starts from scratch, the trainer copies the ``init_from`` teacher run
into the student (mapping ``"dit_t_to_th"``, ``dlm_jax.runs.init_from``; the sources must match).
``model.identity_h_init=True`` makes the student equal to the teacher at step 0 (tiny/demo/stdlib);
``paper`` keeps the reference's random fuser init (no measurable difference: below).

Recipe and evidence (issue 13; BENCHMARKS.md, "FS-DFM ablations", ``benchmarks/fsdfm_ablations.py``;
Markov demo, 1,500 student steps, exact NLL/token at 8 steps, s.e. 0.008): the **uniform source** is the
one knob that moves the gap to the teacher at 1,024 steps: student@8 1.673 nats (+3.5%, entropy −2.3%)
vs 1.699 (+9.0%, entropy +0.3%) with the mask source, and it is better in absolute terms too (true
chain 1.510), so ``demo`` and ``paper`` default to it (the released checkpoints' source as well).
Every other knob is within noise of the baseline recipe kept here (EMA self-teacher with a data
anchor, faithful RK-4, inverse-h policy, N_ref = 64, identity fusers; mask source): frozen teacher
1.695, consistent labels 1.695, Heun 1.703, annealed policy 1.693, uniform policy 1.697, N_ref = 16
1.695, N_ref = 256 1.699, random fusers 1.701; the large-h policy collapses entropy (2.26 bits at 8
steps vs 2.57 for data). Length is the other knob that moves it: 5k / 15k student steps score 1.689 /
1.671, the latter within one s.e. of the exact posterior sampled at 8 steps (1.668), the best any
per-position student can do with the mask source (``benchmarks/fsdfm_diagnostics.py``): the limit is the
factorisation of a step, not the recipe. ``demo`` keeps 2,000 steps (minutes on a CPU); train longer
(``--config.train.steps``) for the last few hundredths of a nat.
"""

import ml_collections

from dlm_jax import config_blocks

PRESETS = ("teacher_tiny", "tiny", "teacher_demo", "demo", "teacher_stdlib", "stdlib", "teacher_paper", "paper")


def _sizes(scale):
    return {"tiny": dict(width=32, depth=1, heads=2, cond_dim=16),
            "demo": dict(width=64, depth=2, heads=2, cond_dim=32),
            "stdlib": dict(width=96, depth=3, heads=4, cond_dim=48),  # configs/demo.py's DiT
            "paper": dict(width=768, depth=12, heads=12, cond_dim=128)}[scale]


# The source each scale uses unless the preset names one (``_mask`` / ``_uniform``): the uniform source
# won the demo's ablations (module docstring); tiny (tests) and stdlib (the measured corpus repeat) keep mask.
DEFAULT_SOURCE = {"tiny": "mask", "demo": "uniform", "stdlib": "mask", "paper": "uniform"}


def _parse(arg: str):
    for source in ("mask", "uniform"):
        if arg.endswith("_" + source):
            return arg[: -len(source) - 1], source
    return arg, None


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
    name, source = _parse(arg)
    if name not in PRESETS:
        raise ValueError(f"config preset: {arg!r}; expected one of {PRESETS} (optionally + '_mask' / '_uniform')")
    teacher = name.startswith("teacher_")
    scale = name[len("teacher_"):] if teacher else name
    source = source or DEFAULT_SOURCE[scale]
    suffix = "" if source == DEFAULT_SOURCE[scale] else "_" + source
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = f"runs/fsdfm_{name}{suffix}"
    teacher_workdir = f"runs/fsdfm_teacher_{scale}{suffix}"

    if scale == "paper":  # FineWeb-Edu in the paper: point tfds_name / tfds_data_dir at a prepared copy
        c.data = config_blocks.data(seq_len=1024, source="tfds", tfds_name="fineweb_edu", tokenizer_vocab_size=50257)
    elif scale == "stdlib":  # the demo's corpus and tokenizer settings (stdlib sources, 512 pieces, 128 tokens)
        c.data = config_blocks.sibling(__file__, "demo.py", "demo").data
    else:
        c.data = config_blocks.data(seq_len=16 if scale == "tiny" else 32, source="markov", markov_vocab=8,
                                    markov_seed=0, markov_concentration=0.5)

    c.model = config_blocks.dit(**_sizes(scale), max_len=c.data.seq_len, conditioning="t" if teacher else "th",
                                dtype="bfloat16" if scale == "paper" else "float32",
                                identity_h_init=not teacher and scale != "paper")
    common = dict(source=source, schedule="polynomial", exponent=1.0, elbo_points=8 if scale == "tiny" else 32)
    if teacher:
        c.method = config_blocks.method("dfm", **common, loss="ce" if scale == "stdlib" else "gkl", time_epsilon=1e-5,
                                        sampler="dfm_euler")
    else:
        c.method = config_blocks.method(
            "fsdfm", **common, n_ref={"paper": 1024, "tiny": 8}.get(scale, 64), policy="inverse_h",
            anneal_every=20_000, teacher="rk4", rk4_labels="faithful", tau=1.0, just_student=True,
            teacher_workdir=teacher_workdir,  # read only when just_student=False
            teacher_weights="params", sampler="fsdfm")

    # The paper's EMA (0.9995) averages over ~2k steps: as long as the whole demo run, so the small
    # presets use a shorter EMA for the shortcut teacher.
    ema = 0.9995 if scale == "paper" else 0.9 if scale == "tiny" else 0.99
    if scale == "paper":
        c.train = config_blocks.train(steps=1_000_000 if teacher else 500_000, batch_size=128 if teacher else 96,
                                      lr=3e-4 if teacher else 1e-5, warmup_steps=10_000, weight_decay=0.03, b2=0.95,
                                      compute_dtype="bfloat16", log_every=100, ema_decay=ema)
        c.evals = config_blocks.evals(batches=16, every=10_000)
    elif scale == "stdlib":  # ~15 min of a quiet CPU core, teacher and student (issue 13)
        c.train = config_blocks.train(steps=500 if teacher else 150, batch_size=32, lr=3e-3 if teacher else 1e-3,
                                      warmup_steps=30 if teacher else 10, log_every=50, ema_decay=ema)
        c.evals = config_blocks.evals(batches=4, every=250)
    else:
        c.train = config_blocks.train(
            steps={"tiny": 20, "demo": 3000}[scale] if teacher else {"tiny": 10, "demo": 2000}[scale],
            batch_size=8 if scale == "tiny" else 64, lr=3e-3 if teacher else 1e-3,
            warmup_steps=5 if scale == "tiny" else 100, log_every=5 if scale == "tiny" else 50, ema_decay=ema)
        c.evals = config_blocks.evals(batches=1 if scale == "tiny" else 4, every=10 if scale == "tiny" else 1000)

    c.mesh = config_blocks.mesh()
    c.checkpoint = config_blocks.checkpoint(every={"tiny": 10, "demo": 1000, "stdlib": 250}.get(scale, 10_000))
    c.init_from = config_blocks.init_from(workdir="" if teacher else teacher_workdir,
                                          mapping="copy" if teacher else "dit_t_to_th")

    c.sample = ml_collections.ConfigDict()
    c.sample.sampler = "dfm_euler" if teacher else "fsdfm"
    c.sample.steps = (8, 64, 1024) if teacher else (1, 2, 4, 8)
    c.sample.num_samples = 2 if scale == "tiny" else 8
    return c
