"""Import a checkpoint from a layout's files into a workdir that reads as if it was trained here.

``import_checkpoint(src, fmt, workdir, **options)``:

1. checks the format, the options and the target (a new or empty directory) — before reading;
2. reads the files into own-named float32 arrays (``own_format`` / ``dit_formats`` /
   ``llada_layout``; JSON configs only, pickles weights-only), every key, shape and dtype checked;
3. builds the trainer's config (``run_config.build_config``), the model through the registry and
   the method (which writes its defaults back), and fills the model's params (names, shapes and
   dtypes checked again against the model itself);
4. writes ``<workdir>/checkpoints/<step>/`` through ``runs.checkpoint.Checkpointer`` — items
   ``state`` (``{"step", "params", "ema_params"}``; EMA = the params unless the files carry an
   EMA) and ``meta`` (the config) — into a temporary sibling directory renamed into place, so a
   failure leaves nothing at ``workdir``.

Loading at scale: the params go straight onto a mesh of every device of the job, sharded along
``fsdp`` by their logical names (``params.place_sharded``). safetensors files are read lazily, so
each process reads from disk only the boxes its devices hold, one box at a time (host memory ≈ its
devices' shards + one box, not the checkpoint); Orbax then writes each process's shards. Run the
same command on every host of a pod (``distributed``: ``"auto"``, or ``{"coordinator_address",
"num_processes", "process_id"}``) and the import is parallel. Pickles (``.bin`` / ``.pth``) cannot
be read in slices: each process reads them whole (docs/INTEROP.md has the figures).

``runs.load_run`` / ``load_params``, ``python -m dlm_jax sample|eval --workdir`` and
``config.init_from = {workdir: ...}`` read the result; resuming training *in* it is refused by the
trainer (no optimizer state): fine-tune through ``init_from`` instead.

Options: every format takes ``seq_len`` (default ``min(max_len, 1024)``), ``data`` (overrides of
``config.data``) and ``seed``; ``fsdfm`` also ``model`` (teacher / student / student_ema),
``source`` (mask / uniform, required), ``heads`` (default width // 64) and ``max_len`` (1024).
"""

from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp

from dlm_jax import checks
from dlm_jax.data.hf_tokenizer import HFTokenizer, copy_hf_tokenizer, is_hf_tokenizer_path
from dlm_jax.export import FORMATS
from dlm_jax.export.formats import read_checkpoint
from dlm_jax.export import files
from dlm_jax.export.params import place_sharded
from dlm_jax.export.run_config import build_config

COMMON_OPTIONS = ("seq_len", "data", "seed")
FORMAT_OPTIONS = {"dlm_jax": (), "mdlm": (), "fsdfm": ("model", "source", "heads", "max_len"), "llada": ()}

__all__ = ["import_checkpoint", "check_new_dir", "COMMON_OPTIONS", "FORMAT_OPTIONS"]


def check_new_dir(path: str, key: str) -> str:
    """``path`` as an absolute path that does not exist yet (or is an empty directory) in a
    writable parent; one-line error otherwise (nothing is ever overwritten)."""
    checks.check_str(key, path)
    path = os.path.abspath(path)
    if os.path.exists(path) and not (os.path.isdir(path) and not os.listdir(path)):
        checks.fail(key, path, "a new or empty directory (nothing is overwritten)")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        checks.fail(key, path, "a path in an existing, writable directory")
    return path


def _check_tokenizer(config, vocab_size: int) -> None:
    """The data config's tokenizer must load without training and have exactly V tokens."""
    from dlm_jax.data.pipeline import train_or_load_tokenizer
    from dlm_jax.data.registry import get_source

    if get_source(config.data.source).tokenizer is None and not config.data.get("tokenizer_path", ""):
        checks.fail("data.tokenizer_path", config.data.get("tokenizer_path", ""), f"a tokenizer of {vocab_size} tokens "
                    "for an imported model (or no data override: token ids through the 'ids' source)")
    tok = train_or_load_tokenizer(config.data, None)
    if tok.vocab_size != vocab_size:
        checks.fail("tokenizer vocab_size", tok.vocab_size, f"{vocab_size}, the checkpoint's clean vocabulary")


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _write(workdir: str, step: int, state: dict, config, extra=None) -> None:
    """Write the run into a temporary sibling, ``extra(tmp)`` adds files (and may refuse), then
    rename it into place: a failure leaves nothing at ``workdir``. Every process of a job saves
    its shards; process 0 alone touches the directories."""
    from dlm_jax.runs.checkpoint import Checkpointer

    lead = jax.process_index() == 0
    tmp = f"{workdir}.importing" + (f"-{os.getpid()}" if jax.process_count() == 1 else "")
    if lead:
        shutil.rmtree(tmp, ignore_errors=True)
    _sync("dlm_jax_import_start")
    try:
        ck = Checkpointer(tmp, every=1, keep=1, async_save=False)
        ck.save(step, state, None, config)
        ck.close()
        _sync("dlm_jax_import_saved")
        if lead:
            if extra is not None:
                extra(tmp)
            if os.path.isdir(workdir):
                os.rmdir(workdir)  # empty (checked): replaced by the finished directory
            os.rename(tmp, workdir)
    finally:
        if lead:
            shutil.rmtree(tmp, ignore_errors=True)
    _sync("dlm_jax_import_done")


HF_TOKENIZER_FORMATS = ("mdlm", "llada")  # Hugging Face folders that may carry a tokenizer.json


def _with_hf_tokenizer(data, ckpt, tok_dir: str, workdir: str):
    """The checkpoint folder's tokenizer becomes the run's: its files are copied into
    ``<workdir>/tokenizer/hf`` (with the model's id layout) and the data source becomes the offline
    stdlib text read through it; returns (data block, the copy step for ``_write``)."""
    from dlm_jax import config_blocks
    from dlm_jax.data.registry import validate_data_config

    final = os.path.join(os.path.abspath(workdir), "tokenizer", "hf")
    block = config_blocks.data(seq_len=data.seq_len, source="stdlib", tokenizer_path=final)
    validate_data_config(block)
    mask = int(ckpt.model_fields.get("mask_token_id", ckpt.vocab_size))

    def copy(tmp: str) -> None:
        dst = copy_hf_tokenizer(tok_dir, os.path.join(tmp, "tokenizer", "hf"), num_ids=ckpt.vocab_size + 1,
                                mask_token_id=mask)
        tok = HFTokenizer(dst)
        if tok.vocab_size != ckpt.vocab_size:
            checks.fail("tokenizer vocab_size", tok.vocab_size, f"{ckpt.vocab_size}, the checkpoint's clean vocabulary")

    return block, copy


def import_mesh():
    """Every device of the job along ``fsdp`` (strategy ``"fsdp"``): each holds 1/N of each param."""
    import ml_collections

    from dlm_jax import mesh as mesh_lib

    return mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, strategy="fsdp")))


def import_checkpoint(src: str, fmt: str, workdir: str, **options) -> dict:
    """Write ``src`` (format ``fmt``) as a dlm_jax run in ``workdir``; returns a summary dict
    (``read_bytes``: what this process read from safetensors files)."""
    checks.check_choice("--format", fmt, FORMATS)
    allowed = COMMON_OPTIONS + FORMAT_OPTIONS[fmt]
    for key in options:
        if key not in allowed:
            checks.fail(f"import option {key}", options[key], f"options of format {fmt!r}: one of {allowed}")
    workdir = check_new_dir(workdir, "--workdir")
    fmt_options = {k: v for k, v in options.items() if k in FORMAT_OPTIONS[fmt] and v is not None}
    files.READ_STATS.update(bytes=0, reads=0)
    ckpt = read_checkpoint(src, fmt, lazy=True, **fmt_options)
    config = build_config(ckpt, workdir, seq_len=options.get("seq_len"), data=options.get("data"),
                          seed=options.get("seed", 0) or 0)
    extra = None
    tok_dir = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    if fmt in HF_TOKENIZER_FORMATS and not options.get("data") and is_hf_tokenizer_path(tok_dir):
        config.data, extra = _with_hf_tokenizer(config.data, ckpt, tok_dir, workdir)
    from dlm_jax.methods.base import build_method
    from dlm_jax.runs.workdir import build_model

    model = build_model(config)
    build_method(config, model.apply, inputs={})  # validates the method and writes its defaults back
    if options.get("data"):
        _check_tokenizer(config, ckpt.vocab_size)
    mesh = import_mesh()
    params = place_sharded(ckpt.params, model, mesh, "fsdp", what=f"{fmt} checkpoint")
    ema = params if ckpt.ema_params is None else place_sharded(ckpt.ema_params, model, mesh, "fsdp",
                                                               what=f"{fmt} checkpoint (EMA)")
    step = jax.device_put(jnp.asarray(ckpt.step, jnp.int32), jax.sharding.NamedSharding(mesh, jax.P()))
    state = {"step": step, "params": params, "ema_params": ema}
    _write(workdir, ckpt.step, state, config, extra)
    return {"workdir": workdir, "step": ckpt.step, "format": fmt, "model": model.name,
            "method": config.method.name, "vocab_size": ckpt.vocab_size,
            "num_params": int(sum(x.size for x in jax.tree.leaves(params))), "read_bytes": files.READ_STATS["bytes"],
            "processes": jax.process_count(), "devices": mesh.size}
