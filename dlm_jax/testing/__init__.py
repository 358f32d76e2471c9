"""testing layer of dlm_jax (see DESIGN.md)."""

# XLA's cheaper CPU compilation, for test suites and the CI runs of the notebooks: their tiny models
# spend most of their CPU time compiling, not running. Measured side by side (BENCHMARKS.md, "Test
# suite"): 0.53× the time on the compile-heavy test files, cold cache. Numerics move at float32
# rounding (1e-5 on logits), within every tolerance of the suite.
FAST_CPU_COMPILE = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
