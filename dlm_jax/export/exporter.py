"""Export a run's params (raw or EMA) in a layout: ``export_run(workdir, fmt, out, ema=...)``.

The run is read with ``runs.load_params`` (read-only, newest readable checkpoint unless ``step``),
its params flattened to own names, mapped by the layout and written into a temporary sibling of
``out`` that is renamed into place when complete — a failure leaves nothing at ``out``.

=========  ===========================================  =========================================
format     writes                                       needs
=========  ===========================================  =========================================
dlm_jax    directory: model.safetensors (+ shards,      any model and method
           index) + config.json with the run config
mdlm       MDLM HF directory (config.json, safetensors) DiT, method mdlm, conditioning none / t
fsdfm      ``.pth`` (torch.save) or ``.safetensors``    DiT, method dfm (teacher) or fsdfm
           file with teacher or student + student_ema   (student: raw and EMA params both)
llada      LLaDA HF directory (config.json, safetensors) the ``llada`` model, method mdlm
=========  ===========================================  =========================================

Tensors are written as trained (float32), or with ``dtype="bfloat16"`` cast to bfloat16 for the
PyTorch layouts (half the bytes; ``config.json`` says ``torch_dtype: bfloat16``; importing casts them
back to float32). Directories are sharded above ``max_shard_bytes``.
"""

from __future__ import annotations

import json
import os
import shutil

from dlm_jax import checks
from dlm_jax.export import FORMATS, dit_formats, files, own_format
from dlm_jax.export.importer import check_new_dir
from dlm_jax.export.params import flatten

FILE_FORMATS = ("fsdfm",)  # written as one file; the others as a directory
FILE_SUFFIXES = (".pth", ".pt", ".safetensors")

__all__ = ["export_run", "run_checkpoint"]


def run_checkpoint(workdir: str, *, ema: bool = False, step: int | None = None, both: bool = False):
    """``(Checkpoint, loaded)`` of a run: own-named params (``ema``: the EMA ones); ``both``: the
    EMA params too (``Checkpoint.ema_params``)."""
    from dlm_jax.methods.base import vocab_size_from_config
    from dlm_jax.runs import load_params

    loaded = load_params(workdir, step=step, weights="ema" if ema else "params")
    ema_params = None
    if both:
        ema_params = flatten(load_params(workdir, step=loaded.step, weights="ema").params)
    config = loaded.config
    ckpt = files.Checkpoint(model_name=loaded.model.name, model_fields=dict(loaded.model.config.to_dict()),
                            vocab_size=vocab_size_from_config(config), method=config.method.to_dict(),
                            params=flatten(loaded.params), ema_params=ema_params, run_config=config.to_dict(),
                            step=int(loaded.step), origin={"format": "dlm_jax", "path": os.path.abspath(workdir)})
    return ckpt, loaded


def _check_out(out: str, fmt: str) -> str:
    if fmt in FILE_FORMATS:
        checks.check_str("--out", out)
        out = os.path.abspath(out)
        if not out.endswith(FILE_SUFFIXES):
            checks.fail("--out", out, f"a file name ending in one of {FILE_SUFFIXES} for format {fmt!r}")
        if os.path.exists(out):
            checks.fail("--out", out, "a file that does not exist yet (nothing is overwritten)")
        if not os.path.isdir(os.path.dirname(out)) or not os.access(os.path.dirname(out), os.W_OK):
            checks.fail("--out", out, "a path in an existing, writable directory")
        return out
    return check_new_dir(out, "--out")


DTYPES = ("float32", "bfloat16")


def _cast(flat: dict | None, dtype: str) -> dict | None:
    """Floating tensors cast to ``dtype`` (round to nearest even); others unchanged."""
    if flat is None or dtype == "float32":
        return flat
    import ml_dtypes

    return {k: v.astype(ml_dtypes.bfloat16) if v.dtype.kind == "f" else v for k, v in flat.items()}


def _mark_dtype(out: str, dtype: str) -> None:
    path = os.path.join(out, "config.json")
    if dtype != "float32" and os.path.isfile(path):
        with open(path) as f:
            config = json.load(f)
        config["torch_dtype"] = dtype
        with open(path, "w") as f:
            json.dump(config, f, indent=2)


def export_run(workdir: str, fmt: str, out: str, *, ema: bool = False, step: int | None = None,
               max_shard_bytes: int = files.DEFAULT_MAX_SHARD_BYTES, dtype: str = "float32") -> dict:
    """Write ``workdir``'s params in format ``fmt`` at ``out``; returns a summary dict."""
    checks.check_choice("--format", fmt, FORMATS)
    checks.check_bool("--ema", ema)
    checks.check_int("max_shard_bytes", max_shard_bytes, min=1)
    checks.check_choice("--dtype", dtype, DTYPES)
    if dtype != "float32" and fmt == "dlm_jax":
        checks.fail("--dtype", dtype, "float32 for format 'dlm_jax' (it keeps the run's own dtypes; bfloat16 is for "
                    "the PyTorch layouts mdlm, fsdfm, llada)")
    out = _check_out(out, fmt)
    from dlm_jax.runs.workdir import read_config

    config, _ = read_config(workdir, step)
    both = fmt == "fsdfm" and config.method.get("name") == "fsdfm"
    ckpt, _ = run_checkpoint(workdir, ema=ema, step=step, both=both)
    ckpt.params, ckpt.ema_params = _cast(ckpt.params, dtype), _cast(ckpt.ema_params, dtype)
    tmp = f"{out}.exporting-{os.getpid()}" + (os.path.splitext(out)[1] if fmt in FILE_FORMATS else "")
    try:
        if fmt in FILE_FORMATS:
            dit_formats.write_fsdfm(ckpt, tmp)
            written = [os.path.basename(out)]
        else:
            os.makedirs(tmp)
            if fmt == "dlm_jax":
                written = own_format.write_own(ckpt, tmp, weights="ema" if ema else "params",
                                               max_shard_bytes=max_shard_bytes)
            elif fmt == "mdlm":
                written = dit_formats.write_mdlm(ckpt, tmp, max_shard_bytes=max_shard_bytes)
            else:
                from dlm_jax.export import llada_layout

                written = llada_layout.write_llada(ckpt, tmp, max_shard_bytes=max_shard_bytes)
            _mark_dtype(tmp, dtype)
            if os.path.isdir(out):
                os.rmdir(out)  # empty (checked)
        os.rename(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
    return {"out": out, "format": fmt, "step": ckpt.step, "weights": "ema" if ema else "params",
            "files": sorted(written), "num_tensors": len(ckpt.params), "dtype": dtype}
