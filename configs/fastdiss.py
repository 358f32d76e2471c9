"""FastDiSS (METHODS §2.4, §3): few-step continuous seq2seq diffusion, encoder–decoder, SCP + MANS.

    python -m dlm_jax train --config configs/fastdiss.py:demo      # offline en->de (gettext catalogs), CPU
    python -m dlm_jax translate --workdir runs/fastdiss_demo --steps 5 < sentences.txt

Presets:

* ``tiny`` — tests (seconds): the synthetic reversal task (6 symbols, length 3-4), a 1+1-layer
  32-wide model, 30 steps;
* ``demo`` — the machine's gettext catalogs, English -> German (about 30,000 train pairs, shared
  BPE-1024), 2+2 layers 128 wide, d = 16, SCP + MANS, K = 5 DDIM steps, 1,200 steps of 32 pairs;
  prints source -> hypothesis -> reference lines and SacreBLEU (intl) at the end of training.
  Measured (2-core machine at load average ~16, so 5 min 30 s of CPU time in 24 min 48 s of wall
  clock, tokenizer and gettext reading included): validation BLEU 2.79, chrF 11.3 on 256 sentences
  (BLEU 0.08 at step 100) — with the SC latent on the main pass's noise, the shortcut since fixed
  (``scp_shared_noise`` False); with fresh noise and 3,000 steps: BLEU 9.85, chrF 16.7 (BENCHMARKS,
  FastDiSS) — it learns, visibly but far from a usable translator at this size;
* ``iwslt14`` / ``wmt14`` — paper scale (§3.2-3.3): 6+6 layers, width 512, FFN 1024 / 2048, 4 / 8
  heads, d 16 / 64, dropout 0.2 / 0.1, Adam (0.9, 0.98), lr 5e-4, inverse-sqrt with 4k warm-up, weight
  decay 0.01, 300k updates, MANS β 2/3/4 at 100k/200k, K = 5 with length beam 5 (§3.7.8). IWSLT14 reads
  prepared TSV/JSONL pair files (``data.pairs_files``); WMT14 the TFDS ``wmt14_translate/de-en``.

The ablations are method keys: ``--config.method.scp=False --config.method.mans=False`` is the base.
Samplers (``method.sampler``, ``translate --sampler``, ``evals.bleu.sampler``): ``ddim`` (default),
``cedi`` (DINOISER) and ``diffuseq`` (DiffuSeq-style ancestral, fresh noise each step; the 2,000-step
reference of ``benchmarks/fastdiss_translate.py``).
"""

import ml_collections

from dlm_jax import config_blocks

PRESETS = ("demo", "tiny", "iwslt14", "wmt14")


def encdec(**fields) -> ml_collections.ConfigDict:
    """Every encoder–decoder field a user may set (``EncDecConfig``), ``name="encdec"``, V from the tokenizer."""
    import dataclasses

    from dlm_jax.models.encdec_def import EncDecConfig

    c = ml_collections.ConfigDict({"name": "encdec", "vocab_size": config_blocks.vocab_size()})
    for f in dataclasses.fields(EncDecConfig):
        if f.name not in ("vocab_size", "latent_dim"):  # V from the tokenizer, d = method.dim
            c[f.name] = f.default
    c.update(fields)
    return c


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
    if arg not in PRESETS:
        raise ValueError(f"config preset: {arg!r}; expected one of {PRESETS}")
    tiny, demo, paper = arg == "tiny", arg == "demo", arg in ("iwslt14", "wmt14")
    wmt = arg == "wmt14"
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = f"runs/fastdiss_{arg}"

    if tiny:
        c.data = config_blocks.data(seq_len=8, source="reverse", source_len=8, task_symbols=6, task_min_len=3,
                                    task_max_len=4, task_eval_records=64)
    elif demo:
        c.data = config_blocks.data(seq_len=24, source="gettext", source_len=24, src_lang="en", tgt_lang="de",
                                    tokenizer_vocab_size=1024, overlong="drop")
    elif wmt:
        c.data = config_blocks.data(seq_len=128, source="tfds_translate", source_len=128, src_lang="en",
                                    tgt_lang="de", tfds_name="wmt14_translate/de-en", tfds_val_split="validation",
                                    tokenizer_vocab_size=32000, overlong="truncate")
    else:
        c.data = config_blocks.data(seq_len=64, source="pairs", source_len=64, tokenizer_vocab_size=10000,
                                    overlong="truncate")

    length = c.data.seq_len
    size = {"tiny": dict(width=32, enc_depth=1, dec_depth=1, heads=2, mlp_ratio=2),
            "demo": dict(width=128, enc_depth=2, dec_depth=2, heads=4, mlp_ratio=4),
            "iwslt14": dict(width=512, enc_depth=6, dec_depth=6, heads=4, mlp_ratio=2, dropout=0.2),
            "wmt14": dict(width=512, enc_depth=6, dec_depth=6, heads=8, mlp_ratio=4, dropout=0.1)}[arg]
    c.model = encdec(max_src_len=c.data.source_len, max_tgt_len=length, **size,
                     dtype="bfloat16" if paper else "float32")

    steps = {"tiny": 30, "demo": 1200, "iwslt14": 300_000, "wmt14": 300_000}[arg]
    c.method = config_blocks.method(
        "fastdiss", dim={"tiny": 8, "demo": 16, "iwslt14": 16, "wmt14": 64}[arg], schedule="interchangeable",
        time_sampler="clipped", scp=True, scp_mode="previous_step", scp_delta="steps", scp_steps=(1, 2, 5, 10),
        scp_shared_noise=False, scp_time_label="t_plus", mans=True, mans_betas=(2.0, 3.0, 4.0),
        beta_phases=(100_000, 200_000) if paper else (steps // 3, 2 * steps // 3), first_pass=0.5,
        sampler="ddim", length_mode="predict", length_beam=5 if paper else (1 if tiny else 3), mbr=1)

    if paper:
        c.train = config_blocks.train(steps=steps, batch_size=1024 if wmt else 256, lr=5e-4, warmup_steps=4000,
                                      schedule="inverse_sqrt", b1=0.9, b2=0.98, weight_decay=0.01, grad_clip=0.0,
                                      ema_decay=0.9999, compute_dtype="bfloat16", log_every=100)
    else:
        c.train = config_blocks.train(steps=steps, batch_size=8 if tiny else 32, lr=1e-3, warmup_steps=5 if tiny else 100,
                                      schedule="inverse_sqrt", b1=0.9, b2=0.98, weight_decay=0.01,
                                      ema_decay=0.9 if tiny else 0.995, log_every=5 if tiny else 50)

    c.mesh = config_blocks.mesh()
    c.checkpoint = config_blocks.checkpoint(every={"tiny": 15, "demo": 600}.get(arg, 10_000), keep=2)
    c.evals = config_blocks.evals(batches={"tiny": 1, "demo": 4}.get(arg, 16), every={"tiny": 15, "demo": 600}.get(
        arg, 10_000), ema=not tiny)
    c.evals.bleu = dict(kind="bleu", split="validation", batches={"tiny": 1, "demo": 8}.get(arg, 50),
                        every={"tiny": 0, "demo": 0}.get(arg, 10_000), ema=not tiny,
                        steps=(2,) if tiny else (5,), sampler=ml_collections.config_dict.placeholder(str),
                        tokenize="13a" if tiny else ml_collections.config_dict.placeholder(str),  # None: by tgt_lang
                        print_examples=2 if tiny else 5)
    c.init_from = config_blocks.init_from()
    # sampler None: the method's own (method.sampler); `sample` without a source translates the empty source.
    c.sample = ml_collections.ConfigDict(dict(sampler=ml_collections.config_dict.placeholder(str),
                                              steps=(2,) if tiny else (5,), num_samples=2, use_ema=not tiny))
    return c
