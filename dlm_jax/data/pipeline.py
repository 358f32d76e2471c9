"""The grain input pipeline: examples of the registered source -> seeded shuffle -> repeat -> shard
by process -> the source's row maker (text: tokenize + EOS + pack to L + window shuffle; pairs:
tokenize + pad each field) -> batch.

``build_pipeline`` returns a ``grain.IterDataset``; ``iter(ds)`` is a checkpointable iterator
(``get_state()`` / ``set_state()``, and ``grain.checkpoint.CheckpointSave/Restore`` for Orbax;
states survive JSON). Each element is a dict of the row maker's fields stacked to ``[B, ...]``:
``{"tokens": int32 [B, L], "loss_mask": float32 [B, L]}`` for the built-in sources, e.g.
``{"source", "source_mask", "target", "target_mask"}`` for a seq2seq source.

Sources and their config keys are registered by name (``dlm_jax.data.registry``; built-ins and
their keys in ``dlm_jax.data.builtin``). ``data_config`` may be the whole ``config.data``
(``seq_len`` in it is ignored; the argument counts). split="validation" is one unshuffled pass.
A finite stream's last batch is filled with zero rows (masks 0); nothing is dropped. Sharding:
process p of n reads examples ``p, p+n, ...`` of the shuffled global order
(``jax.process_index()/process_count()`` by default).
"""

from __future__ import annotations

import inspect
import os
import sys

import grain
import numpy as np

from dlm_jax.checks import check_choice, check_int, fail
from dlm_jax.data import sources as sources_lib
from dlm_jax.data.builtin import markov_language
from dlm_jax.data.registry import default_data_config, get_source, source_names, validate_data_config
from dlm_jax.data.rows import PadBatch
from dlm_jax.data.tokenizer import SentencePieceTokenizer, train_sentencepiece

__all__ = ["default_data_config", "build_pipeline", "build_examples", "build_source", "markov_language",
           "sentencepiece_tokenizer", "source_names", "train_or_load_tokenizer", "validate_data_config"]


def build_examples(data_config, split: str = "train", *, seq_len: int | None = None, seed: int = 0):
    """``(validated config, Examples)`` of ``data.source`` for ``split`` ("train"/"validation",
    "all" where the source allows it); ``seq_len`` None when only the text is needed."""
    cfg = validate_data_config(data_config)
    sources_lib._check_split(split)
    return cfg, get_source(cfg["source"]).builder(cfg, split, seq_len, int(seed))


def build_source(data_config, split: str = "train", *, seq_len: int | None = None, seed: int = 0):
    """The random-access source of examples of ``data.source`` for ``split``."""
    return build_examples(data_config, split, seq_len=seq_len, seed=seed)[1].source


def train_or_load_tokenizer(data_config, workdir: str | None):
    """The tokenizer for ``data``: the source's own (``MarkovTokenizer`` for source="markov"; a
    hook taking ``(config, workdir)`` may build it from ``sentencepiece_tokenizer``); otherwise
    ``sentencepiece_tokenizer(config, workdir)``."""
    cfg = validate_data_config(data_config)
    spec = get_source(cfg["source"])
    if spec.tokenizer is not None:
        try:
            inspect.signature(spec.tokenizer).bind(cfg, workdir)
        except TypeError:
            return spec.tokenizer(cfg)
        return spec.tokenizer(cfg, workdir)
    return sentencepiece_tokenizer(cfg, workdir)


def sentencepiece_tokenizer(data_config, workdir: str | None, *, texts=None, name: str = "spm"):
    """The tokenizer at ``data.tokenizer_path`` if set (a sentencepiece ``.model``, or a Hugging Face
    ``tokenizer.json`` / a folder holding one: ``data.hf_tokenizer.HFTokenizer``), else ``<workdir>/tokenizer/
    <name>_bpe<V>.model`` — trained on the first ``tokenizer_train_chars`` characters of the train
    split's texts (examples in a fixed pseudo-random order; ``texts(example)``, default the
    source's ``Examples.texts``) when it does not exist yet, reused after."""
    cfg = validate_data_config(data_config)
    if cfg["tokenizer_path"]:
        from dlm_jax.data.hf_tokenizer import HFTokenizer, is_hf_tokenizer_path

        if is_hf_tokenizer_path(cfg["tokenizer_path"]):  # tokenizer.json (e.g. one imported with a checkpoint)
            return HFTokenizer(cfg["tokenizer_path"])
        return SentencePieceTokenizer(cfg["tokenizer_path"])
    if not workdir:
        fail("workdir", workdir, "a directory to keep the trained tokenizer in")
    path = os.path.join(workdir, "tokenizer", f"{name}_bpe{cfg['tokenizer_vocab_size']}.model")
    if os.path.isfile(path):
        return SentencePieceTokenizer(path)
    _, examples = build_examples(cfg, "train")
    order = np.random.default_rng(0).permutation(len(examples.source))
    texts = texts or examples.texts

    def docs():
        for i in order:
            yield from texts(examples.source[int(i)])

    return train_sentencepiece(docs(), path, vocab_size=cfg["tokenizer_vocab_size"],
                               max_chars=cfg["tokenizer_train_chars"])


def _tuple_slices(state):
    """Undo JSON's tuple -> list on ConcatThenSplit's ``remainder_slices``: grain 0.2.18 tests
    ``slice != (-1, -1)``, so a JSON-restored "no remainder" ``[-1, -1]`` reads as a remainder
    and the resumed stream diverges (this is what Orbax's ``grain.checkpoint`` round trip does)."""
    if isinstance(state, dict):
        return {k: ({f: tuple(v) for f, v in val.items()} if k == "remainder_slices" and isinstance(val, dict)
                    else _tuple_slices(val)) for k, val in state.items()}
    if isinstance(state, list):
        return [_tuple_slices(v) for v in state]
    return state


class _JsonSafeStateIterator(grain.DatasetIterator):
    """Delegates to the packed iterator; ``set_state`` accepts states that went through JSON."""

    def __init__(self, parent: grain.DatasetIterator):
        super().__init__(parent)

    def __next__(self):
        return next(self._parent)

    def get_state(self):
        return self._parent.get_state()

    def set_state(self, state):
        self._parent.set_state(_tuple_slices(state))

    def start_prefetch(self):
        if hasattr(self._parent, "start_prefetch"):
            self._parent.start_prefetch()


class _JsonSafeState(grain.IterDataset):
    def __init__(self, parent: grain.IterDataset):
        super().__init__(parent)

    def __iter__(self):
        return _JsonSafeStateIterator(self._parent.__iter__())

    def __str__(self):
        return "JsonSafeState"


def build_pipeline(data_config, tokenizer, *, batch_size: int, seq_len: int, seed: int,
                   process_index: int | None = None, process_count: int | None = None, split: str = "train"):
    """The ``grain.IterDataset`` of batches (dicts of the source's row fields, ``[B, ...]``) for this
    process (``batch_size`` is per process). See the module docstring."""
    cfg = validate_data_config(data_config)
    check_int("batch_size", batch_size, min=1)
    check_int("seq_len", seq_len, min=2)
    check_int("seed", seed)
    check_choice("split", split, ("train", "validation"))
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    check_int("process_count", process_count, min=1)
    check_int("process_index", process_index, min=0, max=process_count - 1)

    training = split == "train"
    _, examples = build_examples(cfg, split, seq_len=int(seq_len), seed=int(seed))
    ds = grain.MapDataset.source(examples.source)
    if training and cfg["shuffle"] and examples.shuffle:
        ds = ds.seed(int(seed)).shuffle()
    epochs = cfg["num_epochs"] if training else 1
    if epochs != 1 and len(ds) != sys.maxsize:  # an infinite source needs no repeat
        ds = ds.repeat(epochs)
    ds = ds[int(process_index)::int(process_count)]
    read = grain.ReadOptions(num_threads=cfg["num_threads"], prefetch_buffer_size=max(2 * cfg["num_threads"], 1))
    rows = examples.rows(ds, tokenizer, seq_len=int(seq_len), seed=int(seed), training=training, read_options=read)
    return _JsonSafeState(rows.batch(int(batch_size), drop_remainder=False, batch_fn=PadBatch(int(batch_size))))
