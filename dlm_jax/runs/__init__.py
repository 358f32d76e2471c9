"""runs layer of dlm_jax: checkpoints (Orbax manager, preemption guard) and reading a workdir
(config, tokenizer, raw or EMA params, damaged-checkpoint fallback) onto any mesh; ``init_from``.
Used by ``train``, ``sample``, ``eval`` and the exporters alike."""

from dlm_jax.runs.workdir import Loaded, Run, load_params, load_run, read_config, resolve_inputs

__all__ = ["Loaded", "Run", "load_params", "load_run", "read_config", "resolve_inputs"]
