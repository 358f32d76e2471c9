"""DSL: one SNR-invariant denoiser over mixed ROAR + LogNormal localization SNRs, METHODS §4.

SNR direction: **s = 0 is "[MASK]" (z = 0, no information), s → ∞ is clean** (z ≈ s·e(x)). There
is no time and no SNR input: with unit anchors the Bayes denoiser depends on z only (§4.1).

Per training sequence (§4.3): ``s ~ localization.sample_snr`` (smoothed ROAR with probability
1/roar_frac, else per-token LogNormal(μ, σ) clamped), ``z = s·e(x) + √s·ε``
(``localization.encode`` over frozen random unit anchors), logits ``f_θ(z)`` over the V clean
tokens (no mask class, no carry-over) and the cross-entropy ``−log softmax(f_θ(z))_i[x_i]`` at
every position (``loss="all"``), or only where ``s < snr_thresh`` (``"masked_only"``), or with
those positions up-weighted by ``low_snr_weight`` (``"snr_weighted"``); the per-token mean is over
every real token (``Σ w·ce·loss_mask / Σ loss_mask``).

Evaluation: ``nelbo_sum`` is the I-MMSE bound (``localization.immse_bound``: ½∫_0^S mmse ds plus
the truncation ``−log p_θ(x | z_S)``, S = ``immse_s_max``), in nats; ``immse_trunc_sum`` estimates
that truncation term alone (on its own draw of z_S); ``ce_sum`` is the training cross-entropy. The "sums" evaluator prints each per token and bits/token.

The model is a DiT with ``input="vectors"`` of width d, V outputs, ``conditioning="none"``, whose
input adapter is DSL's converter (``models/converter.py``): ``model.input_adapter`` is
``"dsl_converter"`` (default) or ``"dsl_linear"`` (the ablation); the converter's options come
from the method keys below and are written back into the adapter name. Fine-tuning from an MDLM
run: ``config.init_from = {workdir, mapping: "mdlm_to_dsl"}`` (``params_from_mdlm``).

Config keys read by ``build`` (missing keys get these defaults, written back into the config):

==================  ===================  =====================================================
``dim``             ``48``               anchor dimension d (= ``model.input_dim``)
``anchors``         ``"random"``         ``"random"``: frozen Gaussian unit rows of the seed;
                                         ``"pca"``: PCA of the init_from source's token
                                         embedding (``mdlm_to_dsl``), stored in the params
``anchor_seed``     ``42``               the random rows' seed (``converter.frozen_anchors``)
``beta_init``       ``None``             converter β init; None = 1/√d
``highpass``        ``False``            converter high-pass residual
``snr_gate``        ``False``            SNR gate on that residual (needs highpass)
``s_max``           ``100.0``            ROAR clean SNR ``U[0.8, 1]·s_max``
``roar_frac``       ``10.0``             ROAR with probability 1/roar_frac
``mu``, ``sigma``   ``1.69``, ``0.9``    LogNormal SNR
``ln_clamp``        ``40.0``             LogNormal clamp
``per_token``       ``True``             one LogNormal draw per token (else per sequence)
``loss``            ``"all"``            ``"all"`` | ``"masked_only"`` | ``"snr_weighted"``
``snr_thresh``      ``1.0``              "masked" means ``s < snr_thresh``
``low_snr_weight``  ``2.0``              weight of those positions with ``"snr_weighted"``
``immse_s_max``     ``None``             I-MMSE truncation S; None = ``s_max``
``immse_dense``     ``16``               linear grid points on ``[0, immse_dense_max]``
``immse_dense_max`` ``1.0``
``immse_geometric`` ``48``               geometric points up to S (``localization.immse_grid``)
``sampler``         ``"dsl_remdm_loop"`` default of ``sample`` (``samplers.DSL``)
==================  ===================  =====================================================

plus ``config.model.vocab_size`` (V), ``config.model.dropout`` and ``config.data.seq_len``.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax import checks
from dlm_jax.checks import check_bool, check_choice, check_float, check_int, fail, resolve
from dlm_jax.methods.base import Method, masked_mean, vocab_size_from_config
from dlm_jax.models import converter as cv
from dlm_jax.models.registry import ModelSpec
from dlm_jax.processes import localization as loc

__all__ = ["LOSSES", "ANCHORS", "adapter_options", "anchors_from_config", "source_pca_anchors", "snr_config", "corrupt", "loss_weights",
           "ce_terms", "denoise_fn", "model_spec", "build", "params_from_mdlm"]

LOSSES = ("all", "masked_only", "snr_weighted")
ANCHORS = cv.ANCHOR_KINDS
# Samplers that encode decoded tokens at s_c ~ U[0.8, 1]·s_max: they get the method's s_max.
_ENCODE_AT_S_MAX = ("dsl_remdm_loop", "dsl_roar", "dsl_hybrid")


def _model_get(config, key, default=None):
    return config.model.get(key, default) if "model" in config else default


def adapter_options(config) -> cv.ConverterOptions:
    """The converter options from ``config.method`` (defaults: the adapter name's, else the
    converter's), checked against ``model.input_adapter``; the canonical adapter name is written
    back and registered. A token-id model is a one-line error."""
    mc = config.method
    if _model_get(config, "input", "vectors") != "vectors":
        fail("model.input", _model_get(config, "input"), "'vectors' (DSL feeds z [B, L, d], not token ids)")
    name = resolve(config.model, "input_adapter", cv.CONVERTER, prefix="model", check=checks.check_str)
    if not cv.is_dsl_adapter(name):
        fail("model.input_adapter", name, f"{cv.CONVERTER!r} (or '{cv.CONVERTER}:k=v,...') or {cv.LINEAR!r}: DSL "
             "feeds z [B, L, d], not token ids")
    given = cv.parse_adapter_name(name)
    anchors = resolve(mc, "anchors", given.anchors, prefix="method", check=check_choice, allowed=ANCHORS)
    if anchors == "pca":
        _check_pca(config, given.kind)
    seed = resolve(mc, "anchor_seed", given.seed, prefix="method", check=check_int, min=0)
    beta = resolve(mc, "beta_init", given.beta_init, prefix="method")
    if beta is not None:
        beta = check_float("method.beta_init", beta, min=0.0, min_open=True)
    highpass = resolve(mc, "highpass", given.highpass, prefix="method", check=check_bool)
    gate = resolve(mc, "snr_gate", given.snr_gate, prefix="method", check=check_bool)
    want = cv.ConverterOptions(kind=given.kind, seed=seed, beta_init=beta, highpass=highpass, snr_gate=gate,
                               anchors=anchors)
    canonical = cv.adapter_name(want)
    if name not in (given.kind, canonical):
        fail("model.input_adapter", name, f"{canonical!r}, the adapter of method.anchor_seed/beta_init/highpass/"
             "snr_gate/anchors (or the bare kind)")
    with config.model.unlocked() if hasattr(config.model, "unlocked") else contextlib.nullcontext():
        config.model.input_adapter = canonical
    return want


def _check_pca(config, kind: str) -> None:
    """``anchors="pca"`` needs the converter, an MDLM source (``init_from`` with mapping
    ``mdlm_to_dsl``) and ``d <= min(V, D)`` (the PCA of the ``[V, D]`` token embedding)."""
    if kind != cv.CONVERTER:
        fail("method.anchors", "pca", f"'random' with model.input_adapter={kind!r} (only the converter stores anchors)")
    block = config.get("init_from", None) or {}
    if not block.get("workdir", "") or block.get("mapping", "copy") != "mdlm_to_dsl":
        fail("method.anchors", "pca", "'random' unless init_from.workdir is an MDLM run with mapping 'mdlm_to_dsl' "
             "(the PCA of its token embedding)")
    limit = min(vocab_size_from_config(config), int(_model_get(config, "width", 0) or 0) or 10**9)
    if _dim(config) > limit:
        fail("method.dim", _dim(config), f"<= {limit} = min(V, model.width) with method.anchors='pca'")


def _dim(config) -> int:
    return resolve(config.method, "dim", 48, prefix="method", check=check_int, min=1)


def _param(params, name: str):
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if _names(path) == name:
            return leaf
    fail("params", f"no {name!r}", f"the params of a DSL model with {name!r}")


def anchors_from_config(config, params=None) -> jax.Array:
    """The run's anchors ``[V, d]``: the seed's frozen random unit rows (traceable, no params
    needed), or with ``anchors="pca"`` the table stored in ``params`` (unit rows, no gradient)."""
    options = adapter_options(config)
    if options.anchors == "pca":
        if params is None:
            fail("params", None, "the run's params for method.anchors='pca' (the anchors are stored there)")
        return cv.unit_rows(jax.lax.stop_gradient(_param(params, cv.ANCHOR_PARAM)))
    return cv.frozen_anchors(options.seed, vocab_size_from_config(config), _dim(config))


def source_pca_anchors(embedding, dim: int) -> jax.Array:
    """``localization.pca_anchors`` of the token rows ``embedding [V, D]`` (float64 numpy, signs
    fixed), callable under ``jit`` (a ``pure_callback``: run once, at init)."""
    out = jax.ShapeDtypeStruct((embedding.shape[0], dim), jnp.float32)
    return jax.pure_callback(lambda e: np.asarray(loc.pca_anchors(e, dim), np.float32), out, embedding)


def snr_config(method_cfg) -> dict:
    """The mixed-SNR settings (defaults written back), checked by ``localization.check_snr_config``."""
    defaults = dict(s_max=100.0, roar_frac=10.0, mu=1.69, sigma=0.9, ln_clamp=40.0, per_token=True)
    return loc.check_snr_config(**{k: resolve(method_cfg, k, v, prefix="method") for k, v in defaults.items()},
                                prefix="method.")


def corrupt(key, tokens, anchors, snr_cfg: dict):
    """One training draw: ``(z [B, L, d], snr [B, L], roar [B], revealed [B, L])``."""
    k_snr, k_enc = jax.random.split(key)
    b, length = tokens.shape
    snr, roar, revealed = loc.sample_snr(k_snr, b, length, **snr_cfg)
    return loc.encode(k_enc, tokens, snr, anchors), snr, roar, revealed


def loss_weights(snr, kind: str = "all", *, snr_thresh: float = 1.0, low_snr_weight: float = 2.0):
    """Per-position loss weights ``[B, L]``: 1 (``all``), ``1[s < snr_thresh]`` (``masked_only``),
    or ``low_snr_weight`` where ``s < snr_thresh`` and 1 elsewhere (``snr_weighted``)."""
    low = (jnp.asarray(snr) < snr_thresh).astype(jnp.float32)
    if kind == "all":
        return jnp.ones_like(low)
    if kind == "masked_only":
        return low
    return 1.0 + (low_snr_weight - 1.0) * low


def ce_terms(logits, tokens):
    """``−log softmax(logits)[x]`` per position, ``[B, L]`` (logits ``[B, L, V]``)."""
    lp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    return -jnp.take_along_axis(lp, jnp.asarray(tokens)[..., None].astype(jnp.int32), axis=-1)[..., 0]


def denoise_fn(apply_fn: Callable, params, **apply_kw):
    """The DSL sampler seam ``z [B, L, d] -> log-probs [B, L, V]`` (no time or SNR input)."""

    def denoise(z, *_, **__):
        return jax.nn.log_softmax(apply_fn(params, z, {}, **apply_kw).astype(jnp.float32), axis=-1)

    return denoise


def model_spec(config) -> ModelSpec:
    """Vectors ``[B, L, d]`` in (through the converter), V logits out, no conditioning."""
    v = vocab_size_from_config(config)
    adapter_options(config)
    return ModelSpec(input="vectors", input_dim=_dim(config), num_outputs=v, conditioning="none")


def build(config, apply_fn: Callable) -> Method:
    """The DSL ``Method`` for ``apply_fn(params, z, cond, *, dropout_rng=None) -> logits [B, L, V]``;
    config keys in the module docstring, validated before anything compiles."""
    from dlm_jax import samplers

    mc = config.method
    v = vocab_size_from_config(config)
    adapter_options(config)  # validated (and the adapter name written back) before anything traces
    snr_cfg = snr_config(mc)
    loss_kind = resolve(mc, "loss", "all", prefix="method", check=check_choice, allowed=LOSSES)
    weight_kw = dict(
        snr_thresh=resolve(mc, "snr_thresh", 1.0, prefix="method", check=check_float, min=0.0, min_open=True),
        low_snr_weight=resolve(mc, "low_snr_weight", 2.0, prefix="method", check=check_float, min=0.0, min_open=True))
    s_trunc = resolve(mc, "immse_s_max", None, prefix="method")
    s_trunc = snr_cfg["s_max"] if s_trunc is None else check_float("method.immse_s_max", s_trunc, min=0.0, min_open=True)
    grid = loc.immse_grid(s_trunc,
                          num_dense=resolve(mc, "immse_dense", 16, prefix="method", check=check_int, min=2),
                          dense_max=resolve(mc, "immse_dense_max", 1.0, prefix="method", check=check_float,
                                            min=0.0, min_open=True),
                          num_geometric=resolve(mc, "immse_geometric", 48, prefix="method", check=check_int, min=0))
    default_sampler = resolve(mc, "sampler", "dsl_remdm_loop", prefix="method", check=check_choice,
                              allowed=samplers.DSL)
    use_dropout = float(_model_get(config, "dropout", 0.0) or 0.0) > 0.0
    default_length = config.data.get("seq_len", None) if "data" in config else None
    anchors = lambda params: anchors_from_config(config, params)  # noqa: E731  (in-graph: seed or stored table)

    def _terms(params, batch, rng, train: bool):
        x = jnp.asarray(batch["tokens"])
        k_z, k_drop = jax.random.split(rng)
        z, snr, roar, revealed = corrupt(k_z, x, anchors(params), snr_cfg)
        kw = {"dropout_rng": k_drop} if (train and use_dropout) else {}
        return ce_terms(apply_fn(params, z, {}, **kw), x), snr, roar, revealed

    def loss(params, batch, rng, step=None, aux=None):
        """Per-token weighted CE (nats/token) over ``batch["tokens"]`` with ``batch["loss_mask"]``."""
        del step, aux
        ce, snr, roar, revealed = _terms(params, batch, rng, train=True)
        loss_mask = batch.get("loss_mask")
        mask = jnp.ones_like(ce) if loss_mask is None else jnp.asarray(loss_mask, ce.dtype)
        mean, _, count = masked_mean(ce * loss_weights(snr, loss_kind, **weight_kw), mask)
        _, ce_total, _ = masked_mean(ce, mask)
        r = jnp.broadcast_to(roar[:, None], ce.shape)
        buckets = {"ce_roar_masked": r & ~revealed, "ce_roar_clean": revealed, "ce_lognormal": ~r}
        metrics = {name: masked_mean(ce, mask * sel)[0] for name, sel in buckets.items()}
        return mean, {"loss": mean, "ce_sum": ce_total, "num_tokens": count, "roar_fraction": jnp.mean(roar), **metrics}

    def evaluate(params, batch, rng):
        """Sums: ``nelbo_sum`` (the I-MMSE bound, nats), ``immse_trunc_sum``, ``ce_sum``, ``num_tokens``."""
        x = jnp.asarray(batch["tokens"])
        mask = batch.get("loss_mask")
        mask = jnp.ones(x.shape, jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
        k_bound, k_trunc, k_ce = jax.random.split(rng, 3)
        a = anchors(params)
        denoise = denoise_fn(apply_fn, params)
        bound = loc.immse_bound(denoise, x, a, k_bound, grid=grid)
        # The truncation term E[−log p_θ(x | z_S)] alone, on its own draw z_S = S·e(x) + √S·ε.
        e = a[x]
        z_end = grid[-1] * e + jnp.sqrt(grid[-1]) * jax.random.normal(k_trunc, e.shape, e.dtype)
        trunc = ce_terms(denoise(z_end), x)
        ce, _, _, _ = _terms(params, batch, k_ce, train=False)
        return {"nelbo_sum": jnp.sum(bound * mask), "immse_trunc_sum": jnp.sum(trunc * mask),
                "ce_sum": jnp.sum(ce * mask), "num_tokens": jnp.sum(mask)}

    def sample(params, rng, *, num_samples, steps, sampler=None, length=None, **kw):
        """Generate with a DSL sampler (default ``method.sampler``) on this run's anchors; the
        discrete ones encode decoded tokens at the method's ``s_max`` unless given."""
        length = length or default_length
        if length is None:
            fail("length", None, "an int (or set config.data.seq_len)")
        name = check_choice("sampler", sampler or default_sampler, samplers.DSL)
        if name in _ENCODE_AT_S_MAX:
            kw.setdefault("s_max", snr_cfg["s_max"])
        return samplers.get_sampler(name)(denoise_fn(apply_fn, params), rng, num_samples=num_samples, length=length,
                                          steps=steps, vocab_size=v, anchors=anchors(params), **kw)

    return Method(name="dsl", loss=loss, evaluate=evaluate, sample=sample, samplers=tuple(samplers.DSL))


def _names(path) -> str:
    out = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    return "/".join(out[:-1] if out and out[-1] == "value" else out)


def params_from_mdlm(src_params, src_config, fresh, config, *, workdir: str = "?"):
    """DSL params from an MDLM run's (METHODS §4.2 "initialised from the backbone"): the DiT backbone
    copied; the converter's ``W`` (``adapter/kernel [V+1, D]``) = the MDLM token embedding, mask row
    included; its ``c`` = 0, so ``h = Σ_v π_v E[v]`` exactly (the posterior-weighted embedding);
    the output layer's first V classes (MDLM's mask logit dropped); with ``anchors="pca"`` the
    anchor table = the PCA of the V token rows (``source_pca_anchors``); β, the logit biases and any
    residual/gate fresh. Pure in the params (runs under jit); one-line errors on a mismatch."""
    src_method = src_config.get("method", {})
    if src_method.get("name") != "mdlm":
        fail("init_from.workdir", workdir, "an MDLM run (method.name 'mdlm') for mapping 'mdlm_to_dsl'")
    if src_method.get("time_conditioning", False):
        fail("init_from.workdir", workdir, "an MDLM run with time_conditioning=False (DSL feeds no time)")
    if adapter_options(config).kind != cv.CONVERTER:
        fail("model.input_adapter", config.model.input_adapter, f"{cv.CONVERTER!r} for mapping 'mdlm_to_dsl' (W from "
             "the MDLM embedding rows)")
    v = vocab_size_from_config(config)
    src = {_names(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(src_params)[0]}
    emb = src.get("adapter/embedding")
    if emb is None or emb.shape[0] != v + 1:
        fail("init_from.workdir", workdir, f"an MDLM run with V = {v} (token embedding [V+1, D] = [{v + 1}, D])")
    used = {"adapter/embedding"}

    def pick(path, leaf):
        name = _names(path)
        if name == "adapter/kernel":
            new = emb
        elif name == cv.ANCHOR_PARAM:
            new = source_pca_anchors(emb[:v], leaf.shape[1])
        elif name == "adapter/bias":
            new = jnp.zeros_like(leaf)
        elif name.startswith("adapter/"):
            return leaf
        elif name in ("final/linear/kernel", "final/linear/bias") and name in src:
            new = src[name][..., :v]
        elif name in src:
            new = src[name]
        else:
            fail("init_from.workdir", workdir, f"an MDLM run whose params include {name!r}")
        used.add(name)
        if tuple(new.shape) != tuple(leaf.shape):
            fail(f"init_from: parameter {name}", tuple(new.shape), f"shape {tuple(leaf.shape)} (this run's model)")
        return jnp.asarray(new, leaf.dtype)

    out = jax.tree_util.tree_map_with_path(pick, fresh)
    unused = sorted(set(src) - used)
    if unused:
        fail("init_from.workdir", workdir, f"an MDLM run without params this model lacks, such as {unused[:2]}")
    return out
