"""The sampled-quality run: per-example seeds (results do not move with batch size), the run judge's
gen-NLL against the AR method's exact sums, `eval --metrics` end to end (JSON + PNG), one-line errors
before sampling. Runs are written directly (random tiny params + a small sentencepiece model), not
trained, to keep this fast."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dlm_jax.eval import judges, quality_run
from dlm_jax.methods.base import build_method
from dlm_jax.testing.oracles import MarkovChainLanguage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
V, L = 4, 6
V_TOK = 400


def markov_mdlm_apply(lang):
    """MDLM's apply seam on the exact chain: logits [B, L, V+1] = log p(x^l | unmasked z), mask logit -inf."""
    def apply(params, z, cond, **_):
        lp = jnp.log(lang.masked_posteriors(z, V))
        return jnp.concatenate([lp, jnp.full(lp.shape[:-1] + (1,), -jnp.inf)], -1)

    return apply


def test_per_example_seeds_do_not_move_with_batch_size(sampler="mdlm"):
    lang = MarkovChainLanguage.random(0, V, L)
    config = ml_collections.ConfigDict({"model": {"vocab_size": V}, "data": {"seq_len": L}, "method": {"name": "mdlm"}})
    method = build_method(config, markov_mdlm_apply(lang))
    runs = {b: quality_run.sample_tokens(method, None, steps=4, sampler=sampler, num_samples=5, seed=3, batch_size=b)
            for b in (1, 3)}  # 3: chunks of 3 and 2 (the last one padded)
    np.testing.assert_array_equal(runs[3][0], runs[1][0])
    np.testing.assert_array_equal(runs[3][1], runs[1][1])
    assert runs[1][0].shape == (5, L) and len(set(map(tuple, runs[1][0]))) > 1


def _tokenizer(folder):
    from dlm_jax.data.sources import stdlib_paths
    from dlm_jax.data.tokenizer import train_sentencepiece

    texts = [open(p).read() for p in stdlib_paths("all")[:10]]
    return train_sentencepiece(texts, str(folder / "spm.model"), vocab_size=V_TOK, max_chars=50_000)


def _write_run(workdir, method, tok_path, seed):
    """A tiny stdlib run with random (perturbed) params, saved as the trainer saves one."""
    import sys as _sys

    _sys.path.insert(0, ROOT)
    from configs.demo import get_config as demo_config
    from dlm_jax.runs.checkpoint import Checkpointer
    from dlm_jax.runs.workdir import build_model

    config = demo_config("tiny")
    config.data.tokenizer_path, config.data.tokenizer_vocab_size, config.data.seq_len = tok_path, V_TOK, 16
    config.model.update(dict(width=16, depth=1, heads=2, cond_dim=8, max_len=16))
    config.sample.steps = (2,)
    if method == "ar":
        config.method = ml_collections.ConfigDict({"name": "ar"})
        config.model.causal = True
        config.sample.sampler = None
    model = build_model(config)
    build_method(config, model.apply, inputs={})
    params = model.init(jax.random.key(seed))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    ck = Checkpointer(workdir, every=1, keep=1, async_save=False)
    ck.save(1, {"step": jnp.asarray(1, jnp.int32), "params": params, "ema_params": params}, None, config)
    ck.close()
    return workdir


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    tok = _tokenizer(root)
    return (_write_run(str(root / "mdlm"), "mdlm", tok.model_path, 0), _write_run(str(root / "ar"), "ar",
                                                                                  tok.model_path, 5), root)


def test_run_judge_gen_nll_is_the_ar_exact_nll(runs_dir):
    from dlm_jax.runs import load_run

    _, ar_dir, _ = runs_dir
    judge = judges.load_judge(f"run:{ar_dir}")
    run = load_run(ar_dir)
    texts = ["import os\n", "def f(x):\n    return x + 1\n# a much longer line that needs two windows"]
    got = judges.gen_nll(judge, texts, [True, False], batch_size=2)
    total, count = 0.0, 0
    for text, end in zip(texts, [True, False]):
        ids = list(run.tokenizer.encode(text)) + ([run.tokenizer.eos_id] if end else [])
        for s in range(0, len(ids), 16):  # windows of the AR run's seq_len, each from BOS
            win = np.zeros((1, 16), np.int32)
            win[0, : len(ids[s:s + 16])] = ids[s:s + 16]
            mask = (np.arange(16) < len(ids[s:s + 16]))[None].astype(np.float32)
            sums = run.method.evaluate(run.params, {"tokens": win, "loss_mask": mask}, jax.random.key(0))
            total, count = total + float(sums["nll_sum"]), count + int(mask.sum())
    assert got["judge_tokens"] == count and count > 16
    assert got["gen_nll"] == pytest.approx(total / count, rel=1e-5)


def cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return subprocess.run([sys.executable, "-m", "dlm_jax", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_eval_metrics_end_to_end(runs_dir):
    mdlm_dir, ar_dir, root = runs_dir
    out = str(root / "result.json")
    res = cli("eval", "--workdir", mdlm_dir, "--steps", "2,4", "--sampler", "mdlm", "--metrics",
              "gen_ppl,entropy,distinct,repetition", "--judge", f"run:{ar_dir}", "--num-samples", "3",
              "--batch-size", "2", "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.load(open(out))
    assert [r["steps"] for r in result["rows"]] == [2, 4] and [r["nfe_max"] for r in result["rows"]] == [3, 5]  # + the final denoising call
    for r in result["rows"]:
        assert 0 < r["gen_nll"] < 20 and r["gen_ppl"] == pytest.approx(np.exp(r["gen_nll"]), rel=1e-9)
        assert len(r["per_sample_nll"]) == 3 and sum(r["per_sample_tokens"]) == r["judge_tokens"]
        assert sum(r["per_sample_nll"]) == pytest.approx(r["gen_nll"] * r["judge_tokens"], rel=1e-9)
        assert r["gen_nll_se"] == pytest.approx(judges.ratio_standard_error(r["per_sample_nll"], r["per_sample_tokens"]))
        assert 0 < r["unigram_entropy"] <= np.log(16) + 1e-9 and 0 <= r["repetition_4"] <= 1 and 0 < r["distinct_4"] <= 1
        assert r["seconds"] > 0
    assert result["sampler"] == "mdlm" and result["judge"] == f"run:{ar_dir}" and len(result["git_sha"]) >= 7
    assert "jax" in result["versions"] and result["config"]["method"]["name"] == "mdlm"
    assert os.path.getsize(str(root / "result.png")) > 1000
    assert "gen_ppl" in res.stdout


def test_bad_requests_fail_before_sampling(runs_dir, tmp_path):
    mdlm_dir, ar_dir, _ = runs_dir
    with pytest.raises(ValueError, match=r"^--metrics: 'bleu'; expected one of \('distinct', 'entropy', 'exact_nll', "
                                         r"'gen_ppl', 'mauve', 'repetition'\)$"):
        quality_run.check_request(["entropy", "bleu"], None, 8)
    with pytest.raises(ValueError, match=r"^--judge: None; expected a judge for \['gen_ppl'\]"):
        quality_run.check_request(["gen_ppl"], None, 8)
    with pytest.raises(ValueError, match=r"^--judge: 'gpt2:x'; expected run:<workdir>"):
        quality_run.check_request(["entropy"], "gpt2:x", 8)
    with pytest.raises(ValueError, match=r"^--num-samples: 8; expected >= 20 for mauve"):
        quality_run.check_request(["mauve"], f"run:{ar_dir}", 8)
    if quality_run.importlib.util.find_spec("mauve") is None:
        with pytest.raises(ValueError, match=r"^--metrics: 'mauve'; expected .*pip install dlm_jax\[mauve\]"):
            quality_run.check_request(["mauve"], f"run:{ar_dir}", 40)
    with pytest.raises(ValueError, match=r"^--metrics: 'exact_nll'; expected a run on the Markov language"):
        quality_run.check_request(["exact_nll"], None, 4, ml_collections.ConfigDict({"data": {"source": "stdlib"}}))
    with pytest.raises(ValueError, match=r"^--judge: 'run:.*mdlm'; expected an 'ar' run \(this one is method 'mdlm'\)"):
        judges.load_judge(f"run:{mdlm_dir}")
    res = cli("eval", "--workdir", mdlm_dir, "--metrics", "gen_ppl,nope", "--judge", f"run:{ar_dir}")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: --metrics: 'nope'; expected one of ('distinct', 'entropy', 'exact_nll', 'gen_ppl', 'mauve', "
        "'repetition')"]
