"""FastDiSS (METHODS §3): few-step continuous seq2seq diffusion on the DINOISER base (§2.4), with
self-conditioning perturbation (SCP) and model-aware noise scaling (MANS). Keys: ``fastdiss_config``.

Time direction: t = 0 clean, t = 1 noise. Per training pair (x = source, y = target), §3.3:

    z_0 = E[y] (table normalised to √d);  ε ~ N(0, I);  t ~ U[t_min, 1]  (t_min from E, every step)
    SC pass:   (λ, γ, t_sc) = scp_params(t);  z' = α_t λ z_0 + σ_t √(1+γ²) ε;  ẑ' = sg(D(z', 0, x, t_sc))
    MANS:      i = argmax ẑ' Eᵀ;  τ_k = min(β(n) t, 1) where i_k = y_k, else t;  z_τ = α_τ z_0 + σ_τ ε
    main pass: ẑ = D(z_τ, ẑ', x, τ)
    loss = mean_k ||ẑ_k − z_0^k||²/d + w_r CE(z_0 Eᵀ, y) + [coin] mean_k ||D(z_t, 0, x, t) − z_0||²/d + w_l CE_len

SCP off ⇔ λ = 1, γ = 0, t_sc = t; MANS off ⇔ β ≡ 1: both off is the DINOISER-style baseline.
The model is ``encdec`` (``models/encdec.py``): source ids in, x0 in embedding space out.
``sample(..., source=, source_mask=)`` translates (DDIM/CEDI/DiffuSeq with self-conditioning, length beam,
MBR); without a source it translates the empty source (the trainer's unconditional sample hook).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dlm_jax.checks import check_choice, check_int, fail
from dlm_jax.methods.base import Method, masked_mean, vocab_size_from_config
from dlm_jax.methods.fastdiss_config import SAMPLERS, Settings, settings
from dlm_jax.models.registry import ModelSpec
from dlm_jax.processes import embedding_diffusion as ed
from dlm_jax.samplers import mbr as mbr_lib
from dlm_jax.samplers.ddim_sc import ddim_sc
from dlm_jax.samplers.diffuseq import diffuseq_sc

__all__ = ["model_spec", "build", "PAD_ID", "EOS_ID"]

PAD_ID, EOS_ID = 0, 2  # the sentencepiece / SymbolTokenizer layout of the seq2seq sources (pad 0, eos 2)


def model_spec(config) -> ModelSpec:
    """Source ids of V in, x0 of width ``method.dim`` out, per-token time."""
    return ModelSpec(input="tokens", num_input_ids=vocab_size_from_config(config), num_outputs=settings(config).dim,
                     conditioning="t")


def _ce(logits, labels):
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    return -jnp.take_along_axis(lp, labels[..., None].astype(jnp.int32), -1)[..., 0]


def make_terms(s: Settings, apply_fn: Callable, use_dropout: bool):
    """``terms(params, batch, rng, step, *, train, base=False, sc_estimate=None) -> dict`` of the
    per-token quantities of §3.3 (``base``: SCP and MANS off; ``sc_estimate``: use this ẑ'
    instead of computing it, to check that no gradient reaches it)."""

    def terms(params, batch, rng, step, *, train: bool, base: bool = False, sc_estimate=None):
        src = jnp.asarray(batch["source"], jnp.int32)
        sm = jnp.asarray(batch["source_mask"], jnp.float32)
        y = jnp.asarray(batch["target"], jnp.int32)
        ym = jnp.asarray(batch["target_mask"], jnp.float32)
        b, n = y.shape
        k = jax.random.split(rng, 7)
        kw = (lambda i: {"dropout_rng": jax.random.fold_in(k[6], i)}) if (train and use_dropout) else (lambda i: {})
        enc = apply_fn(params, None, {"source": src, "source_mask": sm, "outputs": "encode"}, **kw(0))
        table, memory = enc["embedding"], enc["memory"]

        def denoise(z, sc, t, i):
            return apply_fn(params, z, {"memory": memory, "source_mask": sm, "t": t, "self_cond": sc,
                                        "padding_mask": ym}, **kw(i))

        z0 = table[y]
        t_min = (ed.clipped_t_min(table, s.schedule, plus_one=s.clip_plus_one) if s.time_sampler == "clipped"
                 else jnp.float32(0.0))
        t = ed.sample_time(k[0], (b,), t_min)
        eps = jax.random.normal(k[1], z0.shape, jnp.float32)
        scp, mans = s.scp and not base, s.mans and not base
        # --- SC pass (SCP) ---
        if scp and s.scp_mode == "previous_step":
            lam, gam, t_sc = ed.scp_params(t, ed.sample_delta(k[2], (b,), s.scp_delta, steps=s.scp_steps,
                                                              delta_max=s.scp_delta_max), s.schedule)
        elif scp:
            lam, gam, t_sc = ed.scp_constant(t, s.scp_lambda, s.scp_gamma)
        else:
            lam, gam, t_sc = jnp.ones_like(t), jnp.zeros_like(t), t
        if s.scp_time_label == "t":
            t_sc = t
        eps_sc = eps if (s.scp_shared_noise or not scp) else jax.random.normal(k[3], z0.shape, jnp.float32)
        if sc_estimate is None:
            z_sc = ed.scp_latent(z0, eps_sc, t, lam, gam, s.schedule)
            sc_estimate = denoise(z_sc, None, t_sc, 1)
        zhat_sc = jax.lax.stop_gradient(sc_estimate)
        correct = jnp.argmax(zhat_sc @ jax.lax.stop_gradient(table).T, -1) == y
        # --- MANS ---
        beta = ed.beta_at(step, s.beta_phases, s.mans_betas) if mans else jnp.float32(1.0)
        tau = ed.mans_time(t, correct, beta, s.mans_t_max) if mans else jnp.broadcast_to(t[:, None], (b, n))
        z_tau = ed.forward(z0, tau if s.mans_scale == "noise_and_label" else t, eps, s.schedule)
        # --- main pass ---
        zhat = denoise(z_tau, zhat_sc, tau, 2)
        out = dict(mse=jnp.mean((zhat - z0) ** 2, -1), rounding_ce=_ce(z0 @ table.T, y), correct=correct, tau=tau,
                   t=t, t_min=t_min, beta=beta, zhat=zhat, zhat_sc=zhat_sc, mask=ym,
                   acc=(jnp.argmax(zhat @ table.T, -1) == y).astype(jnp.float32))
        n_max = enc["length_logits"].shape[-1] - 1
        length = jnp.clip(jnp.sum(ym, -1).astype(jnp.int32), 0, n_max)
        out["length_ce"] = _ce(enc["length_logits"], length)
        out["length_acc"] = (jnp.argmax(enc["length_logits"], -1) == length).astype(jnp.float32)
        out["has_target"] = (jnp.sum(ym, -1) > 0).astype(jnp.float32)
        if train and s.first_pass > 0:  # the no-SC first step of the sampler, on the unperturbed z_t
            z_t = ed.forward(z0, t, eps, s.schedule)
            first = lambda: masked_mean(jnp.mean((denoise(z_t, None, t, 3) - z0) ** 2, -1), ym)[0]  # noqa: E731
            if s.first_pass >= 1.0:
                out["first_mse"] = first()
            else:
                coin = jax.random.bernoulli(k[4], s.first_pass)
                out["first_mse"] = jax.lax.cond(coin, first, lambda: jnp.float32(0.0))
        return out

    return terms


def build(config, apply_fn: Callable) -> Method:
    """The FastDiSS ``Method`` for the ``encdec`` model's ``apply``; keys validated before compiling."""
    s = settings(config)
    vocab_size_from_config(config)
    model = config.model if "model" in config else {}
    use_dropout = float(model.get("dropout", 0.0) or 0.0) > 0.0
    default_len = config.data.get("seq_len", None) if "data" in config else None
    terms = make_terms(s, apply_fn, use_dropout)

    def loss(params, batch, rng, step=0, aux=None):
        del aux
        o = terms(params, batch, rng, step, train=True)
        mask = o["mask"]
        mse, mse_sum, count = masked_mean(o["mse"], mask)
        ce = masked_mean(o["rounding_ce"], mask)[0]
        len_ce = masked_mean(o["length_ce"], o["has_target"])[0]
        total = mse + s.rounding_weight * ce + s.length_weight * len_ce + o.get("first_mse", 0.0)
        moved = (o["tau"] > o["t"][:, None]).astype(jnp.float32)
        return total, {"loss": total, "mse": mse, "rounding_ce": ce, "length_ce": len_ce,
                       "first_pass_mse": o.get("first_mse", jnp.float32(0.0)),
                       "length_acc": masked_mean(o["length_acc"], o["has_target"])[0],
                       "sc_accuracy": masked_mean(o["correct"].astype(jnp.float32), mask)[0],
                       "mans_fraction": masked_mean(moved, mask)[0], "beta": o["beta"], "t_min": o["t_min"],
                       "mse_sum": mse_sum, "num_tokens": count}

    def evaluate(params, batch, rng):
        """Sums over target tokens at a random t, SCP and MANS off (comparable across variants)."""
        o = terms(params, batch, rng, 0, train=False, base=True)
        m = o["mask"]
        return {"mse_sum": jnp.sum(o["mse"] * m), "rounding_ce_sum": jnp.sum(o["rounding_ce"] * m),
                "acc_sum": jnp.sum(o["acc"] * m), "sc_acc_sum": jnp.sum(o["correct"] * m), "num_tokens": jnp.sum(m)}

    def sample(params, rng, *, num_samples=None, steps, sampler=None, source=None, source_mask=None, length=None,
               length_beam=None, mbr=None, record_gap=False, z_init=None):
        """Translate ``source [B, Ls]`` (default: the empty source, ``num_samples`` rows) with K = ``steps``
        DDIM/CEDI/DiffuSeq-ancestral steps → ``(tokens [B, length], info)``; ``length``: ``data.seq_len``."""
        mode = check_choice("sampler", sampler or s.sampler, SAMPLERS)
        check_int("steps", steps, min=1)
        if source is None:
            source = jnp.full((num_samples or 1, 1), EOS_ID, jnp.int32)
        source = jnp.asarray(source, jnp.int32)
        bsz = source.shape[0]
        sm = jnp.ones(source.shape, jnp.float32) if source_mask is None else jnp.asarray(source_mask, jnp.float32)
        n = length or default_len
        if n is None:
            fail("length", None, "an int (or set config.data.seq_len)")
        beam = check_int("length_beam", length_beam or s.length_beam, min=1, max=n)
        draws = check_int("mbr", mbr or s.mbr, min=1)
        enc = apply_fn(params, None, {"source": source, "source_mask": sm, "outputs": "encode"})
        table = enc["embedding"]
        if s.length_mode == "predict":
            lens = mbr_lib.top_lengths(enc["length_logits"][:, :n + 1], beam)
        else:
            lens = jnp.sum(sm, -1, keepdims=True).astype(jnp.int32)
            beam = 1
        c = beam * draws
        lens = jnp.clip(jnp.repeat(lens, draws, axis=1), 1, n).reshape(-1)  # [B·C]
        rep = lambda a: jnp.repeat(a, c, axis=0)  # noqa: E731
        mem, smc = rep(enc["memory"]), rep(sm)
        tmask = (jnp.arange(n)[None, :] < lens[:, None]).astype(jnp.float32)

        def denoise(z, sc, t):
            return apply_fn(params, z, {"memory": mem, "source_mask": smc, "t": t, "self_cond": sc,
                                        "padding_mask": tmask})

        if mode == "diffuseq":
            zhat, info = diffuseq_sc(denoise, rng, shape=(bsz * c, n, s.dim), steps=steps, schedule=s.schedule,
                                     t_end=s.t_end, record_gap=record_gap, z_init=z_init)
        else:
            zhat, info = ddim_sc(denoise, rng, shape=(bsz * c, n, s.dim), steps=steps, schedule=s.schedule, mode=mode,
                                 t_end=s.t_end, cedi_end=s.cedi_end, record_gap=record_gap, z_init=z_init)
        tokens = jnp.where(tmask > 0, jnp.argmax(zhat @ table.T, -1), PAD_ID).astype(jnp.int32)
        cands = tokens.reshape(bsz, c, n)
        first_eos = jnp.argmax(jnp.concatenate([cands == EOS_ID, jnp.ones((bsz, c, 1), bool)], -1), -1)
        pick = mbr_lib.mbr_select(cands, jnp.minimum(first_eos, lens.reshape(bsz, c)))
        info = {k: v for k, v in info.items() if k != "z"}
        info.update(lengths=lens.reshape(bsz, c)[jnp.arange(bsz), pick], candidates=jnp.int32(c))
        return cands[jnp.arange(bsz), pick], info

    return Method(name="fastdiss", loss=loss, evaluate=evaluate, sample=sample)
