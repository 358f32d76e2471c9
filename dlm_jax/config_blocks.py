"""Config blocks shared by every ``configs/*.py`` file, so a config states only what differs.

Importable from anywhere (``dlm_jax`` is installed), unlike a sibling config module: config files
must load by path from any working directory (``--config /abs/path/configs/x.py``).
"""

from __future__ import annotations

import ml_collections

__all__ = ["data", "vocab_size", "mesh", "checkpoint", "evals", "init_from", "sample"]


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


def evals(batches: int = 8, every: int = 0, ema: bool = False) -> ml_collections.ConfigDict:
    """The method's own sums (its NELBO) on the validation split, as ``eval/<metric>``."""
    from dlm_jax.eval.evaluators import default_evals

    return default_evals(batches=batches, every=every, ema=ema)


def init_from(**overrides) -> ml_collections.ConfigDict:
    """Off unless ``workdir`` is set (see ``dlm_jax.runs.init_from``)."""
    from dlm_jax.runs.init_from import init_from_config

    return init_from_config(**overrides)


def sample(sampler: str, steps=(8,), num_samples: int = 2, use_ema: bool = False) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(sampler=sampler, steps=tuple(steps), num_samples=num_samples,
                                          use_ema=use_ema))
