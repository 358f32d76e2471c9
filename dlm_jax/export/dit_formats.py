"""MDLM and FS-DFM checkpoints as files: read into a ``Checkpoint`` (own names), written from one (numpy only).

* MDLM (``kuleshov-group/mdlm-owt``): a directory with ``config.json`` (``model_type "mdlm"``,
  ``auto_map`` to the Hub's remote code, which is never imported) and ``model.safetensors`` (or
  shards, or ``pytorch_model.bin``), keys ``backbone.*``. Its ``vocab_size`` counts the mask:
  V = vocab_size − 1 clean tokens, mask id V, logits over V + 1 — dlm_jax's MDLM convention.
  ``time_conditioning`` false ↔ DiT conditioning ``"none"`` (σ zeroed); true ↔ ``"t"`` fed σ
  (``method.time_input = "sigma"``).
* FS-DFM (``apple/ml-fs-dfm``): a ``torch.save`` dict with ``teacher_model`` / ``student_model`` /
  ``student_ema_model`` state dicts (``module.`` / ``_orig_mod.`` prefixes stripped), or the same
  keys in one safetensors file as ``<role>.<key>`` (a torch-free container written here). The file
  records neither the source distribution nor the head count: ``source`` ("mask": the embedding
  has V + 1 rows; "uniform": V rows, padded here with a zero mask row and a zero mask logit that
  the flow methods drop) and ``heads`` (default width // 64) are options. Teacher → method
  ``dfm`` (conditioning ``"t"``); student → ``fsdfm`` (``"th"``).
"""

from __future__ import annotations

import json
import os

import numpy as np

from dlm_jax import checks
from dlm_jax.export import dit_layout as dl
from dlm_jax.export import files

ROLES = ("teacher", "student", "student_ema")
SOURCES = ("mask", "uniform")

__all__ = ["ROLES", "SOURCES", "read_mdlm", "write_mdlm", "read_fsdfm", "write_fsdfm", "mdlm_method", "fsdfm_method"]


def mdlm_method(time_conditioning: bool) -> dict:
    """The MDLM method MDLM's checkpoints were trained with (log-linear schedule; σ input when conditioned)."""
    return {"name": "mdlm", "schedule": "loglinear", "time_conditioning": bool(time_conditioning),
            "time_input": "sigma", "sampler": "mdlm"}


def fsdfm_method(role: str, source: str) -> dict:
    """FS-DFM's teacher (``dfm``) or student (``fsdfm``) method, κ = t, the given source."""
    base = {"source": source, "schedule": "polynomial", "exponent": 1.0}
    if role == "teacher":
        return {"name": "dfm", "sampler": "dfm_euler", **base}
    return {"name": "fsdfm", "sampler": "fsdfm", **base}


def read_mdlm(path: str, *, lazy: bool = False) -> files.Checkpoint:
    """An MDLM HF directory → Checkpoint (DiT, method ``mdlm``); ``lazy``: params are
    ``slicing.OwnTensor``s read on demand (safetensors files are read in slices)."""
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        checks.fail("--from", path, "an MDLM Hugging Face directory with config.json (format 'mdlm')")
    config = files.read_json(os.path.join(path, "config.json"), "config.json")
    fields, tc = dl.dit_fields_from_mdlm(config)
    state = files.lazy_weights_dir(path)
    head_dim = fields["width"] // fields["heads"]
    flat = dl.from_layout(state, dl.mdlm_table(fields), dl.own_shapes(fields), what="MDLM",
                          buffers={dl.MDLM_INV_FREQ: dl.inv_freq(head_dim)}, lazy=lazy)
    return files.Checkpoint(model_name="dit", model_fields=fields, vocab_size=fields["vocab_size"] - 1,
                            method=mdlm_method(tc), params=flat,
                            origin={"format": "mdlm", "path": os.path.abspath(path)})


def write_mdlm(ckpt: files.Checkpoint, out_dir: str, *, max_shard_bytes: int = files.DEFAULT_MAX_SHARD_BYTES) -> list:
    """A Checkpoint of a DiT trained with MDLM → MDLM's HF directory (``out_dir`` exists)."""
    method = ckpt.method
    if ckpt.model_name != "dit" or method.get("name") != "mdlm":
        checks.fail("--format", "mdlm", f"a DiT trained with method 'mdlm' (this run: model {ckpt.model_name!r}, "
                    f"method {method.get('name')!r}; use format 'dlm_jax' or 'fsdfm')")
    tc = bool(method.get("time_conditioning", False))
    if tc and method.get("time_input", "t") != "sigma":
        checks.fail("method.time_input", method.get("time_input"), "'sigma' for an MDLM export of a time-conditioned "
                    "model (MDLM's code feeds σ = −log α_t)")
    fields = ckpt.model_fields
    state = dl.to_layout(ckpt.params, dl.mdlm_table(fields))
    state[dl.MDLM_INV_FREQ] = dl.inv_freq(fields["width"] // fields["heads"])
    written = files.write_safetensors(state, out_dir, max_shard_bytes=max_shard_bytes, metadata={"format": "pt"})
    config = dl.mdlm_config_json(fields, time_conditioning=tc, dropout=float(fields.get("dropout", 0.0) or 0.0))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    return written + ["config.json"]


def _read_container(path: str) -> dict:
    """``{role_model: state dict}`` from a ``.pth`` (weights-only) or a ``.safetensors`` container."""
    if not os.path.isfile(path):
        checks.fail("--from", path, "an FS-DFM checkpoint file (.pth, or .safetensors written by dlm_jax)")
    if path.endswith(".safetensors"):
        out: dict = {}
        for key, value in files.read_safetensors_file(path).items():
            role, _, name = key.partition(".")
            out.setdefault(role, {})[name] = value
        return out
    from dlm_jax.export import torch_files

    obj = torch_files.load_pickle(path)
    if not isinstance(obj, dict):
        checks.fail("--from", path, "a torch.save dict with teacher_model / student_model / student_ema_model")
    return obj


def read_fsdfm(path: str, *, model: str | None = None, source: str | None = None, heads: int | None = None,
               max_len: int = 1024) -> files.Checkpoint:
    """One network (``model``: teacher / student / student_ema) of an FS-DFM checkpoint → Checkpoint."""
    if source is None:
        checks.fail("source", None, f"one of {SOURCES}: the FS-DFM source distribution (the file does not record it)")
    checks.check_choice("source", source, SOURCES)
    checks.check_int("max_len", max_len, min=1)
    obj = _read_container(path)
    present = [r for r in ROLES if isinstance(obj.get(f"{r}_model"), dict)]
    if not present:
        checks.fail("--from", path, "an FS-DFM checkpoint with teacher_model, student_model or student_ema_model")
    if model is None:
        if len(present) > 1:
            checks.fail("model", None, f"one of {tuple(present)} (the networks this checkpoint holds)")
        model = present[0]
    checks.check_choice("model", model, present)
    from dlm_jax.export.torch_files import strip_prefixes

    state = strip_prefixes(obj[f"{model}_model"])
    dims = dl.fsdfm_dims(state, heads=heads, source=source, where="FS-DFM")
    want = "t" if model == "teacher" else "th"
    if dims["conditioning"] != want:
        checks.fail("model", model, f"a {'teacher' if want == 't' else 'student'} state dict "
                    f"({'no' if want == 't' else 'a'} dt_embedding expected)")
    if source == "uniform":  # V rows -> V + 1 (a zero row for the never-seen mask id, a zero mask logit)
        state = dict(state)
        for key in ("vocab_embed.weight", "output_layer.linear.weight", "output_layer.linear.bias"):
            if key in state:
                a = np.asarray(state[key])
                state[key] = np.concatenate([a, np.zeros((1,) + a.shape[1:], a.dtype)], axis=0)
    fields = dict(dims, max_len=max_len)
    flat = dl.from_layout(state, dl.fsdfm_table(fields), dl.own_shapes(fields), what="FS-DFM",
                          buffers={dl.FSDFM_INV_FREQ: dl.inv_freq(fields["width"] // fields["heads"])})
    return files.Checkpoint(model_name="dit", model_fields=fields, vocab_size=fields["vocab_size"] - 1,
                            method=fsdfm_method(model, source), params=flat, step=int(obj.get("step", 0) or 0),
                            origin={"format": "fsdfm", "path": os.path.abspath(path), "model": model,
                                    "source": source, "heads": fields["heads"]})


def fsdfm_state(flat: dict, fields: dict, source: str) -> dict:
    """One network's FS-DFM state dict (with its rotary buffer) from own-named params."""
    state = dl.to_layout(flat, dl.fsdfm_table(fields))
    state[dl.FSDFM_INV_FREQ] = dl.inv_freq(fields["width"] // fields["heads"])
    if source == "uniform":  # drop the mask row / logit the uniform layout does not have
        for key in ("vocab_embed.weight", "output_layer.linear.weight", "output_layer.linear.bias"):
            state[key] = np.ascontiguousarray(state[key][:-1])
    return state


def write_fsdfm(ckpt: files.Checkpoint, out_path: str) -> list:
    """A DFM teacher run → ``{"teacher_model"}``; an FS-DFM student run → ``{"student_model",
    "student_ema_model"}`` (raw and EMA params), plus ``step``; ``.safetensors`` or ``torch.save``."""
    name = ckpt.method.get("name")
    if ckpt.model_name != "dit" or name not in ("dfm", "fsdfm"):
        checks.fail("--format", "fsdfm", f"a DiT trained with method 'dfm' or 'fsdfm' (this run: model "
                    f"{ckpt.model_name!r}, method {name!r})")
    source = ckpt.method.get("source", "mask")
    fields = ckpt.model_fields
    if name == "dfm":
        nets = {"teacher_model": fsdfm_state(ckpt.params, fields, source)}
    else:
        nets = {"student_model": fsdfm_state(ckpt.params, fields, source),
                "student_ema_model": fsdfm_state(ckpt.ema_params or ckpt.params, fields, source)}
    if out_path.endswith(".safetensors"):
        from safetensors.numpy import save_file

        flat = {f"{role}.{k}": v for role, sd in nets.items() for k, v in sd.items()}
        save_file(flat, out_path, metadata={"format": "pt", "step": str(ckpt.step), "source": source})
    else:
        from dlm_jax.export import torch_files

        torch_files.save_pickle({"step": int(ckpt.step), **nets}, out_path)
    return [os.path.basename(out_path)]
