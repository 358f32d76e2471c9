"""A plain PyTorch DiT (MDLM / FS-DFM teacher and student) that loads the exported files — no JAX needed.

Optional extra ``dlm_jax[torch]``; torch is imported by this module only (nothing else in dlm_jax
imports it at load time). Written from the equations (docs/INTEROP.md), in float32:

    c = SiLU(emb_t(t))                                 ("none": t := 0; "t")
    c = SiLU(W_f [emb_t(t); emb_h(h)]),  c_b = SiLU(W_b c) per block / final layer        ("th")
    emb(τ) = Linear(SiLU(Linear([cos τω_k; sin τω_k]_{k<128}))),  ω_k = 10000^{-k/128}
    block:  x += g_msa ⊙ W_o Attn(rope(q), rope(k), v),  [q; k; v] = W_qkv (LN(x)(1 + s_msa) + b_msa)
            x += g_mlp ⊙ MLP(LN(x)(1 + s_mlp) + b_mlp),  MLP = Linear ∘ GELU_tanh ∘ Linear
    logits = Linear(LN(x)(1 + s) + b)

with (b, s, g) chunks of the adaLN projections (order shift, scale, gate), weight-only LayerNorm
(eps 1e-5), rotary on halves (base 10,000, the ``rotary_emb.inv_freq`` buffer), qkv split as
(three, heads, dim). The module's state dict is MDLM's HF layout (``backbone.*``), so
``TorchDiT.load_state_dict(safetensors.torch.load_file("model.safetensors"))`` works on an MDLM
export; the "th" student adds twin-only keys (``dt_map``, ``time_fuser``, ``cond_fuser``).
``load_dit(path, fmt)`` reads any layout (``formats.read_checkpoint``) into it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlm_jax import checks
from dlm_jax.export import dit_layout as dl

__all__ = ["TorchDiT", "load_dit"]


class LayerNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.layer_norm(x.float(), (x.shape[-1],), None, None, 1e-5) * self.weight


class TimestepEmbedder(nn.Module):
    def __init__(self, cond_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dl.FREQ_DIM, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, t):
        half = dl.FREQ_DIM // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class EmbeddingLayer(nn.Module):
    def __init__(self, vocab: int, width: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(vocab, width))

    def forward(self, ids):
        return F.embedding(ids, self.embedding)


class Rotary(nn.Module):
    """Holds MDLM's persistent ``inv_freq`` buffer (base 10,000)."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.register_buffer("inv_freq", torch.from_numpy(dl.inv_freq(head_dim)))

    def forward(self, length: int):
        ang = torch.arange(length, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat([ang, ang], dim=-1)
        return emb.cos(), emb.sin()


def _rotate(x, cos, sin):
    """x [B, H, L, D]; (x1, x2) -> (x1 cos − x2 sin, x2 cos + x1 sin) on the halves."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def _modulate(x, shift, scale):
    return x * (1 + scale) + shift


class Block(nn.Module):
    def __init__(self, width: int, heads: int, cond_dim: int, mlp_ratio: int, th: bool, causal: bool = False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.norm1 = LayerNorm(width)
        self.attn_qkv = nn.Linear(width, 3 * width, bias=False)
        self.attn_out = nn.Linear(width, width, bias=False)
        self.norm2 = LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * width, width))
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * width)
        self.cond_fuser = nn.Linear(2 * cond_dim, cond_dim) if th else None

    def forward(self, x, c, cos, sin):
        if self.cond_fuser is not None:
            c = F.silu(self.cond_fuser(c))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        b, length, w = x.shape
        h = _modulate(self.norm1(x), shift_msa, scale_msa)
        qkv = self.attn_qkv(h).view(b, length, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(_rotate(qkv[0], cos, sin), _rotate(qkv[1], cos, sin), qkv[2],
                                             is_causal=self.causal)
        x = x + gate_msa * self.attn_out(att.transpose(1, 2).reshape(b, length, w))
        return x + gate_mlp * self.mlp(_modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, width: int, num_classes: int, cond_dim: int, th: bool):
        super().__init__()
        self.norm_final = LayerNorm(width)
        self.linear = nn.Linear(width, num_classes)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * width)
        self.cond_fuser = nn.Linear(2 * cond_dim, cond_dim) if th else None

    def forward(self, x, c):
        if self.cond_fuser is not None:
            c = F.silu(self.cond_fuser(c))
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


class Backbone(nn.Module):
    def __init__(self, d: dict):
        super().__init__()
        w, c, th = d["width"], d["cond_dim"], d["conditioning"] == "th"
        self.conditioning, self.heads = d["conditioning"], d["heads"]
        self.vocab_embed = EmbeddingLayer(d["vocab_size"], w)
        self.sigma_map = TimestepEmbedder(c)
        self.dt_map = TimestepEmbedder(c) if th else None
        self.time_fuser = nn.Linear(2 * c, 2 * c) if th else None
        self.rotary_emb = Rotary(w // d["heads"])
        self.blocks = nn.ModuleList([Block(w, d["heads"], c, d["mlp_ratio"], th, d.get("causal", False)) for _ in range(d["depth"])])
        self.output_layer = FinalLayer(w, d["num_classes"], c, th)

    def forward(self, ids, t=None, h=None):
        b, length = ids.shape
        t = torch.zeros(b) if t is None or self.conditioning == "none" else t.float()
        if self.conditioning == "th":
            c = F.silu(self.time_fuser(torch.cat([self.sigma_map(t), self.dt_map(h.float())], dim=-1)))
        else:
            c = F.silu(self.sigma_map(t))
        c = c[:, None, :]
        cos, sin = self.rotary_emb(length)
        x = self.vocab_embed(ids).float()
        for block in self.blocks:
            x = block(x, c, cos, sin)
        return self.output_layer(x, c).float()


class TorchDiT(nn.Module):
    """The DiT with MDLM's key names. ``forward(ids [B, L] int64, t [B] = None, h [B] = None)`` →
    float32 logits [B, L, num_classes]; t (and h) in the trained method's direction and units
    (MDLM: σ; FS-DFM: t with 0 = source, and the step size h)."""

    def __init__(self, dims: dict):
        super().__init__()
        self.dims = dict(dims)
        self.backbone = Backbone(self.dims)

    def forward(self, ids, t=None, h=None):
        if self.dims["conditioning"] == "th" and (t is None or h is None):
            checks.fail("h", None, "t and h [B] for a (t, h)-conditioned student")
        return self.backbone(ids, t, h)

    def load_own(self, params: dict) -> None:
        """Load own-named numpy params (``files.Checkpoint.params``), strictly."""
        state = dl.to_layout(params, dl.mdlm_table(self.dims, extended=True))
        state[dl.MDLM_INV_FREQ] = dl.inv_freq(self.dims["width"] // self.dims["heads"])
        self.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)


def load_dit(path: str, fmt: str, **options) -> tuple[TorchDiT, object]:
    """``(TorchDiT in eval mode, Checkpoint)`` from an export of any DiT layout (dlm_jax, mdlm, fsdfm)."""
    from dlm_jax.export.formats import read_checkpoint

    ckpt = read_checkpoint(path, fmt, **options)
    if ckpt.model_name != "dit":
        checks.fail("--from", path, f"a DiT checkpoint (this one holds model {ckpt.model_name!r})")
    model = TorchDiT(dl.dit_dims(ckpt.model_fields))
    model.load_own(ckpt.params)
    return model.eval(), ckpt
