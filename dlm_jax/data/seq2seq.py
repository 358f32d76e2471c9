"""Seq2seq data sources by name, and the row maker that turns pairs into padded rows.

Every source here gives rows ``{"source": int32 [Ls], "source_mask": float32 [Ls], "target": int32
[Lt], "target_mask": float32 [Lt]}`` (mask 1 = real token; each side is its ids + EOS, then pad),
with ``Ls = data.source_len`` and ``Lt`` the pipeline's ``seq_len`` (``config.data.seq_len``):

=================  ==================================================================================
data.source        examples
=================  ==================================================================================
"gettext"          the machine's gettext catalogs, ``src_lang`` -> ``tgt_lang`` (offline default of real
                   translation data; ``dlm_jax.data.gettext_pairs``), split by a hash of the source
"pairs"            TSV/JSONL files (``pairs_files``; ``pairs_val_files`` or the hash split)
"tfds_translate"   a prepared TFDS translation dataset (``tfds_name``; ``src_lang``/``tgt_lang`` features)
"reverse", "sort"  synthetic tasks with exact answers (``SymbolTokenizer``: ids = symbols + 4)
=================  ==================================================================================

Keys (defaults): ``source_len`` 64; ``seq2seq_vocab`` "shared" | "separate"; ``overlong`` "drop" (a
pair whose ids + EOS exceed Ls or Lt is skipped; "truncate" cuts it, keeping the EOS);
``src_lang`` "en", ``tgt_lang`` "de";
``val_fraction`` 0.05, ``test_fraction`` 0.05 (hash split of gettext and pairs);
``gettext_dirs`` "/usr/share/locale,/usr/share/locale-langpack", ``gettext_min_chars`` 3,
``gettext_max_chars`` 100, ``gettext_plurals`` "singular" | "skip", ``gettext_min_pairs`` 1000;
``pairs_files`` "", ``pairs_val_files`` "", ``pairs_source_key`` "source", ``pairs_target_key`` "target";
TFDS: the ``tfds`` source's ``tfds_name``, ``tfds_split``, ``tfds_val_split``, ``tfds_data_dir``,
``download``; synthetic: ``task_symbols`` 16, ``task_min_len`` 8, ``task_max_len`` 8, ``task_seed`` 0,
``task_num_records`` None (infinite iid train draws), ``task_eval_records`` 1024 (validation/test).

Tokenizer (``train_or_load_tokenizer``): text sources train one sentencepiece model on both sides
(``seq2seq_vocab="shared"``, the default, as DINOISER's joined dictionary: pad 0, bos 1, eos 2,
unk 3, ``vocab_size`` V, mask id V) or one per side (``"separate"``: a ``PairTokenizer``, V the
larger size, both sides' ids in [0, V), decode = the target's, ``decode_source``); the synthetic
tasks use their own ``SymbolTokenizer`` with the same special ids. A method reads V from
``config.model.vocab_size`` (the trainer fills it from the tokenizer) and pad/bos/eos from the
tokenizer (0/1/2 for every tokenizer here).

Rows are padded to fixed lengths on purpose: the jitted train step compiles once per shape, and
every process of a multi-host run must feed the same global shape each step, so per-batch
bucketing would recompile and could disagree across hosts. Choose ``source_len``/``seq_len`` from
``length_stats`` (a percentile of the token lengths); ``overlong`` decides the rest. Measured on
the development machine: gettext en -> de gives 33,533 pairs (train 30,217 / validation 1,686 /
test 1,630); with the shared BPE-1024 tokenizer the train split's ids + EOS have percentiles
50/90/99/100 of 14/26/39/66 (source) and 17/31/43/69 (target); L = 32 keeps 91.8 % of the
pairs, L = 48 99.75 %.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from dlm_jax.checks import check_bool, check_choice, check_float, check_int, check_str, fail
from dlm_jax.data import gettext_pairs as gettext_lib
from dlm_jax.data.registry import Examples, optional_int, register_source, validate_data_config
from dlm_jax.data.seq2seq_sources import (PairTokenizer, SymbolTokenizer, SyntheticTask, TfdsPairSource,
                                          read_pair_files, split_pairs)

__all__ = ["Seq2SeqRows", "pair_texts", "cut_at_eos", "length_stats", "SOURCES"]

SOURCES = ("gettext", "pairs", "tfds_translate", "reverse", "sort")
_COMMON = dict(source_len=64, overlong="drop")
_TEXT = dict(**_COMMON, seq2seq_vocab="shared")  # text sources; the synthetic tasks have their own tokenizer
_HASH = dict(val_fraction=0.05, test_fraction=0.05)
_LANGS = dict(src_lang="en", tgt_lang="de")


def _check_common(cfg: dict) -> None:
    check_int("data.source_len", cfg["source_len"], min=2)
    check_choice("data.overlong", cfg["overlong"], ("drop", "truncate"))
    check_choice("data.seq2seq_vocab", cfg["seq2seq_vocab"], ("shared", "separate"))


def _check_hash(cfg: dict) -> None:
    check_float("data.val_fraction", cfg["val_fraction"], min=0.0, max=1.0, max_open=True)
    check_float("data.test_fraction", cfg["test_fraction"], min=0.0, max=1.0 - cfg["val_fraction"], max_open=True)


# ------------------------------------------------------------------------------------------------
# The row maker.
# ------------------------------------------------------------------------------------------------
class _Encode:
    """Example -> ``{"source": ids + EOS, "target": ids + EOS}`` (str encoded, int arrays taken as ids)."""

    def __init__(self, tokenizer):
        self.eos = np.int32(tokenizer.eos_id)
        self.sides = {"source": getattr(tokenizer, "source_tokenizer", tokenizer),
                      "target": getattr(tokenizer, "target_tokenizer", tokenizer)}

    def __call__(self, example) -> dict[str, np.ndarray]:
        out = {}
        for field, tokenizer in self.sides.items():
            value = example[field]
            if isinstance(value, bytes):
                value = value.decode("utf-8", errors="replace")
            ids = tokenizer.encode(value) if isinstance(value, str) else value
            out[field] = np.append(np.asarray(ids, np.int32).ravel(), self.eos)
        return out


class _Fits:
    def __init__(self, lengths: dict[str, int]):
        self.lengths = lengths

    def __call__(self, element) -> bool:
        return all(len(element[f]) <= n for f, n in self.lengths.items())


class _Pad:
    def __init__(self, lengths: dict[str, int], pad: int, eos: int):
        self.lengths, self.pad, self.eos = lengths, pad, eos

    def __call__(self, element) -> dict[str, np.ndarray]:
        out = {}
        for field, n in self.lengths.items():
            ids = element[field]
            if len(ids) > n:  # "truncate": keep the first n - 1 ids and the EOS
                ids = np.append(ids[:n - 1], np.int32(self.eos))
            row, mask = np.full(n, self.pad, np.int32), np.zeros(n, np.float32)
            row[:len(ids)], mask[:len(ids)] = ids, 1.0
            out[field], out[field + "_mask"] = row, mask
        return out


def _probe(encoded, lengths: dict[str, int], n: int = 256) -> None:
    """Fail (nothing would ever come out) if none of the first ``n`` encoded pairs fits the rows;
    warn if fewer than half do."""
    n = min(n, len(encoded))
    fits = _Fits(lengths)
    kept = sum(fits(encoded[i]) for i in range(n))
    where = f"data.source_len={lengths['source']}, seq_len={lengths['target']}"
    if n and not kept:
        fail("data.overlong", "drop", f"rows that fit some pairs: none of the first {n} fits ({where}); raise "
             "the lengths (see seq2seq.length_stats) or set data.overlong='truncate'")
    if kept < n / 2:
        warnings.warn(f"data.overlong='drop' keeps {kept} of the first {n} pairs ({where}); see "
                      "dlm_jax.data.seq2seq.length_stats", stacklevel=3)


class Seq2SeqRows:
    """Pairs -> rows of ``source``/``source_mask`` [source_len] and ``target``/``target_mask``
    [seq_len]: encode each side, append EOS, drop (``overlong="drop"``, before padding, so a
    dropped pair is never seen) or truncate pairs that do not fit, pad with the tokenizer's pad id.
    ``check_tokenizer(tokenizer)`` (optional) raises if the tokenizer does not fit the source."""

    def __init__(self, source_len: int, overlong: str = "drop", check_tokenizer=None):
        self.source_len = check_int("data.source_len", source_len, min=2)
        self.overlong = check_choice("data.overlong", overlong, ("drop", "truncate"))
        self.check_tokenizer = check_tokenizer

    def __call__(self, examples, tokenizer, *, seq_len: int, seed: int, training: bool, read_options):
        if self.check_tokenizer is not None:
            self.check_tokenizer(tokenizer)
        if getattr(tokenizer, "eos_id", None) is None or getattr(tokenizer, "pad_id", None) is None:
            fail("tokenizer", type(tokenizer).__name__, "a tokenizer with pad_id and eos_id for seq2seq rows")
        lengths = {"source": self.source_len, "target": int(seq_len)}
        ds = examples.map(_Encode(tokenizer))
        if self.overlong == "drop":
            _probe(ds, lengths)
            ds = ds.filter(_Fits(lengths))
        ds = ds.map(_Pad(lengths, int(tokenizer.pad_id), int(tokenizer.eos_id)))
        return ds.to_iter_dataset(read_options)


def _text_tokenizer(cfg: dict, workdir: str | None = None):
    """Shared (default): one sentencepiece model trained on both sides (``<workdir>/tokenizer/
    spm_bpe<V>.model``, or ``data.tokenizer_path``). Separate: ``spm_src_bpe<V>.model`` and
    ``spm_tgt_bpe<V>.model``, each trained on one side (or ``data.tokenizer_path="src.model,tgt.model"``),
    as a ``PairTokenizer``."""
    from dlm_jax.data.pipeline import sentencepiece_tokenizer
    from dlm_jax.data.tokenizer import SentencePieceTokenizer

    if cfg["seq2seq_vocab"] == "shared":
        return sentencepiece_tokenizer(cfg, workdir)
    if cfg["tokenizer_path"]:
        paths = cfg["tokenizer_path"].split(",")
        if len(paths) != 2:
            fail("data.tokenizer_path", cfg["tokenizer_path"], "'source.model,target.model' when "
                 "data.seq2seq_vocab='separate'")
        return PairTokenizer(*(SentencePieceTokenizer(p) for p in paths))
    sides = [sentencepiece_tokenizer(cfg, workdir, texts=_Side(side), name=name)
             for side, name in (("source", "spm_src"), ("target", "spm_tgt"))]
    return PairTokenizer(*sides)


class _Side:
    def __init__(self, field: str):
        self.field = field

    def __call__(self, example):
        return (example[self.field],)


def _rows(cfg: dict, check_tokenizer=None) -> Seq2SeqRows:
    return Seq2SeqRows(cfg["source_len"], cfg["overlong"], check_tokenizer)


def _pair_examples(pairs) -> list[dict[str, str]]:
    return [{"source": s, "target": t} for s, t in pairs]


# ------------------------------------------------------------------------------------------------
# gettext.
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _gettext_cached(src: str, tgt: str, dirs: str, lo: int, hi: int, plurals: str) -> tuple:
    return tuple(gettext_lib.gettext_pairs(src, tgt, dirs=dirs, min_chars=lo, max_chars=hi, plurals=plurals))


def _gettext_all(cfg: dict) -> tuple:
    pairs = _gettext_cached(cfg["src_lang"], cfg["tgt_lang"], cfg["gettext_dirs"], cfg["gettext_min_chars"],
                            cfg["gettext_max_chars"], cfg["gettext_plurals"])
    if len(pairs) < cfg["gettext_min_pairs"]:
        fail(f"gettext pairs {cfg['src_lang']}->{cfg['tgt_lang']} under data.gettext_dirs={cfg['gettext_dirs']!r}",
             len(pairs), f">= data.gettext_min_pairs={cfg['gettext_min_pairs']}; point at a file (data.source='pairs', "
             "data.pairs_files='train.tsv') or a TFDS dataset (data.source='tfds_translate', data.tfds_name=...)")
    return pairs


def _gettext(cfg: dict, split: str, seq_len, seed: int) -> Examples:
    pairs = split_pairs(_gettext_all(cfg), split, cfg["val_fraction"], cfg["test_fraction"])
    return Examples(_pair_examples(pairs), _rows(cfg))


def _check_gettext(cfg: dict) -> None:
    _check_common(cfg)
    _check_hash(cfg)
    check_str("data.src_lang", cfg["src_lang"])
    check_str("data.tgt_lang", cfg["tgt_lang"])
    check_str("data.gettext_dirs", cfg["gettext_dirs"])
    lo = check_int("data.gettext_min_chars", cfg["gettext_min_chars"], min=1)
    check_int("data.gettext_max_chars", cfg["gettext_max_chars"], min=lo)
    check_choice("data.gettext_plurals", cfg["gettext_plurals"], ("singular", "skip"))
    check_int("data.gettext_min_pairs", cfg["gettext_min_pairs"], min=1)


# ------------------------------------------------------------------------------------------------
# Pair files.
# ------------------------------------------------------------------------------------------------
def _read(cfg: dict, key: str) -> list[tuple[str, str]]:
    return read_pair_files(cfg[key], key=f"data.{key}", source_key=cfg["pairs_source_key"],
                           target_key=cfg["pairs_target_key"])


def _pair_list(cfg: dict, split: str) -> list[tuple[str, str]]:
    if cfg["pairs_val_files"] and split in ("train", "validation"):
        return _read(cfg, "pairs_files" if split == "train" else "pairs_val_files")
    return split_pairs(_read(cfg, "pairs_files"), split, cfg["val_fraction"], cfg["test_fraction"])


def _pairs(cfg: dict, split: str, seq_len, seed: int) -> Examples:
    pairs = _pair_list(cfg, split)
    if not pairs:
        fail("data.pairs_files", cfg["pairs_files"], f"pairs in split {split!r} (the hash split left none; "
             "set data.pairs_val_files or data.val_fraction)")
    return Examples(_pair_examples(pairs), _rows(cfg))


def _check_pairs(cfg: dict) -> None:
    _check_common(cfg)
    _check_hash(cfg)
    if not (isinstance(cfg["pairs_files"], str) and cfg["pairs_files"]):
        fail("data.pairs_files", cfg["pairs_files"], "a glob of TSV/JSONL pair files when data.source='pairs'")
    check_str("data.pairs_val_files", cfg["pairs_val_files"], empty=True)
    check_str("data.pairs_source_key", cfg["pairs_source_key"])
    check_str("data.pairs_target_key", cfg["pairs_target_key"])


# ------------------------------------------------------------------------------------------------
# TFDS translation datasets.
# ------------------------------------------------------------------------------------------------
def _tfds_split(cfg: dict, split: str) -> str:
    return {"validation": cfg["tfds_val_split"], "test": "test"}.get(split, cfg["tfds_split"])


def _tfds_translate(cfg: dict, split: str, seq_len, seed: int) -> Examples:
    source = TfdsPairSource(cfg["tfds_name"], split=_tfds_split(cfg, split), src_lang=cfg["src_lang"],
                            tgt_lang=cfg["tgt_lang"], data_dir=cfg["tfds_data_dir"], download=bool(cfg["download"]))
    return Examples(source, _rows(cfg))


def _check_tfds_translate(cfg: dict) -> None:
    _check_common(cfg)
    if not (isinstance(cfg["tfds_name"], str) and cfg["tfds_name"]):
        fail("data.tfds_name", cfg["tfds_name"], "a TFDS translation dataset when data.source='tfds_translate'")
    for key in ("tfds_split", "tfds_val_split", "src_lang", "tgt_lang"):
        check_str(f"data.{key}", cfg[key])
    if cfg["tfds_data_dir"] is not None:
        check_str("data.tfds_data_dir", cfg["tfds_data_dir"])
    check_bool("data.download", cfg["download"])


# ------------------------------------------------------------------------------------------------
# Synthetic tasks.
# ------------------------------------------------------------------------------------------------
def _check_task(cfg: dict) -> None:
    _check_common(cfg)
    check_int("data.task_symbols", cfg["task_symbols"], min=2)
    lo = check_int("data.task_min_len", cfg["task_min_len"], min=1)
    check_int("data.task_max_len", cfg["task_max_len"], min=lo)
    check_int("data.task_seed", cfg["task_seed"])
    optional_int("data.task_num_records", cfg["task_num_records"], min=1)
    check_int("data.task_eval_records", cfg["task_eval_records"], min=1)
    need = cfg["task_max_len"] + 1
    if cfg["source_len"] < need:
        fail("data.source_len", cfg["source_len"], f">= {need} (data.task_max_len {cfg['task_max_len']} + EOS)")


class _SymbolCheck:
    def __init__(self, num_symbols: int):
        self.num_symbols = num_symbols

    def __call__(self, tokenizer) -> None:
        if not isinstance(tokenizer, SymbolTokenizer) or tokenizer.num_symbols != self.num_symbols:
            fail("tokenizer", getattr(tokenizer, "vocab_size", type(tokenizer).__name__),
                 f"SymbolTokenizer({self.num_symbols}) for the synthetic task (data.task_symbols={self.num_symbols})")


def _task_source(task: str, cfg: dict, split: str) -> SyntheticTask:
    stream = {"train": 0, "validation": 1, "test": 2}.get(split)
    if stream is None:
        fail("split", split, "one of ('train', 'validation', 'test') for a synthetic task")
    records = cfg["task_num_records"] if split == "train" else cfg["task_eval_records"]
    return SyntheticTask(task, num_symbols=cfg["task_symbols"], min_len=cfg["task_min_len"],
                         max_len=cfg["task_max_len"], seed=cfg["task_seed"], stream=stream, num_records=records)


def _task_builder(task: str):
    def build(cfg: dict, split: str, seq_len, seed: int) -> Examples:
        if seq_len is not None and seq_len < cfg["task_max_len"] + 1:
            fail("seq_len", seq_len, f">= {cfg['task_max_len'] + 1} (data.task_max_len {cfg['task_max_len']} + EOS)")
        source = _task_source(task, cfg, split)
        return Examples(source, _rows(cfg, _SymbolCheck(cfg["task_symbols"])), shuffle=source.num_records is not None)
    return build


def _task_tokenizer(cfg: dict) -> SymbolTokenizer:
    return SymbolTokenizer(check_int("data.task_symbols", cfg["task_symbols"], min=2))


# ------------------------------------------------------------------------------------------------
# Helpers for evaluators, the CLI and benchmarks.
# ------------------------------------------------------------------------------------------------
def pair_texts(data_config, split: str = "validation") -> list[tuple[str, str]]:
    """(source, reference) strings of ``split`` ("train", "validation", "test") of a seq2seq source,
    unfiltered by length (what BLEU is computed against). Synthetic tasks give their first
    ``task_eval_records`` (train: 1024) examples as symbol strings."""
    cfg = validate_data_config(data_config)
    check_choice("data.source", cfg["source"], SOURCES)
    if cfg["source"] == "gettext":
        return split_pairs(_gettext_all(cfg), split, cfg["val_fraction"], cfg["test_fraction"])
    if cfg["source"] == "pairs":
        return _pair_list(cfg, split)
    if cfg["source"] == "tfds_translate":
        source = _tfds_translate(cfg, split, None, 0).source
        return [(e["source"], e["target"]) for e in (source[i] for i in range(len(source)))]
    source = _task_source(cfg["source"], cfg, split)
    tok = _task_tokenizer(cfg)
    n = min(len(source), cfg["task_eval_records"])
    return [(tok.decode(e["source"]), tok.decode(e["target"])) for e in (source[i] for i in range(n))]


def cut_at_eos(ids, eos_id: int) -> list:
    """Generated ids ``[n]`` (or ``[B, n]``) cut before the first EOS (the hypothesis to decode)."""
    arr = np.asarray(ids)
    if arr.ndim > 1:
        return [cut_at_eos(row, eos_id) for row in arr]
    hits = np.flatnonzero(arr == eos_id)
    return arr[:hits[0]] if hits.size else arr


def length_stats(pairs, tokenizer, percentiles=(50, 90, 99, 100)) -> dict[str, list[int]]:
    """Token-length percentiles (ids + EOS) of each side, to choose ``source_len`` and ``seq_len``."""
    out = {}
    for i, side in enumerate(("source", "target")):
        lengths = [len(tokenizer.encode(p[i])) + 1 for p in pairs]
        out[side] = [int(np.ceil(np.percentile(lengths, q))) for q in percentiles]
    return out


register_source("gettext", _gettext, validate=_check_gettext, tokenizer=_text_tokenizer, defaults=dict(
    **_TEXT, **_HASH, **_LANGS, gettext_dirs=gettext_lib.DEFAULT_DIRS, gettext_min_chars=3, gettext_max_chars=100,
    gettext_plurals="singular", gettext_min_pairs=1000))
register_source("pairs", _pairs, validate=_check_pairs, tokenizer=_text_tokenizer, defaults=dict(
    **_TEXT, **_HASH, pairs_files="", pairs_val_files="", pairs_source_key="source", pairs_target_key="target"))
register_source("tfds_translate", _tfds_translate, validate=_check_tfds_translate, tokenizer=_text_tokenizer,
                defaults=dict(**_TEXT, **_LANGS, tfds_name="", tfds_split="train", tfds_val_split="validation",
                              tfds_data_dir=None, download=False))
_TASK = dict(**_COMMON, task_symbols=16, task_min_len=8, task_max_len=8, task_seed=0, task_num_records=None,
             task_eval_records=1024)
for _name in ("reverse", "sort"):
    register_source(_name, _task_builder(_name), validate=_check_task, defaults=_TASK, tokenizer=_task_tokenizer)
