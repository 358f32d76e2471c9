"""Optimizer: AdamW + warm-up/cosine (or constant) schedule + global-norm clipping; EMA of params.

Config keys (``config.train``): ``lr``, ``schedule`` ("cosine" | "constant" | "inverse_sqrt":
fairseq's ``lr·min(n/warmup, √(warmup/n))``, DINOISER's), ``warmup_steps``,
``final_lr_frac`` (cosine end value as a fraction of ``lr``; default 0.1), ``steps`` (cosine
length), ``b1``, ``b2``, ``eps`` (default 1e-8), ``weight_decay`` (applied to weights with
ndim >= 2 only), ``grad_clip`` (global norm; 0 or None = off), ``ema_decay``.

Gradient accumulation is not an optax wrapper: ``step.py`` scans over micro-batches inside the
step and calls this optimizer once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from dlm_jax import checks

SCHEDULES = ("cosine", "constant", "inverse_sqrt")


def _get(cfg, key, default=None):
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def validate(cfg) -> None:
    """One-line ValueErrors for bad optimizer settings (run before anything compiles). Every value
    must be finite: ``lr=inf`` would train on NaNs."""
    checks.check_choice("train.schedule", _get(cfg, "schedule", "cosine"), SCHEDULES)
    checks.check_float("train.lr", _get(cfg, "lr", None), min=0.0, min_open=True)
    checks.check_int("train.warmup_steps", _get(cfg, "warmup_steps", 0), min=0)
    checks.check_float("train.final_lr_frac", _get(cfg, "final_lr_frac", 0.1), min=0.0, max=1.0)
    checks.check_float("train.ema_decay", _get(cfg, "ema_decay", 0.0), min=0.0, max=1.0, max_open=True)
    for key, default in (("b1", 0.9), ("b2", 0.999)):
        checks.check_float(f"train.{key}", _get(cfg, key, default), min=0.0, max=1.0, max_open=True)
    checks.check_float("train.eps", _get(cfg, "eps", 1e-8), min=0.0)
    checks.check_float("train.weight_decay", _get(cfg, "weight_decay", 0.0), min=0.0)
    clip = _get(cfg, "grad_clip", None)
    if clip is not None:
        checks.check_float("train.grad_clip", clip, min=0.0)


def make_schedule(cfg, total_steps: int | None = None) -> optax.Schedule:
    """Linear warm-up from 0 to ``lr``, then cosine to ``final_lr_frac * lr`` or constant."""
    validate(cfg)
    lr = float(_get(cfg, "lr"))
    warmup = int(_get(cfg, "warmup_steps", 0))
    total = int(total_steps if total_steps is not None else _get(cfg, "steps", 1))
    if _get(cfg, "schedule", "cosine") == "inverse_sqrt":
        w = float(max(warmup, 1))
        return lambda n: lr * jnp.minimum(n / w, jnp.sqrt(w / jnp.maximum(n, 1.0)))
    if _get(cfg, "schedule", "cosine") == "constant":
        if warmup == 0:
            return optax.constant_schedule(lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    frac = float(_get(cfg, "final_lr_frac", 0.1))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup,
        decay_steps=max(total, warmup + 1), end_value=lr * frac)


def _decay_mask(params):
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(cfg, total_steps: int | None = None) -> optax.GradientTransformation:
    """Global-norm clipping followed by AdamW on the schedule; decay only on ndim >= 2 weights."""
    sched = make_schedule(cfg, total_steps)
    parts = []
    clip = _get(cfg, "grad_clip", None)
    if clip:
        parts.append(optax.clip_by_global_norm(float(clip)))
    parts.append(optax.adamw(sched, b1=float(_get(cfg, "b1", 0.9)), b2=float(_get(cfg, "b2", 0.999)),
                             eps=float(_get(cfg, "eps", 1e-8)),
                             weight_decay=float(_get(cfg, "weight_decay", 0.0)), mask=_decay_mask))
    return optax.chain(*parts)


def ema_update(ema, params, decay):
    """``ema <- decay * ema + (1 - decay) * params`` (decay 0 keeps a copy of params)."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
