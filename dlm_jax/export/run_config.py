"""The config an imported workdir carries: what the trainer would have written for this model and method.

An own-layout export carries its run config and gets it back (workdir updated). Other layouts
get a complete trainer config: ``model`` (name, V, the checkpoint's fields), ``method`` (the one
the checkpoint was trained with), ``data`` (default: ``source="ids"`` with ``ids_vocab = V``: no
data, a tokenizer that is the identity on ids — no text tokenizer is read from Hugging Face files
yet; pass ``data`` overrides, e.g. ``files`` and a sentencepiece ``tokenizer_path`` of exactly V
pieces, to evaluate or fine-tune),
``train`` (fine-tuning defaults), ``mesh``, ``checkpoint``, ``evals``, ``init_from`` (off),
``sample`` and ``imported`` (format, source path, options). ``seq_len`` defaults to
``min(max_len, 1024)``.
"""

from __future__ import annotations

import copy

import ml_collections

from dlm_jax import checks, config_blocks
from dlm_jax.export.files import Checkpoint

# Keys of the model's own config that the method's ModelSpec sets (never stored in config.model).
SPEC_KEYS = ("vocab_size", "num_classes", "input", "input_dim")
DEFAULT_SAMPLER = {"mdlm": "mdlm", "dfm": "dfm_euler", "fsdfm": "fsdfm"}

__all__ = ["build_config", "SPEC_KEYS"]


def _train_block() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(steps=1000, batch_size=8, lr=1e-4, warmup_steps=100, schedule="cosine",
                                          final_lr_frac=0.1, eps=1e-8, weight_decay=0.0, b1=0.9, b2=0.999,
                                          grad_clip=1.0, ema_decay=0.999, microbatches=1, log_every=10))


def _data_block(block: ml_collections.ConfigDict, data: dict | None) -> ml_collections.ConfigDict:
    """``block`` updated with the ``data`` overrides, validated."""
    if data:
        if not isinstance(data, dict):
            checks.fail("data", data, "a dict of config.data keys (e.g. {'source': 'stdlib', 'tokenizer_path': ...})")
        if "seq_len" in data:
            checks.fail("data.seq_len", data["seq_len"], "the seq_len option instead")
        block.update(data)
    from dlm_jax.data.registry import validate_data_config

    validate_data_config(block)
    return block


def build_config(ckpt: Checkpoint, workdir: str, *, seq_len: int | None = None, data: dict | None = None,
                 seed: int = 0) -> ml_collections.ConfigDict:
    """The ConfigDict stored with the imported checkpoint (validated; method defaults are filled
    later by building the method, as the trainer does)."""
    checks.check_int("seed", seed, min=0)
    if ckpt.run_config is not None:  # own layout: the run's own config
        c = ml_collections.ConfigDict(copy.deepcopy(ckpt.run_config))
        with c.unlocked():
            c.workdir = workdir
            if seq_len is not None:
                c.data.seq_len = checks.check_int("seq_len", seq_len, min=1, max=int(c.model.get("max_len", seq_len)))
            c.data = _data_block(c.data, data)
            c.imported = dict(ckpt.origin)
        return c
    max_len = int(ckpt.model_fields.get("max_len", 1024))
    seq_len = min(max_len, 1024) if seq_len is None else checks.check_int("seq_len", seq_len, min=1, max=max_len)
    c = ml_collections.ConfigDict()
    c.seed = seed
    c.workdir = workdir
    c.model = ml_collections.ConfigDict({"name": ckpt.model_name, "vocab_size": ckpt.vocab_size})
    c.model.update({k: v for k, v in ckpt.model_fields.items() if k not in SPEC_KEYS})
    c.method = ml_collections.ConfigDict(dict(ckpt.method))
    c.data = _data_block(config_blocks.data(seq_len=seq_len, source="ids", ids_vocab=ckpt.vocab_size), data)
    c.train = _train_block()
    c.mesh = config_blocks.mesh()
    c.checkpoint = config_blocks.checkpoint(every=1000, keep=2)
    c.evals = config_blocks.evals(batches=2, every=0)
    c.init_from = config_blocks.init_from()
    sampler = ckpt.method.get("sampler") or DEFAULT_SAMPLER.get(ckpt.method.get("name"), "mdlm")
    c.sample = config_blocks.sample(sampler, steps=(8,), num_samples=2)
    c.imported = dict(ckpt.origin)
    return c
