"""Tokenizers: exact round trips on code, compression at BPE-1024, special ids, save/load/reuse."""

import os
import time

import numpy as np
import pytest

from dlm_jax.data.pipeline import train_or_load_tokenizer
from dlm_jax.data.sources import stdlib_paths
from dlm_jax.data.tokenizer import MarkovTokenizer, SentencePieceTokenizer, text_chunks, train_sentencepiece


def _read(path):
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


@pytest.fixture(scope="module")
def held_out():
    """Every 4th validation-split stdlib file (never seen in training)."""
    return [_read(p) for p in stdlib_paths("validation")[::4]]


def test_round_trip_is_exact_on_stdlib_code(stdlib_tokenizer, held_out):
    tok = stdlib_tokenizer
    ids = tok.encode(held_out)
    assert len(ids) == len(held_out) >= 8
    assert tok.decode(ids) == held_out
    for text, row in zip(held_out[:3], ids):
        assert tok.decode(tok.encode(text)) == text
        np.testing.assert_array_equal(tok.encode(text), row)


@pytest.mark.parametrize("text", ["", "  leading and trailing  ", "\ttabs\t\tand\r\nCRLF\r\n", "x" * 5000,
                                  "ünïcødé 漢字 🙂 \x00\x7f", "\n\n\n    \n", "<mask> <pad> </s> <s> <unk>", "1234567890"],
                         ids=["empty", "spaces", "tabs_crlf", "long_run", "unicode", "blank_lines", "specials",
                              "digits"])
def test_round_trip_is_exact_on_odd_strings(stdlib_tokenizer, text):
    assert stdlib_tokenizer.decode(stdlib_tokenizer.encode(text)) == text


def test_compression_with_whitespace_pieces(stdlib_tokenizer, held_out, tmp_path):
    # Measured here: 2.24 chars/token on these held-out files (2.5 over the whole stdlib at
    # BPE-1024 trained on 2 M chars; 3.4 at BPE-4096). 3.0 is not reached at 1024 with an exactly
    # invertible tokenizer (256 of the 1024 ids are byte-fallback pieces).
    chars = sum(map(len, held_out))
    ratio = chars / sum(map(len, stdlib_tokenizer.encode(held_out)))
    assert ratio >= 2.1, ratio
    docs = (_read(p) for p in stdlib_paths("train")[::3])
    plain = train_sentencepiece(docs, str(tmp_path / "plain.model"), vocab_size=1024, max_chars=1_000_000,
                                trainer_overrides={"allow_whitespace_only_pieces": False})
    plain_ratio = chars / sum(map(len, plain.encode(held_out)))
    print(f"chars/token: {ratio:.3f} with whitespace pieces, {plain_ratio:.3f} without")
    assert ratio > plain_ratio + 0.5, (ratio, plain_ratio)  # observed 2.25 vs 1.44
    assert plain.decode(plain.encode(held_out)) == held_out


def test_special_ids_distinct_and_in_range(stdlib_tokenizer, held_out):
    tok = stdlib_tokenizer
    assert tok.vocab_size == 1024 and tok.input_vocab_size == 1025
    specials = [tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.mask_id]
    assert specials == [0, 1, 2, 3, 1024] and len(set(specials)) == 5
    assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    ids = np.concatenate(tok.encode(held_out + ["<mask> </s> <pad>"]))
    assert ids.min() >= 4 and ids.max() < tok.vocab_size  # never pad/bos/eos/unk/mask from text
    # decode drops pad and mask ids; batch decode of a 2-D array
    row = np.concatenate([tok.encode("def f():"), [tok.pad_id, tok.mask_id]])
    assert tok.decode(np.stack([row, row])) == ["def f():", "def f():"]


def test_save_load_and_reuse_in_workdir(stdlib_tokenizer, tokenizer_workdir):
    path = os.path.join(tokenizer_workdir, "tokenizer", "spm_bpe1024.model")
    assert stdlib_tokenizer.model_path == path and os.path.isfile(path)
    mtime = os.path.getmtime(path)
    start = time.perf_counter()
    again = train_or_load_tokenizer({"source": "stdlib", "tokenizer_train_chars": 1_000_000}, tokenizer_workdir)
    assert time.perf_counter() - start < 0.5 and os.path.getmtime(path) == mtime
    text = "for i in range(10):\n    print(i)\n"
    np.testing.assert_array_equal(again.encode(text), stdlib_tokenizer.encode(text))
    retrained = train_or_load_tokenizer({"source": "stdlib", "tokenizer_train_chars": 1_000_000},
                                        os.path.join(tokenizer_workdir, "again"))
    with open(path, "rb") as a, open(retrained.model_path, "rb") as b:
        assert a.read() == b.read()  # training is deterministic: every host of a job gets the same model
    direct = train_or_load_tokenizer({"tokenizer_path": path}, None)
    assert direct.vocab_size == 1024
    with pytest.raises(ValueError, match=r"^workdir: None; expected a directory"):
        train_or_load_tokenizer({}, None)
    with pytest.raises(ValueError, match=r"^model_path: '.*missing.model'; expected an existing"):
        SentencePieceTokenizer(os.path.join(tokenizer_workdir, "missing.model"))


def test_training_validation(tmp_path):
    with pytest.raises(ValueError, match=r"^vocab_size: 100; expected an int >= 276"):
        train_sentencepiece(["a"], str(tmp_path / "x.model"), vocab_size=100)
    with pytest.raises(ValueError, match=r"^texts: empty"):
        train_sentencepiece([], str(tmp_path / "x.model"))


def test_text_chunks_keep_every_character():
    text = "".join(f"line {i}\n" * (i % 3) + "    x = 1\n" for i in range(2000))
    chunks = list(text_chunks([text], max_chars=500))
    assert "".join(chunks) == text and max(map(len, chunks)) <= 500 and len(chunks) > 10


def test_markov_tokenizer():
    tok = MarkovTokenizer(5)
    assert (tok.vocab_size, tok.mask_id, tok.input_vocab_size, tok.eos_id, tok.pad_id) == (5, 5, 6, None, None)
    np.testing.assert_array_equal(tok.encode([0, 4, 2]), np.array([0, 4, 2], np.int32))
    assert tok.decode(np.array([[1, 5, 0]])) == ["1 _ 0"]
    with pytest.raises(ValueError, match=r"^tokens: values in \[0, 5\]; expected in \[0, 5\)"):
        tok.encode([0, 5])
    with pytest.raises(ValueError, match=r"^vocab_size: 1; expected an int >= 2"):
        MarkovTokenizer(1)
