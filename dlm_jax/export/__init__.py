"""export layer of dlm_jax: checkpoints to and from PyTorch / Hugging Face layouts (docs/INTEROP.md).

Formats (``FORMATS``): ``"dlm_jax"`` (this library's own: safetensors + config.json holding the
run config), ``"mdlm"`` (the Hugging Face directory of ``kuleshov-group/mdlm-owt``), ``"fsdfm"``
(``apple/ml-fs-dfm``'s ``torch.save`` dict with teacher / student / student_ema), ``"llada"``
(the Hugging Face directory of ``GSAI-ML/LLaDA-8B-*``).

* ``exporter.export_run(workdir, fmt, out, ema=...)`` writes a run's params in a layout;
* ``importer.import_checkpoint(src, fmt, workdir, **options)`` writes a workdir that
  ``dlm_jax.runs.load_run``, ``sample``, ``eval`` and ``init_from`` read as if trained here;
* ``parity.check_parity(...)`` compares the JAX model with the PyTorch twin
  (``torch_dit`` / ``torch_llada``, optional extra ``dlm_jax[torch]``);
* ``commands`` holds the CLI entry points.

The layout modules (``files``, ``dit_layout``, ``llada_layout``, ``torch_files``) use numpy only,
so the PyTorch twins load exported files without JAX. Imports never execute code that came with
a checkpoint: configs are read as JSON, pickles with ``torch.load(weights_only=True)``.
"""

FORMATS = ("dlm_jax", "mdlm", "fsdfm", "llada")

__all__ = ["FORMATS"]
