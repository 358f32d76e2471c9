"""Layouts without torch (runs in every CI): MDLM / FS-DFM (safetensors container) / own round trips bit
for bit, sharding, a numpy forward of the MDLM layout against the imported JAX model, refusals."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import _export_helpers as H
from dlm_jax.export import dit_formats, dit_layout, exporter, files, importer
from dlm_jax.export.params import abstract_names, flatten
from dlm_jax.models.registry import ModelSpec, build
from dlm_jax.runs import load_params, load_run, read_config


def _equal_tensors(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("conditioning", ["none", "t", "th"])
def test_layout_shapes_are_the_dits(conditioning):
    """The numpy formula behind every layout equals the DiT's own param tree."""
    f = H.fields(conditioning)
    model_cfg = {k: v for k, v in f.items() if k not in ("vocab_size", "num_classes")}
    spec = ModelSpec(num_outputs=9, num_input_ids=9, conditioning=conditioning)
    model = build(ml_collections.ConfigDict({"model": dict(model_cfg, name="dit")}), spec)
    want = {k: tuple(v.shape) for k, v in abstract_names(model).items()}
    assert dit_layout.own_shapes(f) == want


def test_mdlm_sharded_import_export_is_bit_exact(tmp_path):
    f = H.fields("none")
    src = tmp_path / "mdlm"
    src.mkdir()
    dit_formats.write_mdlm(H.checkpoint(f, dit_formats.mdlm_method(False)), str(src), max_shard_bytes=4000)
    index = json.load(open(src / files.INDEX_NAME))
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and index["metadata"]["total_size"] == sum(
        v.nbytes for v in files.read_weights_dir(str(src)).values())
    config = json.load(open(src / "config.json"))
    assert config["model_type"] == "mdlm" and config["vocab_size"] == 9 and config["auto_map"]["AutoConfig"]

    summary = importer.import_checkpoint(str(src), "mdlm", str(tmp_path / "wd"))
    assert summary["vocab_size"] == 8 and summary["method"] == "mdlm"
    loaded = load_params(str(tmp_path / "wd"))
    assert loaded.config.model.conditioning == "none" and loaded.config.method.time_conditioning is False
    ckpt = H.checkpoint(f, {})
    assert _equal_tensors(flatten(loaded.params), ckpt.params)  # bit for bit through Orbax
    assert _equal_tensors(flatten(load_params(str(tmp_path / "wd"), weights="ema").params), ckpt.params)

    exporter.export_run(str(tmp_path / "wd"), "mdlm", str(tmp_path / "out"), max_shard_bytes=4000)
    assert _equal_tensors(files.read_weights_dir(str(src)), files.read_weights_dir(str(tmp_path / "out")))
    assert json.load(open(tmp_path / "out" / "config.json")) == config


def test_own_layout_round_trip_keeps_params_ema_and_config(tmp_path):
    f = H.fields("t")
    src = tmp_path / "mdlm"
    src.mkdir()
    dit_formats.write_mdlm(H.checkpoint(f, dit_formats.mdlm_method(True), seed=3), str(src))
    importer.import_checkpoint(str(src), "mdlm", str(tmp_path / "a"), seq_len=8)
    exporter.export_run(str(tmp_path / "a"), "dlm_jax", str(tmp_path / "own"), max_shard_bytes=5000)
    own = json.load(open(tmp_path / "own" / "config.json"))
    assert own["format"] == "dlm_jax" and own["model_name"] == "dit" and own["vocab_size"] == 8
    assert os.path.isfile(tmp_path / "own" / files.INDEX_NAME)
    importer.import_checkpoint(str(tmp_path / "own"), "dlm_jax", str(tmp_path / "b"))
    for weights in ("params", "ema"):
        a, b = (flatten(load_params(str(tmp_path / d), weights=weights).params) for d in "ab")
        assert _equal_tensors(a, b)
    ca, cb = (read_config(str(tmp_path / d))[0].to_dict() for d in "ab")
    for c in (ca, cb):
        c.pop("workdir"), c.pop("imported")
    assert ca == cb and ca["data"]["seq_len"] == 8 and ca["method"]["time_input"] == "sigma"


@pytest.mark.parametrize("role,source", [("teacher", "mask"), ("student", "uniform")])
def test_fsdfm_container_round_trip(tmp_path, role, source):
    f = H.fields("t" if role == "teacher" else "th")
    ckpt = H.checkpoint(f, dit_formats.fsdfm_method(role, source), seed=5)
    if source == "uniform":  # the uniform layout has no mask row / logit: they import as zeros
        for name, index in (("adapter.embedding", -1), ("final.linear.bias", -1)):
            ckpt.params[name][index] = 0
        ckpt.params["final.linear.kernel"][:, -1] = 0
    path = str(tmp_path / "ckpt.safetensors")
    dit_formats.write_fsdfm(ckpt, path)
    raw = files.read_safetensors_file(path)
    v_rows = 8 if source == "uniform" else 9
    assert raw[f"{role}_model.vocab_embed.weight"].shape == (v_rows, 16)
    if role == "student":
        assert "student_ema_model.dt_embedding.mlp.0.weight" in raw and "student_model.blocks.1.qw.weight" in raw
    importer.import_checkpoint(path, "fsdfm", str(tmp_path / "wd"), source=source, heads=2, max_len=12,
                               model=role)
    loaded = load_params(str(tmp_path / "wd"))
    assert loaded.config.method.name == ("dfm" if role == "teacher" else "fsdfm")
    assert _equal_tensors(flatten(loaded.params), ckpt.params)
    if role == "student":  # sampled with FS-DFM's cumulative-scalar jump sampler, as imported
        run = load_run(str(tmp_path / "wd"))
        tokens, info = run.method.sample(run.params, jax.random.key(0), num_samples=2, steps=2, sampler="fsdfm")
        assert np.asarray(tokens).shape == (2, 12) and np.asarray(tokens).max() < 8 and int(info["nfe"].max()) == 2
    exporter.export_run(str(tmp_path / "wd"), "fsdfm", str(tmp_path / "out.safetensors"))
    back = files.read_safetensors_file(str(tmp_path / "out.safetensors"))
    mine = {k: v for k, v in raw.items() if k.startswith(f"{role}_model.")}
    assert _equal_tensors({k: v for k, v in back.items() if k.startswith(f"{role}_model.")}, mine)


def test_numpy_mdlm_forward_matches_the_imported_jax_model(tmp_path):
    """Parity without torch: MDLM's equations in numpy (float64) on the exported files vs JAX float32."""
    for tc in (False, True):
        f = H.fields("t" if tc else "none")
        src = tmp_path / f"mdlm{tc}"
        src.mkdir()
        dit_formats.write_mdlm(H.checkpoint(f, dit_formats.mdlm_method(tc), seed=7), str(src))
        importer.import_checkpoint(str(src), "mdlm", str(tmp_path / f"wd{tc}"))
        loaded = load_params(str(tmp_path / f"wd{tc}"))
        ids = np.random.default_rng(0).integers(0, 9, (3, 12))
        sigma = np.array([0.0, 0.7, 2.5])
        ref = H.numpy_mdlm_logits(files.read_weights_dir(str(src)), ids, sigma, 2, tc)
        got = np.asarray(loaded.apply(loaded.params, jnp.asarray(ids), {"t": jnp.asarray(sigma, jnp.float32)}))
        assert np.abs(ref).max() > 1.0  # not a trivially small output
        assert np.abs(got - ref).max() < 5e-5, np.abs(got - ref).max()


def _one_line_and_nothing_written(fn, match, target):
    with pytest.raises(ValueError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)
    assert not os.path.exists(target)


def test_index_paths_cannot_escape_the_checkpoint(tmp_path, monkeypatch):
    outside = tmp_path / "outside.safetensors"
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2, np.float32)}, str(outside))
    src = tmp_path / "mdlm"
    src.mkdir()
    dit_formats.write_mdlm(H.checkpoint(H.fields("none"), dit_formats.mdlm_method(False)), str(src))
    opened = []
    import safetensors

    real = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", lambda p, *a, **k: opened.append(p) or real(p, *a, **k))
    for bad in ("../outside.safetensors", str(outside), "sub/../../outside.safetensors"):
        weight_map = {k: "model.safetensors" for k in files.read_safetensors_file(str(src / "model.safetensors"))}
        opened.clear()
        weight_map["backbone.vocab_embed.embedding"] = bad
        (src / files.INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        _one_line_and_nothing_written(lambda: importer.import_checkpoint(str(src), "mdlm", str(tmp_path / "wd")),
                                      "weight_map.*expected a plain file name inside", str(tmp_path / "wd"))
        assert opened == []  # refused before any file was opened


def _mdlm_dir(tmp_path, name, edit=None, config_edit=None):
    src = tmp_path / name
    src.mkdir()
    dit_formats.write_mdlm(H.checkpoint(H.fields("none"), dit_formats.mdlm_method(False)), str(src))
    if edit:
        from safetensors.numpy import save_file

        sd = files.read_weights_dir(str(src))
        edit(sd)
        save_file(sd, str(src / "model.safetensors"))
    if config_edit:
        c = json.load(open(src / "config.json"))
        config_edit(c)
        (src / "config.json").write_text(json.dumps(c))
    return str(src)


def test_bad_checkpoints_are_one_line_errors_and_write_nothing(tmp_path):
    target = str(tmp_path / "wd")
    cases = [
        (dict(edit=lambda sd: sd.pop("backbone.blocks.1.attn_out.weight")), "attn_out.weight: 'missing'"),
        (dict(edit=lambda sd: sd.update(extra=np.zeros(3, np.float32))), "key extra.*extra key"),
        (dict(edit=lambda sd: sd.update({"backbone.blocks.0.mlp.0.bias": np.zeros(5, np.float32)})),
         r"mlp.0.bias: \(5,\); expected shape \(64,\)"),
        (dict(edit=lambda sd: sd.update({"backbone.blocks.0.norm1.weight": np.ones(16, np.int32)})), "floating"),
        (dict(edit=lambda sd: sd.update({"backbone.rotary_emb.inv_freq": dit_layout.inv_freq(8, 500000.0)})),
         "rotary frequencies of base 10000"),
        (dict(config_edit=lambda c: c.update(model_type="llada")), "model_type: 'llada'; expected 'mdlm'"),
        (dict(config_edit=lambda c: c.update(n_heads=3)), "n_heads: 3"),
        (dict(config_edit=lambda c: c.update(hidden_dim=32, n_heads=4)), "expected shape"),
    ]
    for i, (edits, match) in enumerate(cases):
        src = _mdlm_dir(tmp_path, f"src{i}", **edits)
        _one_line_and_nothing_written(lambda: importer.import_checkpoint(src, "mdlm", target), match, target)
    good = _mdlm_dir(tmp_path, "good")
    _one_line_and_nothing_written(lambda: importer.import_checkpoint(good, "mdlm", target, heads=2),
                                  "import option heads", target)
    _one_line_and_nothing_written(lambda: importer.import_checkpoint(good, "gguf", target), "--format", target)
    _one_line_and_nothing_written(lambda: importer.import_checkpoint(good, "fsdfm", target, source="mask"),
                                  "--from.*FS-DFM checkpoint file", target)
    _one_line_and_nothing_written(lambda: importer.import_checkpoint(good, "mdlm", target, seq_len=13),
                                  "seq_len: 13", target)
    os.makedirs(target)
    (tmp_path / "wd" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="new or empty directory"):
        importer.import_checkpoint(good, "mdlm", target)
    assert os.listdir(target) == ["keep.txt"]
    with pytest.raises(ValueError, match="source: None"):
        dit_formats.read_fsdfm(str(tmp_path / "x.safetensors"))


def test_export_refuses_a_layout_the_run_cannot_have(tmp_path):
    src = tmp_path / "fs.safetensors"
    dit_formats.write_fsdfm(H.checkpoint(H.fields("th"), dit_formats.fsdfm_method("student", "mask")), str(src))
    importer.import_checkpoint(str(src), "fsdfm", str(tmp_path / "wd"), source="mask", heads=2,
                               model="student_ema")
    out = str(tmp_path / "out")
    _one_line_and_nothing_written(lambda: exporter.export_run(str(tmp_path / "wd"), "mdlm", out),
                                  "--format: 'mdlm'; expected a DiT trained with method 'mdlm'", out)
    _one_line_and_nothing_written(lambda: exporter.export_run(str(tmp_path / "wd"), "fsdfm", out + ".bin"),
                                  "--out", out + ".bin")
    assert jax.tree.leaves(load_params(str(tmp_path / "wd")).params)  # the run is untouched
