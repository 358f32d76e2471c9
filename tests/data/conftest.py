"""Shared data-layer fixtures: a BPE-1024 tokenizer trained once on the stdlib train split, and
a small on-disk corpus of real stdlib files (distinct contents) for pipeline tests."""

import os
import shutil

import pytest

from dlm_jax.data.pipeline import train_or_load_tokenizer
from dlm_jax.data.sources import stdlib_paths


@pytest.fixture(scope="session")
def tokenizer_workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tok_workdir"))


@pytest.fixture(scope="session")
def stdlib_tokenizer(tokenizer_workdir):
    return train_or_load_tokenizer({"source": "stdlib", "tokenizer_train_chars": 1_000_000}, tokenizer_workdir)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """40 stdlib files of 1-6 KB with distinct contents, copied flat into a temp dir."""
    root = tmp_path_factory.mktemp("corpus")
    seen, picked = set(), []
    for path in stdlib_paths("all"):
        size = os.path.getsize(path)
        if 1000 <= size <= 6000:
            with open(path, "rb") as f:
                data = f.read()
            if data not in seen:
                seen.add(data)
                picked.append(path)
        if len(picked) == 40:
            break
    for i, path in enumerate(picked):
        shutil.copyfile(path, root / f"doc{i:02d}.py")
    return str(root)
