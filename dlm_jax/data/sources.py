"""Random-access record sources (``len`` + ``__getitem__``), usable as ``grain.MapDataset.source``.

* ``TextFileSource``   local text files / globs; one record per file (default, right for code:
                       a module is one document) or one per non-empty line (prose corpora).
* ``stdlib_source``    the running interpreter's standard library ``.py`` files — the offline
                       default corpus (no download, on every machine with Python).
* ``TfdsSource``       any prepared TFDS dataset in ArrayRecord format via ``tfds.data_source``.
* ``MarkovSource``     the synthetic Markov-chain language of ``dlm_jax.testing.oracles``;
                       records are pre-tokenized int32 sequences ``[L]``.

Text records are ``str``. Order is deterministic (sorted paths). Train/validation splits
are decided per file by a stable hash of its path (relative to a root), so they are
disjoint, reproducible across runs and machines, and unaffected by adding other files.
"""

from __future__ import annotations

import bisect
import glob as globlib
import hashlib
import os
import sys
import sysconfig
from typing import Sequence

import numpy as np

__all__ = ["TextFileSource", "stdlib_paths", "stdlib_source", "split_paths", "TfdsSource", "MarkovSource",
           "SPLITS"]

SPLITS = ("train", "validation", "all")
_STDLIB_EXCLUDE = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: {split!r}; expected one of {SPLITS}")


def _in_validation(relpath: str, val_fraction: float) -> bool:
    """Stable, machine-independent assignment: the first 8 bytes of sha256(path) as a fraction."""
    digest = hashlib.sha256(relpath.replace(os.sep, "/").encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


def split_paths(paths: Sequence[str], split: str, val_fraction: float, root: str | None = None) -> list[str]:
    """Keep the paths of ``split`` ("train", "validation" or "all"); hashes paths relative to
    ``root`` (default: their common directory)."""
    _check_split(split)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: {val_fraction!r}; expected in [0, 1)")
    paths = sorted(paths)
    if split == "all" or not paths:
        return paths
    if root is None:
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    want_val = split == "validation"
    return [p for p in paths if _in_validation(os.path.relpath(os.path.abspath(p), root), val_fraction) == want_val]


def _expand(patterns: str | Sequence[str]) -> list[str]:
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p]
    found: set[str] = set()
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        matches = [pattern] if os.path.isfile(pattern) else globlib.glob(pattern, recursive=True)
        found.update(os.path.abspath(m) for m in matches if os.path.isfile(m))
    return sorted(found)


class TextFileSource:
    """Text records from local files.

    ``per="file"``: record i is the whole i-th file (sorted). ``per="line"``: record i is the
    i-th non-empty line over all files in order, without its newline. Files are read as UTF-8
    with ``errors="replace"``; newlines are kept as written (``newline=""``).
    """

    def __init__(self, paths: Sequence[str], *, per: str = "file"):
        if per not in ("file", "line"):
            raise ValueError(f"per: {per!r}; expected one of ('file', 'line')")
        self.paths = list(paths)
        self.per = per
        self._line_offsets: list[np.ndarray] | None = None
        self._cum: list[int] = []
        if per == "line":
            self._line_offsets, total = [], 0
            for path in self.paths:
                with open(path, "rb") as f:
                    data = f.read()
                starts = np.flatnonzero(np.frombuffer(b"\n" + data, np.uint8) == 10).astype(np.int64)
                ends = np.append(starts[1:] - 1, len(data))
                keep = np.array([data[s:e].strip() != b"" for s, e in zip(starts, ends)], dtype=bool)
                spans = np.stack([starts[keep], ends[keep]], axis=1) if keep.any() else np.zeros((0, 2), np.int64)
                self._line_offsets.append(spans)
                total += len(spans)
                self._cum.append(total)

    @classmethod
    def from_glob(cls, patterns: str | Sequence[str], *, per: str = "file", split: str = "all",
                  val_fraction: float = 0.05) -> "TextFileSource":
        """Files matching one or more globs (a list, or one comma-separated string; ``**``
        recurses), restricted to ``split``."""
        paths = _expand(patterns)
        if not paths:
            raise ValueError(f"data.files: {patterns!r}; expected a glob matching at least one file")
        chosen = split_paths(paths, split, val_fraction)
        if not chosen:
            raise ValueError(f"data.files: {patterns!r} has no file in split {split!r} "
                             f"(val_fraction={val_fraction}); expected a non-empty split")
        return cls(chosen, per=per)

    def __len__(self) -> int:
        return len(self.paths) if self.per == "file" else (self._cum[-1] if self._cum else 0)

    def __getitem__(self, index: int) -> str:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        if self.per == "file":
            with open(self.paths[index], encoding="utf-8", errors="replace", newline="") as f:
                return f.read()
        file_i = bisect.bisect_right(self._cum, index)
        line_i = index - (self._cum[file_i - 1] if file_i else 0)
        start, end = self._line_offsets[file_i][line_i]
        with open(self.paths[file_i], "rb") as f:
            f.seek(int(start))
            data = f.read(int(end - start))
        return data.decode("utf-8", errors="replace").rstrip("\r")

    def __repr__(self) -> str:
        return f"TextFileSource({len(self.paths)} files, per={self.per!r}, {len(self)} records)"


def stdlib_paths(split: str = "all", val_fraction: float = 0.05) -> list[str]:
    """Sorted ``.py`` files of this interpreter's standard library, without ``test/``,
    ``tests/``, ``idle_test/``, ``site-packages`` and ``__pycache__``; restricted to ``split``
    by a hash of the path relative to the stdlib root."""
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _STDLIB_EXCLUDE)
        paths.extend(os.path.join(dirpath, f) for f in filenames if f.endswith(".py"))
    return split_paths(paths, split, val_fraction, root=root)


def stdlib_source(split: str = "train", val_fraction: float = 0.05, *, per: str = "file") -> TextFileSource:
    """The offline default corpus: Python standard library sources, one record per file."""
    paths = stdlib_paths(split, val_fraction)
    if not paths:
        raise ValueError(f"split: {split!r}; no stdlib file in it under {sysconfig.get_paths()['stdlib']} "
                         f"(val_fraction={val_fraction})")
    return TextFileSource(paths, per=per)


class TfdsSource:
    """Text records from a prepared TFDS dataset read with ``tfds.data_source`` (ArrayRecord;
    needs no tensorflow). Record i is the ``text_key`` feature of example i, decoded to str."""

    def __init__(self, name: str, *, split: str = "train", data_dir: str | None = None,
                 download: bool = False, text_key: str = "text"):
        import tensorflow_datasets as tfds

        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as e:  # DatasetNotFoundError, bad config name, ...
            raise ValueError(f"data.tfds_name: {name!r}; expected a registered TFDS dataset "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        where = data_dir or "the default TFDS data_dir"
        if not download and not builder.is_prepared():
            raise ValueError(f"data.tfds_name: {name!r} is not prepared in {where}; expected a prepared dataset: "
                             f"run `tfds build {name} --data_dir {data_dir or '~/tensorflow_datasets'} "
                             f"--file_format array_record` or set data.download=True")
        features = getattr(builder.info.features, "keys", lambda: [])()
        if features and text_key not in features:
            raise ValueError(f"data.text_key: {text_key!r}; expected one of {sorted(features)} (features of {name!r})")
        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
        except Exception as e:
            raise ValueError(f"data.tfds_split: {split!r} of {name!r} could not be opened "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); expected an "
                             f"existing split prepared with file_format=array_record") from None
        self.name, self.split, self.text_key = name, split, text_key

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> str:
        value = self._source[int(index)][self.text_key]
        if isinstance(value, np.ndarray):
            value = value.item()
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.split!r}, {len(self)} records)"


class MarkovSource:
    """Exact draws from a ``MarkovChainLanguage``: record i is an int32 sequence ``[L]``.

    Records are generated in blocks of ``block`` sequences from ``numpy.random.default_rng((seed,
    stream, block_index))`` (use ``stream`` to separate train/validation draws) by inverse-CDF sampling of π0 and the transition rows (float64), so any index
    is reproducible at random access. ``num_records=None`` means infinite (``len`` is
    ``sys.maxsize``, grain's convention).
    """

    def __init__(self, language, *, seed: int = 0, stream: int = 0, num_records: int | None = None,
                 block: int = 1024):
        if num_records is not None and num_records < 1:
            raise ValueError(f"num_records: {num_records!r}; expected None (infinite) or >= 1")
        initial = np.asarray(language.initial, np.float64)
        transition = np.asarray(language.transition, np.float64)
        self._cum0 = np.cumsum(initial / initial.sum())
        self._cumA = np.cumsum(transition / transition.sum(-1, keepdims=True), axis=-1)
        self.vocab_size, self.length = int(language.vocab_size), int(language.length)
        self.seed, self.stream, self.num_records, self.block = int(seed), int(stream), num_records, int(block)
        self._cache: tuple[int, np.ndarray] | None = None

    def __getstate__(self):
        return {**self.__dict__, "_cache": None}

    def __len__(self) -> int:
        return sys.maxsize if self.num_records is None else self.num_records

    def _block(self, b: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == b:
            return self._cache[1]
        u = np.random.default_rng((self.seed, self.stream, b)).random((self.block, self.length))
        out = np.empty((self.block, self.length), np.int32)
        last = self.vocab_size - 1
        out[:, 0] = np.minimum(np.searchsorted(self._cum0, u[:, 0], side="right"), last)
        for pos in range(1, self.length):
            rows = self._cumA[out[:, pos - 1]]
            out[:, pos] = np.minimum((rows <= u[:, pos, None]).sum(-1), last)
        self._cache = (b, out)
        return out

    def __getitem__(self, index: int) -> np.ndarray:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        b, r = divmod(index, self.block)
        return self._block(b)[r].copy()

    def __repr__(self) -> str:
        n = "infinite" if self.num_records is None else self.num_records
        return f"MarkovSource(V={self.vocab_size}, L={self.length}, seed={self.seed}, {n} records)"
