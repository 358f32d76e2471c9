"""Test-wide JAX set-up: 8 fake CPU devices, XLA's cheaper CPU compilation
(``dlm_jax.testing.FAST_CPU_COMPILE``, inherited by the CLI tests' subprocesses) and a persistent
compilation cache.

Must run before jax initialises its backend, hence the environment variable and config
updates at import time.
"""

import os

from dlm_jax.testing import FAST_CPU_COMPILE  # imports no jax

os.environ.setdefault("XLA_FLAGS", " ".join(("--xla_force_host_platform_device_count=8",) + FAST_CPU_COMPILE))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

_cache = os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache")
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
