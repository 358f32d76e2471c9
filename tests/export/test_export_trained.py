"""A run trained here (the real trainer, 2 steps) → export → import: raw and EMA params bit for bit, and the
imported workdir serves ``load_run`` sampling and ``init_from`` exactly like the original."""

import jax
import ml_collections
import numpy as np
import pytest

from dlm_jax.export import exporter, importer
from dlm_jax.export.params import flatten
from dlm_jax.runs import init_from, load_params, load_run

pytest.importorskip("grain")


def _config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = ml_collections.ConfigDict(dict(source="markov", markov_vocab=8, seq_len=16, num_threads=0))
    c.model = ml_collections.ConfigDict(dict(width=32, depth=1, heads=2, cond_dim=16, max_len=16,
                                             conditioning="none"))
    c.method = ml_collections.ConfigDict(dict(name="mdlm"))
    c.train = ml_collections.ConfigDict(dict(
        steps=2, batch_size=8, lr=3e-3, warmup_steps=1, schedule="cosine", weight_decay=0.0,
        b1=0.9, b2=0.999, grad_clip=1.0, ema_decay=0.5, microbatches=1, log_every=1))
    c.evals = ml_collections.ConfigDict({"eval": dict(kind="sums", batches=1, every=0)})
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, strategy="dp"))
    c.checkpoint = ml_collections.ConfigDict(dict(every=2, keep=1))
    return c


pytestmark = pytest.mark.slow  # one real 2-step training run (~40 s of compiling on 2 cores), shared


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from dlm_jax.train import loop

    workdir = str(tmp_path_factory.mktemp("trained") / "run")
    loop.train(_config(), workdir)
    return workdir


def _same(a, b):
    fa, fb = flatten(a), flatten(b)
    return sorted(fa) == sorted(fb) and all(np.array_equal(fa[k], fb[k]) for k in fa)


@pytest.mark.parametrize("fmt", ["dlm_jax", "mdlm"])
def test_trained_run_round_trips_bit_exact(trained, tmp_path, fmt):
    raw, ema = load_params(trained), load_params(trained, weights="ema")
    assert not _same(raw.params, ema.params)  # two steps with EMA 0.5: they differ
    for weights, ref in (("params", raw), ("ema", ema)):
        out, wd = str(tmp_path / f"{fmt}_{weights}"), str(tmp_path / f"wd_{weights}")
        exporter.export_run(trained, fmt, out, ema=weights == "ema")
        summary = importer.import_checkpoint(out, fmt, wd)
        assert _same(load_params(wd).params, ref.params)
        if fmt == "dlm_jax":
            assert summary["step"] == 2 and load_params(wd).config.train.to_dict() == raw.config.train.to_dict()


def test_imported_run_samples_and_initialises_like_the_original(trained, tmp_path):
    out, wd = str(tmp_path / "mdlm"), str(tmp_path / "wd")
    exporter.export_run(trained, "mdlm", out)
    importer.import_checkpoint(out, "mdlm", wd, seq_len=16)
    a, b = load_run(trained), load_run(wd)
    key = jax.random.key(3)
    ta, _ = a.method.sample(a.params, key, num_samples=3, steps=4, sampler="mdlm")
    tb, _ = b.method.sample(b.params, key, num_samples=3, steps=4, sampler="mdlm")
    assert np.array_equal(np.asarray(ta), np.asarray(tb)) and b.tokenizer.vocab_size == 8

    cfg = _config()
    cfg.model.vocab_size = 8
    cfg.init_from = init_from.init_from_config(workdir=wd)
    from dlm_jax.runs.workdir import build_model

    init_params, inputs = init_from.initializer(cfg, build_model(cfg), b.mesh)
    assert _same(init_params(inputs), a.params)


def test_parity_on_the_runs_own_data(trained):
    """``check-parity --inputs text``: the run's validation data through its pipeline, masked per row."""
    pytest.importorskip("torch")
    from dlm_jax.export import parity

    fig = parity.check_parity(trained, fmt="mdlm", inputs="text", num_sequences=4, length=16)
    assert fig["passes"] and fig["inputs"] == "text" and fig["positions"] == 64
    assert fig["max_abs"] < 5e-5 and fig["top1"] == 1.0
