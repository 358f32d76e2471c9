"""Sources: stdlib corpus (exclusions, determinism, disjoint split), local files, TFDS over
ArrayRecord from a local builder, and the Markov-chain source against its exact law."""

import os
import sysconfig

import numpy as np
import pytest

from dlm_jax.data.sources import MarkovSource, TextFileSource, TfdsSource, split_paths, stdlib_paths, stdlib_source
from dlm_jax.testing.oracles import MarkovChainLanguage


def test_stdlib_excludes_tests_and_is_deterministic():
    root = sysconfig.get_paths()["stdlib"]
    paths = stdlib_paths("all")
    assert len(paths) > 300 and paths == sorted(paths) == stdlib_paths("all")
    for p in paths:
        parts = os.path.relpath(p, root).split(os.sep)
        assert p.endswith(".py") and not {"test", "tests", "idle_test", "site-packages"} & set(parts), p
    assert os.path.join(root, "os.py") in paths


def test_stdlib_split_is_disjoint_and_covers():
    train, val, everything = stdlib_paths("train"), stdlib_paths("validation"), stdlib_paths("all")
    assert not set(train) & set(val) and sorted(train + val) == everything
    assert 0.02 < len(val) / len(everything) < 0.09  # val_fraction 0.05 by path hash
    assert stdlib_paths("validation", 0.2) != val and not set(stdlib_paths("train", 0.2)) & set(stdlib_paths("validation", 0.2))
    src = stdlib_source("validation")
    with open(val[0], encoding="utf-8", newline="") as f:
        assert len(src) == len(val) and src[0] == f.read()
    with pytest.raises(ValueError, match=r"^split: 'test'; expected one of \('train', 'validation', 'all'\)"):
        stdlib_paths("test")


def test_split_is_stable_under_added_files():
    paths = [f"/r/pkg/m{i}.py" for i in range(400)]
    val = split_paths(paths, "validation", 0.1, root="/r")
    more = split_paths(paths + [f"/r/new/n{i}.py" for i in range(50)], "validation", 0.1, root="/r")
    assert set(val) == {p for p in more if p.startswith("/r/pkg")} and 20 < len(val) < 60


def test_text_files_per_file_and_per_line(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\n  second\r\nthird", newline="")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("bee\n")
    per_file = TextFileSource.from_glob(str(tmp_path / "**" / "*.txt"))
    assert len(per_file) == 2 and per_file[0] == "first line\n\n  second\r\nthird" and per_file[1] == "bee\n"
    per_line = TextFileSource.from_glob([str(tmp_path / "a.txt"), str(tmp_path / "sub/*.txt")], per="line")
    assert [per_line[i] for i in range(len(per_line))] == ["first line", "  second", "third", "bee"]
    with pytest.raises(IndexError):
        per_line[4]
    with pytest.raises(ValueError, match=r"^data.files: '.*nothing\*'; expected a glob matching at least one file"):
        TextFileSource.from_glob(str(tmp_path / "nothing*"))
    with pytest.raises(ValueError, match=r"^per: 'word'; expected one of \('file', 'line'\)"):
        TextFileSource([], per="word")


def test_markov_source_follows_the_chain():
    lang = MarkovChainLanguage.random(3, vocab_size=5, length=6)
    src = MarkovSource(lang, seed=7)
    assert len(src) > 2**62 and src[5].dtype == np.int32 and src[5].shape == (6,)
    x = np.stack([src[i] for i in range(40_000)])
    np.testing.assert_array_equal(x[1234], MarkovSource(lang, seed=7)[1234])  # random access, reproducible
    assert not np.array_equal(x[:50], np.stack([MarkovSource(lang, seed=7, stream=1)[i] for i in range(50)]))
    pi0 = np.asarray(lang.initial, np.float64)
    first = np.bincount(x[:, 0], minlength=5) / len(x)
    assert 0.5 * np.abs(first - pi0).sum() < 0.01, (first, pi0)  # TV; sampling sd ~ 0.003
    a = np.asarray(lang.transition, np.float64)
    pairs = np.zeros((5, 5))
    np.add.at(pairs, (x[:, :-1].ravel(), x[:, 1:].ravel()), 1)
    seen = pairs.sum(1) > 2000
    emp = pairs[seen] / pairs[seen].sum(1, keepdims=True)
    assert np.abs(emp - a[seen]).max() < 0.03
    # the exact log-likelihood of the draws matches the entropy: E[-log p] = H
    nll = -float(np.mean(np.asarray(lang.log_prob(x[:20000]))))
    assert abs(nll - lang.entropy()) < 0.05 * lang.entropy()
    fixed = MarkovSource(lang, seed=7, num_records=10)
    assert len(fixed) == 10 and np.array_equal(fixed[9], x[9])
    with pytest.raises(IndexError):
        fixed[10]


# --- TFDS over ArrayRecord with a local builder -------------------------------------------

tfds = pytest.importorskip("tensorflow_datasets")

_TRAIN = [f"def f{i}():\n    return {i} * {i}  # héllo\n" for i in range(23)]
_VAL = [f"x = {i}\n" for i in range(4)]


class DlmJaxTinyText(tfds.core.GeneratorBasedBuilder):
    """A tiny text dataset, generated locally (no download)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"text": tfds.features.Text(), "idx": np.int32}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(_TRAIN), "validation": self._generate_examples(_VAL)}

    def _generate_examples(self, texts):
        for i, text in enumerate(texts):
            yield i, {"text": text, "idx": i}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    DlmJaxTinyText(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


def test_tfds_source_reads_prepared_array_record(tfds_dir):
    train = TfdsSource("dlm_jax_tiny_text", split="train", data_dir=tfds_dir, download=False)
    assert len(train) == 23 and sorted(train[i] for i in range(23)) == sorted(_TRAIN)
    val = TfdsSource("dlm_jax_tiny_text", split="validation", data_dir=tfds_dir)
    assert sorted(val[i] for i in range(len(val))) == sorted(_VAL)


def test_tfds_errors(tfds_dir, tmp_path):
    empty = str(tmp_path)
    msg = (rf"^data.tfds_name: 'dlm_jax_tiny_text' is not prepared in {empty}; expected a prepared dataset: "
           rf"run `tfds build dlm_jax_tiny_text --data_dir {empty} --file_format array_record` or set data.download=True$")
    with pytest.raises(ValueError, match=msg):
        TfdsSource("dlm_jax_tiny_text", data_dir=empty, download=False)
    with pytest.raises(ValueError, match=r"^data.tfds_name: 'no_such_dataset_xyz'; expected a registered TFDS dataset"):
        TfdsSource("no_such_dataset_xyz", data_dir=tfds_dir)
    with pytest.raises(ValueError, match=r"^data.text_key: 'body'; expected one of \['idx', 'text'\]"):
        TfdsSource("dlm_jax_tiny_text", data_dir=tfds_dir, text_key="body")
    with pytest.raises(ValueError, match=r"^data.tfds_split: 'test' of 'dlm_jax_tiny_text' could not be opened"):
        TfdsSource("dlm_jax_tiny_text", split="test", data_dir=tfds_dir)


def test_tfds_through_the_pipeline(tfds_dir, stdlib_tokenizer):
    from dlm_jax.data.pipeline import build_pipeline

    data = {"source": "tfds", "tfds_name": "dlm_jax_tiny_text", "tfds_data_dir": tfds_dir, "download": False,
            "num_epochs": 1, "shuffle_window": 0}
    batches = list(build_pipeline(data, stdlib_tokenizer, batch_size=2, seq_len=32, seed=0, process_index=0,
                                  process_count=1))
    stream = np.concatenate([b["tokens"][b["loss_mask"] > 0] for b in batches])
    docs = stdlib_tokenizer.decode(np.split(stream, np.flatnonzero(stream == stdlib_tokenizer.eos_id) + 1)[:-1])
    assert sorted(docs) == sorted(_TRAIN)
    val = list(build_pipeline(data, stdlib_tokenizer, batch_size=2, seq_len=32, seed=0, process_index=0,
                              process_count=1, split="validation"))
    assert "".join(stdlib_tokenizer.decode(np.concatenate([b["tokens"] for b in val]))).count("x = ") == 4


def test_local_stdlib_tfds_matches_the_files(tmp_path):
    from dlm_jax.data.local_tfds import NAME, prepare_stdlib_tfds

    data_dir = prepare_stdlib_tfds(str(tmp_path))
    val = TfdsSource(NAME, split="validation", data_dir=data_dir)
    files = stdlib_paths("validation")
    assert len(val) == len(files) and len(TfdsSource(NAME, split="train", data_dir=data_dir)) == len(stdlib_paths("train"))
    texts = {open(p, encoding="utf-8", errors="replace", newline="").read() for p in files}
    assert {val[i] for i in range(len(val))} == texts
