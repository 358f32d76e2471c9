"""The fastdiss presets and the ``translate`` command: the paper presets carry §3.2-3.3's
hyperparameters, the inverse-sqrt schedule's values, source encoding, and a 2-step tiny run
translated from stdin equals the method's own ``sample`` on the same batch and key."""

import io
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _preset(name):
    from dlm_jax import config_blocks

    return config_blocks.sibling(os.path.join(ROOT, "configs", "x.py"), "fastdiss.py", name)


def test_paper_presets_and_inverse_sqrt_schedule():
    from dlm_jax.train import optim

    for name, dim, heads, ratio in (("wmt14", 64, 8, 4), ("iwslt14", 16, 4, 2)):
        c = _preset(name)
        assert (c.model.enc_depth, c.model.dec_depth, c.model.width, c.model.heads, c.model.mlp_ratio) == (
            6, 6, 512, heads, ratio)
        assert c.method.dim == dim and c.method.scp and c.method.mans
        assert tuple(c.method.beta_phases) == (100_000, 200_000) and tuple(c.method.mans_betas) == (2.0, 3.0, 4.0)
        t = c.train
        assert (t.b1, t.b2, t.lr, t.warmup_steps, t.schedule, t.weight_decay) == (0.9, 0.98, 5e-4, 4000,
                                                                                   "inverse_sqrt", 0.01)
    sched = optim.make_schedule(ml_collections.ConfigDict(dict(lr=5e-4, schedule="inverse_sqrt", warmup_steps=4000)))
    np.testing.assert_allclose([float(sched(n)) for n in (0, 1000, 4000, 16000, 64000)],
                               [0.0, 1.25e-4, 5e-4, 2.5e-4, 1.25e-4], rtol=1e-6)


def test_encode_sources_and_overlong_source():
    from dlm_jax.cli_translate import encode_sources
    from dlm_jax.data.seq2seq_sources import SymbolTokenizer

    ids, mask = encode_sources(["3 0 5", "1"], SymbolTokenizer(6), 5)
    np.testing.assert_array_equal(ids, [[7, 4, 9, 2, 0], [5, 2, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"^source: 'line 2: 6 tokens'; expected <= data.source_len=5"):
        encode_sources(["1", "1 2 3 4 5"], SymbolTokenizer(6), 5)


@pytest.mark.slow
def test_translate_a_trained_tiny_run(tmp_path):
    from dlm_jax import runs
    from dlm_jax.cli_translate import encode_sources, translate_command
    from dlm_jax.train import loop

    config = _preset("tiny")
    config.train.steps = 2
    config.checkpoint.every = 2
    config.evals = ml_collections.ConfigDict()
    workdir = str(tmp_path / "run")
    loop.train(config, workdir)
    out = io.StringIO()
    lines = ["3 0 5", "1 1 2", "4 2 0 1"]
    hyps = translate_command(workdir, ["2"], stdin=io.StringIO("\n".join(lines) + "\n"), stdout=out, seed=3,
                             batch_size=8)
    assert out.getvalue() == "".join(h + "\n" for h in hyps) and len(hyps) == 3
    run = runs.load_run(workdir)
    ids, mask = encode_sources(lines, run.tokenizer, 8)
    with jax.set_mesh(run.mesh):
        tokens, info = jax.jit(lambda p, k: run.method.sample(p, k, steps=2, source=jnp.asarray(ids),
                                                              source_mask=jnp.asarray(mask)))(
            run.params, jax.random.fold_in(jax.random.key(3), 0))
    want = [run.tokenizer.decode(r[:np.flatnonzero(r == 2)[0]] if (r == 2).any() else r)
            for r in np.asarray(tokens)]
    assert hyps == want and int(info["nfe"]) == 2
    with pytest.raises(ValueError, match=r"^--steps: '2,5'; expected one step count K for translate$"):
        translate_command(workdir, ["2", "5"], stdin=io.StringIO("1\n"))
