"""Judges: a tiny random GPT-2 built offline (config.json, numpy safetensors, a tokenizers BPE) scored by
the JAX forward against a float64 numpy GPT-2 written here; windows and EOS rules on exact lists;
transformers parity when torch and transformers are importable; one-line errors."""

import json
import math

import numpy as np
import pytest

from dlm_jax.eval import judges

TEXTS = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n", "import os, sys\n",
         "class A:\n    pass\n", "x = [1, 2, 3]  # list\n"]
D, LAYERS, HEADS, POS = 16, 2, 2, 8


def _tokenizer(path, kind="bpe"):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:  # words only, with an unknown token: cannot encode unseen words
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", "<|endoftext|>"])
    tok.train_from_iterator(TEXTS, trainer)
    tok.save(str(path))
    return tok


def _weights(vocab, seed=0):
    rng = np.random.default_rng(seed)
    w = lambda *s: (0.2 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    p = {"transformer.wte.weight": w(vocab, D), "transformer.wpe.weight": w(POS, D),
         "transformer.ln_f.weight": 1 + w(D), "transformer.ln_f.bias": w(D)}
    for i in range(LAYERS):
        h = f"transformer.h.{i}."
        p.update({h + "ln_1.weight": 1 + w(D), h + "ln_1.bias": w(D), h + "attn.c_attn.weight": w(D, 3 * D),
                  h + "attn.c_attn.bias": w(3 * D), h + "attn.c_proj.weight": w(D, D), h + "attn.c_proj.bias": w(D),
                  h + "ln_2.weight": 1 + w(D), h + "ln_2.bias": w(D), h + "mlp.c_fc.weight": w(D, 4 * D),
                  h + "mlp.c_fc.bias": w(4 * D), h + "mlp.c_proj.weight": w(4 * D, D), h + "mlp.c_proj.bias": w(D),
                  h + "attn.bias": np.tril(np.ones((POS, POS), np.float32))[None, None]})  # old causal buffer
    return p


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("gpt2")
    tok = _tokenizer(folder / "tokenizer.json")
    vocab = tok.get_vocab_size()
    eos = tok.token_to_id("<|endoftext|>")
    (folder / "config.json").write_text(json.dumps(dict(
        model_type="gpt2", n_embd=D, n_layer=LAYERS, n_head=HEADS, n_positions=POS, vocab_size=vocab,
        layer_norm_epsilon=1e-5, activation_function="gelu_new", bos_token_id=eos, eos_token_id=eos)))
    save_file(_weights(vocab), str(folder / "model.safetensors"))
    return folder


def _ln(x, w, b):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b


def numpy_gpt2_logprobs(p, ids):
    """GPT-2 in float64 numpy, one head at a time: log-probs [T, V] for one sequence ``ids``."""
    p = {k.replace("transformer.", ""): v.astype(np.float64) for k, v in p.items()}
    t, hd = len(ids), D // HEADS
    h = p["wte.weight"][ids] + p["wpe.weight"][:t]
    for i in range(LAYERS):
        g = lambda n: p[f"h.{i}.{n}"]  # noqa: E731
        qkv = _ln(h, g("ln_1.weight"), g("ln_1.bias")) @ g("attn.c_attn.weight") + g("attn.c_attn.bias")
        q, k, v = qkv[:, :D], qkv[:, D:2 * D], qkv[:, 2 * D:]
        heads = []
        for j in range(HEADS):
            sl = slice(j * hd, (j + 1) * hd)
            s = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
            s[np.triu_indices(t, 1)] = -np.inf
            a = np.exp(s - s.max(-1, keepdims=True))
            heads.append((a / a.sum(-1, keepdims=True)) @ v[:, sl])
        h = h + np.concatenate(heads, -1) @ g("attn.c_proj.weight") + g("attn.c_proj.bias")
        m = _ln(h, g("ln_2.weight"), g("ln_2.bias")) @ g("mlp.c_fc.weight") + g("mlp.c_fc.bias")
        m = 0.5 * m * (1 + np.tanh(math.sqrt(2 / math.pi) * (m + 0.044715 * m ** 3)))  # gelu_new
        h = h + m @ g("mlp.c_proj.weight") + g("mlp.c_proj.bias")
    logits = _ln(h, p["ln_f.weight"], p["ln_f.bias"]) @ p["wte.weight"].T
    return logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
        logits.max(-1, keepdims=True)


def reference_gen_nll(folder, judge, texts, ended):
    """Σ NLL / Σ tokens by the rules in judges' docstring, with the numpy GPT-2."""
    from safetensors.numpy import load_file

    p = load_file(str(folder / "model.safetensors"))
    total, count = 0.0, 0
    for text, end in zip(texts, ended):
        ids = judge.encode(text) + ([judge.eos_id] if end else [])
        if judge.eos_id in ids:
            ids = ids[: ids.index(judge.eos_id) + 1]
        for s in range(0, len(ids), POS):
            win = ids[s:s + POS]
            lp = numpy_gpt2_logprobs(p, [judge.bos_id] + win[:-1])
            total -= sum(lp[i, tok] for i, tok in enumerate(win))
            count += len(win)
    return total / count, count


def test_windows_and_eos_rules_on_exact_lists(gpt2_dir):
    judge = judges.load_judge(f"hf:{gpt2_dir}")
    e = judge.eos_id
    judge.context = 3
    assert judges.judge_windows([5, 6, 7, 8, 9], judge, ended=False) == [[5, 6, 7], [8, 9]]
    assert judges.judge_windows([5, 6], judge, ended=True) == [[5, 6, e]]
    assert judges.judge_windows([5, e, 7, e, 9], judge, ended=True) == [[5, e]]  # stop at the first EOS
    assert judges.judge_windows([], judge, ended=False) == []


def test_gpt2_gen_nll_matches_numpy_reference(gpt2_dir):
    judge = judges.load_judge(f"hf:{gpt2_dir}")
    assert judge.context == POS and judge.bos_id == judge.eos_id
    texts = ["def add(a, b):\n    return a + b\nimport os\n", "x = [1, 2]", "print(i)<|endoftext|>class A: pass"]
    ended = [False, True, False]
    got = judges.gen_nll(judge, texts, ended, batch_size=4)
    want, count = reference_gen_nll(gpt2_dir, judge, texts, ended)
    assert got["judge_tokens"] == count
    assert got["gen_nll"] == pytest.approx(want, rel=2e-5)
    assert got["gen_ppl"] == pytest.approx(math.exp(want), rel=5e-5)
    # per-sample sums add up, and the batch size does not matter
    assert sum(got["per_sample_nll"]) == pytest.approx(got["gen_nll"] * count, rel=1e-9)
    assert judges.gen_nll(judge, texts, ended, batch_size=1)["gen_nll"] == pytest.approx(got["gen_nll"], rel=1e-6)


def test_transformers_parity(gpt2_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from dlm_jax.eval.hf_gpt2 import gpt2_forward, load_gpt2

    model = transformers.GPT2LMHeadModel.from_pretrained(str(gpt2_dir)).eval()
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, POS))
    with torch.no_grad():
        want = model(torch.tensor(ids)).logits.numpy()
    config, params = load_gpt2(str(gpt2_dir))
    np.testing.assert_allclose(np.asarray(gpt2_forward(params, ids, config)), want, rtol=1e-4, atol=1e-5)


def test_bad_judges_are_one_line(gpt2_dir, tmp_path):
    with pytest.raises(ValueError, match=r"^--judge: 'gpt2'; expected run:<workdir>"):
        judges.load_judge("gpt2")
    with pytest.raises(ValueError, match=r"^--judge: 'pt:/x'; expected run:<workdir> .*prefixes \('hf', 'run'\)"):
        judges.load_judge("pt:/x")
    with pytest.raises(ValueError, match=r"is not a directory$"):
        judges.load_judge(f"hf:{tmp_path}/nowhere")
    with pytest.raises(ValueError, match=r"holds no checkpoints$"):
        judges.load_judge(f"run:{tmp_path}")
    bad = tmp_path / "words"
    bad.mkdir()
    (bad / "config.json").write_text((gpt2_dir / "config.json").read_text())
    (bad / "model.safetensors").write_bytes((gpt2_dir / "model.safetensors").read_bytes())
    _tokenizer(bad / "tokenizer.json", kind="words")
    judge = judges.load_judge(f"hf:{bad}")
    with pytest.raises(ValueError, match=r"^--judge: 'hf:.*words'; expected a judge whose tokenizer encodes the "
                                         r"samples \(sample 1: 'zebra"):
        judges.gen_nll(judge, ["import os", "zebra crossing"])
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match=r"model_type: 'llama'; expected 'gpt2'"):
        judges.load_judge(f"hf:{other}")


def test_ratio_standard_error():
    rng = np.random.default_rng(0)
    per = rng.normal(5.0, 1.0, 40)
    # equal token counts: the standard error of the mean of the per-sample means
    assert judges.ratio_standard_error(per * 7, np.full(40, 7)) == pytest.approx(per.std(ddof=1) / math.sqrt(40),
                                                                                 rel=1e-12)
    assert math.isnan(judges.ratio_standard_error([3.0], [2])) and math.isnan(judges.ratio_standard_error([0, 0], [0, 0]))
    # unequal counts: matches the spread of Σs/Σc over repeated draws of 64 samples (5,000 draws)
    counts = rng.integers(5, 60, size=(5000, 64))
    sums = counts * 4.0 + rng.normal(0, 1, counts.shape) * np.sqrt(counts) * 2.0
    ratios = sums.sum(1) / counts.sum(1)
    ses = [judges.ratio_standard_error(s, c) for s, c in zip(sums[:500], counts[:500])]
    assert np.mean(ses) == pytest.approx(ratios.std(), rel=0.05)


def test_paired_difference_uses_the_pairing():
    rng = np.random.default_rng(1)
    counts = rng.integers(20, 40, size=(4000, 32))
    shared = rng.normal(0, 1, counts.shape) * np.sqrt(counts) * 3.0  # the seed's own difficulty, in both rows
    a = counts * 5.0 + shared + rng.normal(0, 1, counts.shape) * np.sqrt(counts) * 0.5
    b = counts * 4.9 + shared + rng.normal(0, 1, counts.shape) * np.sqrt(counts) * 0.5
    diffs = a.sum(1) / counts.sum(1) - b.sum(1) / counts.sum(1)
    got = [judges.paired_difference(x, c, y, c) for x, y, c in zip(a[:400], b[:400], counts[:400])]
    assert got[0][0] == pytest.approx(diffs[0], rel=1e-12)
    assert np.mean([se for _, se in got]) == pytest.approx(diffs.std(), rel=0.06)  # the spread over redraws
    unpaired = np.hypot(judges.ratio_standard_error(a[0], counts[0]), judges.ratio_standard_error(b[0], counts[0]))
    assert got[0][1] < 0.3 * unpaired  # the shared part cancels
    with pytest.raises(ValueError, match="one sum and one count per seed"):
        judges.paired_difference([1.0, 2.0], [1, 1], [1.0], [1])
