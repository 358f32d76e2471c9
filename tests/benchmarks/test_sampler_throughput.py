"""benchmarks/sampler_throughput.py times equal work: greedy LLaDA is deterministic, so its PyTorch
``generate``-style loop and dlm_jax's jitted ``llada`` scan must commit exactly the same tokens on the
same weights; the MDLM loop unmasks every position and counts one call per changed step."""

import os
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))

import sampler_throughput as st  # noqa: E402


def test_llada_loop_and_scan_commit_the_same_tokens():
    r = st.bench("llada", "tiny", 2, 8, 1, "cpu", 8)
    assert r["same"] == 1.0 and r["jax_nfe"] == r["torch_nfe"] == 8


def test_mdlm_loops_unmask_everything_and_count_calls():
    import torch

    _, _, twin, v, length = st.dit_pair("tiny", "cpu")
    gen = torch.Generator().manual_seed(0)
    x, nfe = st.torch_mdlm(twin, batch=2, length=length, steps=4, v=v, cache=False, device="cpu", generator=gen)
    assert (x.numpy() < v).all() and nfe in (4, 5)
    x, nfe_cached = st.torch_mdlm(twin, batch=2, length=length, steps=16, v=v, cache=True, device="cpu",
                                  generator=gen)
    assert (x.numpy() < v).all() and nfe_cached <= 16 + 1
    assert st._transfer_counts(10, 4) == [3, 3, 2, 2] and np.sum(st._transfer_counts(32, 8)) == 32
