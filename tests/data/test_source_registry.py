"""Sources registered by name from outside dlm_jax: a source/target pair source with two fields
of different lengths goes through ``build_pipeline`` — exact rows and masks, seeded shuffle,
disjoint covering process shards, bit-identical resume — and registration errors."""

import json

import numpy as np
import pytest

from dlm_jax.checks import check_int
from dlm_jax.data.pipeline import build_pipeline, train_or_load_tokenizer
from dlm_jax.data.registry import (Examples, default_data_config, get_source, register_source, source_names,
                                   validate_data_config)
from dlm_jax.data.rows import PadFields


class CharTokenizer:
    """'a'..'z' -> 4..29; pad 0, bos 1, eos 2, unk 3 (the sentencepiece layout)."""

    pad_id, bos_id, eos_id, unk_id, vocab_size = 0, 1, 2, 3, 30

    def encode(self, text):
        return np.array([ord(c) - 93 for c in text], np.int32)


PAIRS = [("ab", "xyz"), ("c", "hello"), ("defgh", "q"), ("ij", "rstuvw"), ("k", "mn"), ("lmnop", "abcdefghij"),
         ("z", "")]
VAL = [("yy", "ww")]
S, T = 4, 6  # source length (data.pairs_source_len), target length (the pipeline's seq_len)
# Hand-encoded rows of PAIRS: ids + EOS (2), cut to length - 1 before the EOS, padded with 0.
WANT = [
    ([4, 5, 2, 0], [27, 28, 29, 2, 0, 0]),
    ([6, 2, 0, 0], [11, 8, 15, 15, 18, 2]),
    ([7, 8, 9, 2], [20, 2, 0, 0, 0, 0]),
    ([12, 13, 2, 0], [21, 22, 23, 24, 25, 2]),
    ([14, 2, 0, 0], [16, 17, 2, 0, 0, 0]),
    ([15, 16, 17, 2], [4, 5, 6, 7, 8, 2]),
    ([29, 2, 0, 0], [2, 0, 0, 0, 0, 0]),
]
WANT_MASKS = [([1, 1, 1, 0], [1, 1, 1, 1, 0, 0]), ([1, 1, 0, 0], [1] * 6), ([1] * 4, [1, 1, 0, 0, 0, 0]),
              ([1, 1, 1, 0], [1] * 6), ([1, 1, 0, 0], [1, 1, 1, 0, 0, 0]), ([1] * 4, [1] * 6),
              ([1, 1, 0, 0], [1, 0, 0, 0, 0, 0])]


def _pairs_builder(config, split, seq_len, seed):
    pairs = VAL if split == "validation" else PAIRS
    examples = [{"source": s, "target": t, "id": i} for i, (s, t) in enumerate(pairs)]  # "id" is dropped
    return Examples(examples, PadFields({"source": config["pairs_source_len"], "target": None}))


def _check_pairs(config):
    check_int("data.pairs_source_len", config["pairs_source_len"], min=2)


@pytest.fixture(autouse=True, scope="module")
def _test_sources():
    """Register the test sources for this module only: registered at import, their default key
    ``pairs_source_len`` would enter every data config later tests of the same xdist worker write
    into workdirs, and a fresh ``python -m dlm_jax`` process reading one refuses the unknown key."""
    from dlm_jax.data import registry

    register_source("test_pairs", _pairs_builder, defaults={"pairs_source_len": 8}, validate=_check_pairs,
                    tokenizer=lambda config: CharTokenizer())
    # The same pairs with no tokenizer of their own: sentencepiece is trained on both fields' text.
    register_source("test_pairs_spm", _pairs_builder, defaults={"pairs_source_len": 8}, validate=_check_pairs)
    yield
    for name in ("test_pairs", "test_pairs_spm", "test_ids"):
        registry._REGISTRY.pop(name, None)


def _data(**kw):
    return {"source": "test_pairs", "pairs_source_len": S, **kw}


def _run(data, *, b=3, seed=0, pi=0, pc=1, split="train", n=None):
    tok = train_or_load_tokenizer(data, None)
    it = iter(build_pipeline(data, tok, batch_size=b, seq_len=T, seed=seed, process_index=pi, process_count=pc,
                             split=split))
    return list(it) if n is None else [next(it) for _ in range(n)]


def _rows(batches):
    """Real rows (source mask starts with 1: every row holds at least the EOS) as hashable tuples."""
    return [(tuple(s), tuple(t)) for b in batches for s, t, m in zip(b["source"], b["target"], b["source_mask"])
            if m[0] == 1]


def test_pair_rows_and_masks_are_exact():
    batches = _run(_data(shuffle=False, num_epochs=1))
    assert len(batches) == 3  # 7 rows, B = 3: the last batch has 1 real row and 2 zero rows
    for b in batches:
        assert set(b) == {"source", "source_mask", "target", "target_mask"}
        assert b["source"].dtype == b["target"].dtype == np.int32
        assert b["source_mask"].dtype == b["target_mask"].dtype == np.float32
    got = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    zeros = lambda n: [[0] * n] * 2  # noqa: E731
    np.testing.assert_array_equal(got["source"], [s for s, _ in WANT] + zeros(S))
    np.testing.assert_array_equal(got["target"], [t for _, t in WANT] + zeros(T))
    np.testing.assert_array_equal(got["source_mask"], [s for s, _ in WANT_MASKS] + zeros(S))
    np.testing.assert_array_equal(got["target_mask"], [t for _, t in WANT_MASKS] + zeros(T))
    val = _run(_data(), b=2, split="validation")  # one unshuffled pass of the validation split
    assert len(val) == 1
    np.testing.assert_array_equal(val[0]["source"], [[28, 28, 2, 0], [0] * S])
    np.testing.assert_array_equal(val[0]["target"], [[26, 26, 2, 0, 0, 0], [0] * T])


def test_shuffle_is_a_seeded_permutation_each_epoch():
    want = [(tuple(s), tuple(t)) for s, t in WANT]
    a, again, other = (_rows(_run(_data(num_epochs=2), seed=s)) for s in (0, 0, 1))
    assert a == again and a != other
    assert sorted(a[:7]) == sorted(a[7:]) == sorted(other[:7]) == sorted(want)
    assert a[:7] != want and a[:7] != a[7:]  # shuffled, and reshuffled in the second epoch


def test_two_process_shards_are_disjoint_and_cover():
    data = _data(num_epochs=1)
    single = _rows(_run(data, b=2, seed=5))
    p0, p1 = (_rows(_run(data, b=2, seed=5, pi=i, pc=2)) for i in (0, 1))
    assert p0 == single[0::2] and p1 == single[1::2]  # interleaved shards of one global order
    assert len(p0) == 4 and len(p1) == 3 and not set(p0) & set(p1)
    assert sorted(p0 + p1) == sorted((tuple(s), tuple(t)) for s, t in WANT)


@pytest.mark.parametrize("pi", [0, 1])
def test_state_round_trip_is_bit_identical(pi):
    data = _data()  # infinite repeat, shuffled every epoch
    tok = train_or_load_tokenizer(data, None)

    def make():
        return iter(build_pipeline(data, tok, batch_size=3, seq_len=T, seed=4, process_index=pi, process_count=2))

    it = make()
    for _ in range(2):  # mid-epoch (a process gets 3 or 4 of the 7 rows per epoch)
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    want = [next(it) for _ in range(8)]  # crosses several epochs
    resumed = make()
    resumed.set_state(state)
    for w in want:
        r = next(resumed)
        assert w.keys() == r.keys()
        for key in w:
            np.testing.assert_array_equal(w[key], r[key])


def test_sentencepiece_is_trained_on_every_text_field(tmp_path):
    data = {"source": "test_pairs_spm", "pairs_source_len": 12, "tokenizer_vocab_size": 300, "num_epochs": 1,
            "shuffle": False}
    tok = train_or_load_tokenizer(data, str(tmp_path))
    assert tok.model_path == str(tmp_path / "tokenizer" / "spm_bpe300.model")
    pieces = {tok.id_to_piece(i) for i in range(tok.vocab_size)}
    assert {"h", "x", "w", "z"} <= pieces  # letters of target-only ("hello", "xyz", "rstuvw") and source texts
    batches = list(build_pipeline(data, tok, batch_size=8, seq_len=T, seed=0, process_index=0, process_count=1))
    src = batches[0]["source"][1]  # ("c", "hello")
    want = np.concatenate([tok.encode("c"), [tok.eos_id]])
    np.testing.assert_array_equal(src[:len(want)], want)
    assert not src[len(want):].any() and tok.decode(batches[0]["target"][1]) == "hello"


def test_pre_tokenized_fields_without_eos():
    def ids_builder(config, split, seq_len, seed):
        return Examples([{"a": [5, 6, 7, 8, 9], "b": np.array([1], np.int32)}, {"a": [4], "b": [3, 3, 3]}],
                        PadFields({"a": 3, "b": None}, eos=False, suffix="_valid"), shuffle=False)

    register_source("test_ids", ids_builder, replace=True)
    (batch,) = list(build_pipeline({"source": "test_ids", "num_epochs": 1}, CharTokenizer(), batch_size=2, seq_len=4,
                                   seed=0, process_index=0, process_count=1))
    np.testing.assert_array_equal(batch["a"], [[5, 6, 7], [4, 0, 0]])
    np.testing.assert_array_equal(batch["a_valid"], [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(batch["b"], [[1, 0, 0, 0], [3, 3, 3, 0]])
    np.testing.assert_array_equal(batch["b_valid"], [[1, 0, 0, 0], [1, 1, 1, 0]])


def test_registry_and_its_errors():
    names = source_names()
    assert names[:4] == ("stdlib", "files", "tfds", "markov") and {"test_pairs", "test_pairs_spm"} <= set(names)
    assert get_source("test_pairs").builder is _pairs_builder
    assert default_data_config().pairs_source_len == 8 and validate_data_config({})["pairs_source_len"] == 8
    with pytest.raises(ValueError, match=r"^data.pairs_source_len: 1; expected an int >= 2$"):
        validate_data_config(_data(pairs_source_len=1))
    validate_data_config({"pairs_source_len": 1})  # another source's key: checked only when it is chosen
    with pytest.raises(ValueError, match=r"^data.source: 'nope'; expected one of \('stdlib', .*'test_pairs'"):
        get_source("nope")
    with pytest.raises(ValueError, match=r"^source name: 'test_pairs'; expected a name not registered yet"):
        register_source("test_pairs", _pairs_builder)
    register_source("test_pairs", _pairs_builder, defaults={"pairs_source_len": 8}, validate=_check_pairs,
                    tokenizer=get_source("test_pairs").tokenizer, replace=True)
    with pytest.raises(ValueError, match=r"^source 'test_x' default of data.per: 'line'; expected 'file', the default "
                                         r"source 'stdlib' declares$"):
        register_source("test_x", _pairs_builder, defaults={"per": "line"})
    with pytest.raises(ValueError, match=r"^source 'test_x' config key: 'shuffle'; expected a key other than"):
        register_source("test_x", _pairs_builder, defaults={"shuffle": False})
    assert "test_x" not in source_names()
    with pytest.raises(ValueError, match=r"^tokenizer: 'MarkovTokenizer'; expected a text tokenizer with an eos_id$"):
        build_pipeline(_data(), train_or_load_tokenizer({"source": "markov"}, None), batch_size=2, seq_len=T, seed=0,
                       process_index=0, process_count=1)
