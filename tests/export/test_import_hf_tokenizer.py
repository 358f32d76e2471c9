"""A tokenizer.json that comes with a Hugging Face checkpoint becomes the imported run's tokenizer:
copied into the workdir, ids in dlm_jax order (mask last; LLaDA's mid-vocabulary mask id remapped),
special ids from tokenizer_config.json, exact encode/decode round trips, and ``sample`` prints text."""

import json
import subprocess
import sys

import numpy as np
import pytest

import _export_helpers as H
from dlm_jax.data.hf_tokenizer import HFTokenizer
from dlm_jax.data.pipeline import train_or_load_tokenizer
from dlm_jax.export import dit_formats, files, importer, llada_layout
from dlm_jax.runs.workdir import load_run

TEXTS = ["the cat sat on the mat", "a dog ran to the park", "the sun is hot", "cats and dogs"]


def _tokenizer_json(folder, vocab_size: int) -> int:
    """Train a tiny byte-level BPE with <|endoftext|> (GPT-2 style) into ``folder``; returns its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 20, trainer)
    folder.mkdir(exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    json.dump({"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}, open(folder / "tokenizer_config.json", "w"))
    return tok.get_vocab_size()


def test_mdlm_folder_tokenizer_is_imported_and_samples_text(tmp_path):
    src = tmp_path / "mdlm"
    v = _tokenizer_json(src, 280)
    f = H.fields("none", vocab_size=v + 1, num_classes=v + 1)
    dit_formats.write_mdlm(H.checkpoint(f, dit_formats.mdlm_method(False), seed=1), str(src))
    wd = str(tmp_path / "wd")
    importer.import_checkpoint(str(src), "mdlm", wd)
    run = load_run(wd)
    tok = run.tokenizer
    assert isinstance(tok, HFTokenizer) and tok.vocab_size == v and tok.mask_id == v
    assert run.config.data.source == "stdlib" and run.config.data.tokenizer_path.startswith(wd)
    eot = tok._tok.token_to_id("<|endoftext|>")
    assert tok.eos_id == tok.bos_id == tok.pad_id == eot
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids.dtype == np.int32 and tok.decode(ids) == text
    assert tok.decode(np.array([*tok.encode("the cat"), eot, v, eot])) == "the cat"  # eos/pad, mask dropped
    jsonl = str(tmp_path / "samples.jsonl")
    out = subprocess.run([sys.executable, "-m", "dlm_jax", "sample", "--workdir", wd, "--steps", "4",
                          "--num-samples", "2", "--out", jsonl], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in open(jsonl)]
    assert len(rows) == 2 and all(len(r["tokens"]) == run.config.data.seq_len for r in rows)
    for r in rows:  # the CLI decodes with the imported tokenizer
        assert max(r["tokens"]) < v and r["text"] == tok.decode(np.array(r["tokens"]))


def test_llada_mask_inside_the_vocabulary_is_remapped(tmp_path):
    src = tmp_path / "llada"
    size = _tokenizer_json(src, 270)
    n = size + 3  # a padded model vocabulary, the mask id among the tokenizer's ids
    mask = 7
    f = dict(vocab_size=n, width=16, depth=1, heads=4, kv_heads=2, mlp_dim=24, max_len=16, rope_theta=5e5,
             norm_eps=1e-5, mask_token_id=mask)
    rng = np.random.default_rng(4)
    flat = {k: (0.4 * rng.standard_normal(s)).astype(np.float32) for k, s in llada_layout.llada_shapes(f).items()}
    llada_layout.write_llada(files.Checkpoint("llada", f, n - 1, llada_layout.llada_method(), flat), str(src))
    wd = str(tmp_path / "wd")
    importer.import_checkpoint(str(src), "llada", wd)
    tok = train_or_load_tokenizer(load_run(wd).config.data, wd)
    assert tok.vocab_size == n - 1 and tok.mask_id == n - 1
    raw = tok._tok.encode(TEXTS[0], add_special_tokens=False).ids
    assert any(i > mask for i in raw)
    np.testing.assert_array_equal(tok.encode(TEXTS[0]), [i - 1 if i > mask else i for i in raw])
    assert tok.decode(tok.encode(TEXTS[0])) == TEXTS[0]


def test_a_tokenizer_too_big_for_the_model_is_refused_and_nothing_written(tmp_path):
    src = tmp_path / "mdlm"
    v = _tokenizer_json(src, 280)
    f = H.fields("none", vocab_size=v - 5, num_classes=v - 5)  # fewer ids than the tokenizer has
    dit_formats.write_mdlm(H.checkpoint(f, dit_formats.mdlm_method(False), seed=1), str(src))
    wd = tmp_path / "wd"
    with pytest.raises(ValueError, match=r"^data.tokenizer_path: .*expected a model with room for the tokenizer's"):
        importer.import_checkpoint(str(src), "mdlm", str(wd))
    assert not wd.exists() and not list(tmp_path.glob("wd.importing-*"))
