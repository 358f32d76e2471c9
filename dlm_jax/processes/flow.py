"""Discrete flow matching: the factorised mixture path, κ schedules, the cumulative scalar and
the exact-hazard jump kernel (METHODS §2.3, §6.1).

Time direction: **t = 0 is the source (all-mask or uniform noise), t = 1 is the data.**
``κ(t)`` is the probability that a token has already arrived at its data value.

* Path: ``x_t^i = x_1^i`` w.p. ``κ(t)``, else ``x_0^i`` (source: the mask id ``V``, or uniform on
  ``[V]``), independently per position.
* Cumulative scalar ``G(t, h) = ln((1−κ(t)) / (1−κ(t+h))) = ∫_t^{t+h} κ̇/(1−κ)``. It is additive
  in h, and ``1 − e^{−G}`` is the exact probability that a not-yet-arrived token arrives in
  ``[t, t+h]`` — the jump kernel built on it never overshoots, whatever h.
* Jump kernel (one FS-DFM step): at each position with current token z and model posterior p,
  stay w.p. ``exp(−G (1 − p(z)))``, otherwise move to ``y ≠ z`` w.p. ``∝ p(y)``.
* Losses: cross-entropy and the generalized KL of Gat et al. (per position, pure functions).

All functions are jit/scan friendly; argument checks run only on concrete (non-traced) values,
so bad inputs fail with a one-line ``ValueError`` before anything compiles.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


Array = jax.Array

__all__ = [
    "SOURCES",
    "SCHEDULES",
    "KappaSchedule",
    "get_schedule",
    "check_source",
    "check_step",
    "cumulative_scalar",
    "average_rate",
    "sample_source",
    "sample_path",
    "path_evidence",
    "jump_log_probs",
    "marginal_velocity",
    "average_generator",
    "cross_entropy_loss",
    "generalized_kl_loss",
    "generalized_kl_minimum",
]

SOURCES = ("mask", "uniform")
SCHEDULES = ("linear", "quadratic", "polynomial", "cosine")
CLIP_MIN = 1e-8  # §6.1 numerics: 1 − κ is clipped to [1e-8, 1] before the log.
STEP_TOL = 1e-6  # slack for t + h ≤ 1 on float32 grids.


@dataclasses.dataclass(frozen=True)
class KappaSchedule:
    """``κ(t)`` with ``κ(0) = 0``, ``κ(1) = 1`` (t: 0 = source, 1 = data).

    * ``"polynomial"``: ``κ = t^n`` (``exponent = n``; FS-DFM uses n = 1, ``"linear"``).
    * ``"cosine"``: ``κ = sin(πt/2)`` (the flow_matching CosineScheduler's α_t), computed with
      ``1 − κ = 2 sin²(π(1−t)/4)`` so that ``1 − κ`` keeps full precision near t = 1.

    Hashable, so it can be a static argument of ``jax.jit``."""

    name: str = "polynomial"
    exponent: float = 1.0

    def __post_init__(self):
        if self.name not in ("polynomial", "cosine"):
            raise ValueError(f"schedule: {self.name!r}; expected one of {SCHEDULES}")
        if self.name == "polynomial" and not (self.exponent > 0 and math.isfinite(self.exponent)):
            raise ValueError(f"exponent: {self.exponent}; expected a finite value > 0")

    def kappa(self, t: Array) -> Array:
        """``κ(t)``; t: 0 = source, 1 = data."""
        t = jnp.asarray(t)
        if self.name == "cosine":
            return jnp.sin(0.5 * jnp.pi * t)
        return t if self.exponent == 1 else t**self.exponent

    def one_minus_kappa(self, t: Array) -> Array:
        """``1 − κ(t)`` without cancellation near t = 1."""
        t = jnp.asarray(t)
        if self.name == "cosine":
            return 2.0 * jnp.sin(0.25 * jnp.pi * (1.0 - t)) ** 2
        if self.exponent == 1:
            return 1.0 - t
        return -jnp.expm1(self.exponent * jnp.log1p(t - 1.0))

    def kappa_dot(self, t: Array) -> Array:
        """``dκ/dt``."""
        t = jnp.asarray(t)
        if self.name == "cosine":
            return 0.5 * jnp.pi * jnp.cos(0.5 * jnp.pi * t)
        if self.exponent == 1:
            return jnp.ones_like(t)
        return self.exponent * t ** (self.exponent - 1)

    def rate(self, t: Array) -> Array:
        """Instantaneous arrival hazard ``κ̇(t) / (1 − κ(t))`` (unclipped; infinite at t = 1)."""
        return self.kappa_dot(t) / self.one_minus_kappa(t)


def get_schedule(schedule: "str | KappaSchedule") -> KappaSchedule:
    """``"linear"`` (t), ``"quadratic"`` (t²), ``"polynomial"`` (t, n = 1), ``"cosine"``, or a
    ``KappaSchedule``."""
    if isinstance(schedule, KappaSchedule):
        return schedule
    table = {"linear": KappaSchedule("polynomial", 1.0), "polynomial": KappaSchedule("polynomial", 1.0),
             "quadratic": KappaSchedule("polynomial", 2.0), "cosine": KappaSchedule("cosine")}
    if not isinstance(schedule, str) or schedule not in table:
        raise ValueError(f"schedule: {schedule!r}; expected one of {SCHEDULES} or a KappaSchedule")
    return table[schedule]


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"source: {source!r}; expected one of {SOURCES}")
    return source


def _concrete(x) -> np.ndarray | None:
    """numpy value of ``x`` unless it is traced (then checks are skipped)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x, np.float64)


def check_step(t, h) -> None:
    """Raise unless ``h ∈ (0, 1]``, ``t ∈ [0, 1]`` and ``t + h ≤ 1`` (up to float tolerance)."""
    hv, tv = _concrete(h), _concrete(t)
    if hv is not None and not np.all((hv > 0) & (hv <= 1 + STEP_TOL)):
        raise ValueError(f"h: {hv.ravel()[:4].tolist()}; expected values in (0, 1]")
    if tv is not None and not np.all((tv >= 0) & (tv <= 1)):
        raise ValueError(f"t: {tv.ravel()[:4].tolist()}; expected values in [0, 1]")
    if hv is not None and tv is not None and not np.all(tv + hv <= 1 + STEP_TOL):
        raise ValueError(f"t + h: {np.max(tv + hv)}; expected <= 1 (the step must end by the data time t = 1)")


def cumulative_scalar(t: Array, h: Array, schedule="linear") -> Array:
    """``G(t, h) = log clip(1−κ(t)) − log clip(1−κ(t+h))``, clip to ``[1e-8, 1]`` (§6.1).

    t: 0 = source, 1 = data; ``t + h`` is capped at 1. ``1 − exp(−G)`` is the exact probability
    that a token not yet at its data value arrives during ``[t, t+h]``."""
    schedule = get_schedule(schedule)
    check_step(t, h)
    t, h = jnp.asarray(t), jnp.asarray(h)
    end = jnp.minimum(t + h, 1.0)
    lo = jnp.log(jnp.clip(schedule.one_minus_kappa(t), CLIP_MIN, 1.0))
    hi = jnp.log(jnp.clip(schedule.one_minus_kappa(end), CLIP_MIN, 1.0))
    return lo - hi


def average_rate(t: Array, h: Array, schedule="linear") -> Array:
    """The average hazard ``G(t, h) / (h + 1e-8)`` of the finite-step generator (§6.1)."""
    return cumulative_scalar(t, h, schedule) / (jnp.asarray(h) + 1e-8)


def sample_source(key: Array, shape, source: str, vocab_size: int) -> Array:
    """``x_0``: all mask id ``V`` (``"mask"``) or i.i.d. uniform on ``[V]`` (``"uniform"``), int32."""
    check_source(source)
    if source == "mask":
        return jnp.full(shape, vocab_size, jnp.int32)
    return jax.random.randint(key, shape, 0, vocab_size, jnp.int32)


def sample_path(key: Array, x1: Array, t: Array, *, source: str, vocab_size: int, schedule="linear") -> Array:
    """``x_t`` given data ``x1 [B, L]`` and time ``t`` (``[B]``, ``[B, L]`` or scalar; t: 0 = source,
    1 = data): each position keeps ``x1`` w.p. ``κ(t)``, else takes a fresh source token."""
    schedule = get_schedule(schedule)
    check_source(source)
    tv = _concrete(t)
    if tv is not None and not np.all((tv >= 0) & (tv <= 1)):
        raise ValueError(f"t: {tv.ravel()[:4].tolist()}; expected values in [0, 1]")
    x1 = jnp.asarray(x1)
    t = jnp.asarray(t)
    t = t[..., None] if t.ndim == 1 and x1.ndim == 2 else t
    k_keep, k_src = jax.random.split(key)
    keep = jax.random.uniform(k_keep, x1.shape, dtype=jnp.result_type(float)) < schedule.kappa(t)
    return jnp.where(keep, x1, sample_source(k_src, x1.shape, source, vocab_size)).astype(jnp.int32)


def path_evidence(x: Array, t: Array, *, source: str, vocab_size: int, schedule="linear") -> Array:
    """Per-token log-likelihood ``log P(x_t = z | x_1 = y)`` up to a constant in y, ``[..., L, V]``:
    mask source: flat at the mask id, one-hot at a clean z; uniform source: ``κ δ_z + (1−κ)/V``.
    Feeding it to an oracle's ``posteriors`` gives the exact ``p_{1|t}``."""
    schedule = get_schedule(schedule)
    check_source(source)
    x = jnp.asarray(x)
    onehot = jax.nn.one_hot(jnp.minimum(x, vocab_size - 1), vocab_size, dtype=bool)
    if source == "mask":
        return jnp.where((x == vocab_size)[..., None], 0.0, jnp.where(onehot, 0.0, -jnp.inf))
    t = jnp.asarray(t)
    t = t[..., None] if t.ndim == 1 and x.ndim == 2 else t
    kap = schedule.kappa(t)[..., None]
    return jnp.log(jnp.where(onehot, kap, 0.0) + (1.0 - kap) / vocab_size)


def _log_rest(log_p: Array, x: Array) -> tuple[Array, Array]:
    """``log p(z)`` and ``log(1 − p(z))`` computed as ``logsumexp_{y≠z} log p(y)`` (accurate when
    ``p(z) ≈ 1``). A mask id z = V has ``p(z) = 0``."""
    v = log_p.shape[-1]
    is_z = jax.nn.one_hot(x, v, dtype=bool)  # all-false row for the mask id
    log_pz = jnp.where(is_z, log_p, -jnp.inf).max(-1)
    log_rest = jax.nn.logsumexp(jnp.where(is_z, -jnp.inf, log_p), axis=-1)
    return log_pz, log_rest


def jump_log_probs(x: Array, log_p: Array, t: Array, h: Array, schedule="linear", *, frozen: Array | None = None) -> Array:
    """Exact law of one cumulative-scalar jump, ``[B, L, V+1]`` log-probabilities over the next
    token (class ``V`` is the mask id; it only keeps mass where ``x`` is masked and stays).

    ``x [B, L]`` int (mask id V allowed); ``log_p [B, L, V]`` model log-posterior over clean
    tokens; ``t, h`` scalars or ``[B]`` (t: 0 = source, 1 = data). Stay w.p.
    ``exp(−G(t,h)(1 − p(z)))``; otherwise move to ``y ≠ z`` w.p. ``p(y) / (1 − p(z))``. ``frozen``
    (``[L]`` or ``[B, L]`` bool) positions always stay."""
    schedule = get_schedule(schedule)
    x, log_p = jnp.asarray(x), jnp.asarray(log_p)
    v = log_p.shape[-1]
    g = jnp.asarray(cumulative_scalar(t, h, schedule))
    g = g[..., None] if g.ndim == 1 else g  # [B] -> [B, 1]
    _, log_rest = _log_rest(log_p, x)
    hazard = g * jnp.exp(log_rest)  # G (1 − p(z))
    log_stay = -hazard
    log_move = jnp.log(-jnp.expm1(-hazard))  # -inf when hazard = 0
    moving = hazard > 0
    is_z = jax.nn.one_hot(x, v + 1, dtype=bool)
    log_p_ext = jnp.concatenate([log_p, jnp.full(log_p.shape[:-1] + (1,), -jnp.inf, log_p.dtype)], -1)
    move = jnp.where(moving[..., None], log_move[..., None] + log_p_ext - log_rest[..., None], -jnp.inf)
    out = jnp.where(is_z, log_stay[..., None], move)
    if frozen is not None:
        out = jnp.where(jnp.asarray(frozen, bool)[..., None], jnp.where(is_z, 0.0, -jnp.inf), out)
    return out


def _onehot_state(x: Array, num_classes: int, dtype) -> Array:
    return jax.nn.one_hot(x, num_classes, dtype=dtype)


def marginal_velocity(p: Array, x: Array, t: Array, schedule="linear", *, source: str = "uniform") -> Array:
    """``u_t(y | z) = κ̇/(1−κ) (p(y) − δ_z(y))`` (t: 0 = source, 1 = data), ``[B, L, K]``.

    ``p [B, L, V]`` posterior probabilities over clean tokens; ``K = V`` for the uniform source and
    ``V + 1`` for the mask source (the last class is the mask id, where ``p`` has no mass)."""
    schedule = get_schedule(schedule)
    check_source(source)
    p, x, t = jnp.asarray(p), jnp.asarray(x), jnp.asarray(t)
    rate = schedule.rate(t)
    rate = rate[..., None, None] if rate.ndim == 1 else rate
    if source == "mask":
        p = jnp.concatenate([p, jnp.zeros(p.shape[:-1] + (1,), p.dtype)], -1)
    return rate * (p - _onehot_state(x, p.shape[-1], p.dtype))


def average_generator(p: Array, x: Array, t: Array, h: Array, schedule="linear", *, source: str = "uniform") -> Array:
    """Finite-step generator ``ū_{t,h}(y|z) = G(t,h)/(h+1e-8) (p(y) − δ_z(y))`` (§6.1), with the
    same class layout as ``marginal_velocity``; rows sum to zero."""
    check_source(source)
    p, x = jnp.asarray(p), jnp.asarray(x)
    rate = jnp.asarray(average_rate(t, h, schedule))
    rate = rate[..., None, None] if rate.ndim == 1 else rate
    if source == "mask":
        p = jnp.concatenate([p, jnp.zeros(p.shape[:-1] + (1,), p.dtype)], -1)
    return rate * (p - _onehot_state(x, p.shape[-1], p.dtype))


def cross_entropy_loss(log_p: Array, x1: Array) -> Array:
    """Per-position ``−log p_{1|t}(x_1 | x_t)``, ``[B, L]``."""
    return -jnp.take_along_axis(jnp.asarray(log_p), jnp.asarray(x1)[..., None], axis=-1)[..., 0]


def generalized_kl_loss(log_p: Array, x1: Array, xt: Array, t: Array, schedule="linear") -> Array:
    """Per-position generalized KL of Gat et al. (§2.3(c)), ``[B, L]`` (t: 0 = source, 1 = data):

    ``ℓ = −κ̇/(1−κ) · [p(x_t) − δ(x_1 = x_t) + (1 − δ(x_1 = x_t)) log p(x_1)]``.

    ``x_t`` may be the mask id V (then ``p(x_t) = 0``). Callers keep t away from 1 (the rate is
    ``1/(1−t)`` for κ = t; the reference clips with ``time_epsilon = 1e-5``). Its conditional
    expectation over ``x_1`` is minimised by the exact posterior (``generalized_kl_minimum``)."""
    schedule = get_schedule(schedule)
    log_p, x1, xt, t = jnp.asarray(log_p), jnp.asarray(x1), jnp.asarray(xt), jnp.asarray(t)
    rate = schedule.rate(t)
    rate = rate[..., None] if rate.ndim == 1 and x1.ndim == 2 else rate
    log_pz, _ = _log_rest(log_p, xt)
    same = x1 == xt
    log_px1 = -cross_entropy_loss(log_p, x1)
    return -rate * (jnp.exp(log_pz) - same + jnp.where(same, 0.0, log_px1))


def generalized_kl_minimum(q: Array, xt: Array, t: Array, schedule="linear") -> Array:
    """Analytic minimum over p of ``E_{x_1 ~ q}[ℓ]`` (attained at ``p = q``):
    ``−κ̇/(1−κ) Σ_{y ≠ x_t} q(y) log q(y)``, ``[B, L]``. ``q [B, L, V]`` is the true posterior."""
    schedule = get_schedule(schedule)
    q, xt, t = jnp.asarray(q), jnp.asarray(xt), jnp.asarray(t)
    rate = schedule.rate(t)
    rate = rate[..., None] if rate.ndim == 1 and xt.ndim == 2 else rate
    is_z = jax.nn.one_hot(xt, q.shape[-1], dtype=bool)
    qlogq = jnp.where((q > 0) & ~is_z, q * jnp.log(jnp.where(q > 0, q, 1.0)), 0.0).sum(-1)
    return -rate * qlogq
