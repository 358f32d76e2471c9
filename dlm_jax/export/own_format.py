"""dlm_jax's own layout: safetensors of the params as they are, plus a config.json with the run (numpy only).

A directory with

* ``model.safetensors`` — one tensor per param, named by its path joined with "."
  (``blocks.0.attn.qkv.kernel``), dtype and shape exactly as in the checkpoint (float32; kernels
  ``[in..., out...]``); above ``max_shard_bytes`` numbered shards + ``model.safetensors.index.json``;
* ``config.json`` — ``{"format": "dlm_jax", "format_version": 1, "model_name", "model"`` (the
  model's own config), ``"vocab_size"`` (V clean tokens), ``"method"``, ``"run_config"`` (the
  whole config the run was trained with), ``"step"``, ``"weights"`` ("params" or "ema")``}``.

Import rebuilds the model from ``run_config`` and checks every name, shape and dtype, so an export
→ import round trip is bit-exact.
"""

from __future__ import annotations

import json
import os

from dlm_jax import checks
from dlm_jax.export import files

FORMAT = "dlm_jax"
FORMAT_VERSION = 1

__all__ = ["FORMAT", "FORMAT_VERSION", "write_own", "read_own"]


def write_own(ckpt: files.Checkpoint, out_dir: str, *, weights: str = "params",
              max_shard_bytes: int = files.DEFAULT_MAX_SHARD_BYTES) -> list:
    """Write ``ckpt`` into the existing directory ``out_dir``; returns the file names."""
    written = files.write_safetensors(ckpt.params, out_dir, max_shard_bytes=max_shard_bytes,
                                      metadata={"format": FORMAT, "step": str(ckpt.step), "weights": weights})
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "model_name": ckpt.model_name,
              "model": ckpt.model_fields, "vocab_size": ckpt.vocab_size, "method": ckpt.method,
              "run_config": ckpt.run_config, "step": int(ckpt.step), "weights": weights}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True, default=str)
    return written + ["config.json"]


def read_own(path: str, *, lazy: bool = False) -> files.Checkpoint:
    """A directory written by ``write_own`` → Checkpoint (names and shapes checked on import);
    ``lazy``: params are ``files.LazyTensor``s, read in slices on demand."""
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        checks.fail("--from", path, "a dlm_jax export directory with config.json (format 'dlm_jax')")
    config = files.read_json(os.path.join(path, "config.json"), "config.json")
    if config.get("format") != FORMAT:
        checks.fail("config.json format", config.get("format"), f"{FORMAT!r} (a dlm_jax export)")
    if config.get("format_version") != FORMAT_VERSION:
        checks.fail("config.json format_version", config.get("format_version"), f"{FORMAT_VERSION}")
    run = config.get("run_config")
    if not isinstance(run, dict) or not isinstance(run.get("model"), dict) or not isinstance(run.get("method"), dict):
        checks.fail("config.json run_config", type(run).__name__, "the run's config with model and method sections")
    return files.Checkpoint(model_name=str(config.get("model_name")), model_fields=dict(config.get("model") or {}),
                            vocab_size=int(config.get("vocab_size") or 0), method=dict(run["method"]),
                            params=files.lazy_weights_dir(path) if lazy else files.read_weights_dir(path), run_config=run,
                            step=checks.check_int("config.json step", config.get("step", 0), min=0),
                            origin={"format": FORMAT, "path": os.path.abspath(path),
                                    "weights": config.get("weights", "params")})
