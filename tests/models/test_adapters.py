"""Input adapters by name: built-ins, and an adapter registered from outside dlm_jax/models (this test module,
as a method module such as methods/dsl.py would) and selected from a config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dlm_jax.models import DiTConfig, abstract_model, build_model, make_apply
from dlm_jax.models.adapters import input_adapter_names, register_input_adapter
from dlm_jax.models.layers import make_param, torch_uniform

BASE = dict(vocab_size=11, num_classes=10, width=32, depth=2, heads=4, cond_dim=16, max_len=16)
VEC = dict(BASE, input="vectors", input_dim=6, vocab_size=0)
T = jnp.array([0.2, 0.7])


class OneHotTable(nnx.Module):
    """A method's own adapter: one_hot(x) @ W, numerically an embedding lookup (param name `table`)."""

    def __init__(self, config, rngs):
        self.table = make_param(rngs, torch_uniform(4), (config.vocab_size, config.width), ("vocab", "embed"))

    def __call__(self, x):
        return jax.nn.one_hot(x, self.table.shape[0]) @ self.table[...]


register_input_adapter("test_onehot_table", OneHotTable)  # at import, as a method module would


def perturb(params, seed=1, scale=0.3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_registered_adapter_selected_from_a_config():
    g, p = build_model(DiTConfig(**BASE), 0)
    p = perturb(p)
    custom = DiTConfig.from_dict({**BASE, "input_adapter": "test_onehot_table"})
    gc, pc = build_model(custom, 0)
    assert "table" in pc["adapter"] and "embedding" not in pc["adapter"]
    pc["adapter"]["table"] = p["adapter"]["embedding"]
    pc["blocks"], pc["final"], pc["cond"] = p["blocks"], p["final"], p["cond"]
    x = jax.random.randint(jax.random.key(0), (2, 8), 0, 11)
    a = jax.jit(make_apply(g))(p, x, {"t": T})
    b = jax.jit(make_apply(gc))(pc, x, {"t": T})
    assert float(jnp.max(jnp.abs(a - b))) < 1e-5 and float(jnp.max(jnp.abs(a))) > 1e-2
    assert "test_onehot_table" in input_adapter_names()


@pytest.mark.parametrize("base,name", [(BASE, "token_embedding"), (VEC, "linear")])
def test_builtin_names_equal_default(base, name):
    g0, p0 = build_model(DiTConfig(**base), 3)
    g1, p1 = build_model(DiTConfig(**base, input_adapter=name), 3)
    for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(p0) == jax.tree.structure(p1)
    assert {"default", "token_embedding", "linear"} <= set(input_adapter_names())


def test_unknown_or_mismatched_adapter_raises_one_line():
    bad = DiTConfig(**BASE, input_adapter="no_such_adapter")  # the registry is read at build time
    for fn in (abstract_model, lambda c: build_model(c, 0)):
        with pytest.raises(ValueError, match=r"^input_adapter: 'no_such_adapter'; expected a registered"):
            fn(bad)
    with pytest.raises(ValueError, match=r"^input_adapter: 'linear'; expected an adapter for input='tokens'"):
        DiTConfig(**BASE, input_adapter="linear")
    with pytest.raises(ValueError, match=r"^input_adapter: 'token_embedding'"):
        DiTConfig(**VEC, input_adapter="token_embedding")
    with pytest.raises(ValueError, match=r"^input_adapter: ''"):
        DiTConfig(**BASE, input_adapter="")


def test_register_rules():
    register_input_adapter("test_onehot_table", OneHotTable)  # the same factory again: a no-op
    with pytest.raises(ValueError, match=r"^input adapter name: 'test_onehot_table'"):
        register_input_adapter("test_onehot_table", lambda c, r: OneHotTable(c, r))
    with pytest.raises(ValueError, match=r"^input adapter name: 'linear'"):
        register_input_adapter("linear", OneHotTable, replace=True)  # built-ins stay
    with pytest.raises(ValueError, match=r"^input adapter factory"):
        register_input_adapter("test_not_callable", 3)
    other = lambda c, r: OneHotTable(c, r)  # noqa: E731
    register_input_adapter("test_replaced", OneHotTable)
    register_input_adapter("test_replaced", other, replace=True)
    assert abstract_model(DiTConfig(**BASE, input_adapter="test_replaced"))[1]["adapter"]["table"].shape == (11, 32)
