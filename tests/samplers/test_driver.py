"""The scan driver (METHODS §1.1): one lax.scan over a precomputed grid, NFE counted in the carry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.samplers.driver import check_steps, masked_time_grid, run_scan


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
