"""The PyTorch twin in benchmarks/torch_dit.py is the same model as dlm_jax's DiT: equal parameter counts and,
with the JAX params loaded (every weight randomised, so the zero-initialised adaLN / final layers are live),
equal logits and equal MDLM per-token losses."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from benchmarks import torch_dit  # noqa: E402
from dlm_jax.models import DiTConfig, build_model, count_params, make_apply  # noqa: E402


def _randomised(params, seed):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [0.2 * jax.random.normal(k, x.shape, x.dtype) + (x if x.ndim == 1 else 0)
                                        for k, x in zip(keys, leaves)])


@pytest.mark.parametrize("conditioning", ["t", "none"])
def test_twin_matches_jax_logits(conditioning):
    cfg = DiTConfig(vocab_size=33, num_classes=33, width=32, depth=2, heads=4, cond_dim=16, max_len=16,
                    conditioning=conditioning)
    graphdef, params = build_model(cfg, 0)
    params = _randomised(params, 1)
    twin = torch_dit.TorchDiT.from_config(cfg)
    assert torch_dit.count_params(twin) == count_params(params)
    torch_dit.load_jax_params(twin, params)

    rng = np.random.default_rng(0)
    x = rng.integers(0, 33, (3, 16)).astype(np.int32)
    t = rng.uniform(0.0, 1.0, (3,)).astype(np.float32)
    want = np.asarray(make_apply(graphdef)(params, jnp.asarray(x), {"t": jnp.asarray(t)}))
    with torch.no_grad():
        got = twin(torch.from_numpy(x).long(), torch.from_numpy(t)).numpy()
    assert np.abs(want).max() > 0.5  # the zero-initialised layers were randomised: a non-trivial output
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_twin_mdlm_terms_match_jax():
    from dlm_jax.methods import mdlm
    from dlm_jax.processes.schedules import get_schedule

    v = 32
    cfg = DiTConfig(vocab_size=v + 1, num_classes=v + 1, width=32, depth=1, heads=2, cond_dim=16, max_len=8)
    graphdef, params = build_model(cfg, 0)
    params = _randomised(params, 2)
    twin = torch_dit.TorchDiT.from_config(cfg)
    torch_dit.load_jax_params(twin, params)
    rng = np.random.default_rng(1)
    x = rng.integers(0, v, (4, 8)).astype(np.int32)
    t = np.array([0.1, 0.4, 0.7, 0.95], np.float32)
    z = np.where(rng.uniform(size=x.shape) < t[:, None], v, x).astype(np.int32)
    lp = mdlm.logprobs_fn(make_apply(graphdef), v, time_conditioning=True)
    want = np.asarray(mdlm.nelbo_terms(lambda zz, tt: lp(params, zz, tt), x, z, t, get_schedule("loglinear")))
    with torch.no_grad():
        got = torch_dit.mdlm_terms(twin, torch.from_numpy(x).long(), torch.from_numpy(z).long(),
                                   torch.from_numpy(t), v, time_conditioning=True).numpy()
    assert (want > 0).sum() >= 8
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
