"""The DiT's weights in three layouts — dlm_jax's own names, MDLM's and FS-DFM's PyTorch keys (numpy only).

Own names are the params' paths joined by "." (``blocks.0.attn.qkv.kernel``); kernels are stored
``[in..., out...]`` (qkv ``[W, 3, H, D]``, attention out ``[H, D, W]``, adaLN ``[cond, 6, W]``).
PyTorch ``nn.Linear`` weights are ``[out, in]`` with flattened axes, so a kernel with ``n_in``
input axes maps to ``kernel.reshape(prod(in), prod(out)).T`` and back with our shapes; biases and
adaLN biases flatten (``[6, W] -> [6W]``: MDLM's ``chunk(6)`` order shift/scale/gate × 2). MDLM
splits its fused qkv as ``(three, heads, dim)``, exactly our C-order; FS-DFM's separate
``qw/kw/vw`` are the three slices ``kernel[:, j]``. Both references carry a rotary ``inv_freq``
buffer (base 10,000): written on export, checked and dropped on import.

A table row is ``(own name, their key, n_in)``; ``n_in = None`` copies, ``0`` flattens a bias,
``k >= 1`` transposes a kernel with ``k`` input axes, ``("qkv", j)`` is FS-DFM's q/k/v slice.
"""

from __future__ import annotations

import math

import numpy as np

from dlm_jax import checks
from dlm_jax.export.slicing import OwnTensor

FREQ_DIM = 256  # sinusoidal features of the timestep embedder
ROPE_BASE = 10000.0
MDLM_PREFIX = "backbone."
MDLM_INV_FREQ = "backbone.rotary_emb.inv_freq"
FSDFM_INV_FREQ = "rotary_emb.inv_freq"

__all__ = ["own_shapes", "inv_freq", "mdlm_table", "fsdfm_table", "to_layout", "from_layout", "dit_dims",
           "mdlm_config_json", "dit_fields_from_mdlm", "fsdfm_dims", "FREQ_DIM", "ROPE_BASE"]


def dit_dims(cfg) -> dict:
    """The fields that decide the DiT's param shapes, from a DiTConfig or a mapping of its fields."""
    get = (lambda k, d=None: cfg.get(k, d)) if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
    dims = {k: get(k) for k in ("vocab_size", "num_classes", "width", "depth", "heads", "cond_dim")}
    dims.update(mlp_ratio=get("mlp_ratio", 4), conditioning=get("conditioning", "t"), causal=bool(get("causal", False)))
    if get("input", "tokens") != "tokens" or get("self_cond_dim", 0):
        checks.fail("model.input", get("input", "tokens"), "'tokens' without self-conditioning (the PyTorch layouts' "
                    "DiT)")
    return dims


def own_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """``{own name: shape}`` of the DiT's params (the formula behind ``models.dit``)."""
    d = dit_dims(cfg)
    w, c, r, n = d["width"], d["cond_dim"], d["mlp_ratio"] * d["width"], d["num_classes"]
    h = d["heads"]
    shapes = {"adapter.embedding": (d["vocab_size"], w)}
    embedders = ["t_embed"] + (["h_embed"] if d["conditioning"] == "th" else [])
    for e in embedders:
        shapes.update({f"cond.{e}.mlp_in.kernel": (FREQ_DIM, c), f"cond.{e}.mlp_in.bias": (c,),
                       f"cond.{e}.mlp_out.kernel": (c, c), f"cond.{e}.mlp_out.bias": (c,)})
    fuse = {}
    if d["conditioning"] == "th":
        shapes.update({"cond.fuse.kernel": (2 * c, 2 * c), "cond.fuse.bias": (2 * c,)})
        fuse = {"fuse.proj.kernel": (2 * c, c), "fuse.proj.bias": (c,)}
    for i in range(d["depth"]):
        block = {"norm1.scale": (w,), "attn.qkv.kernel": (w, 3, h, w // h), "attn.out.kernel": (h, w // h, w),
                 "norm2.scale": (w,), "mlp.fc_in.kernel": (w, r), "mlp.fc_in.bias": (r,),
                 "mlp.fc_out.kernel": (r, w), "mlp.fc_out.bias": (w,), "adaln.kernel": (c, 6, w),
                 "adaln.bias": (6, w), **fuse}
        shapes.update({f"blocks.{i}.{k}": v for k, v in block.items()})
    shapes.update({"final.norm.scale": (w,), "final.adaln.kernel": (c, 2, w), "final.adaln.bias": (2, w),
                   "final.linear.kernel": (w, n), "final.linear.bias": (n,)})
    shapes.update({f"final.{k}": v for k, v in fuse.items()})
    return shapes


def inv_freq(head_dim: int, base: float = ROPE_BASE) -> np.ndarray:
    """The references' rotary buffer ``1 / base^(2j / head_dim)``, float32."""
    return (1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))).astype(np.float32)


def _linear(own: str, theirs: str) -> list:
    return [(f"{own}.kernel", f"{theirs}.weight", 1), (f"{own}.bias", f"{theirs}.bias", 0)]


def mdlm_table(cfg, *, extended: bool = False) -> list:
    """Rows for MDLM's HF keys (``backbone.*``). ``extended``: also the "th" student's fusers under
    twin-only names (``dt_map``, ``time_fuser``, ``cond_fuser``) — not a layout MDLM's code loads."""
    d = dit_dims(cfg)
    if d["conditioning"] == "th" and not extended:
        checks.fail("model.conditioning", "th", "'none' or 't' for the MDLM layout (export a (t, h) student as fsdfm)")
    p = MDLM_PREFIX
    rows = [("adapter.embedding", f"{p}vocab_embed.embedding", None)]
    rows += _linear("cond.t_embed.mlp_in", f"{p}sigma_map.mlp.0") + _linear("cond.t_embed.mlp_out", f"{p}sigma_map.mlp.2")
    th = d["conditioning"] == "th"
    if th:
        rows += _linear("cond.h_embed.mlp_in", f"{p}dt_map.mlp.0") + _linear("cond.h_embed.mlp_out", f"{p}dt_map.mlp.2")
        rows += _linear("cond.fuse", f"{p}time_fuser")
    for i in range(d["depth"]):
        o, t = f"blocks.{i}", f"{p}blocks.{i}"
        rows += [(f"{o}.norm1.scale", f"{t}.norm1.weight", None), (f"{o}.attn.qkv.kernel", f"{t}.attn_qkv.weight", 1),
                 (f"{o}.attn.out.kernel", f"{t}.attn_out.weight", 2), (f"{o}.norm2.scale", f"{t}.norm2.weight", None)]
        rows += _linear(f"{o}.mlp.fc_in", f"{t}.mlp.0") + _linear(f"{o}.mlp.fc_out", f"{t}.mlp.2")
        rows += _linear(f"{o}.adaln", f"{t}.adaLN_modulation")
        if th:
            rows += _linear(f"{o}.fuse.proj", f"{t}.cond_fuser")
    rows += [("final.norm.scale", f"{p}output_layer.norm_final.weight", None)]
    rows += _linear("final.linear", f"{p}output_layer.linear") + _linear("final.adaln", f"{p}output_layer.adaLN_modulation")
    if th:
        rows += _linear("final.fuse.proj", f"{p}output_layer.cond_fuser")
    return rows


def fsdfm_table(cfg) -> list:
    """Rows for FS-DFM's ``Transformer`` state dict (teacher: "t"; student: "th")."""
    d = dit_dims(cfg)
    if d["conditioning"] not in ("t", "th"):
        checks.fail("model.conditioning", d["conditioning"], "'t' (teacher) or 'th' (student) for the FS-DFM layout")
    rows = [("adapter.embedding", "vocab_embed.weight", None)]
    rows += _linear("cond.t_embed.mlp_in", "time_embedding.mlp.0") + _linear("cond.t_embed.mlp_out", "time_embedding.mlp.2")
    th = d["conditioning"] == "th"
    if th:
        rows += _linear("cond.h_embed.mlp_in", "dt_embedding.mlp.0") + _linear("cond.h_embed.mlp_out", "dt_embedding.mlp.2")
        rows += _linear("cond.fuse", "time_condition_fuser")
    for i in range(d["depth"]):
        o, t = f"blocks.{i}", f"blocks.{i}"
        rows += [(f"{o}.norm1.scale", f"{t}.norm1.weight", None)]
        rows += [(f"{o}.attn.qkv.kernel", f"{t}.{n}.weight", ("qkv", j)) for j, n in enumerate(("qw", "kw", "vw"))]
        rows += [(f"{o}.attn.out.kernel", f"{t}.attn_out.weight", 2), (f"{o}.norm2.scale", f"{t}.norm2.weight", None)]
        rows += _linear(f"{o}.mlp.fc_in", f"{t}.mlp.0") + _linear(f"{o}.mlp.fc_out", f"{t}.mlp.2")
        rows += _linear(f"{o}.adaln", f"{t}.adaLN_modulation")
        if th:
            rows += _linear(f"{o}.fuse.proj", f"{t}.condition_fuser")
    rows += [("final.norm.scale", "output_layer.norm_final.weight", None)]
    rows += _linear("final.linear", "output_layer.linear") + _linear("final.adaln", "output_layer.adaLN_modulation")
    if th:
        rows += _linear("final.fuse.proj", "output_layer.condition_fuser")
    return rows


def _export_one(a: np.ndarray, n_in) -> np.ndarray:
    if n_in is None:
        return a
    if n_in == 0:
        return a.reshape(-1)
    if isinstance(n_in, tuple):  # FS-DFM q/k/v: slice j of [W, 3, H, D] -> [H*D, W]
        sl = a[:, n_in[1]]
        return sl.reshape(sl.shape[0], -1).T
    rows = math.prod(a.shape[:n_in])
    return a.reshape(rows, -1).T


def to_layout(flat: dict[str, np.ndarray], table: list) -> dict[str, np.ndarray]:
    """Own names -> their keys (export direction; needs no shapes). Every own name must be used."""
    used = {own for own, _, _ in table}
    extra = sorted(set(flat) - used)
    if extra:
        checks.fail("parameter", extra[0], "a parameter the target layout holds")
    return {key: np.ascontiguousarray(_export_one(np.asarray(flat[own]), n_in)) for own, key, n_in in table}


def _import_one(a: np.ndarray, n_in, shape: tuple) -> np.ndarray:
    if n_in is None or n_in == 0:
        return a.reshape(shape)
    if isinstance(n_in, tuple):
        return a.T.reshape((shape[0],) + shape[2:])
    return a.T.reshape(shape)


def _expected_theirs(n_in, shape: tuple) -> tuple:
    if n_in is None:
        return shape
    if n_in == 0:
        return (math.prod(shape),)
    if isinstance(n_in, tuple):
        return (math.prod(shape[2:]), shape[0])
    return (math.prod(shape[n_in:]), math.prod(shape[:n_in]))


def from_layout(state: dict, table: list, shapes: dict[str, tuple], *, what: str,
                buffers: dict[str, np.ndarray] | None = None, lazy: bool = False) -> dict:
    """Their keys -> own names, float32 (import direction). Missing / extra keys, shapes and dtypes
    are one-line errors naming the key; ``buffers`` ({key: expected value}) are checked and dropped.
    Only headers are needed for the checks: with ``lazy`` the values are ``slicing.OwnTensor``s that
    read a device's box on demand (``state`` may hold ``files.LazyTensor``s), else numpy arrays."""
    buffers = dict(buffers or {})
    keys = {key for _, key, _ in table}
    for key in sorted(state):
        if key not in keys and key not in buffers:
            checks.fail(f"{what} key {key}", tuple(state[key].shape), f"only keys of the {what} layout (an extra key)")
    for key, want in buffers.items():
        if key in state and (tuple(state[key].shape) != want.shape
                             or not np.allclose(np.asarray(state[key], np.float64), want, rtol=1e-6, atol=0)):
            checks.fail(f"{what} key {key}", np.asarray(state[key]).ravel()[:3].tolist(),
                        f"the rotary frequencies of base {ROPE_BASE:g} ({want[:3].tolist()}...)")
    out: dict[str, list] = {}
    for own, key, n_in in table:
        if key not in state:
            checks.fail(f"{what} key {key}", "missing", f"present (it holds {own})")
        a = state[key]
        dtype = np.dtype(a.dtype)
        if dtype.kind != "f" and dtype.name != "bfloat16":  # ml_dtypes' bfloat16 has kind 'V'
            checks.fail(f"{what} key {key}", str(dtype), "a floating dtype (float32, bfloat16 or float16)")
        want = _expected_theirs(n_in, shapes[own])
        if tuple(a.shape) != want:
            checks.fail(f"{what} key {key}", tuple(a.shape), f"shape {want} (from the config: {own} {shapes[own]})")
        out.setdefault(own, []).append((a, n_in))
    if lazy:
        return {own: OwnTensor(parts, shapes[own]) for own, parts in out.items()}
    return {own: _assemble(parts, shapes[own]) for own, parts in out.items()}


def _assemble(parts: list, shape: tuple) -> np.ndarray:
    done = [_import_one(np.asarray(a).astype(np.float32), n_in, shape) for a, n_in in parts]
    return np.stack(done, axis=1) if len(done) > 1 else done[0]


# ----------------------------------------------------------------------------------------------
# Configs.
# ----------------------------------------------------------------------------------------------
MDLM_AUTO_MAP = {"AutoConfig": "configuration_mdlm.MDLMConfig", "AutoModelForMaskedLM": "modeling_mdlm.MDLM"}


def mdlm_config_json(cfg, *, time_conditioning: bool, dropout: float = 0.0) -> dict:
    """MDLM's ``config.json`` for a DiT (input ids = V + 1 = output classes; mask id V)."""
    d = dit_dims(cfg)
    if d["vocab_size"] != d["num_classes"] or d["mlp_ratio"] != 4:
        checks.fail("model", {"vocab_size": d["vocab_size"], "num_classes": d["num_classes"],
                              "mlp_ratio": d["mlp_ratio"]},
                    "input ids = output classes and mlp_ratio 4 (what MDLM's config can express)")
    get = (lambda k: cfg.get(k)) if hasattr(cfg, "get") else (lambda k: getattr(cfg, k))
    return {"architectures": ["MDLM"], "auto_map": dict(MDLM_AUTO_MAP), "model_type": "mdlm",
            "vocab_size": d["vocab_size"], "hidden_dim": d["width"], "n_blocks": d["depth"], "n_heads": d["heads"],
            "cond_dim": d["cond_dim"], "model_length": get("max_len"), "dropout": float(dropout),
            "time_conditioning": bool(time_conditioning), "return_dict": False, "torch_dtype": "float32"}


def _req_int(config: dict, key: str, where: str) -> int:
    return checks.check_int(f"{where} {key}", config.get(key), min=1)


def dit_fields_from_mdlm(config: dict, where: str = "config.json") -> tuple[dict, bool]:
    """``(DiT fields, time_conditioning)`` from MDLM's config.json; its vocab_size counts the mask."""
    if config.get("model_type") != "mdlm":
        checks.fail(f"{where} model_type", config.get("model_type"), "'mdlm' (the MDLM layout)")
    vocab = _req_int(config, "vocab_size", where)
    tc = config.get("time_conditioning", False)
    if not isinstance(tc, bool):
        checks.fail(f"{where} time_conditioning", tc, "a bool")
    fields = {"vocab_size": vocab, "num_classes": vocab, "width": _req_int(config, "hidden_dim", where),
              "depth": _req_int(config, "n_blocks", where), "heads": _req_int(config, "n_heads", where),
              "cond_dim": _req_int(config, "cond_dim", where), "max_len": _req_int(config, "model_length", where),
              "mlp_ratio": 4, "conditioning": "t" if tc else "none"}
    if fields["width"] % fields["heads"] or (fields["width"] // fields["heads"]) % 2:
        checks.fail(f"{where} n_heads", fields["heads"], f"a divisor of hidden_dim={fields['width']} leaving an even "
                    "head size")
    return fields, tc


def fsdfm_dims(state: dict, *, heads: int | None, source: str, where: str) -> dict:
    """DiT fields of an FS-DFM state dict: widths from shapes, depth from keys; heads are not in the
    weights (default width // 64, the paper's head size); V from the embedding rows and the source."""
    for key in ("vocab_embed.weight", "time_embedding.mlp.2.weight", "blocks.0.mlp.0.weight"):
        if key not in state:
            checks.fail(f"{where} key {key}", "missing", "present (an FS-DFM Transformer state dict)")
    rows, width = np.shape(state["vocab_embed.weight"])
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.") and k.endswith(".norm1.weight")})
    heads = width // 64 if heads is None else checks.check_int("heads", heads, min=1)
    if width % heads or (width // heads) % 2:
        checks.fail("heads", heads, f"a divisor of the width {width} leaving an even head size")
    v = rows - 1 if source == "mask" else rows
    ratio = np.shape(state["blocks.0.mlp.0.weight"])[0] // width
    return {"vocab_size": v + 1, "num_classes": v + 1, "width": width, "depth": depth, "heads": heads,
            "cond_dim": int(np.shape(state["time_embedding.mlp.2.weight"])[0]), "mlp_ratio": int(ratio),
            "conditioning": "th" if "dt_embedding.mlp.0.weight" in state else "t"}
