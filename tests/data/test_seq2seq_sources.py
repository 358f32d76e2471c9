"""Seq2seq sources: TSV/JSONL pair files (exact pairs, errors for empty and malformed files), a TFDS
translation dataset from a local builder, and the synthetic reverse/sort tasks' exact answers."""

import json
import sys

import numpy as np
import pytest

from dlm_jax.data.pipeline import build_source, train_or_load_tokenizer
from dlm_jax.data.seq2seq import cut_at_eos, length_stats, pair_texts
from dlm_jax.data.seq2seq_sources import SymbolTokenizer, SyntheticTask, read_pair_files, split_of

TSV = [("Open the file", "Datei öffnen"), ("Close", "Schließen"), ("Save as…", "Speichern unter …")]
JSONL = [("Quit", "Beenden"), ("Print", "Drucken")]


@pytest.fixture()
def pair_dir(tmp_path):
    (tmp_path / "a.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in TSV) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"en": s, "de": t, "id": i}) + "\n"
                                              for i, (s, t) in enumerate(JSONL)), encoding="utf-8")
    return tmp_path


def test_pair_files(pair_dir):
    assert read_pair_files(str(pair_dir / "*.tsv")) == TSV
    assert read_pair_files(str(pair_dir / "b.jsonl"), source_key="en", target_key="de") == JSONL
    both = read_pair_files(f"{pair_dir}/a.tsv,{pair_dir}/b.jsonl", source_key="en", target_key="de")
    assert both == TSV + JSONL
    data = {"source": "pairs", "pairs_files": f"{pair_dir}/*", "pairs_source_key": "en", "pairs_target_key": "de",
            "val_fraction": 0.3, "test_fraction": 0.0}
    # hash split: u(source) < 0.3 -> validation
    want_val = [p for p in TSV + JSONL if split_of(p[0], 0.3, 0.0) == "validation"]
    assert pair_texts(data, "validation") == want_val and 0 < len(want_val) < 5
    assert sorted(pair_texts(data, "train") + want_val) == sorted(TSV + JSONL)
    with_val = {**data, "pairs_files": f"{pair_dir}/a.tsv", "pairs_val_files": f"{pair_dir}/b.jsonl"}
    assert pair_texts(with_val, "train") == TSV and pair_texts(with_val, "validation") == JSONL
    assert [dict(e) for e in build_source(with_val, "validation")] == [{"source": s, "target": t} for s, t in JSONL]


def test_pair_file_errors(pair_dir):
    (pair_dir / "empty.tsv").write_text("\n\n", encoding="utf-8")
    (pair_dir / "notab.tsv").write_text("a\tb\nno tab here\n", encoding="utf-8")
    (pair_dir / "twotabs.tsv").write_text("a\tb\tc\n", encoding="utf-8")
    (pair_dir / "keys.jsonl").write_text('{"source": "a", "tgt": "b"}\n', encoding="utf-8")
    (pair_dir / "bad.jsonl").write_text('{"source": "a", \n', encoding="utf-8")
    cases = [
        ("empty.tsv", r"^data.pairs_files: '.*empty.tsv'; expected a file with at least one pair \(it has none\)$"),
        ("notab.tsv", r"^.*notab.tsv:2: 'no tab here'; expected source<TAB>target \(2 tab-separated fields, "
                      r"found 1\)$"),
        ("twotabs.tsv", r"^.*twotabs.tsv:1: 'a\\tb\\tc'; expected source<TAB>target \(2 tab-separated fields, "
                        r"found 3\)$"),
        ("keys.jsonl", r"^.*keys.jsonl:1: .*; expected a JSON object with string keys 'source' and 'target'$"),
        ("bad.jsonl", r"^.*bad.jsonl:1: .*; expected a JSON object per line \(Expecting property name"),
        ("none*.tsv", r"^data.pairs_files: '.*none\*.tsv'; expected a glob matching at least one TSV/JSONL file"),
    ]
    for name, msg in cases:
        with pytest.raises(ValueError, match=msg):
            read_pair_files(str(pair_dir / name))
    with pytest.raises(ValueError, match=r"^data.pairs_files: ''; expected a glob of TSV/JSONL pair files when "):
        pair_texts({"source": "pairs"})
    with pytest.raises(ValueError, match=r"^data.pairs_files: '.*a.tsv'; expected pairs in split 'validation'"):
        build_source({"source": "pairs", "pairs_files": str(pair_dir / "a.tsv"), "val_fraction": 0.0}, "validation")


def test_synthetic_tasks_have_exact_answers():
    tok = SymbolTokenizer(16)
    assert (tok.vocab_size, tok.mask_id, tok.pad_id, tok.bos_id, tok.eos_id) == (20, 20, 0, 1, 2)
    np.testing.assert_array_equal(tok.encode("3 0 15"), [7, 4, 19])
    assert tok.decode([7, 4, 19, 2, 0, 20]) == "3 0 15" and tok.decode([[5], [6, 2]]) == ["1", "2"]
    for task, answer in (("reverse", lambda s: s[::-1]), ("sort", np.sort)):
        src = SyntheticTask(task, num_symbols=5, min_len=2, max_len=6, seed=3, num_records=400)
        lengths = []
        for i in range(400):
            e = src[i]
            np.testing.assert_array_equal(e["target"], answer(e["source"]))
            assert e["source"].dtype == np.int32 and e["source"].min() >= 4 and e["source"].max() <= 8
            lengths.append(len(e["source"]))
        assert sorted(set(lengths)) == [2, 3, 4, 5, 6] and abs(np.mean(lengths) - 4) < 0.3  # uniform in [2, 6]
        again = SyntheticTask(task, num_symbols=5, min_len=2, max_len=6, seed=3, num_records=400)
        np.testing.assert_array_equal(again[123]["source"], src[123]["source"])  # random access, reproducible
        other = SyntheticTask(task, num_symbols=5, min_len=2, max_len=6, seed=3, stream=1)
        assert len(other) == sys.maxsize and not np.array_equal(other[0]["source"], src[0]["source"])
    data = {"source": "sort", "task_symbols": 5, "task_min_len": 3, "task_max_len": 3, "task_eval_records": 4}
    texts = pair_texts(data, "validation")
    assert len(texts) == 4 and all(t == " ".join(sorted(s.split(), key=int)) for s, t in texts)
    assert train_or_load_tokenizer(data, None).vocab_size == 9
    np.testing.assert_array_equal(cut_at_eos([5, 6, 2, 7, 2], 2), [5, 6])
    assert [list(r) for r in cut_at_eos(np.array([[5, 2, 0], [5, 6, 7]]), 2)] == [[5], [5, 6, 7]]
    assert length_stats([("0 1", "1 0"), ("0 1 2 3", "3 2 1 0")], tok, (50, 100)) == {
        "source": [4, 5], "target": [4, 5]}


tfds = pytest.importorskip("tensorflow_datasets")

_PAIRS = [(f"Satz {i}", f"sentence {i}") for i in range(9)]


class DlmJaxTinyTranslate(tfds.core.GeneratorBasedBuilder):
    """A tiny de-en translation dataset, generated locally (no download)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.Translation(languages=("de", "en")))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(_PAIRS[:7]), "validation": self._generate_examples(_PAIRS[7:])}

    def _generate_examples(self, pairs):
        for i, (de, en) in enumerate(pairs):
            yield i, {"de": de, "en": en}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds_translate"))
    DlmJaxTinyTranslate(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


def test_tfds_translate(tfds_dir):
    data = {"source": "tfds_translate", "tfds_name": "dlm_jax_tiny_translate", "tfds_data_dir": tfds_dir,
            "src_lang": "de", "tgt_lang": "en"}
    assert sorted(pair_texts(data, "train")) == sorted(_PAIRS[:7])
    assert sorted(pair_texts(data, "validation")) == sorted(_PAIRS[7:])
    assert sorted(pair_texts({**data, "src_lang": "en", "tgt_lang": "de"}, "validation")) == sorted(
        (e, d) for d, e in _PAIRS[7:])
    with pytest.raises(ValueError, match=r"^data.tgt_lang: 'fr'; expected one of \['de', 'en'\] \(the features of "):
        pair_texts({**data, "tgt_lang": "fr"})
    with pytest.raises(ValueError, match=r"^data.tfds_split: 'test'; expected an existing split of "):
        pair_texts(data, "test")
    with pytest.raises(ValueError, match=r"^data.tfds_name: 'dlm_jax_tiny_translate'; expected a dataset prepared in "):
        pair_texts({**data, "tfds_data_dir": tfds_dir + "/nowhere"})
    with pytest.raises(ValueError, match=r"^data.tfds_name: ''; expected a TFDS translation dataset when "):
        pair_texts({"source": "tfds_translate"})
