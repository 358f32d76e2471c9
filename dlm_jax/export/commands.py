"""The ``export``, ``import`` and ``check-parity`` commands as functions the CLI calls with parsed flags.

Each checks every argument first (one-line ``ValueError``s, nothing written), does the work, prints a
short report and returns a summary dict:

    python -m dlm_jax export --workdir DIR --format F --out PATH [--ema] [--step N] [--max-shard-size 5GB]
        -> export_command(workdir, fmt, out, ema, step=..., max_shard_size=...)
    python -m dlm_jax import --from PATH --format F --workdir DIR [--model teacher|student|student_ema]
        [--source mask|uniform] [--heads N] [--max-len N] [--seq-len N] [--data JSON] [--seed S]
        [--distributed auto | --distributed explicit --coordinator HOST:PORT --num-processes N --process-id I]
        -> import_command(src, fmt, workdir, model=..., source=..., heads=..., max_len=..., seq_len=...,
                          data=..., seed=..., distributed=..., coordinator=..., num_processes=..., process_id=...)
    python -m dlm_jax check-parity --workdir DIR [--format F] [--exported PATH] [--ema]
        [--num-sequences N] [--length L] [--seed S] [--inputs random|text]
        -> parity_command(workdir, fmt, exported, ema, num_sequences=..., length=..., seed=..., inputs=...)

``check-parity`` needs torch; its summary has ``passes`` (exit non-zero when False).
"""

from __future__ import annotations

import json
import re

from dlm_jax import checks
from dlm_jax.export import FORMATS

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}

__all__ = ["export_command", "import_command", "parity_command", "parse_size", "parse_data"]


def parse_size(value) -> int:
    """Bytes from an int or a string like ``"5GB"``, ``"500MB"``, ``"2GiB"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return checks.check_int("--max-shard-size", value, min=1)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", str(value), re.IGNORECASE)
    if not match:
        checks.fail("--max-shard-size", value, "a size such as 5GB, 500MB, 2GiB or a byte count")
    size = int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])
    return checks.check_int("--max-shard-size", size, min=1)


def parse_data(value) -> dict | None:
    """``config.data`` overrides from a dict or a JSON object string (None stays None)."""
    if value is None or isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        parsed = None
    if not isinstance(parsed, dict):
        checks.fail("--data", value, "a JSON object of config.data keys, e.g. '{\"tokenizer_path\": \"spm.model\"}'")
    return parsed


def _opt_int(key: str, value, minimum: int = 1):
    return None if value is None else checks.check_int(key, value, min=minimum)


def export_command(workdir: str, fmt: str, out: str, ema: bool = False, *, step: int | None = None,
                   max_shard_size="5GB", dtype: str = "float32") -> dict:
    """Export ``workdir`` (raw or ``ema`` params) in format ``fmt`` at ``out``."""
    checks.check_str("--workdir", workdir)
    checks.check_choice("--format", fmt, FORMATS)
    checks.check_str("--out", out)
    checks.check_bool("--ema", ema)
    _opt_int("--step", step, 0)
    size = parse_size(max_shard_size)
    from dlm_jax.export.exporter import export_run

    summary = export_run(workdir, fmt, out, ema=ema, step=step, max_shard_bytes=size, dtype=dtype)
    print(f"exported {workdir} step {summary['step']} ({summary['weights']}, {dtype}) as {fmt}: {summary['out']} "
          f"({len(summary['files'])} files, {summary['num_tensors']} tensors)")
    return summary


def _start_distributed(mode: str, coordinator, num_processes, process_id) -> None:
    """Join the job's other processes (every host of a pod runs the same import: each reads and
    writes only its devices' shards); before any JAX computation."""
    checks.check_choice("--distributed", mode, ("off", "auto", "explicit"))
    if mode != "explicit":
        for key, value in (("--coordinator", coordinator), ("--num-processes", num_processes),
                           ("--process-id", process_id)):
            if value is not None:
                checks.fail(key, value, "only with --distributed explicit")
    else:
        checks.check_str("--coordinator", coordinator)
        if ":" not in coordinator:
            checks.fail("--coordinator", coordinator, "HOST:PORT of process 0")
        n = checks.check_int("--num-processes", num_processes, min=1)
        checks.check_int("--process-id", process_id, min=0, max=n - 1)
    if mode == "off":
        return
    import ml_collections

    from dlm_jax import mesh as mesh_lib

    mesh_lib.maybe_initialize_distributed(ml_collections.ConfigDict({"mesh": dict(
        distributed=mode, coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)}))


def jax_process(summary: dict) -> str:
    import jax

    return f"{jax.process_index()}/{summary['processes']}"


def import_command(src: str, fmt: str, workdir: str, **options) -> dict:
    """Import ``src`` (format ``fmt``) as a run in ``workdir``; ``options`` as in ``importer``; ``None``
    values are dropped (unset flags)."""
    checks.check_str("--from", src)
    checks.check_choice("--format", fmt, FORMATS)
    checks.check_str("--workdir", workdir)
    options = {k: v for k, v in options.items() if v is not None}
    if "data" in options:
        options["data"] = parse_data(options["data"])
    for key in ("heads", "max_len", "seq_len"):
        _opt_int(f"--{key.replace('_', '-')}", options.get(key))
    _opt_int("--seed", options.get("seed"), 0)
    _start_distributed(options.pop("distributed", "off"), options.pop("coordinator", None),
                       options.pop("num_processes", None), options.pop("process_id", None))
    from dlm_jax.export.importer import import_checkpoint

    summary = import_checkpoint(src, fmt, workdir, **options)
    print(f"imported {src} ({fmt}) into {summary['workdir']}: model {summary['model']}, method {summary['method']}, "
          f"V = {summary['vocab_size']}, {summary['num_params']:,} params, step {summary['step']}; sample with "
          f"`python -m dlm_jax sample --workdir {summary['workdir']}`")
    print(f"process {jax_process(summary)}: read {summary['read_bytes']:,} bytes of safetensors slices for its "
          f"{summary['devices'] // summary['processes']} of {summary['devices']} devices")
    return summary


def parity_command(workdir: str, fmt: str | None = None, exported: str | None = None, ema: bool = False, *,
                   num_sequences: int = 4, length: int | None = None, seed: int = 0, inputs: str = "random") -> dict:
    """Logit parity of the PyTorch twin against ``workdir``'s JAX model (``parity.check_parity``)."""
    checks.check_str("--workdir", workdir)
    if fmt is not None:
        checks.check_choice("--format", fmt, FORMATS)
    if exported is not None:
        checks.check_str("--exported", exported)
        if fmt is None:
            checks.fail("--format", None, f"the format of --exported {exported!r}, one of {FORMATS}")
    checks.check_bool("--ema", ema)
    checks.check_int("--num-sequences", num_sequences, min=1)
    _opt_int("--length", length)
    checks.check_int("--seed", seed, min=0)
    from dlm_jax.export.parity import INPUTS

    checks.check_choice("--inputs", inputs, INPUTS)
    try:
        import torch  # noqa: F401
    except ImportError:
        checks.fail("check-parity", "torch", "torch installed (pip install 'dlm_jax[torch]')")
    from dlm_jax.export.parity import check_parity

    fig = check_parity(workdir, exported=exported, fmt=fmt, ema=ema, num_sequences=num_sequences, length=length,
                       seed=seed, inputs=inputs)
    tol = fig["tolerance"]
    print(f"parity {fig['model']} via {fig['format']} ({fig['weights']}, {fig['positions']} positions of length "
          f"{fig['length']}, {fig['inputs']} inputs): max |Δlogit| {fig['max_abs']:.3g} (relative {fig['max_abs_rel']:.3g} <= "
          f"{tol['max_abs_rel']:g}), mean KL {fig['mean_kl']:.3g} nats (<= {tol['mean_kl']:g}), top-1 "
          f"{fig['top1']:.4f} (>= {tol['top1']:g}), top-5 {fig['top5']:.4f}: {'PASS' if fig['passes'] else 'FAIL'}")
    return fig
