"""``python -m dlm_jax translate``: conditional generation from a trained seq2seq run.

    python -m dlm_jax translate --workdir runs/fastdiss_demo --steps 5 [--input FILE] [--out FILE]
        [--sampler NAME] [--batch-size N] [--ema] [--seed S]

Reads one source sentence per line (``--input`` or stdin), encodes each with the run's tokenizer
(its source side) + EOS, pads to ``data.source_len`` and calls the run's method ``sample`` with
``source=``/``source_mask=`` (any method whose ``sample`` takes a source: the CLI knows no method by
name); writes one hypothesis per line (``--out`` or stdout) and a summary line on stderr. A source
longer than ``data.source_len`` is a one-line error before anything compiles.
"""

from __future__ import annotations

import inspect
import os
import sys
import time

import numpy as np

from dlm_jax import checks

__all__ = ["translate_command", "encode_sources"]

PAD_ID, EOS_ID = 0, 2


def encode_sources(lines, tokenizer, source_len: int):
    """``(ids int32 [N, source_len], mask float32 [N, source_len])``: each line's ids + EOS, padded."""
    ids = np.zeros((len(lines), source_len), np.int32)
    mask = np.zeros((len(lines), source_len), np.float32)
    for i, line in enumerate(lines):
        row = np.append(np.asarray(tokenizer.encode(line), np.int32), EOS_ID)
        if len(row) > source_len:
            checks.fail("source", f"line {i + 1}: {len(row)} tokens", f"<= data.source_len={source_len} "
                        "(ids + EOS; the model's longest source)")
        ids[i, :len(row)], mask[i, :len(row)] = row, 1.0
    return ids, mask


def _decode(tokenizer, rows) -> list[str]:
    out = []
    for row in np.asarray(rows):
        hits = np.flatnonzero(row == EOS_ID)
        out.append(tokenizer.decode(row[:hits[0]] if hits.size else row))
    return out


def translate_command(workdir: str, steps, *, sampler=None, input_path=None, out=None, seed: int = 0, ema=None,
                      batch_size: int = 16, stdin=None, stdout=None) -> list[str]:
    """Translate every line of ``input_path`` (or ``stdin``); returns the hypotheses (also written)."""
    import jax
    import jax.numpy as jnp

    from dlm_jax import cli_args, runs

    ks = cli_args.parse_steps(steps)
    if len(ks) != 1:
        checks.fail("--steps", ",".join(map(str, ks)), "one step count K for translate")
    checks.check_int("--batch-size", batch_size, min=1)
    if input_path and not os.path.isfile(input_path):
        checks.fail("--input", input_path, "an existing text file, one source sentence per line (or stdin)")
    text = open(input_path, encoding="utf-8").read() if input_path else (stdin or sys.stdin).read()
    lines = text.splitlines()
    if not lines:
        checks.fail("--input", input_path or "<stdin>", "one source sentence per line (got none)")
    run = runs.load_run(workdir, use_ema=ema)
    if "source" not in inspect.signature(run.method.sample).parameters:
        checks.fail("--workdir", workdir, f"a run of a conditional (seq2seq) method; method "
                    f"{run.config.method.get('name')!r} samples without a source")
    source_len = run.config.data.get("source_len", None)
    if not isinstance(source_len, int):
        checks.fail("data.source_len", source_len, "an int (a seq2seq run's longest source)")
    tokenizer = run.tokenizer
    ids, mask = encode_sources(lines, getattr(tokenizer, "source_tokenizer", tokenizer), source_len)
    bs = min(batch_size, len(lines))
    pad = (-len(lines)) % bs
    ids, mask = np.pad(ids, ((0, pad), (0, 0))), np.pad(mask, ((0, pad), (0, 0)))

    @jax.jit
    def translate(params, key, src, sm):
        return run.method.sample(params, key, steps=ks[0], sampler=sampler, source=src, source_mask=sm)

    hyps, nfe, t0 = [], 0, None
    with jax.set_mesh(run.mesh):
        for i in range(0, len(ids), bs):
            tokens, info = translate(run.params, jax.random.fold_in(jax.random.key(seed), i),
                                     jnp.asarray(ids[i:i + bs]), jnp.asarray(mask[i:i + bs]))
            t0 = t0 or time.perf_counter()  # the first batch compiles: time the rest from here
            hyps += _decode(tokenizer, jax.device_get(tokens))
            nfe = int(np.asarray(info["nfe"]))
    hyps = hyps[:len(lines)]
    dest = open(out, "w", encoding="utf-8") if out else (stdout or sys.stdout)
    dest.write("".join(h + "\n" for h in hyps))
    if out:
        dest.close()
    print(f"{workdir}: checkpoint step {run.step}; {len(lines)} sentences, K = {ks[0]} steps, NFE {nfe} per "
          f"sentence, {time.perf_counter() - t0:.2f} s after the first batch", file=sys.stderr)
    return hyps
