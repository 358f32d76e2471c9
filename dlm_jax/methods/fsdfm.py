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

The student is a DiT with ``conditioning="th"``. Initialising it from a pretrained DFM (teacher)
workdir — ``method.init_from`` — happens in the Method's ``init_params`` hook, which the trainer
applies to fresh params before the optimizer and EMA (``init_params(config, params)`` is the same
copy as a plain function); ``model.identity_h_init`` makes the student compute exactly the
teacher's function at step 0.

Config keys read by ``build`` (``config.method.get(key, default)``):

===================  ===============  ======================================================
``source``           ``"mask"``       ``"mask"`` or ``"uniform"``
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
``init_from``        ``None``         DFM workdir to initialise the student from (init_params hook)
``elbo_points``      ``32``           ELBO evaluation grid (at h = 1/N_ref), as in ``dfm``
``sampler``          ``"fsdfm"``      default sampler of ``sample``
===================  ===============  ======================================================

plus ``config.model.vocab_size`` (V), ``config.model.conditioning`` (must be ``"th"``),
``config.model.dropout``, ``config.data.seq_len``. The EMA decay is the trainer's
``config.train.ema_decay`` (0.9995 in the paper).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dlm_jax.methods import dfm
from dlm_jax.methods import fsdfm_teacher as ft
from dlm_jax.methods.base import Method, masked_mean, vocab_size_from_config
from dlm_jax.processes import flow

__all__ = ["TEACHER_WEIGHTS", "loss_terms", "student_dit_config", "load_workdir_params", "init_params",
           "make_model_fn", "build"]

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


# ------------------------------------------------------------------------------------------------
# Pretrained DFM checkpoints: teacher params and student initialisation.
# ------------------------------------------------------------------------------------------------
def student_dit_config(config):
    """The ``DiTConfig`` the trainer builds for ``config.model`` (V + 1 input ids, V + 1 outputs)."""
    from dlm_jax.models import DiTConfig

    m = dict(config.model.to_dict() if hasattr(config.model, "to_dict") else config.model)
    v = m.pop("vocab_size")
    m.setdefault("num_classes", v + 1)
    return DiTConfig.from_dict(dict(m, vocab_size=v + 1))


def load_workdir_params(workdir: str, *, step: int | None = None, weights: str = "params"):
    """Restore a trainer workdir's checkpoint with ``dlm_jax.train.checkpoint``; returns
    ``(graphdef, params on the host, the run's config)``. The restore target is rebuilt from the
    config stored in the checkpoint's metadata (its DiT, method state and optimizer)."""
    import os

    import ml_collections
    import orbax.checkpoint as ocp

    from dlm_jax.methods.base import build_method
    from dlm_jax.models import make_apply
    from dlm_jax.train import checkpoint as ckpt_lib
    from dlm_jax.train import mesh as mesh_lib
    from dlm_jax.train import optim
    from dlm_jax.train import state as state_lib
    from dlm_jax.train.loop import dit_model

    if weights not in TEACHER_WEIGHTS:
        raise ValueError(f"method.teacher_weights: {weights!r}; expected one of {TEACHER_WEIGHTS}")
    if not isinstance(workdir, str) or not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise ValueError(f"workdir: {workdir!r}; expected a trainer workdir with a checkpoints/ folder")
    ck = ckpt_lib.Checkpointer(workdir, every=0, keep=1_000_000, async_save=False)
    try:
        steps = ck.all_steps()
        if not steps or (step is not None and step not in steps):
            raise ValueError(f"teacher_step: {step!r}; expected one of the saved steps {steps} of {workdir}")
        step = steps[-1] if step is None else int(step)
        meta = ck.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        cfg = ml_collections.ConfigDict(meta["config"])
        mesh = mesh_lib.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1}))
        graphdef, init = state_lib.trace_model(lambda: dit_model(cfg))
        method = build_method(cfg, make_apply(graphdef))
        target, _ = state_lib.abstract_train_state(init, optim.make_optimizer(cfg.train, cfg.train.steps),
                                                   method.init_extra, int(cfg.seed), mesh, "dp")
        state, _ = ck.restore(step, target)
    finally:
        ck.close()
    params = state.ema_params if weights == "ema" else state.params
    return graphdef, jax.device_get(params), cfg


def init_params(config, params, teacher_params=None):
    """Student params with a DFM teacher's weights copied in (``init_student_from_teacher``;
    ``model.identity_h_init`` sets the fusers to the identity). Loads ``method.init_from`` when
    ``teacher_params`` is None; returns ``params`` unchanged when there is nothing to copy."""
    from dlm_jax.models import init_student_from_teacher

    if teacher_params is None:
        src = config.method.get("init_from", None)
        if not src:
            return params
        teacher_params = load_workdir_params(src, step=config.method.get("teacher_step", None),
                                             weights=config.method.get("teacher_weights", "params"))[1]
    return init_student_from_teacher(teacher_params, params, student_dit_config(config))


# ------------------------------------------------------------------------------------------------
# The method.
# ------------------------------------------------------------------------------------------------
def _choice(mc, key, default, allowed):
    v = mc.get(key, default)
    if v not in allowed:
        raise ValueError(f"method.{key}: {v!r}; expected one of {allowed}")
    return v


def build(config, apply_fn: Callable, *, teacher_apply: Callable | None = None, teacher_params=None) -> Method:
    """The FS-DFM ``Method`` for the student ``apply_fn(params, x, cond) -> logits [B, L, C]``
    (``cond = {"t", "h"}``). ``teacher_apply``/``teacher_params`` inject the frozen DFM teacher of
    ``just_student=False`` (else it is loaded from ``method.teacher_workdir``). Validates first."""
    mc = config.method
    vocab_size = vocab_size_from_config(config)
    cond = config.model.get("conditioning", "t") if "model" in config else "t"
    if cond != "th":
        raise ValueError(f"model.conditioning: {cond!r}; expected 'th' (the FS-DFM student takes t and h)")
    source = dfm.check_source(mc)
    schedule = dfm.schedule_from_config(mc)
    n_ref = mc.get("n_ref", 1024)
    try:
        n_ref = ft.check_n_ref(n_ref)
    except ValueError:
        raise ValueError(f"method.n_ref: {n_ref!r}; expected a power of two >= 2 (1024 in the paper)") from None
    if n_ref < 2:
        raise ValueError(f"method.n_ref: {n_ref!r}; expected a power of two >= 2 (1024 in the paper)")
    policy = _choice(mc, "policy", "inverse_h", ft.POLICIES)
    anneal_every = dfm._check_int(mc, "anneal_every", 20_000, 1)
    teacher = _choice(mc, "teacher", "rk4", ft.TEACHERS)
    labels = _choice(mc, "rk4_labels", "faithful", ft.LABELS)
    tau = mc.get("tau", 1.0)
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
        raise ValueError(f"method.tau: {tau!r}; expected a number > 0")
    just_student = mc.get("just_student", True)
    if not isinstance(just_student, bool):
        raise ValueError(f"method.just_student: {just_student!r}; expected a bool")
    weights = _choice(mc, "teacher_weights", "params", TEACHER_WEIGHTS)
    num_points = dfm._check_int(mc, "elbo_points", 32, 1)
    elbo_eps = dfm._check_float(mc, "elbo_eps", 1e-3, 0.0, 1.0)
    default_sampler = mc.get("sampler", "fsdfm")
    use_dropout = "model" in config and float(config.model.get("dropout", 0.0) or 0.0) > 0.0
    default_length = config.data.get("seq_len", None) if "data" in config else None

    if not just_student and teacher_apply is None:
        workdir = mc.get("teacher_workdir", None)
        if not workdir:
            raise ValueError(f"method.teacher_workdir: {workdir!r}; expected a DFM workdir when just_student=False")
        from dlm_jax.models import make_apply

        graphdef, teacher_params, _ = load_workdir_params(workdir, step=mc.get("teacher_step", None),
                                                          weights=weights)
        teacher_apply = make_apply(graphdef)
    if not just_student and teacher_params is None:
        raise ValueError("teacher_params: None; expected the frozen teacher's params with teacher_apply")

    student_lp = dfm.logprobs_fn(apply_fn, vocab_size, h_conditioned=True)
    pretrained_lp = None if just_student else dfm.logprobs_fn(teacher_apply, vocab_size)

    def init_extra(params):
        del params
        return {} if just_student else {"teacher_params": teacher_params}

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
        ema_fn = dfm.denoise_fn(apply_fn, ema, vocab_size, h_conditioned=True)
        lt = jax.lax.stop_gradient(ft.teacher_logits(ema_fn, k_teacher, xt, t, h, teacher=teacher, labels=labels,
                                                     schedule=schedule))
        anchor_lp = None
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
        denoise = dfm.denoise_fn(apply_fn, params, vocab_size, h_conditioned=True)
        return fn(denoise, rng, num_samples=num_samples, length=length, steps=steps, vocab_size=vocab_size, **kw)

    teacher_cache: dict = {}

    def init_student(params):
        """``method.init_from``: copy the DFM teacher into freshly initialised student params. The
        trainer calls this inside its traced init; the checkpoint is read eagerly, once, and only
        when training starts from scratch (never for sampling or resuming)."""
        if not config.method.get("init_from", None):
            return params
        if "params" not in teacher_cache:
            with jax.ensure_compile_time_eval():
                teacher_cache["params"] = load_workdir_params(
                    config.method.init_from, step=config.method.get("teacher_step", None),
                    weights=config.method.get("teacher_weights", "params"))[1]
        return init_params(config, params, teacher_cache["params"])

    return Method(name="fsdfm", loss=loss, evaluate=evaluate, sample=sample, init_extra=init_extra,
                  init_params=init_student)

