"""Train step: DP / FSDP / TP agree; shard_map == jit; micro-batching == one big batch; bf16."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import _tiny
from dlm_jax import mesh as mesh_lib
from dlm_jax.train import optim
from dlm_jax.train import state as state_lib
from dlm_jax.train import step as step_lib

MESHES = {"dp": dict(data=8, strategy="dp"), "fsdp": dict(data=2, fsdp=4, strategy="fsdp"),
          "tp": dict(fsdp=2, tensor=4, strategy="tp")}


@pytest.fixture(scope="module")
def parts():
    cfg = _tiny.tiny_config()
    cfg.method.stochastic = False  # same corruption on every layout: exact comparisons
    graphdef, init_params = state_lib.trace_model(lambda: _tiny.build_model(cfg))
    from dlm_jax.models import make_apply

    method = _tiny.build_method(cfg, make_apply(graphdef))
    data = _tiny.TinyData(0, cfg.train.batch_size, cfg.data.seq_len)
    return cfg, init_params, method, [next(data) for _ in range(2)]


def _run(parts, layout, *, impl="jit", microbatches=1, dtype=None, steps=2):
    cfg, init_params, method, batches = parts
    mesh = mesh_lib.make_mesh(MESHES[layout])
    tx = optim.make_optimizer(cfg.train, cfg.train.steps)
    state, sh = state_lib.create_train_state(init_params, tx, method.init_extra, 0, mesh,
                                             MESHES[layout]["strategy"])
    make = step_lib.make_train_step_shard_map if impl == "shard_map" else step_lib.make_train_step
    f = make(method, cfg.train, mesh=mesh, state_shardings=sh, total_steps=cfg.train.steps,
             microbatches=microbatches, compute_dtype=dtype)
    losses = []
    with jax.set_mesh(mesh):
        for b in batches[:steps]:
            state, m = f(state, step_lib.global_batch(b, mesh))
            losses.append(float(m["loss"]))
    return np.array(losses), jax.device_get(state), state


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def dp_run(parts):
    return _run(parts, "dp")


def test_dp_fsdp_tp_same_losses_and_params(parts, dp_run):
    losses, state, _ = dp_run
    assert losses[0] > 3.0 and losses[1] < losses[0] + 0.5  # a real CE over 32 classes
    for layout in ("fsdp", "tp"):
        l2, s2, live = _run(parts, layout)
        np.testing.assert_allclose(l2, losses, rtol=0, atol=1e-5)
        assert _max_diff(state.params, s2.params) < 1e-6
        spec = live.params["up"]["kernel"].get_value().sharding.spec
        assert spec == (P("fsdp", None) if layout == "fsdp" else P("fsdp", "tensor"))
        mu = live.opt_state[1][0].mu["up"]["kernel"].get_value().sharding.spec  # Adam moments follow
        assert mu == spec


def test_shard_map_step_equals_jit_step(parts, dp_run):
    losses, state, _ = dp_run
    l2, s2, _ = _run(parts, "dp", impl="shard_map")
    np.testing.assert_allclose(l2, losses, rtol=0, atol=1e-6)
    assert _max_diff(state.params, s2.params) < 1e-6
    assert _max_diff(state.opt_state, s2.opt_state) < 1e-6
    assert int(s2.step) == 2


def test_two_microbatches_equal_one_big_batch(parts, dp_run):
    losses, state, _ = dp_run
    l2, s2, _ = _run(parts, "fsdp", microbatches=2)
    np.testing.assert_allclose(l2, losses, rtol=0, atol=1e-6)
    assert _max_diff(state.params, s2.params) < 1e-6


def test_shard_map_rejects_sharded_state(parts):
    cfg, init_params, method, _ = parts
    mesh = mesh_lib.make_mesh(MESHES["fsdp"])
    _, sh = state_lib.abstract_train_state(init_params, optim.make_optimizer(cfg.train),
                                           method.init_extra, 0, mesh, "fsdp")
    with pytest.raises(ValueError, match=r"^shard_map step: .*expected a replicated state"):
        step_lib.make_train_step_shard_map(method, cfg.train, mesh=mesh, state_shardings=sh)


def test_bf16_compute_close_to_float32(parts, dp_run):
    losses, _, _ = dp_run
    l2, s2, _ = _run(parts, "dp", dtype="bfloat16", steps=1)
    assert abs(l2[0] - losses[0]) < 2e-2 and l2[0] != losses[0]
    assert jax.tree.leaves(s2.params)[0].dtype == np.float32  # master params stay float32
