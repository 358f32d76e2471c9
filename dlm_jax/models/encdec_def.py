"""The encoder–decoder's registry entry (``config.model.name = "encdec"``) and its config.

The method's ``ModelSpec`` fills the shape: ``input="tokens"`` (the model reads source ids),
``num_input_ids`` = V (one vocabulary for source and target tokens), ``num_outputs`` = the latent
width d (x0 is predicted in embedding space). The user's ``config.model`` sets the rest; a key
contradicting the spec (e.g. ``latent_dim`` other than the method's ``dim``) is a one-line error.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from dlm_jax.checks import check_bool, check_choice, check_float, check_int, fail
from dlm_jax.models.registry import ModelDef, ModelSpec, module_init


@dataclasses.dataclass(frozen=True)
class EncDecConfig:
    """vocab_size: source/target ids (V). latent_dim: d of the target embeddings and of x0.
    width / heads / mlp_ratio: Transformer size (width/heads even: rotary). enc_depth / dec_depth:
    blocks. max_src_len / max_tgt_len: longest source / target (the length predictor has
    max_tgt_len + 1 classes). dropout: residual-branch rate (only with a dropout_rng).
    embed_init_std: target table init (DINOISER: 1e-3). self_cond: concatenate ẑ_sc to z_t."""

    vocab_size: int = 0
    latent_dim: int = 16
    width: int = 512
    enc_depth: int = 6
    dec_depth: int = 6
    heads: int = 8
    mlp_ratio: int = 4
    max_src_len: int = 128
    max_tgt_len: int = 128
    dropout: float = 0.0
    dtype: str = "float32"
    embed_init_std: float = 1e-3
    self_cond: bool = True

    def __post_init__(self):
        p = "model."
        for key in ("vocab_size", "latent_dim", "width", "heads", "mlp_ratio", "max_src_len", "max_tgt_len"):
            check_int(p + key, getattr(self, key), min=1)
        for key in ("enc_depth", "dec_depth"):
            check_int(p + key, getattr(self, key), min=0)
        check_float(p + "dropout", self.dropout, min=0.0, max=1.0, max_open=True)
        check_float(p + "embed_init_std", self.embed_init_std, min=0.0, min_open=True)
        check_choice(p + "dtype", self.dtype, ("float32", "bfloat16"))
        check_bool(p + "self_cond", self.self_cond)
        if self.width % self.heads or (self.width // self.heads) % 2:
            fail(p + "heads", self.heads, f"a divisor of width={self.width} leaving an even head size (rotary)")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def compute_dtype(self):
        return jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32


FIELDS = tuple(f.name for f in dataclasses.fields(EncDecConfig))


def configure(fields: dict, spec: ModelSpec) -> EncDecConfig:
    """``EncDecConfig`` from ``config.model`` (without name / vocab_size) and the method's spec."""
    fields = {k: v for k, v in dict(fields).items() if k != "max_len"}  # the trainer's bound on data.seq_len
    if spec.input != "tokens":
        fail("spec.input", spec.input, "'tokens' (the encoder–decoder reads source ids)")
    given = fields.get("latent_dim", spec.num_outputs)
    if given != spec.num_outputs:
        fail("model.latent_dim", given, f"{spec.num_outputs} (the method's latent width)")
    for key in fields:
        if key not in FIELDS:
            fail(f"model.{key}", fields[key], f"an encdec field, one of {FIELDS}")
    return EncDecConfig(**{**fields, "vocab_size": spec.num_input_ids, "latent_dim": spec.num_outputs})


def make_init(config: EncDecConfig):
    from dlm_jax.models.encdec import EncDec

    return module_init(lambda rngs: EncDec(config, rngs=rngs))


def make_apply(graphdef):
    """Pure ``apply(params, x, cond, *, dropout_rng=None)`` (see ``EncDec.__call__``)."""
    from flax import nnx

    def apply(params, x, cond=None, *, dropout_rng=None):
        return nnx.merge(graphdef, params)(x, cond, dropout_rng=dropout_rng)

    return apply


MODEL = ModelDef(configure=configure, make_init=make_init, make_apply=make_apply)
