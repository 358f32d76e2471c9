"""LLaDA (GSAI-ML/LLaDA-8B-Base / -Instruct): a bidirectional LLaMA-style mask predictor, model "llada".

x (ids) → embedding → depth × block → RMSNorm → untied head → float32 logits over every id:

    block: x += W_o · Attn(rope(W_q n), rope(W_k n), W_v n),  n = RMSNorm(x)      (no causal mask)
           x += W_down · (SiLU(W_gate m) ⊙ W_up m),               m = RMSNorm(x)

RMSNorm ``x / sqrt(mean(x²) + eps) · w`` in float32 (eps 1e-5), rotary on halves (rotate-half, as the
DiT) with θ = 500,000, no biases anywhere, optional grouped KV heads. No time input: LLaDA's mask
predictor sees only the partly masked ids (``conditioning`` is "none"; a ``cond["t"]`` is ignored).

Ids (the masked samplers' convention is "mask id = V", the last input id): the model embeds
``vocab_size`` ids = V + 1 and predicts as many classes. The checkpoint's own mask id
(``mask_token_id``, 126336 in LLaDA-8B, vocabulary 126,464) may sit inside the vocabulary; the model
maps dlm_jax ids to checkpoint ids on the way in (``dlm_to_checkpoint_ids``: the mask V → the
checkpoint's mask; clean ids at or above it shift up by one) and permutes the logits back on the way
out, so params stay exactly the checkpoint's tensors and MDLM / ReMDM / LLaDA / FeF samplers drive it
unchanged. ``checkpoint_to_dlm_ids`` turns the checkpoint tokenizer's ids into dlm_jax ids. With
``mask_token_id = vocab_size − 1`` (the default) both maps are the identity.

Params (``[in..., out...]``): embed.embedding [vocab, W]; blocks[i].{attn_norm.scale, attn.q.kernel
[W, H, D], attn.k.kernel / attn.v.kernel [W, KV, D], attn.out.kernel [H, D, W], ff_norm.scale,
mlp.gate.kernel / mlp.up.kernel [W, F], mlp.down.kernel [F, W]}; final_norm.scale; head.kernel [W, vocab].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlm_jax import checks
from dlm_jax.models.attention import apply_rotary, xla_attention
from dlm_jax.models.layers import Dense, make_param, ones_init, torch_uniform
from dlm_jax.models.registry import ModelDef, ModelSpec, module_init, register_model

COND_KEYS = ("t", "padding_mask")
DTYPES = ("float32", "bfloat16")

__all__ = ["LLaDAConfig", "LLaDA", "make_init", "make_apply", "configure", "MODEL", "dlm_to_checkpoint_ids",
           "checkpoint_to_dlm_ids", "logits_to_checkpoint_order"]


@dataclasses.dataclass(frozen=True)
class LLaDAConfig:
    """vocab_size: ids embedded = classes predicted (V + 1, the checkpoint's vocabulary); mask_token_id:
    the checkpoint's mask id (-1 = vocab_size − 1); kv_heads: 0 = heads; mlp_dim: SwiGLU hidden size;
    dtype: compute dtype (params float32, logits float32)."""

    vocab_size: int = 0
    mask_token_id: int = -1
    width: int = 4096
    depth: int = 32
    heads: int = 32
    kv_heads: int = 0
    mlp_dim: int = 12288
    max_len: int = 4096
    rope_theta: float = 500000.0
    norm_eps: float = 1e-5
    dtype: str = "float32"
    conditioning: str = "none"

    def __post_init__(self):
        for key in ("vocab_size", "width", "depth", "heads", "mlp_dim", "max_len"):
            checks.check_int(f"model.{key}", getattr(self, key), min=2 if key == "vocab_size" else 1)
        checks.check_int("model.kv_heads", self.kv_heads, min=0)
        checks.check_int("model.mask_token_id", self.mask_token_id, min=-1, max=self.vocab_size - 1)
        checks.check_float("model.rope_theta", self.rope_theta, min=0.0, min_open=True)
        checks.check_float("model.norm_eps", self.norm_eps, min=0.0, min_open=True)
        checks.check_choice("model.dtype", self.dtype, DTYPES)
        checks.check_choice("model.conditioning", self.conditioning, ("none",))
        if self.width % self.heads or (self.width // self.heads) % 2:
            checks.fail("model.heads", self.heads, f"a divisor of width={self.width} leaving an even head size")
        if self.heads % self.num_kv_heads:
            checks.fail("model.kv_heads", self.kv_heads, f"a divisor of heads={self.heads}")
        if self.mask_token_id == -1:
            object.__setattr__(self, "mask_token_id", self.vocab_size - 1)

    @property
    def num_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def compute_dtype(self):
        return jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32

    @classmethod
    def from_dict(cls, d: Mapping) -> "LLaDAConfig":
        names = tuple(f.name for f in dataclasses.fields(cls))
        for key in d:
            if key not in names:
                checks.fail(f"model.{key}", d[key], f"a field of the llada model, one of {names}")
        return cls(**dict(d))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# Ids: dlm_jax's (mask = V, the last id) and the checkpoint's (mask = mask_token_id).
# ----------------------------------------------------------------------------------------------
def dlm_to_checkpoint_ids(ids, vocab_size: int, mask_token_id: int):
    """dlm_jax ids in [0, V] → checkpoint ids (numpy or jax arrays alike)."""
    xp = jnp if isinstance(ids, jax.Array) else np
    v = vocab_size - 1
    return xp.where(ids == v, mask_token_id, xp.where(ids >= mask_token_id, ids + 1, ids))


def checkpoint_to_dlm_ids(ids, vocab_size: int, mask_token_id: int):
    """Checkpoint ids (e.g. from its tokenizer) → dlm_jax ids; the mask id becomes V."""
    xp = jnp if isinstance(ids, jax.Array) else np
    return xp.where(ids == mask_token_id, vocab_size - 1, xp.where(ids > mask_token_id, ids - 1, ids))


def logits_to_checkpoint_order(logits, mask_token_id: int):
    """dlm_jax-ordered logits [..., vocab] → the checkpoint's order (the inverse of the model's permutation)."""
    xp = jnp if isinstance(logits, jax.Array) else np
    m = mask_token_id
    return xp.concatenate([logits[..., :m], logits[..., -1:], logits[..., m:-1]], axis=-1)


# ----------------------------------------------------------------------------------------------
# Modules.
# ----------------------------------------------------------------------------------------------
class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, *, dtype, rngs: nnx.Rngs):
        self.scale = make_param(rngs, ones_init, (dim,), ("norm",))
        self.eps, self.dtype = eps, dtype

    def __call__(self, x):
        x = x.astype(jnp.float32)
        y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...]).astype(self.dtype)


class Block(nnx.Module):
    def __init__(self, cfg: LLaDAConfig, *, rngs: nnx.Rngs):
        w, h, kv, d, f, dt = cfg.width, cfg.heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim, cfg.compute_dtype
        dense = lambda i, o, names: Dense(i, o, names, use_bias=False, dtype=dt, rngs=rngs)  # noqa: E731
        self.attn_norm = RMSNorm(w, cfg.norm_eps, dtype=dt, rngs=rngs)
        self.attn = nnx.Dict(q=dense((w,), (h, d), ("embed", "heads", "kv")),
                             k=dense((w,), (kv, d), ("embed", "heads", "kv")),
                             v=dense((w,), (kv, d), ("embed", "heads", "kv")),
                             out=dense((h, d), (w,), ("heads", "kv", "embed")))
        self.ff_norm = RMSNorm(w, cfg.norm_eps, dtype=dt, rngs=rngs)
        self.mlp = nnx.Dict(gate=dense((w,), (f,), ("embed", "mlp")), up=dense((w,), (f,), ("embed", "mlp")),
                            down=dense((f,), (w,), ("mlp", "embed")))

    def __call__(self, x, cos, sin, mask):
        n = self.attn_norm(x)
        q, k = apply_rotary(self.attn["q"](n), cos, sin), apply_rotary(self.attn["k"](n), cos, sin)
        x = x + self.attn["out"](xla_attention(q, k, self.attn["v"](n), mask)).astype(x.dtype)
        m = self.ff_norm(x)
        return x + self.mlp["down"](jax.nn.silu(self.mlp["gate"](m)) * self.mlp["up"](m)).astype(x.dtype)


def rope_tables(length: int, head_dim: int, theta: float):
    """cos, sin [L, head_dim] (float32) with frequencies theta^{-2j/head_dim}, halves concatenated."""
    inv = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    ang = jnp.arange(length, dtype=jnp.float32)[:, None] * inv[None, :]
    emb = jnp.concatenate([ang, ang], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def validate_inputs(cfg: LLaDAConfig, x, cond) -> None:
    """One-line errors for inputs the model cannot take (id range only on concrete arrays)."""
    shape = tuple(np.shape(x))
    if len(shape) != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
        checks.fail("x", f"shape {shape} dtype {x.dtype}", "integer token ids [B, L]")
    if shape[1] > cfg.max_len:
        checks.fail("x", f"sequence length {shape[1]}", f"<= max_len={cfg.max_len}")
    if not isinstance(x, jax.core.Tracer):
        lo, hi = int(np.min(np.asarray(x))), int(np.max(np.asarray(x)))
        if lo < 0 or hi >= cfg.vocab_size:
            checks.fail("x", f"token ids in [{lo}, {hi}]", f"ids in [0, {cfg.vocab_size})")
    for key in (cond or {}):
        if key not in COND_KEYS:
            checks.fail("cond", key, f"keys from {COND_KEYS} (LLaDA has no time, step-size or self-conditioning input)")
    pm = (cond or {}).get("padding_mask")
    if pm is not None and tuple(np.shape(pm)) != shape:
        checks.fail("cond['padding_mask']", tuple(np.shape(pm)), f"shape {list(shape)} ([B, L] of x)")


class LLaDA(nnx.Module):
    def __init__(self, cfg: LLaDAConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embed = nnx.Dict(embedding=make_param(rngs, torch_uniform(cfg.width), (cfg.vocab_size, cfg.width),
                                                   ("vocab", "embed")))
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.depth)])
        self.final_norm = RMSNorm(cfg.width, cfg.norm_eps, dtype=cfg.compute_dtype, rngs=rngs)
        self.head = Dense((cfg.width,), (cfg.vocab_size,), ("embed", "vocab"), use_bias=False,
                          dtype=cfg.compute_dtype, rngs=rngs)

    def __call__(self, x, cond=None, *, dropout_rng=None):
        """Logits float32 [B, L, vocab_size] in dlm_jax id order; x: dlm_jax ids [B, L] (mask = vocab_size − 1)."""
        del dropout_rng  # LLaDA trains without dropout
        cfg = self.config
        validate_inputs(cfg, x, cond)
        remap = cfg.mask_token_id != cfg.vocab_size - 1
        ids = dlm_to_checkpoint_ids(jnp.asarray(x), cfg.vocab_size, cfg.mask_token_id) if remap else x
        h = jnp.take(self.embed["embedding"][...], ids, axis=0).astype(jnp.float32)
        pm = (cond or {}).get("padding_mask")
        mask = None if pm is None else (jnp.asarray(pm) != 0)[:, None, None, :]
        cos, sin = rope_tables(x.shape[1], cfg.head_dim, cfg.rope_theta)
        for block in self.blocks:
            h = block(h, cos, sin, mask)
        logits = self.head(self.final_norm(h), out_dtype=jnp.float32)
        if remap:  # checkpoint order → dlm_jax order: the mask logit moves to the end
            m = cfg.mask_token_id
            logits = jnp.concatenate([logits[..., :m], logits[..., m + 1:], logits[..., m:m + 1]], axis=-1)
        return logits


# ----------------------------------------------------------------------------------------------
# The registry entry.
# ----------------------------------------------------------------------------------------------
def make_init(cfg: LLaDAConfig):
    """(graphdef, pure init(key) -> params), built without eager sharding (logical names kept)."""
    return module_init(lambda rngs: LLaDA(cfg, rngs=rngs))


def make_apply(graphdef):
    """Pure ``apply(params, x, cond=None, *, dropout_rng=None) -> logits``."""

    def apply(params, x, cond=None, *, dropout_rng=None):
        return nnx.merge(graphdef, params)(x, cond, dropout_rng=dropout_rng)

    return apply


def configure(fields: dict, spec: ModelSpec) -> LLaDAConfig:
    """LLaDAConfig from ``config.model`` and the method's spec: token input, outputs = input ids."""
    if spec.input != "tokens":
        checks.fail("model.name", "llada", f"a method with token input (this one needs input={spec.input!r})")
    if spec.num_outputs != spec.num_input_ids:
        checks.fail("model.name", "llada", f"a method whose outputs equal its input ids ({spec.num_input_ids}; it "
                    f"needs {spec.num_outputs}): LLaDA's head predicts every input id")
    if spec.conditioning not in (None, "none"):
        checks.fail("model.conditioning", spec.conditioning, "'none' (LLaDA has no time input)")
    return LLaDAConfig.from_dict(dict(fields, vocab_size=spec.num_input_ids))


MODEL = ModelDef(configure=configure, make_init=make_init, make_apply=make_apply)
register_model("llada", MODEL)
