"""Parity of the PyTorch twins with the JAX models on tiny random configs of every layout (needs torch):
max |Δlogit|, mean KL, top-1 / top-5 within the stated float32 tolerances; MDLM's exported state dict loads
strictly into the twin, whose keys are MDLM's."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import _export_helpers as H  # noqa: E402
from dlm_jax.export import dit_formats, exporter, files, importer, llada_layout, parity  # noqa: E402
from dlm_jax.export.torch_dit import TorchDiT  # noqa: E402

FIGURES = {}


def _import(tmp_path, kind):
    """A workdir holding a random tiny model of ``kind`` (imported from its PyTorch layout)."""
    wd = str(tmp_path / f"wd_{kind}")
    if kind in ("mdlm_none", "mdlm_t"):
        tc = kind == "mdlm_t"
        src = tmp_path / kind
        src.mkdir()
        dit_formats.write_mdlm(H.checkpoint(H.fields("t" if tc else "none"), dit_formats.mdlm_method(tc), seed=1),
                               str(src))
        importer.import_checkpoint(str(src), "mdlm", wd)
    elif kind.startswith("fsdfm"):
        role, source = {"fsdfm_teacher": ("teacher", "mask"), "fsdfm_student": ("student", "uniform")}[kind]
        ckpt = H.checkpoint(H.fields("t" if role == "teacher" else "th"), dit_formats.fsdfm_method(role, source), 2)
        ckpt.ema_params = H.random_dit(H.fields("th"), seed=3) if role == "student" else None
        path = str(tmp_path / f"{kind}.pth")
        dit_formats.write_fsdfm(ckpt, path)
        importer.import_checkpoint(path, "fsdfm", wd, source=source, heads=2, max_len=12, model=role)
    else:
        f = dict(vocab_size=12, width=16, depth=2, heads=4, kv_heads=2, mlp_dim=24, max_len=16, rope_theta=5e5,
                 norm_eps=1e-5, mask_token_id=4)
        rng = np.random.default_rng(4)
        flat = {k: (0.4 * rng.standard_normal(s) + (1.0 if k.endswith("scale") else 0.0)).astype(np.float32)
                for k, s in llada_layout.llada_shapes(f).items()}
        src = tmp_path / "llada"
        src.mkdir()
        llada_layout.write_llada(files.Checkpoint("llada", f, 11, llada_layout.llada_method(), flat), str(src))
        importer.import_checkpoint(str(src), "llada", wd)
    return wd


@pytest.mark.parametrize("kind,fmt", [("mdlm_none", "mdlm"), ("mdlm_t", "mdlm"), ("mdlm_t", "dlm_jax"),
                                      ("fsdfm_teacher", "fsdfm"), ("fsdfm_student", "fsdfm"),
                                      ("fsdfm_student", "dlm_jax"), ("llada", "llada"), ("llada", "dlm_jax")])
def test_twin_matches_jax_within_float32_tolerance(tmp_path, kind, fmt):
    wd = _import(tmp_path, kind)
    fig = parity.check_parity(wd, fmt=fmt, num_sequences=3, length=12)
    FIGURES[(kind, fmt)] = fig
    print(f"\nparity {kind} via {fmt}: " + ", ".join(f"{k} {fig[k]:.3g}" for k in ("max_abs", "mean_kl", "top1", "top5")))
    assert fig["passes"], fig
    assert fig["max_abs"] < 5e-5 and fig["mean_kl"] < 1e-8 and fig["top1"] == 1.0 and fig["top5"] == 1.0
    if kind == "fsdfm_student":  # the EMA network too (student_ema_model)
        assert parity.check_parity(wd, fmt=fmt, ema=True, num_sequences=2, length=12)["passes"]


def test_mdlm_export_loads_strictly_into_the_twin(tmp_path):
    from safetensors.torch import load_file

    wd = _import(tmp_path, "mdlm_t")
    exporter.export_run(wd, "mdlm", str(tmp_path / "out"))
    sd = load_file(str(tmp_path / "out" / files.WEIGHTS_NAME))
    config = json.load(open(tmp_path / "out" / "config.json"))
    dims = dict(vocab_size=config["vocab_size"], num_classes=config["vocab_size"], width=config["hidden_dim"],
                depth=config["n_blocks"], heads=config["n_heads"], cond_dim=config["cond_dim"], mlp_ratio=4,
                conditioning="t" if config["time_conditioning"] else "none")
    twin = TorchDiT(dims)
    assert sorted(twin.state_dict()) == sorted(sd)
    twin.load_state_dict(sd, strict=True)
    ids, sigma = torch.randint(0, 9, (2, 12)), torch.tensor([0.3, 1.7])
    ref = H.numpy_mdlm_logits({k: v.numpy() for k, v in sd.items()}, ids.numpy(), sigma.numpy().astype(np.float64), 2,
                              True)
    assert np.abs(twin.eval()(ids, sigma).detach().numpy() - ref).max() < 5e-5


def test_compare_logits_figures():
    ref = np.array([[[3.0, 1.0, 0.0, -1.0, -2.0, -3.0]]])
    got = ref + np.array([[[0.0, 0.0, 0.0, 0.0, 0.5, 0.0]]])
    fig = parity.compare_logits(ref, got, k=5)
    assert fig["max_abs"] == 0.5 and fig["top1"] == 1.0 and fig["top5"] == 1.0 and fig["mean_kl"] > 0
    swapped = ref[..., [1, 0, 2, 3, 4, 5]]
    assert parity.compare_logits(ref, swapped)["top1"] == 0.0 and not parity.passes(parity.compare_logits(ref, swapped))


def test_causal_dit_twin_is_causal_too():
    """The AR baseline's causal DiT (``model.causal``, exported in the dlm_jax layout): the twin masks the
    future as the JAX model does (it was bidirectional: max |Δlogit| 12.4 on the AR judge)."""
    import jax
    import jax.numpy as jnp

    from dlm_jax.export import dit_layout as dl
    from dlm_jax.export.params import flatten
    from dlm_jax.models import DiTConfig, build_model, make_apply

    config = DiTConfig(vocab_size=9, num_classes=8, width=16, depth=2, heads=2, cond_dim=8, max_len=12,
                       conditioning="none", causal=True)
    graphdef, params = build_model(config, 0)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    ids = np.random.default_rng(0).integers(0, 9, (3, 12))
    ref = np.asarray(jax.jit(make_apply(graphdef))(params, jnp.asarray(ids), {}))
    figs = {}
    for causal in (True, False):
        twin = TorchDiT(dict(dl.dit_dims(config), causal=causal))
        twin.load_own(flatten(params))
        with torch.no_grad():
            figs[causal] = parity.compare_logits(ref, twin.eval()(torch.from_numpy(ids)).numpy())
    assert figs[True]["max_abs"] < 5e-5 and figs[True]["top1"] == 1.0
    assert figs[False]["max_abs"] > 1e-2  # a bidirectional twin is not the same function
