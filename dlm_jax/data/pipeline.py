"""The grain input pipeline: source -> seeded shuffle -> repeat -> shard by process -> tokenize
(+EOS) -> pack to length L -> (window shuffle of rows) -> batch.

``build_pipeline`` returns a ``grain.IterDataset``; ``iter(ds)`` is a checkpointable iterator
(``get_state()`` / ``set_state()``, and ``grain.checkpoint.CheckpointSave/Restore`` for Orbax).
Each element is ``{"tokens": int32 [B, L], "loss_mask": float32 [B, L]}``.

Config keys of ``data`` (a ``ml_collections.ConfigDict`` or dict; missing keys take the defaults
of ``default_data_config()``, unknown keys are an error):

=======================  ===========  =========================================================
key                      default      meaning
=======================  ===========  =========================================================
source                   "stdlib"     one of SOURCES: "stdlib" (offline default), "files",
                                      "tfds", "markov"
files                    ""           glob(s) for "files" (comma-separated; ``**`` recurses)
per                      "file"       "file": a document per file (code); "line": per line
val_fraction             0.05         share of files (by stable path hash) in "validation"
tfds_name                ""           TFDS dataset name (ArrayRecord format) for "tfds"
tfds_split               "train"      TFDS split read for split="train"
tfds_val_split           "validation" TFDS split read for split="validation"
tfds_data_dir            None         TFDS data_dir (None: TFDS default)
download                 False        let TFDS download+prepare; False raises if not prepared
text_key                 "text"       feature holding the text in TFDS examples
markov_vocab             8            Markov language: V clean tokens (mask id = V)
markov_seed              0            seed of the language itself (π0 and transition matrix)
markov_concentration     0.5          Dirichlet concentration of π0 and transition rows
markov_num_records       None         None: infinite iid draws; else a fixed-size dataset
tokenizer_vocab_size     1024         sentencepiece BPE vocabulary size
tokenizer_train_chars    2000000      characters of the train split used to train it (~0.3 s)
tokenizer_path           ""           use this .model instead of training one in the workdir
shuffle                  True         seeded global document shuffle, reshuffled every epoch
shuffle_window           1024         packed rows shuffled in windows of this size (0: off),
                                      so a batch mixes documents. grain's index_shuffle costs
                                      ~6 ms/row at window 16, 0.4 ms at 256, 0.15 ms at 1024:
                                      keep windows large
num_epochs               None         None: repeat forever; k: k passes then stop
num_threads              2            grain read threads (order stays deterministic)
=======================  ===========  =========================================================

split="validation" is one unshuffled pass (no window shuffle). Markov records are exactly one
chain sample of length ``seq_len`` each (no EOS, no packing), so rows follow the oracle law.
A finite stream's last packed row and last batch are padded with pad id 0 and ``loss_mask 0``;
nothing is dropped. Sharding: process p of n reads documents ``p, p+n, ...`` of the shuffled
global order (``jax.process_index()/process_count()`` by default).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

import grain
import numpy as np

from dlm_jax.data import sources as sources_lib
from dlm_jax.data.tokenizer import MarkovTokenizer, SentencePieceTokenizer, train_sentencepiece

__all__ = ["SOURCES", "default_data_config", "build_pipeline", "build_source", "markov_language",
           "train_or_load_tokenizer", "validate_data_config"]

SOURCES = ("stdlib", "files", "tfds", "markov")
_DEFAULTS: dict[str, Any] = dict(
    source="stdlib", files="", per="file", val_fraction=0.05,
    tfds_name="", tfds_split="train", tfds_val_split="validation", tfds_data_dir=None, download=False,
    text_key="text",
    markov_vocab=8, markov_seed=0, markov_concentration=0.5, markov_num_records=None,
    tokenizer_vocab_size=1024, tokenizer_train_chars=2_000_000, tokenizer_path="",
    shuffle=True, shuffle_window=1024, num_epochs=None, num_threads=2,
)


def default_data_config():
    """A ``ConfigDict`` with every key and its default (placeholders for the optional ones)."""
    import ml_collections

    cfg = ml_collections.ConfigDict()
    for key, value in _DEFAULTS.items():
        if value is None:
            kind = str if key == "tfds_data_dir" else int
            value = ml_collections.config_dict.placeholder(kind)
        setattr(cfg, key, value)
    return cfg


def _int_ok(value, low: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low


def validate_data_config(data_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge ``data_config`` over the defaults and check every value; returns a plain dict."""
    given = dict(data_config.items()) if data_config is not None else {}
    unknown = sorted(set(given) - set(_DEFAULTS))
    if unknown:
        raise ValueError(f"data.{unknown[0]}: unknown key; expected one of {tuple(sorted(_DEFAULTS))}")
    cfg = {**_DEFAULTS, **given}
    if cfg["source"] not in SOURCES:
        raise ValueError(f"data.source: {cfg['source']!r}; expected one of {SOURCES}")
    if cfg["per"] not in ("file", "line"):
        raise ValueError(f"data.per: {cfg['per']!r}; expected one of ('file', 'line')")
    if not (isinstance(cfg["val_fraction"], (int, float)) and 0 <= cfg["val_fraction"] < 1):
        raise ValueError(f"data.val_fraction: {cfg['val_fraction']!r}; expected a number in [0, 1)")
    if cfg["source"] == "files" and not cfg["files"]:
        raise ValueError("data.files: ''; expected a glob when data.source='files'")
    if cfg["source"] == "tfds" and not cfg["tfds_name"]:
        raise ValueError("data.tfds_name: ''; expected a TFDS dataset name when data.source='tfds'")
    for key, low in (("markov_vocab", 2), ("tokenizer_vocab_size", 276), ("tokenizer_train_chars", 1),
                     ("shuffle_window", 0), ("num_threads", 0)):
        if not _int_ok(cfg[key], low):
            raise ValueError(f"data.{key}: {cfg[key]!r}; expected an int >= {low}")
    for key in ("markov_num_records", "num_epochs"):
        if cfg[key] is not None and not _int_ok(cfg[key], 1):
            raise ValueError(f"data.{key}: {cfg[key]!r}; expected None or an int >= 1")
    if not (isinstance(cfg["markov_concentration"], (int, float)) and cfg["markov_concentration"] > 0):
        raise ValueError(f"data.markov_concentration: {cfg['markov_concentration']!r}; expected > 0")
    return cfg


def markov_language(data_config, seq_len: int):
    """The exact ``MarkovChainLanguage`` behind source="markov" (for oracle evaluation)."""
    from dlm_jax.testing.oracles import MarkovChainLanguage

    cfg = validate_data_config(data_config)
    return MarkovChainLanguage.random(cfg["markov_seed"], cfg["markov_vocab"], seq_len, cfg["markov_concentration"])


def build_source(data_config, split: str = "train", *, seq_len: int | None = None, seed: int = 0):
    """The random-access source of ``data.source`` for ``split`` ("train"/"validation"/"all"
    for file sources). Markov needs ``seq_len``; its draws are seeded by ``seed`` and split."""
    cfg = validate_data_config(data_config)
    sources_lib._check_split(split)
    source = cfg["source"]
    if source == "stdlib":
        return sources_lib.stdlib_source(split, cfg["val_fraction"], per=cfg["per"])
    if source == "files":
        return sources_lib.TextFileSource.from_glob(cfg["files"], per=cfg["per"], split=split,
                                                    val_fraction=cfg["val_fraction"])
    if source == "tfds":
        tfds_split = cfg["tfds_val_split"] if split == "validation" else cfg["tfds_split"]
        return sources_lib.TfdsSource(cfg["tfds_name"], split=tfds_split, data_dir=cfg["tfds_data_dir"],
                                      download=bool(cfg["download"]), text_key=cfg["text_key"])
    if seq_len is None:
        raise ValueError("seq_len: None; expected an int >= 1 for data.source='markov'")
    return sources_lib.MarkovSource(markov_language(cfg, seq_len), seed=seed, stream=int(split == "validation"),
                                    num_records=cfg["markov_num_records"])


def train_or_load_tokenizer(data_config, workdir: str | None):
    """The tokenizer for ``data``: ``MarkovTokenizer`` for source="markov"; otherwise the
    sentencepiece model at ``data.tokenizer_path`` if set, else ``<workdir>/tokenizer/
    spm_bpe<V>.model`` — trained on the first ``tokenizer_train_chars`` characters of the train
    split (documents in a fixed pseudo-random order) when it does not exist yet, reused after."""
    cfg = validate_data_config(data_config)
    if cfg["source"] == "markov":
        return MarkovTokenizer(cfg["markov_vocab"])
    if cfg["tokenizer_path"]:
        return SentencePieceTokenizer(cfg["tokenizer_path"])
    if not workdir:
        raise ValueError(f"workdir: {workdir!r}; expected a directory to keep the trained tokenizer in")
    path = os.path.join(workdir, "tokenizer", f"spm_bpe{cfg['tokenizer_vocab_size']}.model")
    if os.path.isfile(path):
        return SentencePieceTokenizer(path)
    source = build_source(cfg, "train")
    order = np.random.default_rng(0).permutation(len(source))

    def docs():
        for i in order:
            yield source[int(i)]

    return train_sentencepiece(docs(), path, vocab_size=cfg["tokenizer_vocab_size"],
                               max_chars=cfg["tokenizer_train_chars"])


class _Tokenize:
    """Text -> {"tokens": ids + [eos]} (module-level so grain workers can pickle it)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> dict[str, np.ndarray]:
        ids = self.tokenizer.encode(text)
        return {"tokens": np.append(ids, np.int32(self.tokenizer.eos_id)).astype(np.int32)}


def _packed_row(element: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"tokens": element["tokens"].astype(np.int32),
            "loss_mask": (element["tokens_segment_ids"] > 0).astype(np.float32)}


def _markov_row(tokens: np.ndarray) -> dict[str, np.ndarray]:
    return {"tokens": tokens.astype(np.int32), "loss_mask": np.ones(tokens.shape, np.float32)}


class _PadBatch:
    """Stack rows into ``[B, L]``; a short final batch gets zero rows with ``loss_mask 0``."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size

    def __call__(self, rows):
        out = {key: np.stack([r[key] for r in rows]) for key in rows[0]}
        missing = self.batch_size - len(rows)
        if missing:
            out = {k: np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)]) for k, v in out.items()}
        return out


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
    """The ``grain.IterDataset`` of ``{"tokens": int32 [B, L], "loss_mask": float32 [B, L]}``
    batches for this process (``batch_size`` is per process). See the module docstring."""
    import grain.experimental as gx

    cfg = validate_data_config(data_config)
    if not _int_ok(batch_size, 1):
        raise ValueError(f"batch_size: {batch_size!r}; expected an int >= 1")
    if not _int_ok(seq_len, 2):
        raise ValueError(f"seq_len: {seq_len!r}; expected an int >= 2")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed: {seed!r}; expected an int")
    if split not in ("train", "validation"):
        raise ValueError(f"split: {split!r}; expected one of ('train', 'validation')")
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not _int_ok(process_count, 1):
        raise ValueError(f"process_count: {process_count!r}; expected an int >= 1")
    if not (_int_ok(process_index, 0) and process_index < process_count):
        raise ValueError(f"process_index: {process_index!r}; expected an int in [0, {process_count})")
    markov = cfg["source"] == "markov"
    if markov and not isinstance(tokenizer, MarkovTokenizer):
        raise ValueError(f"tokenizer: {type(tokenizer).__name__}; expected MarkovTokenizer for data.source='markov'")
    if markov and tokenizer.vocab_size != cfg["markov_vocab"]:
        raise ValueError(f"tokenizer.vocab_size: {tokenizer.vocab_size}; expected data.markov_vocab="
                         f"{cfg['markov_vocab']}")
    if not markov and getattr(tokenizer, "eos_id", None) is None:
        raise ValueError(f"tokenizer: {type(tokenizer).__name__}; expected a text tokenizer with an eos_id")

    training = split == "train"
    source = build_source(cfg, split, seq_len=seq_len, seed=int(seed))
    ds = grain.MapDataset.source(source)
    if training and cfg["shuffle"] and not markov:  # markov records are iid already
        ds = ds.seed(int(seed)).shuffle()
    epochs = cfg["num_epochs"] if training else 1
    if epochs != 1 and len(ds) != sys.maxsize:  # an infinite Markov source needs no repeat
        ds = ds.repeat(epochs)
    ds = ds[process_index::process_count]
    read = grain.ReadOptions(num_threads=cfg["num_threads"], prefetch_buffer_size=max(2 * cfg["num_threads"], 1))
    if markov:
        it = ds.map(_markov_row).to_iter_dataset(read)
    else:
        it = ds.map(_Tokenize(tokenizer)).to_iter_dataset(read)
        it = gx.ConcatThenSplitIterDataset(it, length_struct={"tokens": int(seq_len)}).map(_packed_row)
        if training and cfg["shuffle_window"] > 1:
            it = gx.WindowShuffleIterDataset(it, window_size=cfg["shuffle_window"], seed=int(seed) + 1)
    return _JsonSafeState(it.batch(int(batch_size), drop_remainder=False, batch_fn=_PadBatch(int(batch_size))))
