"""FS-DFM diagnostics: what the student is trained toward, and how far it is (issue 13, METHODS §6.1, §6.3).

Time direction: **t = 0 is the source (mask or uniform noise), t = 1 is the data**; the mask id is V.

A student step of size h from ``(x, t)`` is the cumulative-scalar jump kernel of ``flow.jump_log_probs``:
per position, stay w.p. ``exp(−G(1 − p(z)))``, else move to ``y ≠ z`` w.p. ``∝ p(y)``; a step that
ends at t = 1 is the sampler's last step (draw from p; the mask source keeps its clean tokens).
Every position moves independently, so a student can at best match the **per-position marginal** of
``x_{t+h}``; this module measures targets in that currency:

* ``exact_step_marginal(q, x, t, h)``: the exact law of ``x_{t+h}^i`` given ``x_t`` on the mixture
  path, from the exact posterior marginals ``q = p(x_1^i | x_t)``: with ``r = 1 − e^{−G(t,h)}``,
  ``m(y) = r q(y)`` for ``y ≠ z`` and ``m(z) = 1 − r(1 − q(z))`` (given x_1 the positions are
  independent and each arrives in ``(t, t+h]`` w.p. r). Mask source: ``m = e^{−G}`` stays masked.
* ``implied_posterior(m, x, t, h)``: the p whose one-step kernel has marginal m (the kernel inverted:
  ``1 − p(z) = −ln m(z) / G``, ``p(y) = m(y)(1 − p(z)) / (1 − m(z))``); ``ideal_student`` is it applied
  to the exact marginal. Mask source: the ideal student is the posterior q itself, for every h, so
  distillation cannot improve the marginals of a mask-source step; uniform source: it keeps more
  mass on z than q (``1 − p*(z) ≤ 1 − q(z)``), the first-order error the student must learn.
* ``composed_marginal``: the per-position law of ``x_{t+h}`` after n sub-steps of ``h/n`` of a teacher
  (Monte Carlo over chains, the last sub-step's law averaged exactly); its implied posterior is the
  "composed teacher" target of the student at h.
* ``rk4_mean_target``: ``E[softmax ℓ_T]`` over the teacher's random stages — the minimiser of the
  expected distillation KL, i.e. what the student converges to under a given EMA.
* ``kl``: per-position ``KL(target ‖ model)``; ``report`` assembles the grid diagnostics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm_jax.methods import fsdfm_teacher as ft
from dlm_jax.processes import flow

__all__ = ["exact_step_marginal", "kernel_marginal", "implied_posterior", "ideal_student", "composed_marginal",
           "rk4_mean_target", "kl", "report"]

END_TOL = 1e-6  # a step with t + h >= 1 − END_TOL is the sampler's last step


def _is_last(t, h):
    return (jnp.asarray(t) + jnp.asarray(h)) >= 1.0 - END_TOL


def _bcast(a, ndim):
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (ndim - a.ndim)) if a.ndim else a


def exact_step_marginal(q, x, t, h, schedule="linear"):
    """Exact per-position law ``[B, L, V+1]`` of ``x_{t+h}`` given ``x_t = x`` on the mixture path
    (class V = mask id), from the exact posteriors ``q [B, L, V]``; t, h ``[B]`` (t: 0 = source)."""
    q, x = jnp.asarray(q), jnp.asarray(x)
    v = q.shape[-1]
    g = _bcast(flow.cumulative_scalar(t, h, schedule), 3)
    r = jnp.where(_bcast(_is_last(t, h), 3), 1.0, -jnp.expm1(-g))  # G is clipped at 1e-8 at t + h = 1
    q_ext = jnp.concatenate([q, jnp.zeros(q.shape[:-1] + (1,), q.dtype)], -1)
    is_z = jax.nn.one_hot(x, v + 1, dtype=bool)
    qz = jnp.sum(jnp.where(is_z, q_ext, 0.0), -1, keepdims=True)
    return jnp.where(is_z, 1.0 - r * (1.0 - qz), r * q_ext)


def kernel_marginal(log_p, x, t, h, schedule="linear", *, source: str = "mask"):
    """Law ``[B, L, V+1]`` of one student step from ``(x, t)`` with posterior ``log_p [B, L, V]``:
    the cumulative-scalar jump, or the sampler's last step when ``t + h = 1`` (draw from p; the mask
    source keeps clean tokens)."""
    x, log_p = jnp.asarray(x), jnp.asarray(log_p)
    v = log_p.shape[-1]
    jumped = jnp.exp(flow.jump_log_probs(x, log_p, t, h, schedule))
    p_ext = jnp.concatenate([jnp.exp(log_p), jnp.zeros(log_p.shape[:-1] + (1,), log_p.dtype)], -1)
    keep = jax.nn.one_hot(x, v + 1, dtype=log_p.dtype)
    final = jnp.where((x == v)[..., None], p_ext, keep) if source == "mask" else p_ext
    return jnp.where(_bcast(_is_last(t, h), 3), final, jumped)


def implied_posterior(m, x, t, h, schedule="linear", eps: float = 1e-30):
    """The posterior ``[B, L, V]`` (probabilities) whose one-step kernel (``kernel_marginal``) has
    per-position law ``m [B, L, V+1]``; when ``m(z) < e^{−G}`` (unreachable in one step) the move
    mass is capped at 1. Last steps (t + h = 1): m itself over the clean classes."""
    m, x = jnp.asarray(m), jnp.asarray(x)
    v = m.shape[-1] - 1
    g = _bcast(flow.cumulative_scalar(t, h, schedule), 3)
    is_z = jax.nn.one_hot(x, v + 1, dtype=bool)
    mz = jnp.sum(jnp.where(is_z, m, 0.0), -1, keepdims=True)
    move = jnp.clip(-jnp.log(jnp.maximum(mz, eps)) / jnp.maximum(g, eps), 0.0, 1.0)  # 1 − p(z)
    out = jnp.where(is_z, 1.0 - move, m * move / jnp.maximum(1.0 - mz, eps))
    masked = (x == v)[..., None]
    out = jnp.where(masked, m / jnp.maximum(1.0 - mz, eps), out)[..., :v]
    clean = m[..., :v] / jnp.maximum(jnp.sum(m[..., :v], -1, keepdims=True), eps)
    return jnp.where(_bcast(_is_last(t, h), 3), clean, out)


def ideal_student(q, x, t, h, schedule="linear"):
    """The best one-step student ``[B, L, V]``: the posterior whose kernel reproduces the exact
    per-position law of ``x_{t+h}`` (mask source: q itself; uniform source: more mass on z)."""
    return implied_posterior(exact_step_marginal(q, x, t, h, schedule), x, t, h, schedule)


def composed_marginal(denoise_fn, key, x, t, h, n_sub: int, *, num_chains: int = 64, schedule="linear",
                      source: str = "mask"):
    """Per-position law ``[B, L, V+1]`` of ``x_{t+h}`` after ``n_sub`` teacher steps of ``h/n_sub`` from
    ``x_t = x`` (the flow sampler's rules, the last step included when t + h = 1). ``denoise_fn(x, t,
    h) -> log-probs`` is queried with the sub-step size. Monte Carlo over ``num_chains`` chains per
    row, Rao-Blackwellised: the final sub-step contributes its exact law, and for the mask source a
    position masked at t accumulates, at every sub-step where it is still masked, that sub-step's
    exact reveal law (unbiased when revealed tokens stay put, e.g. for the exact posterior; a
    trained teacher's rare re-jumps of revealed tokens are left out)."""
    x = jnp.asarray(x)
    b, n_len = x.shape
    v = None
    t = jnp.broadcast_to(jnp.asarray(t), (b,))
    h = jnp.broadcast_to(jnp.asarray(h), (b,))
    rep = lambda a: jnp.repeat(a, num_chains, axis=0)  # noqa: E731
    xs, ts, dt = rep(x), rep(t), rep(h) / n_sub
    last_end = _is_last(ts, rep(h))
    keys = jax.random.split(key, n_sub)
    acc = None
    for k in range(n_sub):
        tk = ts + k * dt
        lp = jax.nn.log_softmax(denoise_fn(xs, tk, dt), -1)
        v = lp.shape[-1]
        step = jnp.where(last_end, 1.0 - tk, dt) if k == n_sub - 1 else dt  # the last sub-step ends at t + h
        law = kernel_marginal(lp, xs, tk, step, schedule, source=source)
        reveal = jnp.where((xs == v)[..., None], law.at[..., v].set(0.0), 0.0)
        acc = reveal if acc is None else acc + reveal
        if k < n_sub - 1:
            xs = ft.jump(keys[k], xs, lp, tk, dt, schedule)
    masked0 = (rep(x) == v)[..., None]
    if source == "mask":
        still = 1.0 - acc.sum(-1, keepdims=True)
        law = jnp.where(masked0, acc.at[..., v:].set(still), law)
    return law.reshape(b, num_chains, n_len, -1).mean(1)


def rk4_mean_target(denoise_fn, key, x, t, h, *, num_draws: int = 64, teacher: str = "rk4",
                    labels: str = "faithful", schedule="linear"):
    """``(log E[softmax ℓ_T] [B, L, V], conflict [B, L])`` over ``num_draws`` draws of the teacher's
    stage jumps: the minimiser over the student of the expected distillation KL for this
    ``denoise_fn``. A draw whose stages put disjoint one-hot posteriors on a position (the stage
    states revealed it differently: possible when stages jump from x_t independently, as with
    ``labels="consistent"``) has no target (its logit sum is −inf everywhere); such draws are left
    out of the mean and ``conflict`` is their fraction (NaN target where every draw conflicts)."""
    x = jnp.asarray(x)
    b = x.shape[0]
    rep = lambda a: jnp.repeat(jnp.broadcast_to(jnp.asarray(a), (b,)), num_draws, axis=0)  # noqa: E731
    lt = ft.teacher_logits(denoise_fn, key, jnp.repeat(x, num_draws, axis=0), rep(t), rep(h), teacher=teacher,
                           labels=labels, schedule=schedule)
    lt = jax.nn.log_softmax(lt, -1).reshape((b, num_draws) + lt.shape[1:])
    bad = jnp.isnan(lt).any(-1, keepdims=True)
    count = jnp.sum(~bad, axis=1)
    mean = jax.nn.logsumexp(jnp.where(bad, -jnp.inf, lt), axis=1) - jnp.log(count)
    return jnp.where(count > 0, mean, jnp.nan), 1.0 - count[..., 0] / num_draws


def kl(target_p, model_log_p):
    """Per-position ``KL(target ‖ model)`` ``[B, L]``; ``target_p`` probabilities, ``model_log_p``
    log-probabilities (0·log 0 = 0; a NaN target gives NaN, never a silent 0)."""
    p = jnp.asarray(target_p)
    lp = jnp.log(jnp.where(p > 0, p, 1.0))
    return jnp.sum(jnp.where(p == 0, 0.0, p * (lp - jnp.asarray(model_log_p))), -1)  # a NaN target stays NaN


def report(student_fn, ema_fn, teacher_fn, key, x1, grid, *, source: str, vocab_size: int, schedule="linear",
           n_subs=(2, 4, 8), num_chains: int = 64, oracle_q=None, rk4: str = "rk4", labels: str = "faithful"):
    """Per ``(t, h)`` in ``grid``: mean over positions of the KL between the student at (t, h) and

    * ``rk4``: the (single-draw) RK-4 shortcut target of the EMA student ``ema_fn`` (the training loss);
    * ``composed_<n>``: the teacher ``teacher_fn`` composed over n sub-steps (its implied posterior),
      with ``teacher_one_<n>``: the same target against one teacher step at (t, h);
    * with ``oracle_q(x, t) -> q`` (exact posteriors): ``ideal`` / ``teacher_ideal``, the KL from the
      ideal student (``ideal_student``) to the student / the teacher.

    Functions take ``(x, t [B], h [B]) -> log-probs [B, L, V]``; the teacher is queried with the
    sub-step size (a DFM teacher ignores it). Returns ``{name: [len(grid)] floats}``."""
    x1 = jnp.asarray(x1)
    b = x1.shape[0]

    def point(k, t0, h0):
        k_path, k_rk, k_comp = jax.random.split(k, 3)
        t, h = jnp.full((b,), t0), jnp.full((b,), h0)
        xt = flow.sample_path(k_path, x1, t, source=source, vocab_size=vocab_size, schedule=schedule)
        ls = jax.nn.log_softmax(student_fn(xt, t, h), -1)
        lteach = jax.nn.log_softmax(teacher_fn(xt, t, h), -1)
        lt = ft.teacher_logits(ema_fn, k_rk, xt, t, h, teacher=rk4, labels=labels, schedule=schedule)
        res = {"rk4": jnp.mean(ft.distill_kl(lt, ls))}
        for n in n_subs:
            m = composed_marginal(teacher_fn, jax.random.fold_in(k_comp, n), xt, t, h, n, num_chains=num_chains,
                                  schedule=schedule, source=source)
            target = implied_posterior(m, xt, t, h, schedule)
            res[f"composed_{n}"] = jnp.mean(kl(target, ls))
            res[f"teacher_one_{n}"] = jnp.mean(kl(target, lteach))
        if oracle_q is not None:
            ideal = ideal_student(oracle_q(xt, t), xt, t, h, schedule)
            res["ideal"] = jnp.mean(kl(ideal, ls))
            res["teacher_ideal"] = jnp.mean(kl(ideal, lteach))
        return res

    point = jax.jit(point)
    out = {"t": [float(t0) for t0, _ in grid], "h": [float(h0) for _, h0 in grid]}
    for i, (t0, h0) in enumerate(grid):
        flow.check_step(t0, h0)
        for name, value in point(jax.random.fold_in(key, i), jnp.asarray(t0, float), jnp.asarray(h0, float)).items():
            out.setdefault(name, []).append(float(value))
    return out
