"""``pytest --nbmake notebooks/``: the environment of the kernels nbmake starts, set only while a
notebook runs (so tests sharing the pytest process keep theirs):

* ``DLM_NOTEBOOK_SCALE`` = 0.025, the CI scale, unless the caller set one (the notebooks' own
  default, 1, is Colab's);
* one CPU device (a ``--xla_force_host_platform_device_count`` inherited from ``tests/conftest.py``
  is dropped; ``04_tpu_pod`` asks for its 8 itself) and XLA's cheaper CPU compilation (the tiny
  models' run time is negligible; compiling is most of a notebook's CPU time: about 35 % less).
"""

import os

import pytest

from dlm_jax.testing import FAST_CPU_COMPILE

CI_SCALE = "0.025"


def kernel_env(environ) -> dict:
    """The variables to set for a notebook kernel, given the current environment."""
    flags = [f for f in environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    return {"DLM_NOTEBOOK_SCALE": environ.get("DLM_NOTEBOOK_SCALE", CI_SCALE),
            "XLA_FLAGS": " ".join(flags + [f for f in FAST_CPU_COMPILE if f not in flags])}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    saved = {key: os.environ.get(key) for key in ("DLM_NOTEBOOK_SCALE", "XLA_FLAGS")}
    os.environ.update(kernel_env(os.environ))
    try:
        return (yield)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
