"""Masking schedules α(t) for masked (absorbing-state) diffusion, METHODS §2.1(a).

Time direction: **t = 0 is clean, t = 1 is (almost) fully masked.** ``α(t)`` is the
probability that a token is still clean at time t; ``1 − α(t)`` (the "move chance") is the
probability that it has been replaced by the mask. Every schedule gives

* ``alpha(t)``       α(t), decreasing in t;
* ``dalpha(t)``      α'(t) ≤ 0;
* ``move_chance(t)`` 1 − α(t), computed without cancellation (it is small near t = 0);
* ``weight(t)``      the continuous-time NELBO weight ``w(t) = −α'(t) / (1 − α(t)) ≥ 0``.

All four are pure ``jax.numpy``, elementwise (t of any shape) and jit-able; a schedule object
is a frozen (hashable) dataclass, so it can be closed over or passed as a static argument.

Schedules (``get_schedule(name, **kw)``):

``"loglinear"`` (MDLM, ``LogLinearNoise``; default ε = 1e-3)
    total noise ``σ(t) = −log(1 − (1−ε)t)``, ``α = e^{−σ} = 1 − (1−ε)t``. The weight is
    computed as MDLM does, ``dσ/expm1(σ)`` with ``dσ = (1−ε)/(1−(1−ε)t)``, which equals
    ``1/t`` *exactly* for every ε (the (1−ε) factors cancel). α(0) = 1, α(1) = ε.
``"linear"`` (MD4; default ε = 1e-4)  ``α = (1−2ε)(1−t) + ε``.  ε = 0 gives α = 1 − t.
``"cosine"`` (MD4; default ε = 1e-4)  ``α = (1−2ε)(1 − cos(π/2·(1−t))) + ε``, i.e.
    ``1 − α = ε + (1−2ε) sin(πt/2)``. This is MD4's ``MaskingSchedule("cosine")`` form
    (checked against md4.py: ``_alpha = 1 − cos(π/2 (1−t))`` wrapped by ``(1−2ε)·_alpha + ε``).
``"poly"`` (MD4 ``polyN``; default ε = 1e-4, exponent n = 2)  ``α = (1−2ε)(1 − tⁿ) + ε``.

For the MD4 family α(0) = 1 − ε and α(1) = ε. With ε > 0 the schedule never reaches the
fully-masked state, so the continuous NELBO ``∫_0^1 w(t) E[…] dt`` covers mask
probabilities in ``[1−α(0), 1−α(1)]`` only (see ``mask_range``); with ε = 0 it is the
exact any-order NLL for an exact denoiser.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

__all__ = [
    "MaskingSchedule",
    "LogLinearSchedule",
    "LinearSchedule",
    "CosineSchedule",
    "PolySchedule",
    "get_schedule",
    "schedule_names",
]


@dataclasses.dataclass(frozen=True)
class MaskingSchedule:
    """Base class: subclasses define ``alpha``, ``dalpha`` and ``move_chance``.
    Time direction: t = 0 clean, t = 1 masked."""

    eps: float = 0.0

    name = "base"

    def alpha(self, t):
        """α(t): probability a token is still clean at time t (0 = clean, 1 = masked)."""
        raise NotImplementedError

    def dalpha(self, t):
        """dα/dt at time t (0 = clean, 1 = masked); ≤ 0."""
        raise NotImplementedError

    def move_chance(self, t):
        """1 − α(t), the mask probability at time t (0 = clean, 1 = masked), without cancellation."""
        return 1.0 - self.alpha(t)

    def weight(self, t):
        """NELBO weight ``w(t) = −α'(t)/(1 − α(t))`` at time t (0 = clean, 1 = masked).
        Diverges like 1/t at t → 0 when α(0) = 1."""
        t = jnp.asarray(t)
        return -self.dalpha(t) / self.move_chance(t)

    def mask_range(self) -> tuple[float, float]:
        """``(1 − α(0), 1 − α(1))``: the mask probabilities that t ∈ [0, 1] sweeps."""
        return float(self.move_chance(0.0)), float(self.move_chance(1.0))


def _check_eps(eps, name: str, upper: float) -> float:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not (0.0 <= float(eps) < upper):
        raise ValueError(f"{name}.eps: {eps!r}; expected a float in [0, {upper})")
    return float(eps)


@dataclasses.dataclass(frozen=True)
class LogLinearSchedule(MaskingSchedule):
    """MDLM log-linear: ``σ(t) = −log(1−(1−ε)t)``, ``α = 1 − (1−ε)t``; t: 0 clean, 1 masked."""

    eps: float = 1e-3
    name = "loglinear"

    def __post_init__(self):
        _check_eps(self.eps, "loglinear", 1.0)

    def sigma(self, t):
        """Total noise σ(t) = −log(1 − (1−ε)t) at time t (0 = clean, 1 = masked)."""
        return -jnp.log1p(-(1.0 - self.eps) * jnp.asarray(t))

    def dsigma(self, t):
        """dσ/dt = (1−ε)/(1 − (1−ε)t) at time t (0 = clean, 1 = masked)."""
        return (1.0 - self.eps) / (1.0 - (1.0 - self.eps) * jnp.asarray(t))

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * jnp.asarray(t)

    def dalpha(self, t):
        return jnp.full_like(jnp.asarray(t, dtype=jnp.result_type(t, float)), -(1.0 - self.eps))

    def move_chance(self, t):
        return (1.0 - self.eps) * jnp.asarray(t)

    def weight(self, t):
        """MDLM's ``dσ/expm1(σ)`` (= 1/t exactly, for any ε); t: 0 clean, 1 masked."""
        return self.dsigma(t) / jnp.expm1(self.sigma(t))


@dataclasses.dataclass(frozen=True)
class _MD4Schedule(MaskingSchedule):
    """MD4 wrapper ``α = (1−2ε)·base(t) + ε``; subclasses give ``_base``, ``_dbase`` and
    ``_one_minus_base`` (= 1 − base, computed directly). t: 0 clean, 1 masked."""

    eps: float = 1e-4

    def __post_init__(self):
        _check_eps(self.eps, self.name, 0.5)

    def alpha(self, t):
        return (1.0 - 2.0 * self.eps) * self._base(jnp.asarray(t)) + self.eps

    def dalpha(self, t):
        return (1.0 - 2.0 * self.eps) * self._dbase(jnp.asarray(t))

    def move_chance(self, t):
        return self.eps + (1.0 - 2.0 * self.eps) * self._one_minus_base(jnp.asarray(t))


@dataclasses.dataclass(frozen=True)
class LinearSchedule(_MD4Schedule):
    """MD4 linear: ``α = (1−2ε)(1−t) + ε``; t: 0 clean, 1 masked."""

    name = "linear"

    def _base(self, t):
        return 1.0 - t

    def _dbase(self, t):
        return -jnp.ones_like(t, dtype=jnp.result_type(t, float))

    def _one_minus_base(self, t):
        return t.astype(jnp.result_type(t, float))


@dataclasses.dataclass(frozen=True)
class CosineSchedule(_MD4Schedule):
    """MD4 cosine: ``α = (1−2ε)(1 − cos(π/2·(1−t))) + ε``, i.e. ``1 − α = ε + (1−2ε) sin(πt/2)``;
    t: 0 clean, 1 masked."""

    name = "cosine"

    def _base(self, t):
        # 1 − cos(x) = 2 sin²(x/2) with x = π/2·(1−t): no cancellation near t = 1.
        return 2.0 * jnp.sin(0.25 * math.pi * (1.0 - t)) ** 2

    def _dbase(self, t):
        # −π/2·sin(π/2·(1−t)): exactly 0 at t = 1 (cos(π/2) is not 0 in floating point).
        return -0.5 * math.pi * jnp.sin(0.5 * math.pi * (1.0 - t))

    def _one_minus_base(self, t):
        return jnp.sin(0.5 * math.pi * t)


@dataclasses.dataclass(frozen=True)
class PolySchedule(_MD4Schedule):
    """MD4 polynomial: ``α = (1−2ε)(1 − tⁿ) + ε`` with n = ``exponent`` > 0; t: 0 clean, 1 masked."""

    exponent: float = 2.0
    name = "poly"

    def __post_init__(self):
        super().__post_init__()
        n = self.exponent
        if not isinstance(n, (int, float)) or isinstance(n, bool) or not n > 0:
            raise ValueError(f"poly.exponent: {n!r}; expected a float > 0")

    def _base(self, t):
        return 1.0 - t**self.exponent

    def _dbase(self, t):
        return -self.exponent * t ** (self.exponent - 1.0)

    def _one_minus_base(self, t):
        return t.astype(jnp.result_type(t, float)) ** self.exponent


_SCHEDULES = {
    "cosine": CosineSchedule,
    "linear": LinearSchedule,
    "loglinear": LogLinearSchedule,
    "poly": PolySchedule,
}


def schedule_names() -> tuple[str, ...]:
    return tuple(sorted(_SCHEDULES))


def get_schedule(name: str, **kw) -> MaskingSchedule:
    """Build a schedule by name: ``"loglinear"`` (eps), ``"linear"`` (eps), ``"cosine"`` (eps),
    ``"poly"`` (eps, exponent). Keyword arguments left as ``None`` take the class default.
    Time direction of the result: t = 0 clean, t = 1 masked."""
    if name not in _SCHEDULES:
        raise ValueError(f"schedule: {name!r}; expected one of {schedule_names()}")
    cls = _SCHEDULES[name]
    allowed = {f.name for f in dataclasses.fields(cls)}
    for key in kw:
        if key not in allowed:
            raise ValueError(f"schedule {name!r} argument: {key!r}; expected one of {tuple(sorted(allowed))}")
    return cls(**{k: v for k, v in kw.items() if v is not None})
