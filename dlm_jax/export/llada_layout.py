"""LLaDA's Hugging Face layout (``GSAI-ML/LLaDA-8B-*``) ↔ dlm_jax's ``llada`` model (numpy only).

A directory with ``config.json`` (``model_type "llada"``, ``auto_map`` to the Hub's remote code —
read as JSON, never imported) and ``model.safetensors`` (or shards, or ``pytorch_model.bin``). Keys
under ``model.transformer.``: ``wte.weight [vocab, W]``; ``blocks.i.{attn_norm, q_proj, k_proj,
v_proj, attn_out, ff_norm, ff_proj (gate), up_proj, ff_out (down)}.weight``; ``ln_f.weight``;
``ff_out.weight [vocab, W]`` (the untied head). Our kernels are ``[in..., out...]``: q ``[W, H, D]``,
k / v ``[W, KV, D]``, out ``[H, D, W]``, head ``[W, vocab]``.

What the model cannot express is refused with one line: biases (``include_bias`` /
``include_qkv_bias`` / ``bias_for_layer_norm``), tied embeddings, a block other than ``llama``, a norm
other than RMS, an activation other than SiLU (SwiGLU), ALiBi, no rotary, q/k layer norms, scaled
logits, an input-embedding norm. The vocabulary is ``embedding_size`` (the rows of ``wte``; LLaDA-8B:
126,464 = vocab_size); V = vocabulary − 1 clean ids, the checkpoint's ``mask_token_id`` maps to V.
"""

from __future__ import annotations

import json
import os

from dlm_jax import checks
from dlm_jax.export import files
from dlm_jax.export.dit_layout import from_layout, to_layout

PREFIX = "model.transformer."
AUTO_MAP = {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"}
# config.json fields whose value the model needs as given (the LLaMA-style block LLaDA uses).
REQUIRED = {"block_type": "llama", "layer_norm_type": "rms", "include_bias": False, "include_qkv_bias": False,
            "bias_for_layer_norm": False, "weight_tying": False, "rope": True, "alibi": False,
            "attention_layer_norm": False, "scale_logits": False, "input_emb_norm": False,
            "layer_norm_with_affine": True}

__all__ = ["llada_table", "llada_shapes", "fields_from_config", "config_json", "read_llada", "write_llada",
           "llada_method"]


def llada_method() -> dict:
    """LLaDA's training objective is MDLM's with the linear schedule α_t = 1 − t and no time input."""
    return {"name": "mdlm", "schedule": "linear", "eps": 0.0, "time_conditioning": False, "sampler": "llada"}


def llada_shapes(f: dict) -> dict[str, tuple]:
    """``{own name: shape}`` of the llada model's params."""
    w, h, v, ff = f["width"], f["heads"], f["vocab_size"], f["mlp_dim"]
    kv, d = f.get("kv_heads") or h, w // h
    shapes = {"embed.embedding": (v, w), "final_norm.scale": (w,), "head.kernel": (w, v)}
    for i in range(f["depth"]):
        b = f"blocks.{i}."
        shapes.update({b + "attn_norm.scale": (w,), b + "attn.q.kernel": (w, h, d), b + "attn.k.kernel": (w, kv, d),
                       b + "attn.v.kernel": (w, kv, d), b + "attn.out.kernel": (h, d, w), b + "ff_norm.scale": (w,),
                       b + "mlp.gate.kernel": (w, ff), b + "mlp.up.kernel": (w, ff), b + "mlp.down.kernel": (ff, w)})
    return shapes


def llada_table(f: dict) -> list:
    """Rows ``(own name, HF key, n_in)`` (``dit_layout``'s convention)."""
    p = PREFIX
    rows = [("embed.embedding", f"{p}wte.weight", None)]
    for i in range(f["depth"]):
        o, t = f"blocks.{i}.", f"{p}blocks.{i}."
        rows += [(o + "attn_norm.scale", t + "attn_norm.weight", None), (o + "attn.q.kernel", t + "q_proj.weight", 1),
                 (o + "attn.k.kernel", t + "k_proj.weight", 1), (o + "attn.v.kernel", t + "v_proj.weight", 1),
                 (o + "attn.out.kernel", t + "attn_out.weight", 2), (o + "ff_norm.scale", t + "ff_norm.weight", None),
                 (o + "mlp.gate.kernel", t + "ff_proj.weight", 1), (o + "mlp.up.kernel", t + "up_proj.weight", 1),
                 (o + "mlp.down.kernel", t + "ff_out.weight", 1)]
    return rows + [("final_norm.scale", f"{p}ln_f.weight", None), ("head.kernel", f"{p}ff_out.weight", 1)]


def fields_from_config(config: dict, where: str = "config.json") -> dict:
    """The llada model's fields from LLaDA's config.json (vocab_size = the embedding rows)."""
    if config.get("model_type") != "llada":
        checks.fail(f"{where} model_type", config.get("model_type"), "'llada' (the LLaDA layout)")
    for key, want in REQUIRED.items():
        if key in config and config[key] is not None and config[key] != want:
            checks.fail(f"{where} {key}", config[key], f"{want!r} (what the llada model can express)")
    if config.get("activation_type", "silu") not in ("silu", "swiglu"):
        checks.fail(f"{where} activation_type", config.get("activation_type"), "'silu' (SwiGLU with up_proj)")
    if config.get("multi_query_attention"):
        checks.fail(f"{where} multi_query_attention", config["multi_query_attention"], "null (use n_kv_heads)")
    need = lambda k: checks.check_int(f"{where} {k}", config.get(k), min=1)  # noqa: E731
    width, heads = need("d_model"), need("n_heads")
    vocab = config.get("embedding_size") or need("vocab_size")
    kv = config.get("n_kv_heads") or heads
    mlp = config.get("mlp_hidden_size") or need("mlp_ratio") * width
    f = {"vocab_size": checks.check_int(f"{where} embedding_size", vocab, min=2), "width": width,
         "depth": need("n_layers"), "heads": heads, "kv_heads": checks.check_int(f"{where} n_kv_heads", kv, min=1),
         "mlp_dim": checks.check_int(f"{where} mlp_hidden_size", mlp, min=1),
         "max_len": need("max_sequence_length"),
         "rope_theta": checks.check_float(f"{where} rope_theta", config.get("rope_theta", 500000.0), min=0.0,
                                          min_open=True),
         "norm_eps": checks.check_float(f"{where} rms_norm_eps", config.get("rms_norm_eps", 1e-5), min=0.0,
                                        min_open=True)}
    f["mask_token_id"] = checks.check_int(f"{where} mask_token_id", config.get("mask_token_id"), min=0,
                                          max=f["vocab_size"] - 1)
    if width % heads or (width // heads) % 2 or heads % f["kv_heads"]:
        checks.fail(f"{where} n_heads", heads, f"a divisor of d_model={width} (even head size) and a multiple of "
                    f"n_kv_heads={f['kv_heads']}")
    return f


def config_json(f: dict) -> dict:
    """LLaDA's config.json for the model's fields."""
    mask = f["mask_token_id"] if f.get("mask_token_id", -1) >= 0 else f["vocab_size"] - 1
    return {"architectures": ["LLaDAModelLM"], "auto_map": dict(AUTO_MAP), "model_type": "llada",
            **REQUIRED, "activation_type": "silu", "d_model": f["width"], "n_layers": f["depth"],
            "n_heads": f["heads"], "n_kv_heads": f.get("kv_heads") or f["heads"], "mlp_hidden_size": f["mlp_dim"],
            "mlp_ratio": max(1, f["mlp_dim"] // f["width"]), "max_sequence_length": f["max_len"],
            "rope_theta": float(f["rope_theta"]), "rms_norm_eps": float(f["norm_eps"]),
            "vocab_size": f["vocab_size"], "embedding_size": f["vocab_size"], "mask_token_id": mask,
            "multi_query_attention": None, "rope_full_precision": True, "flash_attention": False,
            "use_cache": False, "torch_dtype": "float32"}


def read_llada(path: str, *, lazy: bool = False) -> files.Checkpoint:
    """A LLaDA HF directory → Checkpoint (model ``llada``, method ``mdlm`` with the linear schedule);
    ``lazy``: params read on demand, in slices (``slicing.OwnTensor``)."""
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        checks.fail("--from", path, "a LLaDA Hugging Face directory with config.json (format 'llada')")
    f = fields_from_config(files.read_json(os.path.join(path, "config.json"), "config.json"))
    flat = from_layout(files.lazy_weights_dir(path), llada_table(f), llada_shapes(f), what="LLaDA", lazy=lazy)
    return files.Checkpoint(model_name="llada", model_fields=f, vocab_size=f["vocab_size"] - 1,
                            method=llada_method(), params=flat,
                            origin={"format": "llada", "path": os.path.abspath(path)})


def write_llada(ckpt: files.Checkpoint, out_dir: str, *, max_shard_bytes: int = files.DEFAULT_MAX_SHARD_BYTES) -> list:
    """A run of the llada model → LLaDA's HF directory (``out_dir`` exists)."""
    if ckpt.model_name != "llada":
        checks.fail("--format", "llada", f"a run of the 'llada' model (this run: {ckpt.model_name!r}; use 'dlm_jax')")
    f = ckpt.model_fields
    state = to_layout(ckpt.params, llada_table(f))
    written = files.write_safetensors(state, out_dir, max_shard_bytes=max_shard_bytes, metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        json.dump(config_json(f), fh, indent=2, sort_keys=True)
    return written + ["config.json"]
