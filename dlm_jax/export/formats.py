"""Read any supported layout into a ``Checkpoint`` (own names, float32, checked) — numpy only, so the
PyTorch twins share it without JAX."""

from __future__ import annotations

from dlm_jax import checks
from dlm_jax.export import FORMATS
from dlm_jax.export.files import Checkpoint

__all__ = ["read_checkpoint"]


def read_checkpoint(src: str, fmt: str, *, lazy: bool = False, **options) -> Checkpoint:
    """The checkpoint at ``src`` in format ``fmt`` (``FORMATS``); ``options`` go to the format's
    reader (fsdfm: ``model``, ``source``, ``heads``, ``max_len``). ``lazy``: params that read a
    device's box on demand (``params.place_sharded``); FS-DFM's pickles are read whole either way."""
    checks.check_choice("--format", fmt, FORMATS)
    checks.check_str("--from", src)
    if fmt == "dlm_jax":
        from dlm_jax.export.own_format import read_own

        return read_own(src, lazy=lazy)
    if fmt == "mdlm":
        from dlm_jax.export.dit_formats import read_mdlm

        return read_mdlm(src, lazy=lazy)
    if fmt == "fsdfm":
        from dlm_jax.export.dit_formats import read_fsdfm

        return read_fsdfm(src, **options)
    from dlm_jax.export.llada_layout import read_llada

    return read_llada(src, lazy=lazy)
