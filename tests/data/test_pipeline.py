"""grain pipeline: packing loses/duplicates nothing, EOS separates documents, seeded shuffles,
bit-identical resume from iterator state, disjoint covering process shards, config errors."""

import json
import os
import re

import numpy as np
import pytest

from dlm_jax.data.pipeline import build_pipeline, default_data_config, markov_language, train_or_load_tokenizer
from dlm_jax.data.registry import source_names, validate_data_config
from dlm_jax.data.tokenizer import MarkovTokenizer

B, L = 4, 64
# Small windows are slow in grain (index_shuffle ~ms/row below 256), so tests use 0, 64 or 256.


def _cfg(corpus, **kw):
    return {"source": "files", "files": os.path.join(corpus, "*.py"), "val_fraction": 0.0, **kw}


def _batches(data, tok, seed=0, pi=0, pc=1, split="train", b=B, l=L):
    return list(build_pipeline(data, tok, batch_size=b, seq_len=l, seed=seed, process_index=pi,
                               process_count=pc, split=split))


def _docs(batches, eos):
    """Split the concatenated masked token stream at EOS into documents (as tuples)."""
    stream = np.concatenate([b["tokens"][b["loss_mask"] > 0] for b in batches])
    cuts = np.flatnonzero(stream == eos)
    assert cuts[-1] == len(stream) - 1  # the stream ends with a document's EOS
    return [tuple(d) for d in np.split(stream, cuts + 1)[:-1]]


@pytest.fixture(scope="module")
def expected_docs(small_corpus, stdlib_tokenizer):
    texts = [open(os.path.join(small_corpus, f), encoding="utf-8", newline="").read()
             for f in sorted(os.listdir(small_corpus))]
    return [tuple(ids) + (stdlib_tokenizer.eos_id,) for ids in stdlib_tokenizer.encode(texts)]


def test_one_epoch_packs_every_token_once(small_corpus, stdlib_tokenizer, expected_docs):
    batches = _batches(_cfg(small_corpus, num_epochs=1, shuffle_window=0), stdlib_tokenizer)
    for b in batches:
        assert b["tokens"].shape == b["loss_mask"].shape == (B, L)
        assert b["tokens"].dtype == np.int32 and b["loss_mask"].dtype == np.float32
    mask = np.concatenate([b["loss_mask"].ravel() for b in batches])
    n_real = int(mask.sum())
    assert np.all(mask[:n_real] == 1) and np.all(mask[n_real:] == 0)  # only the tail is padding
    assert len(mask) - n_real < B * L  # at most one partial batch of padding
    tokens = np.concatenate([b["tokens"].ravel() for b in batches])
    assert np.all(tokens[n_real:] == stdlib_tokenizer.pad_id)
    docs = _docs(batches, stdlib_tokenizer.eos_id)
    assert sorted(docs) == sorted(expected_docs)  # no document lost, duplicated or altered
    assert docs != expected_docs  # shuffled (file order differs)
    assert n_real == sum(map(len, expected_docs))


def test_window_shuffle_permutes_rows_only(small_corpus, stdlib_tokenizer):
    plain = _batches(_cfg(small_corpus, num_epochs=1, shuffle_window=0), stdlib_tokenizer)
    mixed = _batches(_cfg(small_corpus, num_epochs=1, shuffle_window=256), stdlib_tokenizer)
    rows = lambda bs: sorted(map(tuple, np.concatenate([b["tokens"] for b in bs])))  # noqa: E731
    assert rows(plain) == rows(mixed)
    assert not all(np.array_equal(p["tokens"], m["tokens"]) for p, m in zip(plain, mixed))


def test_shuffle_is_seeded_and_reshuffles_each_epoch(small_corpus, stdlib_tokenizer, expected_docs):
    cfg = _cfg(small_corpus, num_epochs=2, shuffle_window=0)
    a, again, other = (_docs(_batches(cfg, stdlib_tokenizer, seed=s), 2) for s in (0, 0, 1))
    assert a == again and a != other and sorted(a) == sorted(other)
    n = len(expected_docs)
    assert len(a) == 2 * n and sorted(a[:n]) == sorted(a[n:]) == sorted(expected_docs) and a[:n] != a[n:]
    unshuffled = _docs(_batches(_cfg(small_corpus, num_epochs=1, shuffle=False, shuffle_window=0),
                                stdlib_tokenizer), 2)
    assert unshuffled == expected_docs


@pytest.mark.parametrize("window", [0, 64])  # 64: the resume point and the 30 batches cross windows
def test_iterator_state_round_trip_is_bit_identical(small_corpus, stdlib_tokenizer, window):
    ds = build_pipeline(_cfg(small_corpus, shuffle_window=window), stdlib_tokenizer, batch_size=B, seq_len=L,
                        seed=3, process_index=0, process_count=1)
    it = iter(ds)
    for _ in range(7):
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores survives JSON
    want = [next(it) for _ in range(30)]  # crosses the epoch boundary (infinite repeat)
    resumed = iter(ds)
    resumed.set_state(state)
    fresh = iter(build_pipeline(_cfg(small_corpus, shuffle_window=window), stdlib_tokenizer, batch_size=B,
                                seq_len=L, seed=3, process_index=0, process_count=1))
    fresh.set_state(state)
    for w, r, f in zip(want, (next(resumed) for _ in range(30)), (next(fresh) for _ in range(30))):
        for key in ("tokens", "loss_mask"):
            np.testing.assert_array_equal(w[key], r[key])
            np.testing.assert_array_equal(w[key], f[key])


def test_process_shards_are_disjoint_and_cover(small_corpus, stdlib_tokenizer, expected_docs):
    cfg = _cfg(small_corpus, num_epochs=1, shuffle_window=0)
    single = _docs(_batches(cfg, stdlib_tokenizer, seed=5), 2)
    p0, p1 = (_docs(_batches(cfg, stdlib_tokenizer, seed=5, pi=i, pc=2), 2) for i in (0, 1))
    assert p0 == single[0::2] and p1 == single[1::2]  # interleaved shards of the same global order
    assert not set(p0) & set(p1) and sorted(p0 + p1) == sorted(expected_docs)


def test_validation_split_is_one_ordered_pass(stdlib_tokenizer):
    from dlm_jax.data.sources import stdlib_paths

    batches = _batches({"source": "stdlib"}, stdlib_tokenizer, split="validation", b=32, l=256)
    docs = _docs(batches, stdlib_tokenizer.eos_id)
    first = open(stdlib_paths("validation")[0], encoding="utf-8", newline="").read()
    assert len(docs) == len(stdlib_paths("validation"))
    assert docs[0] == tuple(stdlib_tokenizer.encode(first)) + (2,)
    again = _batches({"source": "stdlib"}, stdlib_tokenizer, seed=9, split="validation", b=32, l=256)
    assert len(again) == len(batches)
    assert all(np.array_equal(a["tokens"], b["tokens"]) for a, b in zip(batches, again))


def test_markov_pipeline_rows_are_chain_samples():
    data = {"source": "markov", "markov_vocab": 5, "markov_seed": 2}
    tok = train_or_load_tokenizer(data, None)
    assert isinstance(tok, MarkovTokenizer) and tok.mask_id == 5
    it = iter(build_pipeline(data, tok, batch_size=256, seq_len=8, seed=0, process_index=0, process_count=1))
    x = np.concatenate([next(it)["tokens"] for _ in range(20)])
    lang = markov_language(data, 8)
    first = np.bincount(x[:, 0], minlength=5) / len(x)
    assert 0.5 * np.abs(first - np.asarray(lang.initial)).sum() < 0.03  # n = 5120
    nll = -float(np.mean(np.asarray(lang.log_prob(x))))
    assert abs(nll - lang.entropy()) < 0.05 * lang.entropy()
    fixed = _batches({**data, "markov_num_records": 10, "num_epochs": 1}, tok)
    assert len(fixed) == 3 and fixed[-1]["tokens"].shape == (B, L)  # 10 records, B = 4: last batch padded
    assert fixed[-1]["loss_mask"][:2].all() and not fixed[-1]["loss_mask"][2:].any()
    val = iter(build_pipeline(data, tok, batch_size=4, seq_len=8, seed=0, process_index=0, process_count=1,
                              split="validation"))
    assert not np.array_equal(next(val)["tokens"], x[:4])


def test_config_validation(stdlib_tokenizer):
    ok = dict(batch_size=B, seq_len=L, seed=0, process_index=0, process_count=1)
    names = re.escape(repr(source_names()))
    assert source_names()[:4] == ("stdlib", "files", "tfds", "markov")  # built-ins first, then any registered
    cases = [
        ({"source": "x"}, {}, rf"^data.source: 'x'; expected one of {names}$"),
        ({"sourse": "files"}, {}, r"^data.sourse: 'files'; expected a known key, one of \('download', "),
        ({"source": "files"}, {}, r"^data.files: ''; expected a glob when data.source='files'$"),
        ({"source": "tfds"}, {}, r"^data.tfds_name: ''; expected a TFDS dataset name"),
        ({"num_epochs": 0}, {}, r"^data.num_epochs: 0; expected None or an int >= 1$"),
        ({"shuffle": 1}, {}, r"^data.shuffle: 1; expected a bool \(True or False\)$"),
        ({"per": "word"}, {}, r"^data.per: 'word'; expected one of \('file', 'line'\)$"),
        ({"source": "markov", "markov_concentration": 0}, {}, r"^data.markov_concentration: 0; expected a finite"),
        ({}, {"seq_len": 1}, r"^seq_len: 1; expected an int >= 2$"),
        ({}, {"batch_size": 0}, r"^batch_size: 0; expected an int >= 1$"),
        ({}, {"process_index": 2, "process_count": 2}, r"^process_index: 2; expected an int >= 0 and <= 1$"),
        ({}, {"split": "test"}, r"^split: 'test'; expected one of \('train', 'validation'\)$"),
        ({"source": "markov"}, {}, r"^tokenizer: 'SentencePieceTokenizer'; expected MarkovTokenizer"),
    ]
    for data, override, msg in cases:
        with pytest.raises(ValueError, match=msg):
            build_pipeline(data, stdlib_tokenizer, **{**ok, **override})
    with pytest.raises(ValueError, match=r"^data.tfds_name: 'dlm_jax_not_there'; expected a registered"):
        build_pipeline({"source": "tfds", "tfds_name": "dlm_jax_not_there"}, stdlib_tokenizer, **ok)
    # keys of another source are accepted and checked only when that source is chosen
    assert validate_data_config({"source": "stdlib", "markov_vocab": "x"})["markov_vocab"] == "x"


def test_whole_config_data_with_seq_len(small_corpus, stdlib_tokenizer):
    """``config.data`` (with the trainer's ``seq_len``) goes in as is; ``seq_len`` inside is ignored."""
    import ml_collections

    data = ml_collections.ConfigDict(_cfg(small_corpus, num_epochs=1, shuffle_window=0))
    want = _batches(_cfg(small_corpus, num_epochs=1, shuffle_window=0), stdlib_tokenizer)
    data.seq_len = 7
    got = _batches(data, stdlib_tokenizer)
    assert "seq_len" not in validate_data_config(data) and len(got) == len(want)
    for w, g in zip(want, got):
        assert w.keys() == g.keys() == {"tokens", "loss_mask"} and np.array_equal(w["tokens"], g["tokens"])
    assert train_or_load_tokenizer({"source": "markov", "markov_vocab": 6, "seq_len": 16}, None).vocab_size == 6
    lang = markov_language({"source": "markov", "markov_vocab": 6, "seq_len": 16}, 16)
    assert lang.vocab_size == 6 and lang.length == 16


def test_default_config_round_trips(small_corpus, stdlib_tokenizer):
    cfg = default_data_config()
    cfg.source, cfg.files, cfg.val_fraction, cfg.num_epochs = "files", os.path.join(small_corpus, "*.py"), 0.0, 1
    assert len(_batches(cfg, stdlib_tokenizer)) > 10


def test_grain_checkpoint_handler_round_trip(small_corpus, stdlib_tokenizer, tmp_path):
    """Through grain's Orbax handler (JSON on disk) at a point whose packer state has no
    remainder: raw grain 0.2.18 diverges here; the pipeline's state wrapper fixes it."""
    from etils import epath
    from grain.checkpoint import CheckpointHandler, CheckpointRestore, CheckpointSave

    def make():
        return iter(build_pipeline(_cfg(small_corpus, shuffle_window=64), stdlib_tokenizer, batch_size=B, seq_len=L,
                                   seed=1, process_index=0, process_count=1))

    it = make()
    for _ in range(3):
        next(it)
    assert it.get_state()["parent_window_start_state"]["remainder_slices"]["tokens"] == (-1, -1)
    CheckpointHandler().save(epath.Path(tmp_path), args=CheckpointSave(it))
    want = [next(it)["tokens"] for _ in range(20)]
    restored = CheckpointHandler().restore(epath.Path(tmp_path), args=CheckpointRestore(make()))
    for w in want:
        np.testing.assert_array_equal(w, next(restored)["tokens"])
