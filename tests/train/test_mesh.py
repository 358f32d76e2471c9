"""Mesh shapes, partition rules and shardings derived from nnx logical names."""

import jax
import pytest
from jax.sharding import AxisType, PartitionSpec as P

import _tiny
from dlm_jax import mesh as mesh_lib
from dlm_jax.train import state as state_lib


def test_mesh_shape_fill_and_axis_types():
    assert mesh_lib.mesh_shape(dict(data=-1, fsdp=2, tensor=1), 8) == (4, 2, 1)
    assert mesh_lib.mesh_shape(dict(data=1, fsdp=-1, tensor=2, strategy="tp"), 8) == (1, 4, 2)
    mesh = mesh_lib.make_mesh(dict(data=2, fsdp=4, tensor=1, strategy="fsdp"))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert mesh.axis_types == (AxisType.Auto,) * 3
    assert mesh_lib.data_parallel_size(mesh) == 8


@pytest.mark.parametrize("cfg, match", [
    (dict(data=3, fsdp=1, tensor=1), r"^mesh: .*= 3 devices.*8 available devices$"),
    (dict(data=-1, fsdp=-1, tensor=1), r"^mesh: \['data', 'fsdp'\] are all -1"),
    (dict(data=-1, fsdp=3, tensor=1), r"^mesh: .*fixed axes \(3\) to divide"),
    (dict(data=-1, fsdp=1, tensor=1, strategy="zero3"), r"^mesh.strategy: 'zero3'; expected one of"),
    (dict(data=2, fsdp=1, tensor=4, strategy="fsdp"), r"^mesh.tensor: 4 with mesh.strategy='fsdp'"),
])
def test_mesh_shape_errors_are_one_line(cfg, match):
    with pytest.raises(ValueError, match=match) as e:
        mesh_lib.mesh_shape(cfg, 8)
    assert "\n" not in str(e.value)


def test_logical_rules_per_strategy():
    mesh = mesh_lib.make_mesh(dict(data=1, fsdp=2, tensor=4, strategy="tp"))
    spec = lambda names, shape, s: mesh_lib.logical_to_spec(names, shape, mesh, s)  # noqa: E731
    assert spec(("embed", "mlp"), (16, 32), "dp") == P(None, None)
    assert spec(("embed", "mlp"), (16, 32), "fsdp") == P("fsdp", None)
    assert spec(("mlp", "embed"), (32, 16), "fsdp") == P(None, "fsdp")
    assert spec(("mlp",), (32,), "fsdp") == P("fsdp")        # no embed: next rule
    assert spec(("embed", "mlp"), (16, 32), "tp") == P("fsdp", "tensor")
    assert spec(("embed", "heads", "kv"), (16, 4, 8), "tp") == P("fsdp", "tensor", None)
    assert spec(("vocab", "embed"), (33, 16), "tp") == P(None, "fsdp")   # 33 % 4 != 0
    assert spec(("embed", "mlp"), (15, 30), "fsdp") == P(None, "fsdp")   # 15 % 2 != 0
    assert spec(None, (16,), "fsdp") == P()


def test_param_shardings_from_nnx_metadata_and_like():
    cfg = _tiny.tiny_config()
    _, init_params = state_lib.trace_model(lambda: _tiny.build_model(cfg))
    abstract = jax.eval_shape(init_params)
    mesh = mesh_lib.make_mesh(dict(data=2, fsdp=4, tensor=1, strategy="fsdp"))
    sh = mesh_lib.param_shardings(abstract, mesh, "fsdp")
    specs = {"/".join(str(k.key) for k in path[:-1]): s.spec
             for path, s in jax.tree_util.tree_flatten_with_path(sh)[0]}
    assert specs == {"embed/embedding": P(None, "fsdp"), "up/kernel": P("fsdp", None),
                     "up/bias": P("fsdp"), "down/kernel": P(None, "fsdp"), "down/bias": P("fsdp"),
                     "norm/scale": P(None), "norm/bias": P(None), "out/kernel": P("fsdp", None),
                     "out/bias": P()}
    # Optimizer-like trees take the param sharding by key-path suffix and shape.
    tree = {"mu": abstract, "count": jax.ShapeDtypeStruct((), "int32")}
    like = mesh_lib.shardings_like(tree, abstract, sh, mesh)
    assert like["mu"]["up"]["kernel"].get_value().spec == P("fsdp", None)
    assert like["count"].spec == P()
