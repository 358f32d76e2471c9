"""A plain PyTorch LLaDA mask predictor that loads the exported files — no JAX needed (``dlm_jax[torch]``).

Written from the equations (docs/INTEROP.md), float32, in the checkpoint's id space (its mask id
is ``mask_token_id``; no remapping here):

    x = wte[ids];  per block:  n = RMSNorm(x);  x += attn_out(Attn(rope(q_proj n), rope(k_proj n), v_proj n))
                               m = RMSNorm(x);  x += ff_out(SiLU(ff_proj m) ⊙ up_proj m)
    logits = ff_out(RMSNorm(x))      (the untied head)

RMSNorm ``x / sqrt(mean(x²) + eps) · w``; rotary on halves with θ = ``rope_theta``; bidirectional
softmax attention with grouped KV heads repeated; an optional ``attention_mask`` [B, L] (1 = real)
hides padded keys. The state dict is LLaDA's HF layout (``model.transformer.*``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlm_jax import checks
from dlm_jax.export import llada_layout

__all__ = ["TorchLLaDA", "load_llada"]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, f: dict):
        super().__init__()
        w, h, kv = f["width"], f["heads"], f.get("kv_heads") or f["heads"]
        d = w // h
        self.heads, self.kv_heads, self.head_dim = h, kv, d
        self.attn_norm = RMSNorm(w, f["norm_eps"])
        self.q_proj = nn.Linear(w, h * d, bias=False)
        self.k_proj = nn.Linear(w, kv * d, bias=False)
        self.v_proj = nn.Linear(w, kv * d, bias=False)
        self.attn_out = nn.Linear(h * d, w, bias=False)
        self.ff_norm = RMSNorm(w, f["norm_eps"])
        self.ff_proj = nn.Linear(w, f["mlp_dim"], bias=False)
        self.up_proj = nn.Linear(w, f["mlp_dim"], bias=False)
        self.ff_out = nn.Linear(f["mlp_dim"], w, bias=False)

    def forward(self, x, cos, sin, mask):
        b, length, _ = x.shape
        n = self.attn_norm(x)
        split = lambda t, heads: t.view(b, length, heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q_proj(n), self.heads), split(self.k_proj(n), self.kv_heads), split(self.v_proj(n),
                                                                                                   self.kv_heads)
        half = self.head_dim // 2
        rot = lambda t: t * cos + torch.cat([-t[..., half:], t[..., :half]], dim=-1) * sin  # noqa: E731
        q, k = rot(q), rot(k)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.attn_out(att.transpose(1, 2).reshape(b, length, -1))
        m = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m))


class Transformer(nn.Module):
    def __init__(self, f: dict):
        super().__init__()
        self.wte = nn.Embedding(f["vocab_size"], f["width"])
        self.blocks = nn.ModuleList([Block(f) for _ in range(f["depth"])])
        self.ln_f = RMSNorm(f["width"], f["norm_eps"])
        self.ff_out = nn.Linear(f["width"], f["vocab_size"], bias=False)


class _Model(nn.Module):
    def __init__(self, f: dict):
        super().__init__()
        self.transformer = Transformer(f)


class TorchLLaDA(nn.Module):
    """``forward(ids [B, L] int64 (checkpoint ids), attention_mask [B, L] = None)`` → float32 logits
    [B, L, vocab] in checkpoint order."""

    def __init__(self, fields: dict):
        super().__init__()
        self.fields = dict(fields)
        self.model = _Model(self.fields)

    def forward(self, ids, attention_mask=None):
        tr, f = self.model.transformer, self.fields
        d = f["width"] // f["heads"]
        inv = 1.0 / (float(f["rope_theta"]) ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        ang = torch.arange(ids.shape[1], dtype=torch.float32)[:, None] * inv[None, :]
        cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        x = tr.wte(ids).float()
        for block in tr.blocks:
            x = block(x, cos, sin, mask)
        return tr.ff_out(tr.ln_f(x)).float()

    def load_own(self, params: dict) -> None:
        """Load own-named numpy params (``files.Checkpoint.params``), strictly."""
        state = llada_layout.to_layout(params, llada_layout.llada_table(self.fields))
        self.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)


def load_llada(path: str, fmt: str = "llada") -> tuple[TorchLLaDA, object]:
    """``(TorchLLaDA in eval mode, Checkpoint)`` from a LLaDA HF directory or a dlm_jax export of one."""
    from dlm_jax.export.formats import read_checkpoint

    ckpt = read_checkpoint(path, fmt)
    if ckpt.model_name != "llada":
        checks.fail("--from", path, f"a LLaDA checkpoint (this one holds model {ckpt.model_name!r})")
    model = TorchLLaDA(ckpt.model_fields)
    model.load_own(ckpt.params)
    return model.eval(), ckpt
