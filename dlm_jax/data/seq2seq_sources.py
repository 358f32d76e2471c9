"""Random-access sources of (source, target) examples for seq2seq: ``{"source": ..., "target": ...}``.

* ``split_pairs``        a deterministic train/validation/test split by a hash of the source string
                         (every copy of a source sentence lands in one split: no leakage);
* ``read_pair_files``    TSV (``source<TAB>target``) or JSONL (``{"source": ..., "target": ...}``) files;
* ``TfdsPairSource``     a prepared TFDS translation dataset (``wmt14_translate/de-en``,
                         ``ted_hrlr_translate/pt_to_en``) through ``tfds.data_source``, two language features;
* ``SyntheticTask``      "reverse"/"sort" over a small vocabulary with exact answers, ids already
                         tokenized for ``SymbolTokenizer`` (pad 0, bos 1, eos 2, unk 3, symbol k -> 4 + k);
* ``PairTokenizer``      separate source and target vocabularies behind the one-tokenizer interface.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import sys

import numpy as np

from dlm_jax.checks import fail

__all__ = ["split_pairs", "split_of", "read_pair_files", "TfdsPairSource", "SyntheticTask", "SymbolTokenizer",
           "PairTokenizer", "PAIR_SPLITS"]

PAIR_SPLITS = ("train", "validation", "test", "all")


def split_of(source: str, val_fraction: float, test_fraction: float) -> str:
    """"validation" if the first 8 bytes of sha256(source) as a fraction u < val_fraction,
    "test" if u < val_fraction + test_fraction, else "train" (machine- and order-independent)."""
    u = int.from_bytes(hashlib.sha256(source.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "validation" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"


def split_pairs(pairs, split: str, val_fraction: float, test_fraction: float) -> list[tuple[str, str]]:
    """The pairs of ``split`` (one of ``PAIR_SPLITS``), in their given order."""
    if split not in PAIR_SPLITS:
        fail("split", split, f"one of {PAIR_SPLITS}")
    if split == "all":
        return list(pairs)
    return [p for p in pairs if split_of(p[0], val_fraction, test_fraction) == split]


def _expand(patterns: str) -> list[str]:
    found = set()
    for pattern in (p for p in patterns.split(",") if p):
        pattern = os.path.expanduser(pattern)
        found.update(os.path.abspath(m) for m in ([pattern] if os.path.isfile(pattern)
                                                   else globlib.glob(pattern, recursive=True)) if os.path.isfile(m))
    return sorted(found)


def read_pair_files(patterns: str, *, key: str = "data.pairs_files", source_key: str = "source",
                    target_key: str = "target") -> list[tuple[str, str]]:
    """(source, target) pairs of every file matching ``patterns`` (comma-separated globs), files in
    sorted order, lines in file order. ``*.jsonl``/``*.json``: one object per line with
    ``source_key``/``target_key`` strings; anything else: TSV, one ``source<TAB>target`` per line.
    Blank lines are skipped; a malformed line or an empty file is a one-line ``ValueError``
    naming the file and line."""
    paths = _expand(patterns)
    if not paths:
        fail(key, patterns, "a glob matching at least one TSV/JSONL file of pairs")
    pairs = []
    for path in paths:
        jsonl = path.endswith((".jsonl", ".json"))
        before = len(pairs)
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                if jsonl:
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        fail(where, line[:80], f"a JSON object per line ({e.msg})")
                    keys = (source_key, target_key)
                    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in keys):
                        fail(where, line[:80], f"a JSON object with string keys {source_key!r} and {target_key!r}")
                    pairs.append((obj[source_key], obj[target_key]))
                else:
                    cells = line.split("\t")
                    if len(cells) != 2:
                        fail(where, line[:80], f"source<TAB>target (2 tab-separated fields, found {len(cells)})")
                    pairs.append((cells[0], cells[1]))
        if len(pairs) == before:
            fail(key, path, "a file with at least one pair (it has none)")
    return pairs


class TfdsPairSource:
    """Examples ``{"source": str, "target": str}`` of a prepared TFDS translation dataset, read with
    ``tfds.data_source`` (ArrayRecord; no tensorflow): the ``src_lang`` and ``tgt_lang`` features."""

    def __init__(self, name: str, *, split: str, src_lang: str, tgt_lang: str, data_dir: str | None = None,
                 download: bool = False):
        import tensorflow_datasets as tfds

        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as e:  # DatasetNotFoundError, bad config name, ...
            fail("data.tfds_name", name, f"a registered TFDS dataset ({type(e).__name__}: "
                 f"{str(e).splitlines()[0] if str(e) else ''})")
        if not download and not builder.is_prepared():
            fail("data.tfds_name", name, f"a dataset prepared in {data_dir or 'the default TFDS data_dir'}: run "
                 f"`tfds build {name} --file_format array_record` or set data.download=True")
        features = sorted(getattr(builder.info.features, "keys", lambda: [])())
        for lang_key, lang in (("data.src_lang", src_lang), ("data.tgt_lang", tgt_lang)):
            if features and lang not in features:
                fail(lang_key, lang, f"one of {features} (the features of {name!r})")
        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
        except Exception as e:
            fail("data.tfds_split", split, f"an existing split of {name!r} prepared with file_format=array_record "
                 f"({type(e).__name__})")
        self.name, self.split, self.src_lang, self.tgt_lang = name, split, src_lang, tgt_lang

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, str]:
        example = self._source[int(index)]
        return {"source": _text(example[self.src_lang]), "target": _text(example[self.tgt_lang])}

    def __repr__(self) -> str:
        return f"TfdsPairSource({self.name!r}, {self.split!r}, {self.src_lang}->{self.tgt_lang}, {len(self)} pairs)"


def _text(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class SymbolTokenizer:
    """Fixed tokenizer of the synthetic tasks with the sentencepiece special layout: pad 0, bos 1,
    eos 2, unk 3, symbol k -> id 4 + k; ``vocab_size = 4 + num_symbols`` clean classes, mask id V.
    Text is the space-separated symbol numbers ("3 0 15")."""

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3
    OFFSET = 4

    def __init__(self, num_symbols: int):
        if not isinstance(num_symbols, (int, np.integer)) or isinstance(num_symbols, bool) or num_symbols < 2:
            fail("data.task_symbols", num_symbols, "an int >= 2")
        self.num_symbols = int(num_symbols)
        self.vocab_size = self.OFFSET + self.num_symbols

    mask_id = property(lambda self: self.vocab_size)
    input_vocab_size = property(lambda self: self.vocab_size + 1)

    def encode(self, text):
        """"3 0 15" -> int32 ids ``[7, 4, 19]``; a list of strings -> a list of such arrays."""
        if not isinstance(text, str):
            return [self.encode(t) for t in text]
        try:
            symbols = np.array([int(w) for w in text.split()], np.int64)
        except ValueError:
            fail("text", text[:80], "space-separated symbol numbers")
        if symbols.size and (symbols.min() < 0 or symbols.max() >= self.num_symbols):
            fail("text", text[:80], f"symbols in [0, {self.num_symbols})")
        return (symbols + self.OFFSET).astype(np.int32)

    def decode(self, ids):
        """Ids ``[n]`` -> "3 0 15" (special and mask ids dropped); ``[B, n]`` (or a list of id
        lists) -> a list of strings."""
        if isinstance(ids, (list, tuple)) and ids and not np.isscalar(ids[0]):
            return [self.decode(row) for row in ids]
        arr = np.asarray(ids)
        if arr.ndim > 1:
            return [self.decode(row) for row in arr]
        keep = arr[(arr >= self.OFFSET) & (arr < self.vocab_size)]
        return " ".join(str(int(i) - self.OFFSET) for i in keep)


class PairTokenizer:
    """Separate source and target vocabularies behind one tokenizer: ``source_tokenizer`` encodes
    the source side, ``target_tokenizer`` the target; ``encode``/``decode`` and the special ids
    (pad 0, bos 1, eos 2, unk 3 in both) are the target's. ``vocab_size`` V is the larger of the
    two, so both sides' ids lie in ``[0, V)`` (one ``model.vocab_size`` sizes both embedding
    tables); the same id means different pieces on the two sides, so they must not share a table."""

    def __init__(self, source_tokenizer, target_tokenizer):
        self.source_tokenizer, self.target_tokenizer = source_tokenizer, target_tokenizer
        specials = [(t.pad_id, t.bos_id, t.eos_id, t.unk_id) for t in (source_tokenizer, target_tokenizer)]
        if specials[0] != specials[1]:
            fail("tokenizers' special ids (pad, bos, eos, unk)", specials, "the same on the source and target side")
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = specials[1]
        self.vocab_size = max(int(source_tokenizer.vocab_size), int(target_tokenizer.vocab_size))

    mask_id = property(lambda self: self.vocab_size)
    input_vocab_size = property(lambda self: self.vocab_size + 1)

    def encode(self, text):
        return self.target_tokenizer.encode(text)

    def decode(self, ids):
        return self.target_tokenizer.decode(ids)

    def decode_source(self, ids):
        return self.source_tokenizer.decode(ids)


class SyntheticTask:
    """Exact seq2seq tasks over ``num_symbols`` symbols: a source of iid uniform symbols whose
    length is uniform in ``[min_len, max_len]``; target = the source reversed ("reverse") or sorted
    ascending ("sort"). Example i is drawn from ``numpy.random.default_rng((seed, stream, i))``
    (random access, reproducible); ids are ``SymbolTokenizer`` ids (no EOS: the row maker adds it).
    ``num_records=None``: infinite (``len == sys.maxsize``)."""

    def __init__(self, task: str, *, num_symbols: int, min_len: int, max_len: int, seed: int = 0, stream: int = 0,
                 num_records: int | None = None):
        if task not in ("reverse", "sort"):
            fail("task", task, "one of ('reverse', 'sort')")
        self.task, self.num_symbols, self.min_len, self.max_len = task, num_symbols, min_len, max_len
        self.seed, self.stream, self.num_records = seed, stream, num_records

    def __len__(self) -> int:
        return sys.maxsize if self.num_records is None else self.num_records

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        rng = np.random.default_rng((self.seed, self.stream, index))
        n = int(rng.integers(self.min_len, self.max_len + 1))
        source = rng.integers(0, self.num_symbols, n)
        target = source[::-1] if self.task == "reverse" else np.sort(source)
        off = SymbolTokenizer.OFFSET
        return {"source": (source + off).astype(np.int32), "target": (target + off).astype(np.int32)}

    def __repr__(self) -> str:
        n = "infinite" if self.num_records is None else self.num_records
        return f"SyntheticTask({self.task!r}, V={self.num_symbols}, len {self.min_len}-{self.max_len}, {n} records)"
