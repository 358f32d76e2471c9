"""A non-finite loss never replaces a good state: the step is skipped (state unchanged, counted in
the metrics as ``skipped``), ``max_nonfinite_steps`` in a row halt the run with one line, and every
checkpoint written is finite. Faults are injected through the tiny method's ``nan_steps``."""

import json
import os

import jax
import numpy as np
import pytest

import _tiny
from dlm_jax.runs import load_params
from dlm_jax.train import loop


def _rows(workdir):
    return {r["step"]: r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if "loss" in r}


def _params(workdir, step):
    return [np.asarray(x) for x in jax.tree.leaves(load_params(workdir, step=step).params)]


def test_nonfinite_steps_are_skipped_and_logged(tmp_path):
    cfg = _tiny.tiny_config()
    cfg.method.nan_steps = (1, 2)  # state.step 1 and 2 = logged steps 2 and 3
    cfg.checkpoint.update(every=1, keep=10)
    workdir = str(tmp_path)
    out = loop.train(cfg, workdir, data_fn=_tiny.build_data)
    assert out["step"] == 6
    rows = _rows(workdir)
    assert [rows[s]["skipped"] for s in range(1, 7)] == [0, 1, 1, 0, 0, 0]
    assert rows[2]["loss"] is None and rows[3]["loss"] is None and rows[4]["loss"] > 0
    for a, b in zip(_params(workdir, 1), _params(workdir, 3)):
        np.testing.assert_array_equal(a, b)  # the skipped steps changed nothing
    assert any(not np.array_equal(a, b) for a, b in zip(_params(workdir, 3), _params(workdir, 4)))
    text = open(os.path.join(workdir, "metrics.jsonl")).read()
    assert "NaN" not in text and "Infinity" not in text  # valid JSON


def test_a_streak_of_nonfinite_steps_halts_with_one_line_and_keeps_good_checkpoints(tmp_path):
    cfg = _tiny.tiny_config(max_nonfinite_steps=3)
    cfg.method.nan_steps = (2, 3, 4, 5)
    cfg.checkpoint.update(every=2, keep=5)
    workdir = str(tmp_path)
    with pytest.raises(ValueError, match=r"^train.max_nonfinite_steps: 3; exceeded: steps 3\.\.5 ") as e:
        loop.train(cfg, workdir, data_fn=_tiny.build_data)
    assert "\n" not in str(e.value)
    saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert saved == [2, 4]
    good = _params(workdir, 2)
    for a, b in zip(good, _params(workdir, 4)):
        np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(a).all() for a in good)
