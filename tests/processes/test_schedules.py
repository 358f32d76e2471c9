"""Masking schedules: closed forms, endpoints, the NELBO weight (METHODS §2.1(a),(c),(f)1).
Time direction: t = 0 clean, t = 1 masked."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.processes.schedules import get_schedule, schedule_names

ALL = [("loglinear", {}), ("loglinear", {"eps": 0.0}), ("linear", {}), ("linear", {"eps": 0.0}),
       ("cosine", {}), ("cosine", {"eps": 0.0}), ("poly", {"exponent": 3.0}), ("poly", {"exponent": 0.5})]


def test_loglinear_weight_is_one_over_t():
    """MDLM computes w = dσ/expm1(σ); with α = 1 − (1−ε)t this is (1−ε)/((1−ε)t) = 1/t exactly."""
    with jax.enable_x64(True):
        s = get_schedule("loglinear", eps=1e-3)
        t = jnp.linspace(1e-3, 1.0, 2001)
        w = s.dsigma(t) / jnp.expm1(s.sigma(t))
        np.testing.assert_allclose(np.asarray(w), 1.0 / np.asarray(t), rtol=1e-12, atol=0)
        assert float(jnp.max(jnp.abs(s.weight(t) - 1.0 / t))) < 1e-6
        # σ is the total noise: α = exp(−σ), and 1 − α = (1−ε)t.
        np.testing.assert_allclose(np.exp(-np.asarray(s.sigma(t))), 1 - (1 - 1e-3) * np.asarray(t), rtol=1e-13)
    # float32 (what training runs): relative error at the float32 rounding level.
    t32 = jnp.linspace(1e-3, 1.0, 2001, dtype=jnp.float32)
    w32 = get_schedule("loglinear").weight(t32)
    assert w32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(w32), 1.0 / np.asarray(t32, np.float64), rtol=1e-6)


@pytest.mark.parametrize("name,kw", ALL)
def test_endpoints_and_closed_forms(name, kw):
    with jax.enable_x64(True):
        s = get_schedule(name, **kw)
        eps = s.eps
        t = jnp.linspace(0.0, 1.0, 101)
        a = np.asarray(s.alpha(t))
        if name == "loglinear":
            expected = 1 - (1 - eps) * np.asarray(t)
            a0, a1 = 1.0, eps
        else:
            base = {"linear": lambda u: 1 - u, "cosine": lambda u: 1 - np.cos(math.pi / 2 * (1 - u)),
                    "poly": lambda u: 1 - u ** s.exponent}[name]
            expected = (1 - 2 * eps) * base(np.asarray(t)) + eps
            a0, a1 = 1.0 - eps, eps
        np.testing.assert_allclose(a, expected, atol=1e-15)
        assert abs(float(s.alpha(0.0)) - a0) < 1e-15 and abs(float(s.alpha(1.0)) - a1) < 1e-15
        assert np.all(np.diff(a) < 0)  # strictly decreasing: masking only grows with t
        np.testing.assert_allclose(np.asarray(s.move_chance(t)) + a, 1.0, atol=1e-15)
        lo, hi = s.mask_range()
        assert abs(lo - (1 - a0)) < 1e-15 and abs(hi - (1 - a1)) < 1e-15


@pytest.mark.parametrize("name,kw", ALL)
def test_weight_matches_finite_differences(name, kw):
    """w(t) = −α'(t)/(1−α(t)) with α' from central differences of α, away from t = 0 and 1."""
    with jax.enable_x64(True):
        s = get_schedule(name, **kw)
        t = jnp.linspace(0.02, 0.98, 97)
        h = 1e-6
        da_fd = (s.alpha(t + h) - s.alpha(t - h)) / (2 * h)
        np.testing.assert_allclose(np.asarray(s.dalpha(t)), np.asarray(da_fd), rtol=1e-7, atol=1e-9)
        w_fd = -da_fd / (1 - s.alpha(t))
        np.testing.assert_allclose(np.asarray(s.weight(t)), np.asarray(w_fd), rtol=1e-7)
        assert np.all(np.asarray(s.weight(t)) > 0)


def test_weight_small_t_no_cancellation_and_jit():
    """Near t = 0 the move chance is computed directly (not as 1 − α), so float32 keeps full
    relative precision; the schedules are jit-able and hashable."""
    t = jnp.asarray([1e-6, 1e-5, 1e-4], jnp.float32)
    for name in ("linear", "cosine", "poly"):
        s = get_schedule(name, eps=0.0)
        exact = {"linear": 1 / np.asarray(t, np.float64),
                 "cosine": (math.pi / 2) / np.tan(math.pi / 2 * np.asarray(t, np.float64)),
                 "poly": 2 / np.asarray(t, np.float64)}[name]
        np.testing.assert_allclose(np.asarray(jax.jit(s.weight)(t)), exact, rtol=1e-5)
        assert hash(s) == hash(get_schedule(name, eps=0.0))
    # The cosine weight is exactly 0 at t = 1 (no −cos(π/2) round-off).
    assert float(get_schedule("cosine").weight(jnp.float32(1.0))) == 0.0


def test_get_schedule_errors():
    assert schedule_names() == ("cosine", "linear", "loglinear", "poly")
    expected = r"^schedule: 'x'; expected one of \('cosine', 'linear', 'loglinear', 'poly'\)$"
    with pytest.raises(ValueError, match=expected):
        get_schedule("x")
    with pytest.raises(ValueError, match="eps"):
        get_schedule("linear", eps=0.6)
    with pytest.raises(ValueError, match="exponent"):
        get_schedule("poly", exponent=-1.0)
    with pytest.raises(ValueError, match="argument"):
        get_schedule("linear", exponent=2.0)
    assert get_schedule("loglinear", eps=None).eps == 1e-3
