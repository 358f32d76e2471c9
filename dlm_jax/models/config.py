"""`DiTConfig`: the frozen, validated configuration of the DiT denoiser.

Every field is checked in `__post_init__`, so a bad value fails where the config is built, with one line
`"<key>: <value>; expected <allowed>"` (docs/ARCHITECTURE.md), long before anything compiles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from dlm_jax import checks

CONDITIONINGS = ("none", "t", "th")
INPUTS = ("tokens", "vectors")
DTYPES = ("float32", "bfloat16")
# Compute implementations (same params, same function up to float rounding); the first is the default.
ATTENTION_IMPLS = ("xla", "einsum")
QKV_IMPLS = ("fused", "split")
ROPE_IMPLS = ("rotate_half", "split_halves")
EMBED_IMPLS = ("gather", "onehot")
# Built-in input adapters and the `input` each one takes ("default" picks one by `input`).
BUILTIN_ADAPTER_INPUTS = {"token_embedding": "tokens", "linear": "vectors"}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """Shape and features of the DiT denoiser (METHODS §2.1(b), §6.2(b)).

    vocab_size: number of input token ids, including the mask id if the method has one (tokens input only).
    num_classes: size of the output (logits) axis; e.g. V+1 for MDLM, V for flow matching.
    width / depth / heads: hidden size, number of blocks, attention heads (width/heads must be even: rotary).
    cond_dim: conditioning width (128 for MDLM small).
    max_len: longest accepted sequence.
    mlp_ratio: MLP hidden = mlp_ratio * width.
    conditioning: "none" (MDLM-OWT: same architecture, time input replaced by 0), "t" (time only:
        c = SiLU(emb_t(t))), "th" (FS-DFM student: time and step size h, fused to 2*cond_dim, then one
        SiLU(W_b c) fuser per block and for the final layer).
    per_token_time: allow t (and h) of shape [B, L] besides [B]; conditioning becomes per position.
    input: "tokens" (int ids [B, L]) or "vectors" (float [B, L, input_dim]).
    input_dim: vector width for input="vectors".
    self_cond_dim: 0 = off; else cond["self_cond"] [B, L, self_cond_dim] is projected and added to the input
        embedding (zeros when absent: the usual first self-conditioning pass).
    dropout: residual-branch dropout rate, used only when apply() gets a dropout_rng.
    dtype: compute dtype of activations; params are always float32, logits float32.
    identity_h_init: ("th" only) initialise the fusers so the student computes the "t" teacher's function
        exactly (see `init_student_from_teacher`).
    causal: False (default, bidirectional) or True: query i attends only to keys <= i (the AR baseline,
        `methods/ar.py`); off computes exactly what it computed before the switch existed.
    input_adapter: name of the input adapter in the registry of adapters.py: "default" (token_embedding
        for input="tokens", linear for "vectors"), "token_embedding", "linear", or a name a method
        registered with `register_input_adapter` (e.g. DSL's soft-retrieval converter).

    Compute implementations (params and outputs the same up to float rounding; defaults are the reference,
    the others exist to be benchmarked, `benchmarks/train_throughput.py --variant`):
    attention_impl: "xla" (`jax.nn.dot_product_attention`) or "einsum" (explicit QK^T, float32 softmax, PV).
    qkv_impl: "fused" (one matmul to [B, L, 3, H, D], then sliced) or "split" (three matmuls on the
        kernel's q/k/v slices; no slicing of the activation).
    rope_impl: "rotate_half" (x*cos + rotate_half(x)*sin on full-width tables) or "split_halves"
        (rotate the two halves, one concatenation).
    embed_impl: token embedding as "gather" (`jnp.take`) or "onehot" (one_hot(x) @ table, a matmul).
    """

    vocab_size: int = 0
    num_classes: int = 0
    width: int = 768
    depth: int = 12
    heads: int = 12
    cond_dim: int = 128
    max_len: int = 1024
    mlp_ratio: int = 4
    conditioning: str = "t"
    per_token_time: bool = False
    input: str = "tokens"
    input_dim: int = 0
    self_cond_dim: int = 0
    dropout: float = 0.0
    dtype: str = "float32"
    identity_h_init: bool = False
    input_adapter: str = "default"
    causal: bool = False
    attention_impl: str = "xla"
    qkv_impl: str = "fused"
    rope_impl: str = "rotate_half"
    embed_impl: str = "gather"

    def __post_init__(self):
        def bad(key, allowed):
            raise ValueError(f"{key}: {getattr(self, key)!r}; expected {allowed}")

        for key in ("width", "depth", "heads", "cond_dim", "max_len", "mlp_ratio", "num_classes"):
            if not _is_int(getattr(self, key)) or getattr(self, key) < 1:
                bad(key, "an int >= 1")
        for key in ("vocab_size", "input_dim", "self_cond_dim"):
            if not _is_int(getattr(self, key)) or getattr(self, key) < 0:
                bad(key, "an int >= 0")
        if self.conditioning not in CONDITIONINGS:
            bad("conditioning", f"one of {CONDITIONINGS}")
        if self.input not in INPUTS:
            bad("input", f"one of {INPUTS}")
        if self.dtype not in DTYPES:
            bad("dtype", f"one of {DTYPES}")
        for key in ("per_token_time", "identity_h_init", "causal"):
            if not isinstance(getattr(self, key), bool):
                bad(key, "a bool")
        if self.width % self.heads:
            bad("width", f"a multiple of heads={self.heads}")
        if (self.width // self.heads) % 2:
            bad("heads", f"a divisor of width={self.width} leaving an even head size (rotary)")
        if self.input == "tokens" and self.vocab_size < 1:
            bad("vocab_size", "an int >= 1 for input='tokens'")
        if self.input == "vectors" and self.input_dim < 1:
            bad("input_dim", "an int >= 1 for input='vectors'")
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))
                or not 0.0 <= self.dropout < 1.0):
            bad("dropout", "a float in [0, 1)")
        if self.identity_h_init and self.conditioning != "th":
            bad("identity_h_init", "False unless conditioning='th'")
        checks.check_str("input_adapter", self.input_adapter)
        wants = BUILTIN_ADAPTER_INPUTS.get(self.input_adapter, self.input)
        if wants != self.input:
            bad("input_adapter", f"an adapter for input={self.input!r} (the {self.input_adapter!r} adapter takes "
                                 f"input={wants!r})")
        for key, allowed in (("attention_impl", ATTENTION_IMPLS), ("qkv_impl", QKV_IMPLS),
                             ("rope_impl", ROPE_IMPLS), ("embed_impl", EMBED_IMPLS)):
            checks.check_choice(key, getattr(self, key), allowed)

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def compute_dtype(self):
        return jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DiTConfig":
        """Build from a mapping (or an ml_collections ConfigDict); unknown keys raise ValueError."""
        if hasattr(d, "to_dict"):
            d = d.to_dict()
        if not isinstance(d, Mapping):
            raise ValueError(f"config: {type(d).__name__}; expected a mapping of DiTConfig fields")
        names = tuple(f.name for f in dataclasses.fields(cls))
        for key in d:
            if key not in names:
                raise ValueError(f"{key}: {d[key]!r}; expected a DiTConfig field, one of {names}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
