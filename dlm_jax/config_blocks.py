"""Config blocks shared by every ``configs/*.py`` file, so a config states only what differs.

Importable from anywhere (``dlm_jax`` is installed), unlike a sibling config module: config files
must load by path from any working directory (``--config /abs/path/configs/x.py``).
"""

from __future__ import annotations

import ml_collections

__all__ = ["sibling", "data", "vocab_size", "dit", "method", "train", "mesh", "checkpoint", "evals", "init_from", "sample"]


def dit(**fields) -> ml_collections.ConfigDict:
    """Every DiT field a user may set (``dlm_jax.models.DiTConfig``) with its default, ``name="dit"``
    and ``vocab_size`` (V, None = the tokenizer's). The method's ``model_spec`` fills the input ids,
    the outputs and the input kind, so those fields are not listed."""
    import dataclasses

    from dlm_jax.models import DiTConfig

    spec_fields = ("vocab_size", "num_classes", "input", "input_dim")
    c = ml_collections.ConfigDict({"name": "dit", "vocab_size": vocab_size()})
    for f in dataclasses.fields(DiTConfig):
        if f.name not in spec_fields:
            c[f.name] = f.default
    c.update(fields)
    return c


def method(name: str, **keys) -> ml_collections.ConfigDict:
    """``config.method`` for the method ``name`` with ``keys``, completed with every default the
    method resolves (read off a build on a small probe config), so each key can be overridden
    from the command line and the printed config is the effective one."""
    from dlm_jax.methods.base import build_method

    c = ml_collections.ConfigDict(dict(name=name, **keys))
    probe = ml_collections.ConfigDict({"model": {"vocab_size": 8}, "data": {"seq_len": 8}, "method": c.to_dict()})
    try:
        build_method(probe, lambda *a, **k: None, inputs={})
    except ValueError:
        return c  # keys the probe cannot judge (e.g. a bad value): the trainer reports them
    for key, value in probe.method.items():
        if key not in c:
            c[key] = value if value is not None else ml_collections.config_dict.placeholder(float)  # eps, exponent
    return c


def train(*, steps: int, batch_size: int, lr: float, warmup_steps: int, **overrides) -> ml_collections.ConfigDict:
    """Every trainer key (``dlm_jax.train.loop``) with its default."""
    c = ml_collections.ConfigDict(dict(
        steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, schedule="cosine", final_lr_frac=0.1,
        weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0, ema_decay=0.0, microbatches=1,
        compute_dtype=ml_collections.config_dict.placeholder(str), step_impl="jit", log_every=10,
        max_nonfinite_steps=10))
    c.update(overrides)
    return c


def sibling(config_file: str, name: str, preset: str) -> ml_collections.ConfigDict:
    """``get_config(preset)`` of the config file ``name`` next to ``config_file`` (pass ``__file__``),
    loaded by path, so a config built on another works from any working directory."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
    spec = importlib.util.spec_from_file_location(f"dlm_jax_config_{os.path.splitext(name)[0]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


def data(seq_len: int, **overrides) -> ml_collections.ConfigDict:
    """Every data key a user may set (``dlm_jax.data.registry.default_data_config``: source, files,
    TFDS name and splits, tokenizer, Markov language, shuffling), plus ``seq_len``."""
    from dlm_jax.data.registry import default_data_config

    c = default_data_config()
    c.seq_len = seq_len
    c.update(overrides)
    return c


def vocab_size(value: int | None = None):
    """``model.vocab_size`` (V clean tokens): None = the tokenizer's, settable as an int."""
    return ml_collections.config_dict.placeholder(int) if value is None else value


def mesh(**overrides) -> ml_collections.ConfigDict:
    """Data parallel over every device; ``distributed`` "auto" on TPU pods / SLURM, "explicit" for
    ``launch/local.sh`` (with coordinator address, process count and id)."""
    c = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, strategy="dp", distributed="off",
                                       coordinator_address="", num_processes=1, process_id=0,
                                       initialization_timeout=300))
    c.update(overrides)
    return c


def checkpoint(every: int, keep: int = 2, **overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(dict(every=every, keep=keep, async_save=True, save_on_signal=True))
    c.update(overrides)
    return c


def evals(batches: int = 8, every: int = 0, ema: bool = False, unigram: bool = False) -> ml_collections.ConfigDict:
    """The method's own sums (its NELBO) on the validation split, as ``eval/<metric>``; with
    ``unigram`` also the train-unigram cross-entropy of the same split (``unigram/unigram_ce``),
    the score of a model that ignores context, computed once per evaluation."""
    from dlm_jax.eval.evaluators import default_evals

    c = default_evals(batches=batches, every=every, ema=ema)
    if unigram:
        c.unigram = dict(kind="unigram", split="validation", batches=batches, every=0, ema=False,
                         train_batches=50)
    return c


def init_from(**overrides) -> ml_collections.ConfigDict:
    """Off unless ``workdir`` is set (see ``dlm_jax.runs.init_from``)."""
    from dlm_jax.runs.init_from import init_from_config

    return init_from_config(**overrides)


def sample(sampler: str, steps=(8,), num_samples: int = 2, use_ema: bool = False) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(sampler=sampler, steps=tuple(steps), num_samples=num_samples,
                                          use_ema=use_ema))
