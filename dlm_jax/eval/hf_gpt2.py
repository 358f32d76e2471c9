"""GPT-2 (Hugging Face format) in JAX, read from a local folder: a judge that needs no torch.

A folder with ``config.json`` (``model_type: "gpt2"``), ``model.safetensors`` (``transformer.``-prefixed
or bare names, ``lm_head.weight`` optional: tied to ``wte``) and ``tokenizer.json`` (read with the
``tokenizers`` package). The forward is GPT-2's: learned positions, pre-LayerNorm blocks with
``Conv1D`` weights ``[in, out]`` (``x @ W + b``), causal softmax attention scaled by ``1/sqrt(head_dim)``,
``gelu_new`` (tanh) MLP, a final LayerNorm and logits ``h @ wteᵀ`` in float32.

``load_gpt2(folder) -> (config: dict, params: dict)``; ``gpt2_forward(params, ids, config, hidden=False)``
-> logits ``[B, T, V]`` (or the final hidden states ``[B, T, d]``).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax import checks

__all__ = ["load_gpt2", "gpt2_forward", "gpt2_config", "ACTIVATIONS"]

ACTIVATIONS = {"gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True, "gelu": False}  # -> tanh approx?
_UNSUPPORTED = ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention")


def gpt2_config(folder: str) -> dict:
    """``config.json`` of a GPT-2 folder, checked (one-line errors)."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        checks.fail("hf judge", folder, "a folder with config.json, model.safetensors and tokenizer.json")
    with open(path) as f:
        config = json.load(f)
    if config.get("model_type") != "gpt2":
        checks.fail(f"{path} model_type", config.get("model_type"), "'gpt2' (the GPT-2 family is supported)")
    act = config.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        checks.fail(f"{path} activation_function", act, f"one of {tuple(ACTIVATIONS)}")
    for key in _UNSUPPORTED:
        if config.get(key):
            checks.fail(f"{path} {key}", config[key], "false (not supported by the JAX GPT-2 judge)")
    for key in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size"):
        checks.check_int(f"{path} {key}", config.get(key), min=1)
    if config["n_embd"] % config["n_head"]:
        checks.fail(f"{path} n_embd", config["n_embd"], f"a multiple of n_head={config['n_head']}")
    return config


def load_gpt2(folder: str) -> tuple[dict, dict]:
    """``(config, params)``: params a flat dict of float32 arrays keyed by GPT-2's names without the
    ``transformer.`` prefix (``wte.weight``, ``h.0.attn.c_attn.weight``, ...)."""
    from safetensors.numpy import load_file

    config = gpt2_config(folder)
    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        checks.fail("hf judge", folder, "a folder with model.safetensors (single file)")
    raw = load_file(path)
    params = {}
    for name, value in raw.items():
        key = name[len("transformer."):] if name.startswith("transformer.") else name
        if key.endswith((".attn.bias", ".attn.masked_bias")):  # causal-mask buffers of old checkpoints
            continue
        params[key] = jnp.asarray(np.asarray(value, np.float32))
    d, n = config["n_embd"], config["n_layer"]
    needed = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"] + [
        f"h.{i}.{p}" for i in range(n) for p in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                                                 "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                                                 "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
                                                 "mlp.c_proj.bias")]
    missing = [k for k in needed if k not in params]
    if missing:
        checks.fail(f"{path} tensor", missing[0], f"GPT-2 weights ({len(missing)} missing)")
    if params["wte.weight"].shape != (config["vocab_size"], d):
        checks.fail(f"{path} wte.weight", params["wte.weight"].shape, f"({config['vocab_size']}, {d})")
    return config, params


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * w + b


def gpt2_forward(params: dict, ids, config: dict, *, hidden: bool = False):
    """Logits ``[B, T, V]`` float32 for ids ``[B, T]`` (T <= n_positions); ``hidden``: the final
    LayerNorm's output ``[B, T, d]`` instead (MAUVE features)."""
    ids = jnp.asarray(ids)
    t = ids.shape[-1]
    if t > config["n_positions"]:
        checks.fail("judge window", t, f"<= n_positions={config['n_positions']}")
    eps = float(config.get("layer_norm_epsilon", 1e-5))
    heads, d = config["n_head"], config["n_embd"]
    hd = d // heads
    tanh = ACTIVATIONS[config.get("activation_function", "gelu_new")]
    causal = jnp.tril(jnp.ones((t, t), bool))
    h = params["wte.weight"][ids] + params["wpe.weight"][:t]
    for i in range(config["n_layer"]):
        p = lambda name: params[f"h.{i}.{name}"]  # noqa: E731
        a = _layer_norm(h, p("ln_1.weight"), p("ln_1.bias"), eps)
        qkv = a @ p("attn.c_attn.weight") + p("attn.c_attn.bias")
        q, k, v = (qkv[..., j * d:(j + 1) * d].reshape(ids.shape + (heads, hd)) for j in range(3))
        s = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(jnp.float32(hd))
        s = jnp.where(causal, s, jnp.finfo(jnp.float32).min)
        o = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(s, axis=-1), v).reshape(ids.shape + (d,))
        h = h + o @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        m = _layer_norm(h, p("ln_2.weight"), p("ln_2.bias"), eps)
        m = jax.nn.gelu(m @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"), approximate=tanh)
        h = h + m @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
    h = _layer_norm(h, params["ln_f.weight"], params["ln_f.bias"], eps)
    if hidden:
        return h
    head = params.get("lm_head.weight", params["wte.weight"])
    return (h @ head.T).astype(jnp.float32)
