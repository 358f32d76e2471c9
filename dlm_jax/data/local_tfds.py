"""A local TFDS dataset of the Python standard library sources, so the TFDS/ArrayRecord path
(``data.source="tfds"``) can be demonstrated and tested with no download.

    from dlm_jax.data.local_tfds import prepare_stdlib_tfds
    prepare_stdlib_tfds("/tmp/tfds")          # writes dlm_jax_stdlib/1.0.0 as ArrayRecord
    # then: data.source="tfds", data.tfds_name="dlm_jax_stdlib", data.tfds_data_dir="/tmp/tfds"

Examples are ``{"text": <file contents>, "path": <path relative to the stdlib root>}``; the
train/validation splits are the ones of ``sources.stdlib_paths`` (stable path hash, 5 %).
Importing this module registers the builder with TFDS (needs ``tensorflow_datasets``, not
tensorflow).
"""

from __future__ import annotations

import os
import sysconfig

import tensorflow_datasets as tfds

from dlm_jax.data.sources import stdlib_paths

__all__ = ["DlmJaxStdlib", "prepare_stdlib_tfds", "NAME"]

NAME = "dlm_jax_stdlib"


class DlmJaxStdlib(tfds.core.GeneratorBasedBuilder):
    """Python standard library ``.py`` files (without tests) of the running interpreter."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Python standard library sources of the interpreter that built it.",
            features=tfds.features.FeaturesDict({"text": tfds.features.Text(), "path": tfds.features.Text()}),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {split: self._generate_examples(split) for split in ("train", "validation")}

    def _generate_examples(self, split):
        root = sysconfig.get_paths()["stdlib"]
        for path in stdlib_paths(split):
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            with open(path, encoding="utf-8", errors="replace", newline="") as f:
                yield rel, {"text": f.read(), "path": rel}


def prepare_stdlib_tfds(data_dir: str) -> str:
    """Build ``dlm_jax_stdlib`` into ``data_dir`` in ArrayRecord format (no-op if prepared).
    Returns ``data_dir``."""
    builder = DlmJaxStdlib(data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return data_dir
