"""The scan driver (METHODS §1.1): one lax.scan over a precomputed grid, NFE counted in the carry;
and the checks every sampler shares: conditioning (fixed / fixed_tokens) and the denoiser's width."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.samplers.driver import (apply_fixed, check_denoise_fn, check_fixed, check_steps, masked_time_grid,
                                     run_scan, static_fixed)


def test_masked_grid_values():
    with jax.enable_x64(True):
        grid = np.asarray(masked_time_grid(4))
        np.testing.assert_allclose(grid, 1 - np.arange(5) * (1 - 1e-5) / 4, rtol=0, atol=1e-16)
        assert grid[0] == 1.0 and abs(grid[-1] - 1e-5) < 1e-16 and grid.dtype == np.float64
        assert np.asarray(masked_time_grid(3, eps=0.0))[-1] == 0.0
    assert masked_time_grid(8).dtype == jnp.float32  # default float without x64


def test_run_scan_reads_grid_and_counts_nfe_in_one_scan():
    grid = jnp.array([1.0, 0.75, 0.5, 0.125])
    extra = jnp.array([10.0, 20.0, 30.0])

    def step(carry, st):
        total, ks, ts, ss = carry
        # a data-dependent NFE: 2 on even steps, 0 on odd ones
        used = jnp.where(st["k"] % 2 == 0, 2, 0)
        return (total + (st["t"] - st["s"]) * st["w"], ks.at[st["k"]].set(st["k"]), ts.at[st["k"]].set(st["t"]),
                ss.at[st["k"]].set(st["s"])), used

    init = (jnp.float32(0), jnp.zeros(3, jnp.int32), jnp.zeros(3), jnp.zeros(3))
    run = jax.jit(lambda c: run_scan(step, c, grid, {"w": extra}))
    (total, ks, ts, ss), nfe = run(init)
    assert float(total) == pytest.approx(0.25 * 10 + 0.25 * 20 + 0.375 * 30, abs=1e-6)
    np.testing.assert_array_equal(ks, [0, 1, 2])
    np.testing.assert_array_equal(ts, [1.0, 0.75, 0.5])
    np.testing.assert_array_equal(ss, [0.75, 0.5, 0.125])
    assert nfe.dtype == jnp.int32 and int(nfe) == 4
    jaxpr = jax.make_jaxpr(lambda c: run_scan(step, c, grid, {"w": extra}))(init)
    prims = [eqn.primitive.name for eqn in jaxpr.jaxpr.eqns]
    assert prims.count("scan") == 1 and "while" not in prims  # one compiled loop, no Python unrolling


def test_validation():
    for bad in (0, -3, 2.0, True, "4"):
        with pytest.raises(ValueError, match="^steps: .*; expected an int >= 1"):
            check_steps(bad)
    with pytest.raises(ValueError, match=r"^grid: shape \(1,\);"):
        run_scan(lambda c, s: (c, 0), 0, jnp.ones(1))
    with pytest.raises(ValueError, match=r"^per_step\['w'\]: shape \(2,\); expected leading dimension 3"):
        run_scan(lambda c, s: (c, 0), 0, jnp.ones(4), {"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="^per_step: key 't';"):
        run_scan(lambda c, s: (c, 0), 0, jnp.ones(4), {"t": jnp.ones(3)})
    with pytest.raises(ValueError, match="^eps: 1.0;"):
        masked_time_grid(4, eps=1.0)


def test_fixed_is_validated_applied_and_made_static():
    fixed = np.array([[True, False, True], [False, False, True]])
    tokens = np.array([2, 0, 1])
    check_fixed(fixed, tokens, 2, 3, vocab_size=3)
    check_fixed(None, None, 2, 3, vocab_size=3)
    x0, mask = apply_fixed(jnp.full((2, 3), 3, jnp.int32), fixed, tokens)
    np.testing.assert_array_equal(x0, [[2, 3, 1], [3, 3, 1]])
    np.testing.assert_array_equal(mask, fixed)
    np.testing.assert_array_equal(apply_fixed(jnp.zeros((2, 3), jnp.int32), None, None)[1], np.zeros((2, 3), bool))
    np.testing.assert_array_equal(static_fixed(fixed[0], 2, 3), [fixed[0], fixed[0]])
    assert not static_fixed(None, 2, 3).any()
    for args, pattern in (((fixed, None), "^fixed_tokens: missing;"), ((None, tokens), "^fixed_tokens: given;"),
                          ((fixed, tokens[:2]), r"^fixed_tokens: shape \(2,\); expected \(3,\) or \(2, 3\)$"),
                          ((fixed.astype(int), tokens), "^fixed: dtype int"),
                          ((fixed, tokens.astype(float)), "^fixed_tokens: dtype float"),
                          ((fixed, np.array([3, 9, -1])),
                           r"^fixed_tokens: values \[-1, 3\]; expected ids in \[0, 3\)$")):
        with pytest.raises(ValueError, match=pattern):
            check_fixed(*args, 2, 3, vocab_size=3)
    # Ids at free positions are not checked; traced tokens are not checked; a traced mask cannot be static.
    check_fixed(fixed[1], np.array([7, 7, 0]), 2, 3, vocab_size=3)
    jax.jit(lambda t: check_fixed(fixed, t, 2, 3, vocab_size=3))(np.array([9, 9, 9]))
    with pytest.raises(ValueError, match="^fixed: a traced array; expected a concrete mask"):
        jax.jit(lambda f: static_fixed(f, 2, 3))(fixed)


def test_denoise_fn_width_and_shape_are_checked_without_compiling():
    z, t = jnp.zeros((2, 5), jnp.int32), jnp.zeros((2,))
    calls = []

    def fn(width, lead=None):
        def f(z, t):
            calls.append(type(z))  # traced abstractly: never a concrete array
            return jnp.zeros((lead or z.shape[0], z.shape[1], width))
        return f

    check_denoise_fn(fn(7), (z, t), 7)
    for f, pattern in ((fn(8), r"^denoise_fn: output width 8; expected vocab_size 7 \(log-probs"),
                       (fn(6), r"^denoise_fn: output width 6; expected vocab_size 7 "),
                       (fn(7, lead=1), r"^denoise_fn: output shape \(1, 5, 7\); expected \(2, 5, 7\) = \[B, L, V\]$"),
                       (lambda z, t: (z, t), r"^denoise_fn: output tuple; expected an array \[B, L, V\]")):
        with pytest.raises(ValueError, match=pattern) as err:
            check_denoise_fn(f, (z, t), 7)
        assert "\n" not in str(err.value)
    assert all(issubclass(c, jax.core.Tracer) for c in calls)
