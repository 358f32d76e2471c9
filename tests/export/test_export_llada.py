"""The LLaDA layout without torch: HF directory → workdir → HF directory bit for bit, a numpy forward on the
HF keys against the imported JAX model (checkpoint ids, mask inside the vocabulary), sampling the imported
run with the LLaDA and FeF samplers, and configs the model cannot express refused."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.export import exporter, files, importer, llada_layout
from dlm_jax.models import llada
from dlm_jax.runs import load_params, load_run

F = dict(vocab_size=12, width=16, depth=2, heads=4, kv_heads=2, mlp_dim=24, max_len=16, rope_theta=500000.0,
         norm_eps=1e-5, mask_token_id=7)


def _hf_dir(path, seed=0, config_edit=None):
    rng = np.random.default_rng(seed)
    flat = {k: (0.4 * rng.standard_normal(s)).astype(np.float32) for k, s in llada_layout.llada_shapes(F).items()}
    for k in flat:
        if k.endswith("scale"):
            flat[k] = 1.0 + flat[k]
    ckpt = files.Checkpoint("llada", dict(F), 11, llada_layout.llada_method(), flat)
    os.makedirs(path)
    llada_layout.write_llada(ckpt, str(path), max_shard_bytes=6000)
    if config_edit:
        c = json.load(open(os.path.join(path, "config.json")))
        config_edit(c)
        json.dump(c, open(os.path.join(path, "config.json"), "w"))
    return flat


def _numpy_hf_forward(sd, ids):
    """LLaDA on its HF keys, float64: nn.Linear weights [out, in], RMSNorm, rotate-half rope θ = 5e5, SwiGLU."""
    g = {k[len("model.transformer."):]: np.asarray(v, np.float64) for k, v in sd.items()}
    rms = lambda x, w: x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * w  # noqa: E731
    h, kvh, d = F["heads"], F["kv_heads"], F["width"] // F["heads"]

    def rope(x):
        ang = np.arange(x.shape[1])[:, None] / 500000.0 ** (np.arange(0, d, 2) / d)[None]
        c, s = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
        return np.concatenate([x[..., :d // 2] * c - x[..., d // 2:] * s, x[..., d // 2:] * c + x[..., :d // 2] * s], -1)

    x = g["wte.weight"][ids]
    b_, length = ids.shape
    for i in range(F["depth"]):
        w = lambda k: g[f"blocks.{i}.{k}.weight"]  # noqa: E731
        n = rms(x, w("attn_norm"))
        q = rope((n @ w("q_proj").T).reshape(b_, length, h, d))
        k = np.repeat(rope((n @ w("k_proj").T).reshape(b_, length, kvh, d)), h // kvh, 2)
        v = np.repeat((n @ w("v_proj").T).reshape(b_, length, kvh, d), h // kvh, 2)
        s = np.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(d)
        a = np.exp(s - s.max(-1, keepdims=True))
        o = np.einsum("bhlm,bmhd->blhd", a / a.sum(-1, keepdims=True), v).reshape(b_, length, -1)
        x = x + o @ w("attn_out").T
        m = rms(x, w("ff_norm"))
        gate = m @ w("ff_proj").T
        x = x + (gate / (1 + np.exp(-gate)) * (m @ w("up_proj").T)) @ w("ff_out").T
    return rms(x, g["ln_f.weight"]) @ g["ff_out.weight"].T


def test_llada_layout_round_trip_parity_and_sampling(tmp_path):
    src = tmp_path / "hf"
    _hf_dir(src)
    assert os.path.isfile(src / files.INDEX_NAME)
    summary = importer.import_checkpoint(str(src), "llada", str(tmp_path / "wd"), seq_len=8)
    assert summary["model"] == "llada" and summary["vocab_size"] == 11 and summary["method"] == "mdlm"
    loaded = load_params(str(tmp_path / "wd"))
    assert loaded.config.model.mask_token_id == 7 and loaded.config.method.schedule == "linear"

    ckpt_ids = np.random.default_rng(1).integers(0, 12, (2, 9))
    ckpt_ids[:, ::3] = 7  # the checkpoint's mask id
    ours = llada.checkpoint_to_dlm_ids(ckpt_ids, 12, 7)
    got = llada.logits_to_checkpoint_order(np.asarray(jax.jit(loaded.apply)(loaded.params, jnp.asarray(ours))), 7)
    ref = _numpy_hf_forward(files.read_weights_dir(str(src)), ckpt_ids)
    assert np.abs(got - ref).max() < 2e-5, np.abs(got - ref).max()

    run = load_run(str(tmp_path / "wd"))
    for sampler in ("llada", "fef"):
        tokens, info = run.method.sample(run.params, jax.random.key(0), num_samples=2, steps=4, sampler=sampler)
        assert np.asarray(tokens).shape == (2, 8) and np.asarray(tokens).max() < 11, sampler

    exporter.export_run(str(tmp_path / "wd"), "llada", str(tmp_path / "out"), max_shard_bytes=6000)
    a, b = files.read_weights_dir(str(src)), files.read_weights_dir(str(tmp_path / "out"))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert json.load(open(src / "config.json")) == json.load(open(tmp_path / "out" / "config.json"))


@pytest.mark.parametrize("edit,match", [
    ({"include_bias": True}, "include_bias: True; expected False"),
    ({"weight_tying": True}, "weight_tying: True"),
    ({"block_type": "sequential"}, "block_type: 'sequential'"),
    ({"layer_norm_type": "default"}, "layer_norm_type"),
    ({"activation_type": "gelu"}, "activation_type: 'gelu'"),
    ({"n_kv_heads": 3}, "n_heads: 4"),
    ({"mask_token_id": 12}, "mask_token_id: 12"),
    ({"d_model": 32}, "expected shape"),
])
def test_configs_the_model_cannot_express_are_refused(tmp_path, edit, match):
    src = tmp_path / "hf"
    _hf_dir(src, config_edit=lambda c: c.update(edit))
    with pytest.raises(ValueError, match=match) as e:
        importer.import_checkpoint(str(src), "llada", str(tmp_path / "wd"))
    assert "\n" not in str(e.value) and not (tmp_path / "wd").exists()
