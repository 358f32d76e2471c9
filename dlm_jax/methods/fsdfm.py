"""FS-DFM: few-step discrete flow matching, a student conditioned on (t, h), METHODS §6.

Time direction: **t = 0 is the source (mask or uniform noise), t = 1 is the data.**

Per training sequence (§6.3, stage 1):

1. ``(t, h)`` from a policy over ``H = {1, …, 1/N_ref}`` (``fsdfm_teacher.sample_t_h``; t + h ≤ 1);
2. ``x_t`` on the DFM path, student log-probs ``ℓ_S = f_θ(x_t, t, h)`` over the V clean tokens;
3. ``h < h_th = 1/(N_ref/2 + 1)`` (only ``h = 1/N_ref``): the **anchor** —
   ``just_student=True`` (default): the generalized KL against the data ``x_1`` (rate ``κ̇/(1−κ)``);
   ``just_student=False``: ``KL(softmax f_T(x_t, t) ‖ softmax ℓ_S)`` with a frozen pretrained DFM
   teacher ``f_T`` (``extra["teacher_params"]``, loaded from ``method.teacher_workdir``);
4. otherwise **shortcut distillation**: ``τ² KL(softmax(ℓ_T/τ) ‖ softmax(ℓ_S/τ))`` with ``ℓ_T`` the
   RK-4 (or Heun) teacher run by the EMA student ``aux["ema_params"]`` under stop-gradient
   (``fsdfm_teacher.teacher_logits``; faithful time labels by default);
5. loss = per-token mean of the selected terms (``Σ·loss_mask / Σ loss_mask``).

The student is a DiT with ``conditioning="th"`` (``model_spec``). It starts from a pretrained DFM
(teacher) workdir through the trainer's generic ``config.init_from`` (mapping ``"dit_t_to_th"``,
``dlm_jax.runs.init_from``); ``model.identity_h_init`` makes the student compute exactly the
teacher's function at step 0. The source of the teacher run must equal ``method.source``.

Config keys read by ``build`` (missing keys get these defaults, written back into the config):

===================  ===============  ======================================================
``source``           ``"mask"``       ``"mask"`` or ``"uniform"``
``carry_over``       ``False``        mask source: visible tokens carried over (``dfm.carry_over``), as the teacher
``schedule``         ``"polynomial"`` κ schedule; ``exponent`` n of ``κ = t^n`` (default 1)
``n_ref``            ``1024``         N_ref (a power of two): H and the t grid
``policy``           ``"inverse_h"``  (t, h) policy: inverse_h | uniform | large_h | annealed
``anneal_every``     ``20000``        annealed policy: weights double every this many steps
``teacher``          ``"rk4"``        shortcut teacher: ``"rk4"`` or ``"heun"``
``rk4_labels``       ``"faithful"``   ``"faithful"`` (reference) or ``"consistent"``
``tau``              ``1.0``          distillation temperature
``just_student``     ``True``         anchor on data (True) or on a frozen DFM teacher (False)
``teacher_workdir``  ``None``         workdir of the DFM teacher (needed when just_student=False)
``teacher_step``     ``None``         its checkpoint step (None = latest)
``teacher_weights``  ``"params"``     ``"params"`` or ``"ema"`` weights of teacher checkpoints
``elbo_points``      ``32``           ELBO evaluation grid (at h = 1/N_ref), as in ``dfm``
``sampler``          ``"fsdfm"``      default sampler of ``sample``
===================  ===============  ======================================================

plus ``config.model.vocab_size`` (V),
``config.model.dropout``, ``config.data.seq_len``. The EMA decay is the trainer's
``config.train.ema_decay`` (0.9995 in the paper).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dlm_jax.methods import dfm
from dlm_jax.methods import fsdfm_teacher as ft
from dlm_jax.checks import check_bool, check_choice, check_float, check_int, check_str, fail, resolve
from dlm_jax.methods.base import Method, masked_mean, vocab_size_from_config
from dlm_jax.models.registry import ModelSpec
from dlm_jax.processes import flow

__all__ = ["TEACHER_WEIGHTS", "loss_terms", "model_spec", "checkpoint_inputs", "build"]

TEACHER_WEIGHTS = ("params", "ema")


def loss_terms(student_lp, x1, xt, t, h, teacher_lp, *, n_ref: int, schedule="linear", tau: float = 1.0,
               anchor_lp=None):
    """Per-position FS-DFM loss ``[B, L]`` and the anchor rows ``[B]`` (bool).

    ``student_lp``/``teacher_lp [B, L, V]``: ``ℓ_S`` and the shortcut target ``ℓ_T``; ``anchor_lp``:
    the pretrained teacher's log-probs (None = the generalized-KL data anchor); t, h ``[B]``
    (t: 0 = source, 1 = data). Rows with ``h < 1/(N_ref/2+1)`` take the anchor, the others the
    distillation KL."""
    anchor = jnp.asarray(h) < ft.anchor_threshold(n_ref)
    if anchor_lp is None:
        anchor_terms = flow.generalized_kl_loss(student_lp, x1, xt, t, schedule)
    else:
        anchor_terms = ft.distill_kl(anchor_lp, student_lp, 1.0)
    kl = ft.distill_kl(teacher_lp, student_lp, tau)
    return jnp.where(anchor[:, None], anchor_terms, kl), anchor


def model_spec(config) -> ModelSpec:
    """The student: the teacher's DiT shape (ids in ``[0, V]``, ``V + 1`` logits) conditioned on (t, h)."""
    return dfm.model_spec(config, conditioning="th")


def checkpoint_inputs(config) -> dict:
    """The frozen DFM teacher of ``just_student=False``: ``{"teacher": {workdir, step, weights}}``,
    resolved by the trainer (``dlm_jax.runs``) before anything is traced; ``{}`` otherwise."""
    mc = config.method
    if resolve(mc, "just_student", True, prefix="method", check=check_bool):
        return {}
    workdir = mc.get("teacher_workdir", None)
    if not workdir:
        fail("method.teacher_workdir", workdir, "a DFM workdir when just_student=False")
    step = mc.get("teacher_step", -1)
    return {"teacher": {"workdir": workdir, "step": None if step is None or step < 0 else step,
                        "weights": resolve(mc, "teacher_weights", "params", prefix="method", check=check_choice,
                                           allowed=TEACHER_WEIGHTS)}}


# ------------------------------------------------------------------------------------------------
# The method.
# ------------------------------------------------------------------------------------------------
def build(config, apply_fn: Callable, *, inputs: dict | None = None) -> Method:
    """The FS-DFM ``Method`` for the student ``apply_fn(params, x, cond) -> logits [B, L, C]``
    (``cond = {"t", "h"}``). ``inputs["teacher"]`` (``.apply``, ``.params``) is the frozen DFM teacher
    of ``just_student=False`` (see ``checkpoint_inputs``); without it the method samples and evaluates
    but cannot train. Validates first."""
    mc = config.method
    vocab_size = vocab_size_from_config(config)
    source = dfm.check_source(mc)
    carry = dfm.check_carry_over(mc, source)  # as its teacher's (the student's outputs, the anchor's too)
    schedule = dfm.schedule_from_config(mc)
    n_ref = resolve(mc, "n_ref", 1024, prefix="method")
    try:
        n_ref = ft.check_n_ref(n_ref)
    except ValueError:
        n_ref = 0
    if n_ref < 2:
        fail("method.n_ref", mc.n_ref, "a power of two >= 2 (1024 in the paper)")
    policy = resolve(mc, "policy", "inverse_h", prefix="method", check=check_choice, allowed=ft.POLICIES)
    anneal_every = resolve(mc, "anneal_every", 20_000, prefix="method", check=check_int, min=1)
    teacher = resolve(mc, "teacher", "rk4", prefix="method", check=check_choice, allowed=ft.TEACHERS)
    labels = resolve(mc, "rk4_labels", "faithful", prefix="method", check=check_choice, allowed=ft.LABELS)
    tau = resolve(mc, "tau", 1.0, prefix="method", check=check_float, min=0.0, min_open=True)
    just_student = resolve(mc, "just_student", True, prefix="method", check=check_bool)
    resolve(mc, "teacher_weights", "params", prefix="method", check=check_choice, allowed=TEACHER_WEIGHTS)
    resolve(mc, "teacher_workdir", "", prefix="method")  # read by checkpoint_inputs (just_student=False)
    resolve(mc, "teacher_step", -1, prefix="method", check=check_int, min=-1)
    num_points = resolve(mc, "elbo_points", 32, prefix="method", check=check_int, min=1)
    elbo_eps = resolve(mc, "elbo_eps", 1e-3, prefix="method", check=check_float, min=0.0, max=1.0, max_open=True)
    default_sampler = resolve(mc, "sampler", "fsdfm", prefix="method", check=check_str)
    use_dropout = "model" in config and float(config.model.get("dropout", 0.0) or 0.0) > 0.0
    default_length = config.data.get("seq_len", None) if "data" in config else None
    teacher_in = (inputs or {}).get("teacher")
    teacher_apply = None if teacher_in is None else teacher_in.apply
    teacher_params = None if teacher_in is None else teacher_in.params

    student_lp = dfm.logprobs_fn(apply_fn, vocab_size, h_conditioned=True, carry=carry)
    pretrained_lp = None if teacher_apply is None else dfm.logprobs_fn(teacher_apply, vocab_size, carry=carry)

    def init_extra(params):
        del params
        if just_student:
            return {}
        if teacher_params is None:
            fail("method.teacher_workdir", mc.get("teacher_workdir"), "a resolved DFM teacher to train with "
                 "just_student=False (the trainer resolves checkpoint_inputs)")
        return {"teacher_params": teacher_params}

    def loss(params, batch, rng, step=0, aux=None):
        """Per-token FS-DFM loss on ``batch["tokens"]``; ``aux["ema_params"]`` runs the shortcut teacher."""
        if aux is None or "ema_params" not in aux:
            raise ValueError("aux: missing 'ema_params'; expected the trainer's EMA of params")
        x1 = jnp.asarray(batch["tokens"])
        k_th, k_path, k_teacher, k_drop = jax.random.split(rng, 4)
        t, h = ft.sample_t_h(k_th, x1.shape[0], policy=policy, n_ref=n_ref, step=0 if step is None else step,
                             anneal_every=anneal_every)
        xt = flow.sample_path(k_path, x1, t, source=source, vocab_size=vocab_size, schedule=schedule)
        apply_kw = {"dropout_rng": k_drop} if use_dropout else {}
        ls = student_lp(params, xt, t, h, **apply_kw)
        ema = jax.lax.stop_gradient(aux["ema_params"])
        ema_fn = dfm.denoise_fn(apply_fn, ema, vocab_size, h_conditioned=True, carry=carry)
        lt = jax.lax.stop_gradient(ft.teacher_logits(ema_fn, k_teacher, xt, t, h, teacher=teacher, labels=labels,
                                                     schedule=schedule))
        anchor_lp = None
        if not just_student and pretrained_lp is None:
            fail("method.teacher_workdir", mc.get("teacher_workdir"), "a resolved DFM teacher to train with "
                 "just_student=False")
        if not just_student:
            anchor_lp = jax.lax.stop_gradient(pretrained_lp(jax.lax.stop_gradient(aux["teacher_params"]), xt, t))
        terms, anchor = loss_terms(ls, x1, xt, t, h, lt, n_ref=n_ref, schedule=schedule, tau=tau,
                                   anchor_lp=anchor_lp)
        mask = batch.get("loss_mask")
        mean, total, count = masked_mean(terms, mask)
        rows = jnp.ones_like(terms) if mask is None else jnp.asarray(mask, terms.dtype)
        a = anchor[:, None].astype(terms.dtype)
        anchor_loss = jnp.sum(terms * rows * a) / jnp.maximum(jnp.sum(rows * a), 1e-12)
        distill_loss = jnp.sum(terms * rows * (1 - a)) / jnp.maximum(jnp.sum(rows * (1 - a)), 1e-12)
        return mean, {"loss": mean, "loss_sum": total, "num_tokens": count, "anchor_loss": anchor_loss,
                      "distill_loss": distill_loss, "anchor_fraction": jnp.mean(anchor.astype(terms.dtype)),
                      "mean_h": jnp.mean(h)}

    def evaluate(params, batch, rng):
        """``nelbo_sum`` (the §2.3(c) ELBO of the student at ``h = 1/N_ref``, nats) and ``num_tokens``."""
        x1 = jnp.asarray(batch["tokens"])
        h_min = jnp.full((x1.shape[0],), 1.0 / n_ref, jnp.float32)
        lp = lambda xt, t: student_lp(params, xt, t, h_min)  # noqa: E731
        terms = dfm.elbo_terms(lp, rng, x1, source=source, vocab_size=vocab_size, schedule=schedule,
                               num_points=num_points, eps=elbo_eps)
        _, total, count = masked_mean(terms, batch.get("loss_mask"))
        return {"nelbo_sum": total, "num_tokens": count}

    def sample(params, rng, *, num_samples, steps, sampler=None, length=None, **kw):
        """N = ``steps`` student steps of size ``h = 1/N`` (default sampler ``"fsdfm"``, the
        cumulative-scalar jump sampler). Returns ``(tokens, info)`` with ``info["nfe"] = N``."""
        length = length or default_length
        if length is None:
            raise ValueError("length: None; expected an int (or set config.data.seq_len)")
        fn = dfm.get_sampler(sampler or default_sampler)
        kw.setdefault("source", source)
        kw.setdefault("schedule", schedule)
        denoise = dfm.denoise_fn(apply_fn, params, vocab_size, h_conditioned=True, carry=carry)
        return fn(denoise, rng, num_samples=num_samples, length=length, steps=steps, vocab_size=vocab_size, **kw)

    return Method(name="fsdfm", loss=loss, evaluate=evaluate, sample=sample, init_extra=init_extra,
                  samplers=_family("FLOW"))


def _family(name: str) -> tuple[str, ...]:
    from dlm_jax import samplers

    return getattr(samplers, name)
