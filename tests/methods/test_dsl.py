"""DSL method (METHODS §4.3): the loss at the exact oracle is the exact posterior CE and beats wrong
denoisers; the I-MMSE evaluation at the exact denoiser equals H(X); sampling through the method on the
oracle reproduces the data law; fine-tuning from MDLM (the endpoint logits); bad input; a tiny run
through the real trainer (MDLM run -> init_from -> DSL run, checkpoint, eval, load, sample).
SNR direction: s = 0 is "[MASK]" (z = 0), large s is clean."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dlm_jax.methods import dsl
from dlm_jax.models import DiTConfig, build_model, make_apply, registry
from dlm_jax.processes import localization as loc
from dlm_jax.testing.oracles import JointTable, MarkovChainLanguage, dsl_denoise_fn, empirical_law, total_variation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(v=5, length=6, dim=4, **method):
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict({"vocab_size": v, "width": 32, "depth": 1, "heads": 2, "cond_dim": 16,
                                         "max_len": 16})
    c.data = ml_collections.ConfigDict({"seq_len": length})
    c.method = ml_collections.ConfigDict({"name": "dsl", "dim": dim, **method})
    return c


def _oracle_apply(lang, anchors, record=None):
    """A model stand-in through the method's apply seam: logits = the exact log-posteriors."""
    fn = dsl_denoise_fn(lang, anchors)

    def apply(params, z, cond, **_):
        if record is not None:
            record.append(z)
        return fn(z)

    return apply


def test_loss_at_the_exact_oracle_is_the_exact_posterior_ce():
    """The loss over the channel draw it made equals mean_i −log p*(x_i | z) (forward–backward),
    padding excluded; the oracle's loss is below a wrong chain's and a tempered oracle's on the same
    draws; the per-bucket CE metrics are the exact bucket means."""
    lang = MarkovChainLanguage.random(0, 5, 6)
    config = _config(roar_frac=2.0)
    anchors = dsl.anchors_from_config(config)
    seen = []
    method = dsl.build(config, _oracle_apply(lang, anchors, seen))
    x = lang.sample(jax.random.key(1), 64)
    mask = jnp.ones(x.shape).at[:, -2:].set(0.0)
    rng = jax.random.key(2)
    loss, m = method.loss(None, {"tokens": x, "loss_mask": mask}, rng)
    z, snr, roar, revealed = dsl.corrupt(jax.random.split(rng)[0], x, anchors, dsl.snr_config(config.method))
    np.testing.assert_array_equal(np.asarray(seen[0]), np.asarray(z))  # the documented draw
    post = np.asarray(lang.posteriors(loc.log_evidence(z, anchors)), np.float64)
    ce = -np.log(np.take_along_axis(post, np.asarray(x)[..., None], -1)[..., 0])
    exact = (ce * np.asarray(mask)).sum() / np.asarray(mask).sum()
    assert float(loss) == pytest.approx(exact, rel=1e-5)
    assert float(m["num_tokens"]) == 64 * 4 and float(m["ce_sum"]) == pytest.approx(exact * 256, rel=1e-5)
    r, rev, w = np.asarray(roar)[:, None], np.asarray(revealed), np.asarray(mask)
    assert float(m["roar_fraction"]) == np.asarray(roar).mean() and 0.2 < float(m["roar_fraction"]) < 0.8
    for name, sel in (("ce_roar_masked", r & ~rev), ("ce_roar_clean", rev), ("ce_lognormal", ~r & ~rev)):
        assert float(m[name]) == pytest.approx((ce * w * sel).sum() / (w * sel).sum(), rel=1e-5), name
    assert float(m["ce_roar_clean"]) < 0.1 * float(m["ce_roar_masked"])  # s >= 80 vs s < 1
    low = np.asarray(snr) < 1.0
    only = dsl.build(_config(roar_frac=2.0, loss="masked_only"), _oracle_apply(lang, anchors))
    loss_mo, _ = only.loss(None, {"tokens": x, "loss_mask": mask}, rng)
    assert float(loss_mo) == pytest.approx((ce * low * np.asarray(mask)).sum() / 256, rel=1e-5)
    wrong = MarkovChainLanguage.random(7, 5, 6)
    for other in (_oracle_apply(wrong, anchors), lambda p, z, c, **_: 0.5 * dsl_denoise_fn(lang, anchors)(z)):
        worse, _ = dsl.build(_config(roar_frac=2.0), other).loss(None, {"tokens": x, "loss_mask": mask}, rng)
        assert float(worse) > float(loss) + 0.02


def test_evaluate_at_the_exact_denoiser_gives_the_entropy():
    """One token (V = 6, d = 5): nelbo = Σ_v π_v E_ε[½∫_0^S mmse + (−log p(v|z_S))] = H(π) for the exact
    denoiser at any S (METHODS §4.6 check 2): 400 draws per token value, weighted by π through
    ``loss_mask``, within 4 standard errors plus 3e-3 (grid); the truncation term is −log p(x|z_S)
    at its documented draw z_S = S·e(x) + √S·ε."""
    probs = np.random.default_rng(3).dirichlet(np.ones(6))
    lang = JointTable.from_product(probs[None])
    config = _config(v=6, length=1, dim=5, immse_dense=50, immse_geometric=100, immse_s_max=40.0)
    anchors = dsl.anchors_from_config(config)
    method = dsl.build(config, _oracle_apply(lang, anchors))
    n = 400
    x = jnp.repeat(jnp.arange(6), n)[:, None]
    weight = jnp.asarray(probs, jnp.float32)[x] / n
    key = jax.random.key(5)
    sums = jax.jit(method.evaluate, static_argnums=0)(None, {"tokens": x, "loss_mask": weight}, key)
    nelbo = float(sums["nelbo_sum"]) / float(sums["num_tokens"])
    entropy = float(-(probs * np.log(probs)).sum())
    k_bound, k_trunc, _ = jax.random.split(key, 3)
    bound = np.asarray(loc.immse_bound(dsl_denoise_fn(lang, anchors), x, anchors, k_bound,
                                       grid=loc.immse_grid(40.0, num_dense=50, num_geometric=100)))[:, 0]
    assert nelbo == pytest.approx(float((bound * np.asarray(weight)[:, 0]).sum()), rel=1e-5)
    se = np.sqrt((probs**2 * bound.reshape(6, n).var(1) / n).sum())
    assert abs(nelbo - entropy) < 4 * se + 3e-3, (nelbo, entropy, se)
    e = anchors[x]
    z_end = 40.0 * e + np.sqrt(40.0) * jax.random.normal(k_trunc, e.shape, e.dtype)
    trunc = -np.log(np.asarray(lang.posteriors(loc.log_evidence(z_end, anchors)), np.float64)[np.arange(6 * n), 0,
                                                                                              np.asarray(x)[:, 0]])
    assert float(sums["immse_trunc_sum"]) == pytest.approx(float((trunc * np.asarray(weight)[:, 0]).sum()), rel=1e-4)
    assert 0 < float(sums["immse_trunc_sum"]) < float(sums["nelbo_sum"])


def test_sample_through_the_method_on_the_oracle_reproduces_the_law():
    """Random-order AR (one position per step, L steps) through ``method.sample`` on the exact
    denoiser samples the joint: TV to the exact 27-state law < 0.05 with 4,000 draws."""
    lang = MarkovChainLanguage.random(1, 3, 3)
    config = _config(v=3, length=3, dim=8)
    method = dsl.build(config, _oracle_apply(lang, dsl.anchors_from_config(config)))
    tokens, info = jax.jit(lambda k: method.sample(None, k, num_samples=4000, steps=3, sampler="dsl_roar"))(
        jax.random.key(6))
    assert int(info["nfe"]) == 3
    tv = total_variation(empirical_law(np.asarray(tokens), 3), np.asarray(lang.law()))
    assert tv < 0.05, tv


def _mdlm_and_dsl(v=6, seed=0):
    mdlm_cfg = DiTConfig(vocab_size=v + 1, num_classes=v + 1, width=32, depth=1, heads=2, cond_dim=16, max_len=16,
                         conditioning="none")
    g_m, p_m = build_model(mdlm_cfg, seed)
    leaves, tree = jax.tree.flatten(p_m)  # a trained-looking MDLM: every weight random
    keys = jax.random.split(jax.random.key(9), len(leaves))
    p_m = jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    config = _config(v=v, length=5, dim=8)
    model = registry.build(config, dsl.model_spec(config))
    src_config = ml_collections.ConfigDict({"method": {"name": "mdlm", "time_conditioning": False}})
    return g_m, p_m, config, model, src_config


def test_init_from_mdlm_endpoint_logits():
    """After ``params_from_mdlm``: W = the MDLM embedding (mask row included), c = 0, the backbone and
    the first V output classes copied. At the endpoint (clean at s = 400, β = 4, masked at z = 0 with
    the mask slot's bias raised to log V + 40) the DSL logits equal MDLM's raw logits[..., :V] (measured
    max |Δ| 0.0; asserted < 2e-4); with the spec's b_mask = log V a masked position sees ½E[m] + ½ mean_v E[v]
    instead (measured max |Δ| 0.097 on logits of scale 3, through attention at every position)."""
    v = 6
    g_m, p_m, config, model, src_config = _mdlm_and_dsl(v)
    p = dsl.params_from_mdlm(p_m, src_config, model.init(jax.random.key(0)), config)
    np.testing.assert_array_equal(np.asarray(p["adapter"]["kernel"][...]), np.asarray(p_m["adapter"]["embedding"][...]))
    np.testing.assert_array_equal(np.asarray(p["adapter"]["bias"][...]), 0.0)
    np.testing.assert_array_equal(np.asarray(p["blocks"][0]["attn"]["qkv"]["kernel"][...]),
                                  np.asarray(p_m["blocks"][0]["attn"]["qkv"]["kernel"][...]))
    x = jnp.array([[0, 3, 5, 1, 2], [4, 4, 2, 0, 5]])
    hide = jnp.array([[0, 1, 0, 0, 1], [1, 0, 0, 1, 0]], bool)
    mdlm_logits = make_apply(g_m)(p_m, jnp.where(hide, v, x), {})[..., :v]
    anchors = dsl.anchors_from_config(config)
    z = jnp.where(hide[..., None], 0.0, 400.0 * anchors[x])
    p["adapter"]["beta"][...] = jnp.float32(4.0)
    spec_gap = float(jnp.abs(model.apply(p, z, {}) - mdlm_logits).max())
    p["adapter"]["logit_bias"][...] = p["adapter"]["logit_bias"][...].at[-1].add(40.0)
    gap = float(jnp.abs(model.apply(p, z, {}) - mdlm_logits).max())
    assert gap < 2e-4, gap
    assert spec_gap > 100 * gap  # b_mask = log V: π_mask = 1/2 at z = 0, not the MDLM [MASK] embedding


def test_init_from_refuses_a_non_mdlm_run():
    _, p_m, config, model, src_config = _mdlm_and_dsl()
    fresh = model.init(jax.random.key(0))
    src_config.method.name = "dfm"
    with pytest.raises(ValueError, match=r"^init_from\.workdir: .*; expected an MDLM run \(method.name 'mdlm'\)"):
        dsl.params_from_mdlm(p_m, src_config, fresh, config, workdir="runs/x")
    src_config.method.name = "mdlm"
    _, p_other, *_ = _mdlm_and_dsl(v=7)
    with pytest.raises(ValueError, match=r"^init_from\.workdir: 'runs/x'; expected an MDLM run with V = 6"):
        dsl.params_from_mdlm(p_other, src_config, fresh, config, workdir="runs/x")


@pytest.mark.parametrize("section,key,value,match", [
    ("method", "s_max", 0.0, r"^method\.s_max: 0\.0; expected a finite number in \(0\.0"),
    ("method", "roar_frac", 0.5, r"^method\.roar_frac: 0\.5; expected a finite number in \[1\.0"),
    ("method", "sigma", -1.0, r"^method\.sigma: -1\.0; expected"),
    ("method", "ln_clamp", 0.0, r"^method\.ln_clamp: 0\.0; expected"),
    ("method", "loss", "mse", r"^method\.loss: 'mse'; expected one of \('all', 'masked_only', 'snr_weighted'\)"),
    ("method", "anchors", "umap", r"^method\.anchors: 'umap'; expected one of \('random', 'pca'\)"),
    ("method", "anchors", "pca", r"^method\.anchors: 'pca'; expected 'random' unless init_from\.workdir is an MDLM"),
    ("method", "dim", 0, r"^method\.dim: 0; expected an int >= 1"),
    ("method", "sampler", "mdlm", r"^method\.sampler: 'mdlm'; expected one of \('dsl_"),
    ("method", "snr_gate", True, r"^snr_gate: True; expected False unless highpass=True"),
    ("model", "input_dim", 32, r"^model\.input_dim: 32; expected 4 \(what the method needs"),  # anchors' d
    ("model", "input_adapter", "conv", r"^model\.input_adapter: 'conv'; expected 'dsl_converter'"),
    ("model", "input_adapter", "token_embedding", r"^model\.input_adapter: 'token_embedding'; expected .*not token ids"),
    ("model", "input", "tokens", r"^model\.input: 'tokens'; expected 'vectors' \(DSL feeds z"),
    ("model", "conditioning", "t", r"^model\.conditioning: 't'; expected 'none'"),
])
def test_bad_config_is_a_one_line_error_before_compiling(section, key, value, match):
    config = _config()
    config[section][key] = value

    def build():
        model = registry.build(config, dsl.model_spec(config))
        dsl.build(config, model.apply)

    with pytest.raises(ValueError, match=match) as err:
        build()
    assert "\n" not in str(err.value)


def test_adapter_name_written_back_and_checked():
    config = _config(anchor_seed=7, highpass=True)
    dsl.model_spec(config)
    assert config.model.input_adapter == "dsl_converter:seed=7,highpass=1"
    again = _config()  # a stored config: the full name sets the method keys' defaults
    again.model.input_adapter = "dsl_converter:seed=7,highpass=1"
    dsl.model_spec(again)
    assert again.method.anchor_seed == 7 and again.method.highpass is True
    again.method.anchor_seed = 3
    with pytest.raises(ValueError, match=r"^model\.input_adapter: 'dsl_converter:seed=7,highpass=1'; expected "
                                         r"'dsl_converter:seed=3,highpass=1'"):
        dsl.model_spec(again)


def _cli_config(preset, workdir, **train):
    import importlib.util

    spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", f"{preset.split(':')[0]}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config(preset.split(":")[1])
    c.workdir = workdir
    c.train.update(train)
    c.checkpoint.update(every=2, async_save=False)
    return c


def test_tiny_run_through_the_real_trainer_from_an_mdlm_run(tmp_path):
    """configs/mdlm_markov.py:tiny for 2 steps, then configs/dsl.py:tiny initialised from it (mapping
    'mdlm_to_dsl') for 3 steps with anchors="pca" (d = 4): the init copies the MDLM embedding into
    W and writes the float64 PCA of its V token rows as the anchors, the run checkpoints and
    evaluates (nelbo = nelbo_sum / num_tokens, bits/token); after the source is deleted the stored
    run loads, its anchors are still that PCA (unit norm to 1e-6: EMA rounding is the only change)
    and it samples with them (the sampler called on exactly those anchors draws the same tokens)."""
    import shutil

    from dlm_jax.models import converter as cv
    from dlm_jax.runs import init_from, load_run, read_config
    from dlm_jax.samplers import get_sampler
    from dlm_jax.train import loop

    src = str(tmp_path / "mdlm")
    loop.train(_cli_config("mdlm_markov:tiny", src, steps=2, log_every=1), src)
    work = str(tmp_path / "dsl")
    c = _cli_config("dsl:tiny", work, steps=3, log_every=1)
    c.model.update(vocab_size=8, width=32, depth=1, heads=2, cond_dim=16, max_len=16)  # = mdlm_markov:tiny
    c.init_from.update(workdir=src, weights="params")
    c.evals.eval.every = 3
    c.method.update(immse_dense=2, immse_geometric=2, anchors="pca", dim=4)

    init_params, source = init_from.initializer(c, registry.build(c, dsl.model_spec(c)), None)
    p0 = jax.jit(init_params)(source)
    emb = np.asarray(source["adapter"]["embedding"][...])
    np.testing.assert_array_equal(np.asarray(p0["adapter"]["kernel"][...]), emb)
    pca = np.asarray(loc.pca_anchors(emb[:8].astype(np.float64), 4))
    np.testing.assert_array_equal(np.asarray(p0["adapter"]["anchor_table"][...]), pca)
    assert np.abs(pca - np.asarray(cv.frozen_anchors(42, 8, 4))).max() > 0.1  # not the placeholder rows
    loop.train(c, work)
    rows = [json.loads(line) for line in open(os.path.join(work, "metrics.jsonl"))]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(np.isfinite(losses))
    ev = [r for r in rows if "eval/nelbo" in r][-1]
    assert ev["eval/nelbo"] == pytest.approx(ev["eval/nelbo_sum"] / ev["eval/num_tokens"], rel=1e-9)
    assert ev["eval/bits_per_token"] == pytest.approx(ev["eval/nelbo"] / np.log(2), rel=1e-9)
    assert ev["eval/nelbo"] > ev["eval/immse_trunc"] > 0
    saved, step = read_config(work)
    assert step == 3 and saved.model.input_adapter == "dsl_converter:beta_init=1.0,anchors=pca"
    assert saved.method.immse_s_max is None
    shutil.rmtree(src)
    run = load_run(work, use_ema=True)
    got = np.asarray(dsl.anchors_from_config(run.config, run.params))
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(got, pca, atol=1e-6)
    key = jax.random.key(0)
    tokens, info = jax.jit(lambda p: run.method.sample(p, key, num_samples=32, steps=4))(run.params)
    assert tokens.shape == (32, 16) and int(info["nfe"]) == 5 and int(tokens.max()) < 8
    direct, _ = get_sampler("dsl_remdm_loop")(dsl.denoise_fn(run.apply, run.params), key, num_samples=32, length=16,
                                              steps=4, vocab_size=8, anchors=pca, s_max=100.0)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(direct))
