"""Tiny random checkpoints in the PyTorch layouts, and a numpy forward of MDLM's DiT (torch-free parity).

``random_dit(fields, seed)`` fills every DiT param (own names) with N(0, 0.5²) values — adaLN and
the final layer too, which are zero at init, so every term of the forward pass is exercised.
``numpy_mdlm_logits`` evaluates MDLM's ``DIT`` from its HF state dict with numpy in float64,
written from the equations (docs/INTEROP.md): an independent check of the key mapping without torch.
"""

from __future__ import annotations

import math

import numpy as np

from dlm_jax.export import dit_layout as dl
from dlm_jax.export import files

FIELDS = dict(vocab_size=9, num_classes=9, width=16, depth=2, heads=2, cond_dim=8, max_len=12, mlp_ratio=4)


def fields(conditioning: str, **kw) -> dict:
    return dict(FIELDS, conditioning=conditioning, **kw)


def random_dit(f: dict, seed: int = 0, scale: float = 0.5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, s in dl.own_shapes(f).items()}


def checkpoint(f: dict, method: dict, seed: int = 0) -> files.Checkpoint:
    return files.Checkpoint("dit", f, f["vocab_size"] - 1, method, random_dit(f, seed))


def _layer_norm(x, w):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * w


def _silu(x):
    return x / (1 + np.exp(-x))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _rope(x, base=10000.0):
    """x [B, L, H, D]: rotate halves (x1, x2) -> (x1 cos − x2 sin, x2 cos + x1 sin)."""
    length, d = x.shape[1], x.shape[-1]
    inv = 1.0 / base ** (np.arange(0, d, 2) / d)
    ang = np.arange(length)[:, None] * inv[None]
    cos, sin = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def numpy_mdlm_logits(sd: dict, ids: np.ndarray, sigma: np.ndarray, n_heads: int, time_conditioning: bool):
    """MDLM's DIT forward (backbone.* keys) in float64: logits [B, L, V+1]."""
    g = {k[len("backbone."):]: np.asarray(v, np.float64) for k, v in sd.items()}
    lin = lambda x, p, bias=True: x @ g[p + ".weight"].T + (g[p + ".bias"] if bias else 0)  # noqa: E731
    sigma = sigma if time_conditioning else np.zeros_like(sigma)
    half = 128
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
    temb = np.concatenate([np.cos(sigma[:, None] * freqs), np.sin(sigma[:, None] * freqs)], -1)
    c = _silu(lin(_silu(lin(temb, "sigma_map.mlp.0")), "sigma_map.mlp.2"))[:, None, :]
    x = g["vocab_embed.embedding"][ids]
    b, length, w = x.shape
    depth = len([k for k in g if k.endswith(".norm1.weight")])
    for i in range(depth):
        p = f"blocks.{i}"
        mod = np.split(lin(c, p + ".adaLN_modulation"), 6, -1)
        h = _layer_norm(x, g[p + ".norm1.weight"]) * (1 + mod[1]) + mod[0]
        qkv = lin(h, p + ".attn_qkv", bias=False).reshape(b, length, 3, n_heads, w // n_heads)
        q, k, v = _rope(qkv[:, :, 0]), _rope(qkv[:, :, 1]), qkv[:, :, 2]
        s = np.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(w // n_heads)
        s = np.exp(s - s.max(-1, keepdims=True))
        att = np.einsum("bhlm,bmhd->blhd", s / s.sum(-1, keepdims=True), v).reshape(b, length, w)
        x = x + mod[2] * lin(att, p + ".attn_out", bias=False)
        h = _layer_norm(x, g[p + ".norm2.weight"]) * (1 + mod[4]) + mod[3]
        x = x + mod[5] * lin(_gelu_tanh(lin(h, p + ".mlp.0")), p + ".mlp.2")
    shift, scale = np.split(lin(c, "output_layer.adaLN_modulation"), 2, -1)
    h = _layer_norm(x, g["output_layer.norm_final.weight"]) * (1 + scale) + shift
    return lin(h, "output_layer.linear")
