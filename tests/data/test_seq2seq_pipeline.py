"""Seq2seq sources through ``build_pipeline``: the four fields with exact values (ids + EOS + pad,
masks), a shared sentencepiece vocabulary trained on both sides, overlong pairs dropped or
truncated, disjoint covering process shards, bit-identical resume from JSON state, errors."""

import json

import numpy as np
import pytest

from dlm_jax.data.pipeline import build_pipeline, train_or_load_tokenizer
from dlm_jax.data.seq2seq_sources import SymbolTokenizer, SyntheticTask

FIELDS = {"source", "source_mask", "target", "target_mask"}
TASK = {"source": "reverse", "task_symbols": 6, "task_min_len": 2, "task_max_len": 6, "source_len": 8}
PAIRS = [("Open the file", "Datei öffnen"), ("Close the window now", "Fenster jetzt schließen"),
         ("Save", "Speichern"), ("Print all pages of the document", "Alle Seiten des Dokuments drucken"),
         ("Quit", "Beenden"), ("Undo", "Rückgängig"), ("Copy the selection", "Auswahl kopieren"),
         ("Paste", "Einfügen"), ("Find and replace text", "Text suchen und ersetzen"), ("Help", "Hilfe")]


def _batches(data, tok, *, b=4, l=7, seed=0, pi=0, pc=1, split="train", n=None):
    it = iter(build_pipeline(data, tok, batch_size=b, seq_len=l, seed=seed, process_index=pi, process_count=pc,
                             split=split))
    return list(it) if n is None else [next(it) for _ in range(n)]


def _padded(ids, n):
    row = np.zeros(n, np.int32)
    row[:len(ids)] = ids
    return row, (np.arange(n) < len(ids)).astype(np.float32)


def test_synthetic_rows_are_exact():
    tok = train_or_load_tokenizer(TASK, None)
    assert isinstance(tok, SymbolTokenizer) and tok.vocab_size == 10
    batches = _batches(TASK, tok, n=25)
    for b in batches:
        assert set(b) == FIELDS and b["source"].shape == b["source_mask"].shape == (4, 8)
        assert b["target"].shape == b["target_mask"].shape == (4, 7)
        assert b["source"].dtype == b["target"].dtype == np.int32 and b["target_mask"].dtype == np.float32
        for s, sm, t, tm in zip(b["source"], b["source_mask"], b["target"], b["target_mask"]):
            n = int(sm.sum())  # symbols + EOS
            symbols = s[:n - 1]
            assert 3 <= n <= 7 and s[n - 1] == tok.eos_id and symbols.min() >= 4 and symbols.max() <= 9
            want_s, want_sm = _padded(np.append(symbols, 2), 8)
            want_t, want_tm = _padded(np.append(symbols[::-1], 2), 7)
            np.testing.assert_array_equal(s, want_s)
            np.testing.assert_array_equal(sm, want_sm)
            np.testing.assert_array_equal(t, want_t)
            np.testing.assert_array_equal(tm, want_tm)
    lengths = np.concatenate([b["source_mask"].sum(1) for b in batches]) - 1
    assert set(lengths) == {2, 3, 4, 5, 6}
    val = _batches({**TASK, "task_eval_records": 6}, tok, split="validation")  # one pass, last batch zero-filled
    assert len(val) == 2 and val[1]["source_mask"][:2, 0].all() and not val[1]["source_mask"][2:].any()
    stream = SyntheticTask("reverse", num_symbols=6, min_len=2, max_len=6, stream=1)  # validation: stream 1, in order
    for i, row in enumerate(np.concatenate([b["target"] for b in val])[:6]):
        np.testing.assert_array_equal(row, _padded(np.append(stream[i]["target"], 2), 7)[0])


@pytest.fixture(scope="module")
def pair_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq2seq_pairs")
    (root / "train.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), encoding="utf-8")
    data = {"source": "pairs", "pairs_files": str(root / "train.tsv"), "val_fraction": 0.0, "test_fraction": 0.0,
            "tokenizer_vocab_size": 320, "source_len": 12, "num_epochs": 1}
    return data, train_or_load_tokenizer(data, str(root))


def test_pair_rows_with_a_shared_vocabulary(pair_setup):
    data, tok = pair_setup
    pieces = {tok.id_to_piece(i) for i in range(tok.vocab_size)}
    assert {"ö", "ß", "ü"} <= pieces and {"O", "Q", "C"} <= pieces  # target-only and source-only characters
    enc = [(tok.encode(s), tok.encode(t)) for s, t in PAIRS]
    fits = [i for i, (s, t) in enumerate(enc) if len(s) < 12 and len(t) < 16]
    assert 3 <= len(fits) < len(PAIRS)  # some pairs are longer than the rows
    rows = [r for b in _batches({**data, "shuffle": False}, tok, l=16) for r in zip(*(b[k] for k in sorted(FIELDS)))]
    rows = [r for r in rows if r[1][0] == 1]  # drop the zero rows of the last batch
    assert len(rows) == len(fits)
    for i, (s, sm, t, tm) in zip(fits, rows):
        want_s, want_sm = _padded(np.append(enc[i][0], 2), 12)
        want_t, want_tm = _padded(np.append(enc[i][1], 2), 16)
        for got, want in ((s, want_s), (sm, want_sm), (t, want_t), (tm, want_tm)):
            np.testing.assert_array_equal(got, want)
        assert tok.decode(t) == PAIRS[i][1] and tok.decode(s) == PAIRS[i][0]
    cut = [r for b in _batches({**data, "shuffle": False, "overlong": "truncate"}, tok, l=16)
           for r in zip(b["source"], b["target"], b["source_mask"]) if r[2][0] == 1]
    assert len(cut) == len(PAIRS)
    for (s, t, _), (es, et) in zip(cut, enc):
        want_s = np.append(es[:11], 2) if len(es) >= 12 else np.append(es, 2)  # first L - 1 ids + EOS
        np.testing.assert_array_equal(s[:len(want_s)], want_s)
        want_t = np.append(et[:15], 2) if len(et) >= 16 else np.append(et, 2)
        np.testing.assert_array_equal(t[:len(want_t)], want_t)


def test_separate_vocabularies(pair_setup, tmp_path):
    data = {**pair_setup[0], "seq2seq_vocab": "separate", "shuffle": False}
    tok = train_or_load_tokenizer(data, str(tmp_path))
    src, tgt = tok.source_tokenizer, tok.target_tokenizer
    files = sorted(p.name for p in (tmp_path / "tokenizer").iterdir())
    assert files == ["spm_src_bpe320.model", "spm_tgt_bpe320.model"]
    pieces = [{t.id_to_piece(i) for i in range(t.vocab_size)} for t in (src, tgt)]
    assert "ö" not in pieces[0] and "ö" in pieces[1] and "Q" in pieces[0] and "Q" not in pieces[1]
    assert tok.vocab_size == max(src.vocab_size, tgt.vocab_size) and (tok.pad_id, tok.eos_id) == (0, 2)
    rows = [r for b in _batches({**data, "overlong": "truncate"}, tok, l=40)
            for r in zip(b["source"], b["target"], b["source_mask"]) if r[2][0] == 1]
    assert len(rows) == len(PAIRS)
    for (s, t, _), (ps, pt) in zip(rows, PAIRS):
        want_s = np.append(src.encode(ps)[:11], 2)
        np.testing.assert_array_equal(s[:len(want_s)], want_s)
        np.testing.assert_array_equal(t[:len(tgt.encode(pt)) + 1], np.append(tgt.encode(pt), 2))
        assert tok.decode(t) == pt and tok.decode_source(s) == ps[:len(tok.decode_source(s))]
    paths = ",".join(str(tmp_path / "tokenizer" / f"spm_{side}_bpe320.model") for side in ("src", "tgt"))
    again = train_or_load_tokenizer({**data, "tokenizer_path": paths}, None)
    assert again.source_tokenizer.model_path.endswith("spm_src_bpe320.model")
    with pytest.raises(ValueError, match=r"^data.tokenizer_path: 'a.model'; expected 'source.model,target.model' "):
        train_or_load_tokenizer({**data, "tokenizer_path": "a.model"}, None)
    with pytest.raises(ValueError, match=r"^data.seq2seq_vocab: 'both'; expected one of \('shared', 'separate'\)$"):
        train_or_load_tokenizer({**data, "seq2seq_vocab": "both"}, None)


def test_process_shards_are_disjoint_and_cover():
    data = {**TASK, "task_num_records": 11, "num_epochs": 1}
    tok = SymbolTokenizer(6)

    def rows(pi, pc):
        return [tuple(r) for b in _batches(data, tok, b=2, seed=5, pi=pi, pc=pc) for r in b["source"] if r[0] > 0]

    single, p0, p1 = rows(0, 1), rows(0, 2), rows(1, 2)
    assert len(single) == 11 and p0 == single[0::2] and p1 == single[1::2]
    assert sorted(p0 + p1) == sorted(single)


@pytest.mark.parametrize("kind", ["pairs", "task"])
def test_state_round_trip_is_bit_identical(pair_setup, kind):
    data, tok = pair_setup
    if kind == "pairs":  # shuffled, repeated, with overlong pairs filtered out
        data, l = {**data, "num_epochs": None}, 16
    else:  # infinite iid draws
        data, tok, l = TASK, SymbolTokenizer(6), 7

    def make():
        return iter(build_pipeline(data, tok, batch_size=3, seq_len=l, seed=4, process_index=1, process_count=2))

    it = make()
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    want = [next(it) for _ in range(6)]  # crosses epochs of the 5-pair shard
    resumed = make()
    resumed.set_state(state)
    for w in want:
        r = next(resumed)
        assert set(r) == FIELDS
        for key in FIELDS:
            np.testing.assert_array_equal(w[key], r[key])


def test_errors(pair_setup):
    ok = dict(batch_size=2, seq_len=7, seed=0, process_index=0, process_count=1)
    cases = [
        (TASK, SymbolTokenizer(5), {}, r"^tokenizer: 9; expected SymbolTokenizer\(6\) for the synthetic task"),
        (TASK, SymbolTokenizer(6), {"seq_len": 6}, r"^seq_len: 6; expected >= 7 \(data.task_max_len 6 \+ EOS\)$"),
        ({**TASK, "source_len": 6}, SymbolTokenizer(6), {}, r"^data.source_len: 6; expected >= 7 \(data.task_max_len"),
        ({**TASK, "overlong": "cut"}, SymbolTokenizer(6), {}, r"^data.overlong: 'cut'; expected one of \('drop', "),
        ({**TASK, "task_min_len": 0}, SymbolTokenizer(6), {}, r"^data.task_min_len: 0; expected an int >= 1$"),
    ]
    for data, tok, override, msg in cases:
        with pytest.raises(ValueError, match=msg):
            build_pipeline(data, tok, **{**ok, **override})
    data, tok = pair_setup
    with pytest.raises(ValueError, match=r"^data.overlong: 'drop'; expected rows that fit some pairs: none of the "
                                         r"first 10 fits \(data.source_len=3, seq_len=7\); raise the lengths"):
        build_pipeline({**data, "source_len": 3}, tok, **ok)
    with pytest.warns(UserWarning, match=r"^data.overlong='drop' keeps 4 of the first 10 pairs \(data.source_len=12, "
                                         r"seq_len=8\)"):
        build_pipeline(data, tok, **{**ok, "seq_len": 8})
    from dlm_jax.data.tokenizer import MarkovTokenizer

    with pytest.raises(ValueError, match=r"^tokenizer: 'MarkovTokenizer'; expected a tokenizer with pad_id and eos_id"):
        build_pipeline(pair_setup[0], MarkovTokenizer(4), **ok)
