"""models layer of dlm_jax: the DiT denoiser shared by every method (see docs/ARCHITECTURE.md).

Functional seam::

    graphdef, params = build_model(DiTConfig(...), seed)
    apply = make_apply(graphdef)
    logits = apply(params, x, {"t": t}, dropout_rng=None)   # float32 [B, L, num_classes]

Logical axis names carried by every Param (`nnx.with_partitioning`, metadata key `out_sharding`; read them
with `nnx.get_partition_spec(params)`); the trainer maps them to the mesh axes (data / fsdp / tensor):

=========  ==========================================================  ===================
name       axis                                                        suggested mesh axis
=========  ==========================================================  ===================
"vocab"    input ids of the token embedding; output classes           "tensor"
"embed"    the model width (residual stream)                          "fsdp"
"mlp"      MLP hidden (mlp_ratio * width)                             "tensor"
"heads"    attention heads of the qkv / out projections               "tensor"
"kv"       per-head dimension                                         None
"cond"     conditioning width (input side of conditioning layers)     None
"norm"     LayerNorm scale                                            None
None       always replicated (qkv's 3, adaLN's 6/2 chunk axes, ...)   None
=========  ==========================================================  ===================

No Param uses one name twice, but "cond" and "embed" share the adaLN kernels ([cond, 6, width]), so map
"cond" to a different mesh axis than "embed" (or to None); `dlm_jax.mesh` holds the rules per strategy.

Models by name: `registry.build(config, spec)` (``config.model.name``; see `registry.py`).

Param layout (names of the nnx.State; weights stored [in..., out...]; `adapter.*` depends on
`config.input_adapter`, a name from `register_input_adapter`):
adapter.embedding [V, W] (tokens) | adapter.proj.{kernel [d, W], bias} (vectors); self_cond.proj.kernel;
cond.t_embed.{mlp_in, mlp_out}, and for "th" cond.h_embed, cond.fuse; blocks[i].{norm1.scale,
attn.qkv.kernel [W, 3, H, D], attn.out.kernel [H, D, W], norm2.scale, mlp.fc_in, mlp.fc_out,
adaln.{kernel [cond, 6, W], bias [6, W]}, fuse.proj ("th")}; final.{norm.scale, adaln [cond, 2, W],
linear [W, C], fuse.proj ("th")}.
"""

from dlm_jax.models.adapters import (SelfCondProjection, TokenEmbedding, VectorAdapter, default_input_adapter,
                                     input_adapter_names, register_input_adapter)
from dlm_jax.models.api import abstract_model, build_model, count_params, make_apply, make_init
from dlm_jax.models.config import DiTConfig
from dlm_jax.models.dit import DiT, validate_inputs
from dlm_jax.models.registry import Model, ModelDef, ModelSpec, register_model
from dlm_jax.models.student_init import init_student_from_teacher

__all__ = [
    "DiT",
    "DiTConfig",
    "Model",
    "ModelDef",
    "ModelSpec",
    "SelfCondProjection",
    "TokenEmbedding",
    "VectorAdapter",
    "abstract_model",
    "build_model",
    "count_params",
    "default_input_adapter",
    "init_student_from_teacher",
    "input_adapter_names",
    "make_apply",
    "make_init",
    "register_input_adapter",
    "register_model",
    "validate_inputs",
]
