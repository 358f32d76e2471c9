"""The trainer on the real seams: DiT (dlm_jax.models) + MDLM (registry) + grain Markov pipeline.

Preempt after 2 steps and resume: losses and params bit-identical to a straight 4-step run,
with the grain iterator state restored from the checkpoint.
"""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from dlm_jax.train import loop

pytest.importorskip("grain")


def _config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = ml_collections.ConfigDict(dict(source="markov", markov_vocab=8, seq_len=16,
                                            num_threads=0))
    c.model = ml_collections.ConfigDict(dict(width=32, depth=1, heads=2, cond_dim=16, max_len=32,
                                             conditioning="t"))
    c.method = ml_collections.ConfigDict(dict(name="mdlm", time_conditioning=True))
    c.train = ml_collections.ConfigDict(dict(
        steps=4, batch_size=8, lr=3e-3, warmup_steps=1, schedule="cosine", weight_decay=0.0,
        b1=0.9, b2=0.999, grad_clip=1.0, ema_decay=0.9, microbatches=1, log_every=1))
    c.evals = ml_collections.ConfigDict({"eval": dict(kind="sums", batches=1, every=4)})
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, strategy="dp"))
    c.checkpoint = ml_collections.ConfigDict(dict(every=2, keep=2))
    return c


def _losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}, [r for r in rows if "eval/nelbo" in r]


@pytest.mark.slow
def test_dit_mdlm_markov_resume_is_bit_identical(tmp_path):
    straight = loop.train(_config(), str(tmp_path / "a"))
    ref, evals = _losses(str(tmp_path / "a"))
    assert sorted(ref) == [1, 2, 3, 4] and all(0.5 < v < 4.0 for v in ref.values())
    assert len(evals) == 1 and 0.5 < evals[0]["eval/nelbo"] < 4.0  # nats/token, V = 8

    # Same run, preempted after step 2 (the checkpoint keeps the grain iterator state).
    cfg = _config()
    cfg.train.steps = 4
    part = str(tmp_path / "b")
    import signal

    orig = loop.step_lib.global_batch
    calls = {"n": 0}

    def preempt_on_second(local, mesh):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(local, mesh)

    loop.step_lib.global_batch = preempt_on_second
    try:
        first = loop.train(cfg, part)
    finally:
        loop.step_lib.global_batch = orig
    assert first["preempted"] and first["step"] == 2
    second = loop.train(_config(), part)
    got, _ = _losses(part)
    assert got == ref
    for x, y in zip(jax.tree.leaves(jax.device_get(second["state"])),
                    jax.tree.leaves(jax.device_get(straight["state"]))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
