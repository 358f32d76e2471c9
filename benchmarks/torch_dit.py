"""A PyTorch twin of `dlm_jax.models.DiT` plus the MDLM loss and AdamW, used only by the benchmarks.

Same architecture, shapes and parameter count as the JAX DiT with conditioning "t" or "none" and token input
(adaLN-zero blocks, weight-only LayerNorm in float32, non-interleaved rotary q/k, softmax attention, tanh-GELU
MLP, float32 logits over `num_classes`). Weights are stored the PyTorch way (`F.linear`, weight [out, in]);
`load_jax_params` copies a dlm_jax params State into the twin so the forward pass can be checked against JAX.

The MDLM loss is dlm_jax.methods.mdlm's: antithetic (rotated-grid) times t in [eps, 1) (t: 0 clean, 1 masked),
log-linear schedule α_t = 1 − (1−ε)t, tokens masked with probability 1 − α_t, SUBS log-probs over the V clean
classes, cross-entropy at masked positions weighted by w(t) = 1/t (exact for log-linear), mean over all tokens.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FREQ_DIM = 256
ROPE_BASE = 10000.0
LN_EPS = 1e-5


def _uniform_(t: torch.Tensor, fan_in: int) -> torch.Tensor:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(t, -bound, bound)


class Linear(nn.Module):
    """y = x W^T + b with weight [out, in], PyTorch's default init or zeros (adaLN-zero / final layer)."""

    def __init__(self, d_in: int, d_out: int, bias: bool = True, zero: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.empty(d_out)) if bias else None
        with torch.no_grad():
            for p in (self.weight, self.bias):
                if p is not None:
                    p.zero_() if zero else _uniform_(p, d_in)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class LayerNorm(nn.Module):
    """Weight-only LayerNorm, statistics in float32."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.dim = dim

    def forward(self, x):
        return F.layer_norm(x.float(), (self.dim,), self.weight, None, LN_EPS)


def timestep_embedding(t: torch.Tensor, dim: int = FREQ_DIM) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rotary_cos_sin(length: int, head_dim: int):
    inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.arange(length, dtype=torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rotary(x, cos, sin):
    """x [B, H, L, D]; cos/sin [L, D]; rotation (x1 cos − x2 sin, x2 cos + x1 sin) on halves."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class Block(nn.Module):
    def __init__(self, width: int, heads: int, cond_dim: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = LayerNorm(width)
        self.qkv = Linear(width, 3 * width, bias=False)
        self.out = Linear(width, width, bias=False)
        self.norm2 = LayerNorm(width)
        self.fc_in = Linear(width, mlp_ratio * width)
        self.fc_out = Linear(mlp_ratio * width, width)
        self.adaln = Linear(cond_dim, 6 * width, zero=True)

    def forward(self, x, c, cos, sin):
        b, length, w = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaln(c).chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        qkv = self.qkv(h).view(b, length, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = apply_rotary(qkv[0], cos, sin), apply_rotary(qkv[1], cos, sin), qkv[2]
        o = F.scaled_dot_product_attention(q, k, v)  # [B, H, L, D]
        x = x + gate_msa * self.out(o.transpose(1, 2).reshape(b, length, w))
        h = modulate(self.norm2(x), shift_mlp, scale_mlp)
        return x + gate_mlp * self.fc_out(F.gelu(self.fc_in(h), approximate="tanh"))


class TorchDiT(nn.Module):
    """The DiT of dlm_jax.models (token input, conditioning "t"/"none", no dropout / self-conditioning)."""

    def __init__(self, vocab_size: int, num_classes: int, width: int, depth: int, heads: int, cond_dim: int,
                 mlp_ratio: int = 4, conditioning: str = "t"):
        super().__init__()
        if conditioning not in ("t", "none"):
            raise ValueError(f"conditioning: {conditioning!r}; expected 't' or 'none' (the twin has no 'th')")
        self.conditioning = conditioning
        self.width, self.heads = width, heads
        self.embedding = nn.Parameter(_uniform_(torch.empty(vocab_size, width), width))
        self.t_in = Linear(FREQ_DIM, cond_dim)
        self.t_out = Linear(cond_dim, cond_dim)
        self.blocks = nn.ModuleList([Block(width, heads, cond_dim, mlp_ratio) for _ in range(depth)])
        self.final_norm = LayerNorm(width)
        self.final_adaln = Linear(cond_dim, 2 * width, zero=True)
        self.final_linear = Linear(width, num_classes, zero=True)

    @classmethod
    def from_config(cls, cfg) -> "TorchDiT":
        """From a `dlm_jax.models.DiTConfig` (or anything with the same attributes)."""
        if cfg.input != "tokens" or cfg.self_cond_dim or cfg.dropout:
            raise ValueError("config: the twin supports token input without self-conditioning or dropout")
        adapter = getattr(cfg, "input_adapter", "default")  # the *_impl switches do not change the function
        if adapter not in ("default", "token_embedding"):
            raise ValueError(f"input_adapter: {adapter!r}; expected 'default' or 'token_embedding' (the twin's)")
        return cls(cfg.vocab_size, cfg.num_classes, cfg.width, cfg.depth, cfg.heads, cfg.cond_dim,
                   cfg.mlp_ratio, cfg.conditioning)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x int64 [B, L]; t [B] (the caller's time direction). Returns float32 logits [B, L, num_classes]."""
        b, length = x.shape
        h = F.embedding(x, self.embedding)
        if self.conditioning == "none":
            t = torch.zeros_like(t)
        c = F.silu(self.t_out(F.silu(self.t_in(timestep_embedding(t)))))[:, None, :]  # [B, 1, cond]
        cos, sin = rotary_cos_sin(length, self.width // self.heads)
        for block in self.blocks:
            h = block(h, c, cos, sin)
        shift, scale = self.final_adaln(c).chunk(2, dim=-1)
        return self.final_linear(modulate(self.final_norm(h), shift, scale))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_jax_params(model: TorchDiT, params) -> None:
    """Copy a dlm_jax DiT params State (conditioning "t"/"none", token input) into the twin."""
    flat = {}
    for path, leaf in _flatten(params):
        flat[path] = np.asarray(leaf)

    def get(*keys):
        return torch.from_numpy(np.array(flat[tuple(str(k) for k in keys)]))

    def lin(mod: Linear, *prefix):
        k = get(*prefix, "kernel")  # [in, out...] (one input axis) -> weight [prod(out), in]
        mod.weight.copy_(k.reshape(k.shape[0], -1).T)
        if mod.bias is not None:
            mod.bias.copy_(get(*prefix, "bias").reshape(-1))

    with torch.no_grad():
        model.embedding.copy_(get("adapter", "embedding"))
        lin(model.t_in, "cond", "t_embed", "mlp_in")
        lin(model.t_out, "cond", "t_embed", "mlp_out")
        for i, blk in enumerate(model.blocks):
            p = ("blocks", i)
            blk.norm1.weight.copy_(get(*p, "norm1", "scale"))
            blk.norm2.weight.copy_(get(*p, "norm2", "scale"))
            lin(blk.qkv, *p, "attn", "qkv")          # [W, 3, H, D] -> [3W, W]
            k = get(*p, "attn", "out", "kernel")                        # [H, D, W] -> [W, W]
            blk.out.weight.copy_(k.reshape(-1, k.shape[-1]).T)
            lin(blk.fc_in, *p, "mlp", "fc_in")
            lin(blk.fc_out, *p, "mlp", "fc_out")
            lin(blk.adaln, *p, "adaln")              # [cond, 6, W] -> [6W, cond]
        model.final_norm.weight.copy_(get("final", "norm", "scale"))
        lin(model.final_adaln, "final", "adaln")
        lin(model.final_linear, "final", "linear")


def _flatten(params):
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in leaves:
        keys = []
        for k in path:
            for attr in ("key", "name", "idx"):
                if hasattr(k, attr):
                    keys.append(str(getattr(k, attr)))
                    break
        if keys and keys[-1] == "value":
            keys = keys[:-1]
        yield tuple(keys), leaf


# ------------------------------------------------------------------------------------------------------------
# MDLM loss and train step.
# ------------------------------------------------------------------------------------------------------------
def antithetic_times(batch_size: int, sampling_eps: float = 1e-3, generator=None, device=None) -> torch.Tensor:
    u = torch.rand((), generator=generator, device=device)
    t = torch.remainder(u + torch.arange(batch_size, dtype=torch.float32, device=device) / batch_size, 1.0)
    return (1.0 - sampling_eps) * t + sampling_eps


def mdlm_loss(model: TorchDiT, x: torch.Tensor, vocab_size: int, *, eps: float = 1e-3, sampling_eps: float = 1e-3,
              time_conditioning: bool = False, generator=None) -> torch.Tensor:
    """Per-token MDLM NELBO (nats/token) with the log-linear schedule; mask id = vocab_size."""
    b = x.shape[0]
    t = antithetic_times(b, sampling_eps, generator, x.device)
    alpha = 1.0 - (1.0 - eps) * t
    masked = torch.rand(x.shape, generator=generator, device=x.device) >= alpha[:, None]
    z = torch.where(masked, torch.full_like(x, vocab_size), x)
    return mdlm_terms(model, x, z, t, vocab_size, time_conditioning=time_conditioning).mean()


def mdlm_terms(model: TorchDiT, x, z, t, vocab_size: int, *, time_conditioning: bool = False) -> torch.Tensor:
    """Per-token NELBO integrand 1[z = m] · (1/t) · (−log p_θ(x | z)) [B, L] (t: 0 clean, 1 masked)."""
    logits = model(z, t if time_conditioning else torch.zeros_like(t))
    logp = torch.log_softmax(logits[..., :vocab_size].float(), dim=-1)
    ce = -torch.gather(logp, -1, x[..., None])[..., 0]
    weight = (1.0 / t)[:, None]  # -α'/(1-α) = 1/t for log-linear
    return torch.where(z == vocab_size, weight * ce, torch.zeros_like(ce))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdamW (PyTorch's default foreach implementation); decay only on weights with ndim >= 2 like optim.py."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=lr, betas=(b1, b2), eps=eps)


def train_step(model, optimizer, x, vocab_size: int, *, grad_clip: float | None = 1.0, ema=None,
               ema_decay: float = 0.0, **loss_kw) -> float:
    """One step: loss, backward, global-norm clipping, AdamW, EMA (as dlm_jax.train.step). Returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = mdlm_loss(model, x, vocab_size, **loss_kw)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
    optimizer.step()
    if ema is not None:
        with torch.no_grad():
            torch._foreach_lerp_(ema, list(model.parameters()), 1.0 - ema_decay)
    return loss.detach()
