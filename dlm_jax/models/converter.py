"""DSL's input adapters (METHODS §4.2): the converter and the plain linear ablation, by name.

SNR direction: s = 0 is "[MASK]" (z = 0, no information), large s is clean (z ≈ s·e(x)); the
adapters see only z ``[B, L, d]``, never s or a time (the SNR is implicit in ``||z||``).

**Converter** (``"dsl_converter"``), per position, in float32::

    π = softmax_{v ∈ [V] ∪ {mask}} (β⟨z, k_v⟩ + b_v)     k_v = e(v) (unit anchors), k_mask = 0
    h = W π + c                                             W: [V+1, D] rows, like a token embedding

``b_v = 0``, ``b_mask = log V`` (π_mask = 1/2 at z = 0), β learnable, init ``1/√d`` unless set.
Options: ``highpass`` adds ``W_r z_⊥ + c_r`` with ``z_⊥ = z − ⟨z, û⟩û``, ``û ∝ Σ_v π_v e(v)``
(W_r ~ N(0, 0.01²), c_r = 0); ``snr_gate`` scales that residual by
``sigmoid(−ŝ/|τ_g| + b_g)`` (τ_g = 5, b_g = 2). With no SNR input, ŝ is estimated from z:
``ŝ = (√(d² + 4||z||²) − d)/2`` solves ``E||z||² = s² + s·d`` (a function of z, so the
denoiser stays SNR-free).

**Linear** (``"dsl_linear"``): ``h = W z + c``, the ablation of METHODS §4.7(6).

**Anchors.** ``anchors="random"`` (default): frozen random unit rows (``localization.random_anchors``
of ``jax.random.key(seed)``, same formula: ``frozen_anchors``), recomputed inside the forward from the seed: they are no ``Param``,
so no optimizer step or weight decay can move them off the unit sphere, and the method rebuilds the
very same array from the same seed (``frozen_anchors``). ``anchors="pca"``: a ``Param``
``anchor_table [V, d]`` (the PCA of the init_from source's token embedding, written there by the
``mdlm_to_dsl`` mapping; the seed's random rows until then) that travels with the checkpoint, so a
run samples with the anchors it trained on without its source; read through ``stop_gradient`` and
re-normalised on use (``unit_rows``), so no update, weight decay or EMA rounding moves it off the
sphere or gives it a gradient. V is ``DiTConfig.num_classes`` (DSL has
V outputs, no mask class) and d is ``DiTConfig.input_dim``.

**Names.** DiTConfig has no field for the seed or the options, so they are written in the adapter
name: ``"dsl_converter"`` is the default (seed 42, β = 1/√d, no residual) and
``"dsl_converter:seed=7,beta_init=5.0,highpass=1,snr_gate=1,anchors=pca"`` lists the options that
differ, in that order (``adapter_name`` builds the canonical name, ``ensure_adapter`` parses and registers one;
``methods/dsl.py`` derives it from ``config.method`` and writes it back into
``config.model.input_adapter``). A name fixes one function, so no mutable registry can make two
models built from the same name differ.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from dlm_jax import checks
from dlm_jax.models.adapters import VectorAdapter, register_input_adapter
from dlm_jax.models.layers import make_param, torch_uniform, zeros_init

__all__ = ["CONVERTER", "LINEAR", "DEFAULT_SEED", "ConverterOptions", "Converter", "adapter_name",
           "parse_adapter_name", "ensure_adapter", "is_dsl_adapter", "frozen_anchors", "unit_rows", "snr_estimate",
           "ANCHOR_KINDS", "ANCHOR_PARAM"]

CONVERTER = "dsl_converter"
LINEAR = "dsl_linear"
DEFAULT_SEED = 42  # DSL-LLaDA's anchor seed
ANCHOR_KINDS = ("random", "pca")
ANCHOR_PARAM = "adapter/anchor_table"  # the stored anchors of anchors="pca", by parameter path
_HI = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class ConverterOptions:
    """What a DSL adapter name fixes. kind: ``"dsl_converter"`` or ``"dsl_linear"``; seed: the
    anchors' seed (converter); beta_init: None = 1/√d; highpass / snr_gate: the residual flags;
    anchors: ``"random"`` (from the seed) or ``"pca"`` (a stored table)."""

    kind: str = CONVERTER
    seed: int = DEFAULT_SEED
    beta_init: float | None = None
    highpass: bool = False
    snr_gate: bool = False
    anchors: str = "random"

    def __post_init__(self):
        checks.check_choice("input_adapter", self.kind, (CONVERTER, LINEAR))
        checks.check_int("anchor_seed", self.seed, min=0)
        if self.beta_init is not None:
            checks.check_float("beta_init", self.beta_init, min=0.0, min_open=True)
        checks.check_bool("highpass", self.highpass)
        checks.check_bool("snr_gate", self.snr_gate)
        checks.check_choice("anchors", self.anchors, ANCHOR_KINDS)
        if self.snr_gate and not self.highpass:
            checks.fail("snr_gate", True, "False unless highpass=True (the gate scales the high-pass residual)")
        if self.kind == LINEAR and (self.beta_init is not None or self.highpass or self.anchors != "random"):
            checks.fail("input_adapter", self.kind, "no converter options (beta_init, highpass, anchors) with the linear "
                        "adapter")


_OPTION_KEYS = ("seed", "beta_init", "highpass", "snr_gate", "anchors")


def adapter_name(options: ConverterOptions) -> str:
    """The canonical name of ``options`` (registered): the kind, then ``:k=v,...`` for the
    options that differ from the defaults, in the order seed, beta_init, highpass, snr_gate."""
    if options.kind == LINEAR:
        name = LINEAR
    else:
        default = ConverterOptions()
        parts = []
        for key in _OPTION_KEYS:
            value = getattr(options, key)
            if value != getattr(default, key):
                shown = int(value) if isinstance(value, bool) else value if isinstance(value, str) else repr(value)
                parts.append(f"{key}={shown}")
        name = CONVERTER + (":" + ",".join(parts) if parts else "")
    _register(name, options)
    return name


def parse_adapter_name(name: str) -> ConverterOptions:
    """The options a DSL adapter name fixes; one-line ValueError for any other name."""
    checks.check_str("model.input_adapter", name)
    expected = f"{CONVERTER!r}, {LINEAR!r} or '{CONVERTER}:k=v,...' with k in {_OPTION_KEYS}"
    kind, _, rest = name.partition(":")
    if kind not in (CONVERTER, LINEAR) or (kind == LINEAR and rest):
        checks.fail("model.input_adapter", name, expected)
    values = {}
    for item in rest.split(",") if rest else ():
        key, sep, raw = item.partition("=")
        if not sep or key not in _OPTION_KEYS or key in values:
            checks.fail("model.input_adapter", name, expected)
        try:
            values[key] = {"seed": int, "beta_init": float, "anchors": str}.get(key, lambda r: bool(int(r)))(raw)
        except ValueError:
            checks.fail(f"model.input_adapter option {key}", raw, "an int (seed), a float (beta_init), a name "
                        "(anchors) or 0/1")
    options = ConverterOptions(kind=kind, **values)
    if adapter_name(options) != name:
        checks.fail("model.input_adapter", name, f"the canonical spelling {adapter_name(options)!r}")
    return options


def ensure_adapter(name: str) -> ConverterOptions:
    """Parse a DSL adapter name and register it (idempotent); returns its options."""
    return parse_adapter_name(name)


def is_dsl_adapter(name) -> bool:
    return isinstance(name, str) and name.partition(":")[0] in (CONVERTER, LINEAR)


def frozen_anchors(seed: int, vocab_size: int, dim: int) -> jax.Array:
    """The converter's (and the method's) anchors ``[V, d]``: Gaussian rows of ``jax.random.key(seed)``,
    L2-normalised — the formula of ``processes.localization.random_anchors`` (equal bit for bit,
    tests/models/test_converter.py), written here because models/ sits below processes/."""
    x = jax.random.normal(jax.random.key(seed), (vocab_size, dim), jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def unit_rows(x: jax.Array) -> jax.Array:
    """Rows of ``x [V, d]`` divided by their L2 norm (float32)."""
    x = jnp.asarray(x, jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def snr_estimate(z: jax.Array) -> jax.Array:
    """ŝ(z) = (√(d² + 4||z||²) − d)/2 ``[..., d] -> [...]``: the s with ``s² + s·d = ||z||²``
    (moment estimate under z = s·e + √s·ε, ``||e|| = 1``); 0 at z = 0."""
    d = z.shape[-1]
    sq = jnp.sum(jnp.square(z), axis=-1)
    return 2.0 * sq / (jnp.sqrt(d * d + 4.0 * sq) + d)  # = (√(d²+4q) − d)/2, stable near 0


def _const(value: float):
    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.full(shape, value, dtype)

    return init


class Converter(nnx.Module):
    """(V+1)-way soft retrieval over the frozen anchors, then ``h = W π + c`` (module docstring).

    Params: ``kernel [V+1, D]`` (rows = token embeddings, row V = [MASK]; init U(±1/√D) like the
    DiT token embedding), ``bias [D]`` (c, nn.Linear default init), ``beta []``, ``logit_bias [V+1]``;
    with ``highpass``: ``residual.{kernel [d, D], bias [D]}``; with ``snr_gate``: ``gate_temp``,
    ``gate_bias``; with ``anchors="pca"``: ``anchor_table [V, d]`` (stored anchors, no gradient).
    """

    def __init__(self, vocab_size: int, dim: int, width: int, options: ConverterOptions, *, rngs: nnx.Rngs):
        self.vocab_size, self.dim, self.options = vocab_size, dim, options
        beta = 1.0 / math.sqrt(dim) if options.beta_init is None else options.beta_init
        self.kernel = make_param(rngs, torch_uniform(width), (vocab_size + 1, width), ("vocab", "embed"))
        self.bias = make_param(rngs, torch_uniform(vocab_size + 1), (width,), ("embed",))
        self.beta = make_param(rngs, _const(beta), (), ())
        mask_bias = jnp.zeros((vocab_size + 1,), jnp.float32).at[-1].set(math.log(vocab_size))
        self.logit_bias = make_param(rngs, lambda k, s, dt=jnp.float32: mask_bias.astype(dt), (vocab_size + 1,),
                                     (None,))
        if options.highpass:
            normal = lambda k, s, dt=jnp.float32: 0.01 * jax.random.normal(k, s, dt)  # noqa: E731
            self.residual_kernel = make_param(rngs, normal, (dim, width), (None, "embed"))
            self.residual_bias = make_param(rngs, zeros_init, (width,), ("embed",))
        if options.anchors == "pca":  # the seed's rows until init_from writes the PCA (methods.dsl)
            table = lambda k, s, dt=jnp.float32: frozen_anchors(options.seed, vocab_size, dim).astype(dt)  # noqa: E731
            self.anchor_table = make_param(rngs, table, (vocab_size, dim), ("vocab", None))
        if options.snr_gate:
            self.gate_temp = make_param(rngs, _const(5.0), (), ())
            self.gate_bias = make_param(rngs, _const(2.0), (), ())

    def anchors(self) -> jax.Array:
        if self.options.anchors == "pca":
            return unit_rows(jax.lax.stop_gradient(self.anchor_table[...]))
        return frozen_anchors(self.options.seed, self.vocab_size, self.dim)

    def probs(self, z: jax.Array) -> jax.Array:
        """π ``[..., V+1]`` (last slot = [MASK]) in float32; the scores at full float32 precision."""
        z = jnp.asarray(z, jnp.float32)
        scores = jnp.einsum("...d,vd->...v", z, self.anchors(), precision=_HI)
        logits = jnp.concatenate([self.beta[...] * scores, jnp.zeros(scores.shape[:-1] + (1,), jnp.float32)], -1)
        return jax.nn.softmax(logits + self.logit_bias[...], axis=-1)

    def __call__(self, z: jax.Array) -> jax.Array:
        z = jnp.asarray(z, jnp.float32)
        pi = self.probs(z)
        h = pi @ self.kernel[...] + self.bias[...]
        if not self.options.highpass:
            return h
        xhat = jnp.einsum("...v,vd->...d", pi[..., :-1], self.anchors(), precision=_HI)
        u = xhat / (jnp.linalg.norm(xhat, axis=-1, keepdims=True) + 1e-8)
        z_perp = z - jnp.sum(z * u, axis=-1, keepdims=True) * u
        res = z_perp @ self.residual_kernel[...] + self.residual_bias[...]
        if self.options.snr_gate:
            temp = jnp.maximum(jnp.abs(self.gate_temp[...]), 0.1)
            res = jax.nn.sigmoid(-snr_estimate(z) / temp + self.gate_bias[...])[..., None] * res
        return h + res


def _factory(options: ConverterOptions, config, rngs: nnx.Rngs) -> nnx.Module:
    """``(DiTConfig, rngs) -> adapter``; needs ``input="vectors"`` (V = num_classes, d = input_dim)."""
    if config.input != "vectors":
        checks.fail("model.input", config.input, f"'vectors' with input_adapter={options.kind!r} (DSL feeds z [B, L, d])")
    if options.kind == LINEAR:
        return VectorAdapter(config.input_dim, config.width, rngs=rngs)
    return Converter(config.num_classes, config.input_dim, config.width, options, rngs=rngs)


_FACTORIES: dict[str, object] = {}


def _register(name: str, options: ConverterOptions) -> None:
    if name not in _FACTORIES:
        _FACTORIES[name] = functools.partial(_factory, options)
        register_input_adapter(name, _FACTORIES[name])


adapter_name(ConverterOptions())
adapter_name(ConverterOptions(kind=LINEAR))
