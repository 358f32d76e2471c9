"""Logit parity (MaxText-style) between a run's JAX model and the PyTorch twin loaded from its export.

``compare_logits(ref, got)`` → ``max_abs`` (max |Δlogit|), ``max_abs_rel`` (that over
max(1, max |ref|)), ``mean_kl`` (mean over positions of KL(softmax ref ‖ softmax got), nats),
``top1`` (fraction of positions whose argmax agrees) and ``top5`` (mean overlap of the two top-5
sets, /5). ``check_parity`` feeds both models the same inputs — ``inputs="random"``: ids over every
input id (the mask included); ``"text"``: the run's validation text through its own tokenizer and data
pipeline, each sequence masked at its own rate t (the inputs the model meets when sampling) — with
t ~ U[0, 1) (and h for (t, h) students), and says whether the float32 tolerances ``TOLERANCE`` hold. LLaDA is compared in the checkpoint's id order: the JAX model gets
the ids mapped to dlm_jax's (mask = V) and its logits are permuted back.

Float32 tolerances (both sides compute in float32 on CPU; they differ by summation order only):
max |Δlogit| ≤ 1e-4 · max(1, max |logit|), mean KL ≤ 1e-7 nats, top-1 agreement ≥ 0.99.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from dlm_jax import checks

TOLERANCE = {"max_abs_rel": 1e-4, "mean_kl": 1e-7, "top1": 0.99}
DEFAULT_FORMAT = {"mdlm": "mdlm", "dfm": "fsdfm", "fsdfm": "fsdfm"}

__all__ = ["TOLERANCE", "compare_logits", "check_parity", "default_format"]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def compare_logits(ref, got, k: int = 5) -> dict:
    """Parity figures of ``got`` against ``ref`` (both [..., C]), computed in float64."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.shape != got.shape:
        checks.fail("logits", got.shape, f"shape {ref.shape} (the reference's)")
    lr, lg = _log_softmax(ref), _log_softmax(got)
    kl = (np.exp(lr) * (lr - lg)).sum(-1)
    k = min(k, ref.shape[-1])
    top_r, top_g = np.argsort(-ref, -1)[..., :k], np.argsort(-got, -1)[..., :k]
    overlap = (top_r[..., :, None] == top_g[..., None, :]).any(-1).sum(-1) / k
    max_abs = float(np.abs(ref - got).max())
    return {"max_abs": max_abs, "max_abs_rel": max_abs / max(1.0, float(np.abs(ref).max())),
            "mean_kl": float(max(kl.mean(), 0.0)), "top1": float((ref.argmax(-1) == got.argmax(-1)).mean()),
            "top5": float(overlap.mean()), "positions": int(np.prod(ref.shape[:-1]))}


def passes(figures: dict, tolerance: dict = TOLERANCE) -> bool:
    return (figures["max_abs_rel"] <= tolerance["max_abs_rel"] and figures["mean_kl"] <= tolerance["mean_kl"]
            and figures["top1"] >= tolerance["top1"])


def default_format(config) -> str:
    """The PyTorch layout a run exports to: llada for the llada model, MDLM / FS-DFM by method."""
    if config.model.get("name", "dit") == "llada":
        return "llada"
    return DEFAULT_FORMAT.get(config.method.get("name"), "dlm_jax")


def _twin(exported: str, fmt: str, config, ema: bool, options: dict):
    if config.model.get("name", "dit") == "llada":
        from dlm_jax.export.torch_llada import load_llada

        return load_llada(exported, fmt)[0]
    from dlm_jax.export.torch_dit import load_dit

    if fmt == "fsdfm":
        role = "teacher" if config.method.name == "dfm" else ("student_ema" if ema else "student")
        options = dict({"model": role, "source": config.method.get("source", "mask"),
                        "heads": int(config.model.heads), "max_len": int(config.model.get("max_len", 1024))},
                       **options)
    return load_dit(exported, fmt, **options)[0]


INPUTS = ("random", "text")


def _text_ids(workdir: str, config, num_sequences: int, length: int, mask_id: int, t: np.ndarray, rng) -> np.ndarray:
    """``[num_sequences, length]`` validation tokens of the run, position i masked when u_i < t (per row)."""
    from dlm_jax.train import loop

    if config.data.get("source") == "ids":
        checks.fail("--inputs", "text", "a run with a text source and tokenizer (this imported run has only ids; "
                    "import it with --data, or use --inputs random)")
    rows = []
    for batch in loop.grain_data(config, split="validation", process_index=0, process_count=1, workdir=workdir):
        rows.extend(np.asarray(batch["tokens"])[:, :length])
        if len(rows) >= num_sequences:
            break
    ids = np.stack(rows[:num_sequences]).astype(np.int64)
    if ids.shape[1] < length:
        checks.fail("--length", length, f"at most the run's data.seq_len = {ids.shape[1]} with --inputs text")
    return np.where(rng.uniform(size=ids.shape) < t[:, None], mask_id, ids)


def check_parity(workdir: str, *, exported: str | None = None, fmt: str | None = None, ema: bool = False,
                 num_sequences: int = 4, length: int | None = None, seed: int = 0, inputs: str = "random",
                 **options) -> dict:
    """Parity figures of the twin (loaded from ``exported`` in ``fmt``; exported to a temporary
    place first when None) against ``workdir``'s JAX model, with ``passes`` against ``TOLERANCE``."""
    import jax
    import jax.numpy as jnp
    import torch

    from dlm_jax.runs import load_params
    from dlm_jax.runs.workdir import read_config

    checks.check_int("--num-sequences", num_sequences, min=1)
    checks.check_int("--seed", seed, min=0)
    checks.check_choice("--inputs", inputs, INPUTS)
    config, _ = read_config(workdir)
    fmt = fmt or default_format(config)
    max_len = int(config.model.get("max_len", 1024))
    length = min(max_len, 128) if length is None else checks.check_int("--length", length, min=1, max=max_len)
    with tempfile.TemporaryDirectory() as tmp:
        if exported is None:
            from dlm_jax.export.exporter import export_run

            exported = os.path.join(tmp, "export.pth" if fmt == "fsdfm" else "export")
            export_run(workdir, fmt, exported, ema=ema)
        twin = _twin(exported, fmt, config, ema, options)
    loaded = load_params(workdir, weights="ema" if ema else "params")
    cfg, rng = loaded.model.config, np.random.default_rng(seed)
    vocab = int(cfg.vocab_size)
    ids = rng.integers(0, vocab, (num_sequences, length))  # drawn first either way: same t, h for both kinds
    t, h = rng.uniform(0, 1, num_sequences).astype(np.float32), rng.uniform(0, 1, num_sequences).astype(np.float32)
    if inputs == "text":  # dlm_jax ids (mask = V); LLaDA's twin and check read the checkpoint's order
        ids = _text_ids(workdir, config, num_sequences, length, vocab - 1, t, rng)
        if loaded.model.name == "llada":
            from dlm_jax.models import llada

            ids = llada.dlm_to_checkpoint_ids(ids, vocab, cfg.mask_token_id)
    with torch.no_grad():
        if loaded.model.name == "llada":
            from dlm_jax.models import llada

            ours = llada.checkpoint_to_dlm_ids(ids, vocab, cfg.mask_token_id)
            ours = np.asarray(jax.jit(loaded.apply)(loaded.params, jnp.asarray(ours)))
            jax_logits = llada.logits_to_checkpoint_order(ours, cfg.mask_token_id)
            twin_logits = twin(torch.from_numpy(ids)).numpy()
        else:
            cond = {"t": jnp.asarray(t)} | ({"h": jnp.asarray(h)} if cfg.conditioning == "th" else {})
            jax_logits = np.asarray(jax.jit(loaded.apply)(loaded.params, jnp.asarray(ids), cond))
            twin_logits = twin(torch.from_numpy(ids), torch.from_numpy(t), torch.from_numpy(h)).numpy()
    figures = compare_logits(jax_logits, twin_logits)  # the JAX model is the reference
    figures.update(format=fmt, model=loaded.model.name, weights="ema" if ema else "params", length=length, inputs=inputs,
                   passes=passes(figures), tolerance=dict(TOLERANCE))
    return figures
