"""Schedules, AdamW step, clipping and EMA against closed forms."""

import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dlm_jax.train import optim


def _cfg(**kw):
    base = dict(lr=1e-2, schedule="cosine", warmup_steps=10, final_lr_frac=0.1, steps=110,
                b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0, grad_clip=0.0, ema_decay=0.5)
    return ml_collections.ConfigDict({**base, **kw})


def test_warmup_cosine_values():
    s = optim.make_schedule(_cfg())
    assert float(s(0)) == 0.0
    np.testing.assert_allclose(float(s(5)), 5e-3, rtol=1e-6)
    np.testing.assert_allclose(float(s(10)), 1e-2, rtol=1e-6)
    # Halfway through the cosine part: final + (peak - final) * (1 + cos(pi/2)) / 2.
    np.testing.assert_allclose(float(s(60)), 1e-3 + 9e-3 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(s(110)), 1e-3, rtol=1e-6)
    c = optim.make_schedule(_cfg(schedule="constant", warmup_steps=4))
    np.testing.assert_allclose([float(c(i)) for i in (0, 2, 4, 100)], [0, 5e-3, 1e-2, 1e-2], rtol=1e-6)


def test_first_adamw_step_is_sign_times_lr_and_clip_applies():
    cfg = _cfg(schedule="constant", warmup_steps=0, grad_clip=1.0)
    tx = optim.make_optimizer(cfg)
    params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
    grads = {"w": jnp.full((2, 2), 3.0), "b": jnp.array([4.0, -4.0])}
    upd, _ = tx.update(grads, tx.init(params), params)
    # After clipping the direction is unchanged; Adam's first step is -lr * g / (|g| + eps').
    np.testing.assert_allclose(np.asarray(upd["w"]), -1e-2, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(upd["b"]), [-1e-2, 1e-2], rtol=1e-5)


def test_weight_decay_only_on_matrices():
    tx = optim.make_optimizer(_cfg(schedule="constant", warmup_steps=0, weight_decay=0.5))
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    zero = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    upd, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(upd["w"]), -1e-2 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(upd["b"]), 0.0)


def test_ema_update():
    ema = optim.ema_update({"a": jnp.array(2.0)}, {"a": jnp.array(4.0)}, 0.75)
    assert math.isclose(float(ema["a"]), 2.5)


@pytest.mark.parametrize("key, value, match", [
    ("schedule", "linear", r"^train.schedule: 'linear'; expected one of \('cosine', 'constant', 'inverse_sqrt'\)$"),
    ("lr", 0.0, r"^train.lr: 0.0; expected a finite number in \(0.0, inf\)$"),
    ("lr", float("inf"), r"^train.lr: inf; expected a finite number in \(0.0, inf\)$"),
    ("lr", float("nan"), r"^train.lr: nan; expected a finite number"),
    ("ema_decay", 1.0, r"^train.ema_decay: 1.0; expected a finite number in \[0.0, 1.0\)$"),
    ("b2", 1.5, r"^train.b2: 1.5; expected a finite number in \[0.0, 1.0\)$"),
])
def test_bad_values(key, value, match):
    with pytest.raises(ValueError, match=match):
        optim.make_optimizer(_cfg(**{key: value}))
