"""Row makers: how a source's examples become fixed-length rows, and how rows become batches.

A row maker is called as ``rows(examples, tokenizer, *, seq_len, seed, training, read_options)``
with the shuffled, repeated, per-process ``grain.MapDataset`` of examples and returns a
``grain.IterDataset`` of rows: dicts of named numpy arrays of fixed shape (token fields int32,
their masks float32, 1 = real token). It checks the tokenizer first, so a mismatch fails before
anything runs. ``PadBatch`` stacks rows of any fields into batches.

* ``PackText``    text -> ids + EOS, packed back to back into rows of L (``tokens``, ``loss_mask``);
                  documents cross row boundaries, nothing is dropped; optional window shuffle.
* ``FixedTokens`` examples that already are int token arrays ``[L]`` (``tokens``, ``loss_mask`` = 1).
* ``PadFields``   mappings of named fields (text or ids), each encoded (+ EOS), truncated and padded
                  to its own length, with a ``<field>_mask`` each — e.g. seq2seq ``source``/``target``.

grain is imported inside the calls, so registering sources needs neither grain nor TFDS.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from dlm_jax.checks import check_int, check_str, fail

__all__ = ["PackText", "FixedTokens", "PadFields", "PadBatch"]


def _require_eos(tokenizer) -> int:
    eos = getattr(tokenizer, "eos_id", None)
    if eos is None:
        fail("tokenizer", type(tokenizer).__name__, "a text tokenizer with an eos_id")
    return int(eos)


class _Tokenize:
    """Text -> ``{field: ids + [eos]}`` (module-level so grain workers can pickle it)."""

    def __init__(self, tokenizer, field: str):
        self.tokenizer, self.field = tokenizer, field

    def __call__(self, text: str) -> dict[str, np.ndarray]:
        ids = self.tokenizer.encode(text)
        return {self.field: np.append(ids, np.int32(self.tokenizer.eos_id)).astype(np.int32)}


class _PackedRow:
    def __init__(self, field: str, mask: str):
        self.field, self.mask = field, mask

    def __call__(self, element: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {self.field: element[self.field].astype(np.int32),
                self.mask: (element[f"{self.field}_segment_ids"] > 0).astype(np.float32)}


class PackText:
    """Text examples -> ``{field: int32 [L], mask: float32 [L]}``: tokenize, append EOS, pack back to
    back (grain ``ConcatThenSplit``; a finite stream's last row is padded with 0, mask 0), then, when
    training and ``shuffle_window > 1``, shuffle rows in windows so a batch mixes documents."""

    def __init__(self, *, shuffle_window: int = 0, field: str = "tokens", mask: str = "loss_mask"):
        self.shuffle_window = check_int("data.shuffle_window", shuffle_window, min=0)
        self.field, self.mask = check_str("field", field), check_str("mask", mask)

    def __call__(self, examples, tokenizer, *, seq_len: int, seed: int, training: bool, read_options):
        import grain.experimental as gx

        _require_eos(tokenizer)
        it = examples.map(_Tokenize(tokenizer, self.field)).to_iter_dataset(read_options)
        it = gx.ConcatThenSplitIterDataset(it, length_struct={self.field: int(seq_len)})
        it = it.map(_PackedRow(self.field, self.mask))
        if training and self.shuffle_window > 1:
            it = gx.WindowShuffleIterDataset(it, window_size=self.shuffle_window, seed=int(seed) + 1)
        return it


class _FixedRow:
    def __init__(self, field: str, mask: str, seq_len: int):
        self.field, self.mask, self.seq_len = field, mask, seq_len

    def __call__(self, tokens) -> dict[str, np.ndarray]:
        tokens = np.asarray(tokens)
        if tokens.shape != (self.seq_len,):
            fail("example shape", tokens.shape, f"({self.seq_len},) for seq_len={self.seq_len}")
        return {self.field: tokens.astype(np.int32), self.mask: np.ones(tokens.shape, np.float32)}


class FixedTokens:
    """Examples that are token arrays of exactly L -> ``{field: int32 [L], mask: ones float32 [L]}``.
    ``check_tokenizer(tokenizer)`` (optional) raises if the tokenizer does not fit the source."""

    def __init__(self, *, field: str = "tokens", mask: str = "loss_mask", check_tokenizer=None):
        self.field, self.mask = check_str("field", field), check_str("mask", mask)
        self.check_tokenizer = check_tokenizer

    def __call__(self, examples, tokenizer, *, seq_len: int, seed: int, training: bool, read_options):
        if self.check_tokenizer is not None:
            self.check_tokenizer(tokenizer)
        return examples.map(_FixedRow(self.field, self.mask, int(seq_len))).to_iter_dataset(read_options)


class _PadRow:
    def __init__(self, tokenizer, lengths: dict[str, int], eos: bool, suffix: str):
        self.tokenizer, self.lengths, self.suffix = tokenizer, lengths, suffix
        self.eos = int(tokenizer.eos_id) if eos else None
        self.pad = int(tokenizer.pad_id) if getattr(tokenizer, "pad_id", None) is not None else 0

    def __call__(self, example: Mapping[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for field, length in self.lengths.items():
            if field not in example:
                fail("example field", field, f"one of the example's fields {tuple(example)}")
            value = example[field]
            if isinstance(value, bytes):
                value = value.decode("utf-8", errors="replace")
            ids = np.asarray(self.tokenizer.encode(value) if isinstance(value, str) else value, np.int32).ravel()
            if self.eos is not None:
                ids = np.append(ids[:length - 1], np.int32(self.eos))
            ids = ids[:length]
            row = np.full(length, self.pad, np.int32)
            row[:len(ids)] = ids
            mask = np.zeros(length, np.float32)
            mask[:len(ids)] = 1.0
            out[field], out[field + self.suffix] = row, mask
        return out


class PadFields:
    """Mapping examples -> one int32 row and one float32 ``<field><suffix>`` mask per named field.

    ``lengths`` maps each field to its row length (``None``: the pipeline's ``seq_len``). A str
    value is encoded with the tokenizer, an int sequence is taken as ids; with ``eos`` the ids are
    cut to ``length - 1`` and EOS appended (every row ends its text with EOS), else cut to
    ``length``; the rest is the tokenizer's pad id (0 if it has none) with mask 0. Other fields of
    the example are dropped."""

    def __init__(self, lengths: Mapping[str, int | None], *, eos: bool = True, suffix: str = "_mask"):
        if not isinstance(lengths, Mapping) or not lengths:
            fail("lengths", lengths, "a non-empty mapping of field name -> row length (or None for seq_len)")
        self.lengths = {check_str("field", f): (None if n is None else check_int(f"lengths[{f!r}]", n, min=1))
                        for f, n in lengths.items()}
        self.eos, self.suffix = bool(eos), check_str("suffix", suffix)
        names = set(self.lengths) | {f + self.suffix for f in self.lengths}
        if len(names) != 2 * len(self.lengths):
            fail("lengths", tuple(self.lengths), f"fields whose names differ from each other's '{self.suffix}' masks")

    def __call__(self, examples, tokenizer, *, seq_len: int, seed: int, training: bool, read_options):
        if self.eos:
            _require_eos(tokenizer)
        lengths = {f: int(seq_len) if n is None else n for f, n in self.lengths.items()}
        return examples.map(_PadRow(tokenizer, lengths, self.eos, self.suffix)).to_iter_dataset(read_options)


class PadBatch:
    """Stack rows (dicts of any fields) into ``[B, ...]``; a short final batch is filled with zero
    rows, whose masks are 0, so every batch has the same shape and nothing is dropped."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size

    def __call__(self, rows):
        out = {key: np.stack([r[key] for r in rows]) for key in rows[0]}
        missing = self.batch_size - len(rows)
        if missing:
            out = {k: np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)]) for k, v in out.items()}
        return out
