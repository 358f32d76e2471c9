"""The built-in sources, registered by name through ``register_source`` like any other.

=======================  ===========  =========================================================
key (source)             default      meaning
=======================  ===========  =========================================================
per (stdlib, files)      "file"       "file": a document per file (code); "line": per line
val_fraction (")         0.05         share of files (by stable path hash) in "validation"
files (files)            ""           glob(s) (comma-separated; ``**`` recurses)
tfds_name (tfds)         ""           TFDS dataset name (ArrayRecord format)
tfds_split (")           "train"      TFDS split read for split="train"
tfds_val_split (")       "validation" TFDS split read for split="validation"
tfds_data_dir (")        None         TFDS data_dir (None: TFDS default)
download (")             False        let TFDS download+prepare; False raises if not prepared
text_key (")             "text"       feature holding the text in TFDS examples
markov_vocab (markov)    8            V clean tokens (mask id = V)
markov_seed (")          0            seed of the language itself (π0 and transition matrix)
markov_concentration (") 0.5          Dirichlet concentration of π0 and transition rows
markov_num_records (")   None         None: infinite iid draws; else a fixed-size dataset
=======================  ===========  =========================================================

Text sources (stdlib, files, tfds) give str examples, packed with EOS into ``tokens``/``loss_mask``
rows (``rows.PackText``). Markov examples are exactly one chain sample of length L each (no EOS,
no packing, no shuffle: the draws are iid already), so rows follow the oracle law.
"""

from __future__ import annotations

from dlm_jax.checks import check_bool, check_choice, check_float, check_int, check_str, fail
from dlm_jax.data import sources as sources_lib
from dlm_jax.data.registry import Examples, optional_int, register_source
from dlm_jax.data.rows import FixedTokens, PackText

__all__ = ["markov_language"]

_TEXT = dict(per="file", val_fraction=0.05)


def _check_text(cfg: dict) -> None:
    check_choice("data.per", cfg["per"], ("file", "line"))
    check_float("data.val_fraction", cfg["val_fraction"], min=0.0, max=1.0, max_open=True)


def _pack(cfg: dict) -> PackText:
    return PackText(shuffle_window=cfg["shuffle_window"])


def _stdlib(cfg: dict, split: str, seq_len, seed: int) -> Examples:
    return Examples(sources_lib.stdlib_source(split, cfg["val_fraction"], per=cfg["per"]), _pack(cfg))


def _files(cfg: dict, split: str, seq_len, seed: int) -> Examples:
    source = sources_lib.TextFileSource.from_glob(cfg["files"], per=cfg["per"], split=split,
                                                  val_fraction=cfg["val_fraction"])
    return Examples(source, _pack(cfg))


def _check_files(cfg: dict) -> None:
    _check_text(cfg)
    if not (isinstance(cfg["files"], str) and cfg["files"]):
        fail("data.files", cfg["files"], "a glob when data.source='files'")


def _tfds(cfg: dict, split: str, seq_len, seed: int) -> Examples:
    tfds_split = cfg["tfds_val_split"] if split == "validation" else cfg["tfds_split"]
    source = sources_lib.TfdsSource(cfg["tfds_name"], split=tfds_split, data_dir=cfg["tfds_data_dir"],
                                    download=bool(cfg["download"]), text_key=cfg["text_key"])
    return Examples(source, _pack(cfg))


def _check_tfds(cfg: dict) -> None:
    if not (isinstance(cfg["tfds_name"], str) and cfg["tfds_name"]):
        fail("data.tfds_name", cfg["tfds_name"], "a TFDS dataset name when data.source='tfds'")
    for key in ("tfds_split", "tfds_val_split", "text_key"):
        check_str(f"data.{key}", cfg[key])
    if cfg["tfds_data_dir"] is not None:
        check_str("data.tfds_data_dir", cfg["tfds_data_dir"])
    check_bool("data.download", cfg["download"])


def markov_language(data_config, seq_len: int):
    """The exact ``MarkovChainLanguage`` behind source="markov" (for oracle evaluation);
    ``data_config`` may be the whole ``config.data``."""
    from dlm_jax.data.registry import validate_data_config
    from dlm_jax.testing.oracles import MarkovChainLanguage

    cfg = validate_data_config(data_config)
    _check_markov(cfg)
    return MarkovChainLanguage.random(cfg["markov_seed"], cfg["markov_vocab"], seq_len, cfg["markov_concentration"])


def _check_markov(cfg: dict) -> None:
    check_int("data.markov_vocab", cfg["markov_vocab"], min=2)
    check_int("data.markov_seed", cfg["markov_seed"])
    check_float("data.markov_concentration", cfg["markov_concentration"], min=0.0, min_open=True)
    optional_int("data.markov_num_records", cfg["markov_num_records"], min=1)


def _markov_tokenizer(cfg: dict):
    from dlm_jax.data.tokenizer import MarkovTokenizer

    return MarkovTokenizer(cfg["markov_vocab"])


class _MarkovTokenizerCheck:
    def __init__(self, vocab: int):
        self.vocab = vocab

    def __call__(self, tokenizer) -> None:
        from dlm_jax.data.tokenizer import MarkovTokenizer

        if not isinstance(tokenizer, MarkovTokenizer):
            fail("tokenizer", type(tokenizer).__name__, "MarkovTokenizer for data.source='markov'")
        if tokenizer.vocab_size != self.vocab:
            fail("tokenizer.vocab_size", tokenizer.vocab_size, f"data.markov_vocab={self.vocab}")


def _markov(cfg: dict, split: str, seq_len, seed: int) -> Examples:
    if seq_len is None:
        fail("seq_len", seq_len, "an int >= 1 for data.source='markov'")
    source = sources_lib.MarkovSource(markov_language(cfg, seq_len), seed=seed, stream=int(split == "validation"),
                                      num_records=cfg["markov_num_records"])
    return Examples(source, FixedTokens(check_tokenizer=_MarkovTokenizerCheck(cfg["markov_vocab"])), shuffle=False)


def _ids(cfg: dict, split: str, seq_len, seed: int) -> Examples:
    fail("data.source", "ids", "a source with data to evaluate or train on (e.g. 'files' with data.files and "
         "data.tokenizer_path); 'ids' only decodes samples as token ids (an imported checkpoint)")


def _ids_tokenizer(cfg: dict):
    from dlm_jax.data.tokenizer import MarkovTokenizer  # the identity on ids, mask id = V

    return MarkovTokenizer(check_int("data.ids_vocab", cfg["ids_vocab"], min=2))


register_source("stdlib", _stdlib, defaults=_TEXT, validate=_check_text)
register_source("files", _files, defaults=dict(files="", **_TEXT), validate=_check_files)
register_source("tfds", _tfds, defaults=dict(tfds_name="", tfds_split="train", tfds_val_split="validation",
                                             tfds_data_dir=None, download=False, text_key="text"),
                validate=_check_tfds)
register_source("markov", _markov, defaults=dict(markov_vocab=8, markov_seed=0, markov_concentration=0.5,
                                                 markov_num_records=None),
                validate=_check_markov, tokenizer=_markov_tokenizer)
# No data: samples of an imported checkpoint decode as ids until a real source and tokenizer are set.
register_source("ids", _ids, defaults=dict(ids_vocab=None),
                validate=lambda cfg: check_int("data.ids_vocab", cfg["ids_vocab"], min=2), tokenizer=_ids_tokenizer)
import dlm_jax.data.seq2seq  # noqa: E402,F401  (registers gettext, pairs, tfds_translate, reverse, sort)
