"""``export --dtype bfloat16``: the PyTorch layouts' tensors become bfloat16 (round to nearest even,
config.json says so), importing casts them back to float32 exactly, and the own layout refuses it."""

import json
import os

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open

import _export_helpers as H
from dlm_jax.export import dit_formats, exporter, importer
from dlm_jax.export.params import flatten
from dlm_jax.runs import load_params


def _run(tmp_path):
    src = tmp_path / "mdlm"
    src.mkdir()
    dit_formats.write_mdlm(H.checkpoint(H.fields("none"), dit_formats.mdlm_method(False), seed=1), str(src))
    wd = str(tmp_path / "wd")
    importer.import_checkpoint(str(src), "mdlm", wd)
    return wd


def test_bfloat16_export_rounds_each_tensor_and_imports_back_exactly(tmp_path):
    wd = _run(tmp_path)
    f32, b16 = str(tmp_path / "f32"), str(tmp_path / "b16")
    exporter.export_run(wd, "mdlm", f32)
    summary = exporter.export_run(wd, "mdlm", b16, dtype="bfloat16")
    assert summary["dtype"] == "bfloat16"
    assert json.load(open(os.path.join(b16, "config.json")))["torch_dtype"] == "bfloat16"
    with safe_open(os.path.join(f32, "model.safetensors"), "numpy") as a, \
            safe_open(os.path.join(b16, "model.safetensors"), "numpy") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        for k in a.keys():
            x, y = a.get_tensor(k), b.get_tensor(k)
            if k.endswith("rotary_emb.inv_freq"):  # a buffer the writer adds, kept float32
                np.testing.assert_array_equal(y, x)
                continue
            assert y.dtype == ml_dtypes.bfloat16
            np.testing.assert_array_equal(y, x.astype(ml_dtypes.bfloat16))
    assert os.path.getsize(os.path.join(b16, "model.safetensors")) < 0.6 * os.path.getsize(
        os.path.join(f32, "model.safetensors"))
    back = str(tmp_path / "back")
    importer.import_checkpoint(b16, "mdlm", back)
    orig, got = flatten(load_params(wd).params), flatten(load_params(back).params)
    for k, x in orig.items():
        assert got[k].dtype == np.float32
        np.testing.assert_array_equal(got[k], x.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_bfloat16_is_refused_for_the_own_layout_and_unknown_dtypes(tmp_path):
    wd = _run(tmp_path)
    with pytest.raises(ValueError, match=r"^--dtype: 'bfloat16'; expected float32 for format 'dlm_jax'"):
        exporter.export_run(wd, "dlm_jax", str(tmp_path / "own"), dtype="bfloat16")
    with pytest.raises(ValueError, match=r"^--dtype: 'float16'; expected one of"):
        exporter.export_run(wd, "mdlm", str(tmp_path / "x"), dtype="float16")
    assert not (tmp_path / "own").exists() and not (tmp_path / "x").exists()
