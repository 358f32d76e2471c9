"""The DiT ("DDiT") denoiser of MDLM and FS-DFM (METHODS §2.1(b), §6.2(b)) as a Flax NNX module.

x → input adapter (+ self-conditioning projection) → depth × DiTBlock (adaLN-zero, rotary attention,
tanh-GELU MLP) → FinalLayer → float32 outputs [B, L, num_classes].

Time t is used as given: its direction is the calling method's (masked family: 0 = clean, 1 = fully masked;
flow family: 0 = source, 1 = data; continuous seq2seq: 0 = clean, 1 = noise). The model only embeds it.
Prefix / source positions that are never noised need nothing special: callers pass clean tokens and
per-token t (with `per_token_time=True`) at those positions. Padding: cond["padding_mask"] [B, L] (True/1 = real
token) hides padded keys from every attention layer; positions are absolute, so with padding at the END the
real positions compute exactly what the unpadded shorter sequence computes.

Use it through the functional seam in `dlm_jax.models` (`build_model` / `make_apply`), not by calling the
module per step.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlm_jax import checks
from dlm_jax.models.adapters import SelfCondProjection, make_input_adapter
from dlm_jax.models.attention import rotary_cos_sin
from dlm_jax.models.blocks import DiTBlock, FinalLayer
from dlm_jax.models.conditioning import Conditioner
from dlm_jax.models.config import DiTConfig

COND_KEYS = ("t", "h", "self_cond", "padding_mask")


def _shape(a) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else tuple(np.shape(a))


def _dtype(a):
    return a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype


def _is_concrete(a) -> bool:
    return not isinstance(a, jax.core.Tracer)


def validate_inputs(config: DiTConfig, x, cond) -> None:
    """Raise a one-line ValueError for inputs the model cannot take. Shapes are checked always (also under
    jit tracing); token-id ranges only on concrete arrays."""
    shp, dt = _shape(x), _dtype(x)
    if config.input == "tokens":
        if len(shp) != 2:
            raise ValueError(f"x: shape {shp}; expected token ids [B, L]")
        if not jnp.issubdtype(dt, jnp.integer):
            raise ValueError(f"x: dtype {dt}; expected an integer dtype (token ids)")
    else:
        if len(shp) != 3 or shp[-1] != config.input_dim:
            raise ValueError(f"x: shape {shp}; expected vectors [B, L, input_dim={config.input_dim}]")
        if not jnp.issubdtype(dt, jnp.floating):
            raise ValueError(f"x: dtype {dt}; expected a floating dtype (vectors)")
    b, length = shp[0], shp[1]
    if b < 1 or length < 1:
        raise ValueError(f"x: shape {shp}; expected B >= 1 and L >= 1")
    if length > config.max_len:
        raise ValueError(f"x: sequence length {length}; expected <= max_len={config.max_len}")
    if config.input == "tokens" and _is_concrete(x):
        lo, hi = int(np.min(np.asarray(x))), int(np.max(np.asarray(x)))
        if lo < 0 or hi >= config.vocab_size:
            raise ValueError(f"x: token ids in [{lo}, {hi}]; expected ids in [0, {config.vocab_size})")

    if cond is None:
        cond = {}
    if not isinstance(cond, Mapping):
        raise ValueError(f"cond: {type(cond).__name__}; expected None or a dict with keys from {COND_KEYS}")
    for key in cond:
        if key not in COND_KEYS:
            raise ValueError(f"cond: key {key!r}; expected keys from {COND_KEYS}")
    time_shapes = [(b,), (b, length)] if config.per_token_time else [(b,)]
    allowed = " or ".join(str(list(s)) for s in time_shapes)
    for key, needed in (("t", config.conditioning in ("t", "th")), ("h", config.conditioning == "th")):
        if key not in cond or cond[key] is None:
            if needed:
                raise ValueError(f"cond['{key}']: missing; expected shape {allowed} "
                                 f"(conditioning={config.conditioning!r})")
            continue
        if key == "h" and not needed:
            raise ValueError(f"cond['h']: given; expected no 'h' with conditioning={config.conditioning!r}")
        if key == "t" and config.conditioning == "none":
            continue  # MDLM-OWT convention: the time input is replaced by 0, whatever is passed
        if _shape(cond[key]) not in time_shapes:
            raise ValueError(f"cond['{key}']: shape {_shape(cond[key])}; expected {allowed} "
                             f"(per_token_time={config.per_token_time})")
    sc = cond.get("self_cond")
    if sc is not None:
        want = (b, length, config.self_cond_dim)
        if config.self_cond_dim == 0:
            raise ValueError("cond['self_cond']: given; expected none with self_cond_dim=0")
        if _shape(sc) != want:
            raise ValueError(f"cond['self_cond']: shape {_shape(sc)}; expected {list(want)}")
    pm = cond.get("padding_mask")
    if pm is not None:
        _validate_padding_mask(pm, b, length)


def _validate_padding_mask(pm, b: int, length: int) -> None:
    """[B, L] of bool or 0/1 numbers (values checked only on concrete arrays)."""
    key = "cond['padding_mask']"
    if _shape(pm) != (b, length):
        checks.fail(key, _shape(pm), f"shape {[b, length]} ([B, L] of x), True/1 = real token")
    dt = _dtype(pm)
    if not (dt == jnp.bool_ or jnp.issubdtype(dt, jnp.integer) or jnp.issubdtype(dt, jnp.floating)):
        checks.fail(key, str(dt), "a bool or numeric dtype (True/1 = real token, False/0 = padding)")
    if dt != jnp.bool_ and _is_concrete(pm):
        bad = sorted(set(np.unique(np.asarray(pm)).tolist()) - {0, 1})
        if bad:
            checks.fail(key, bad[:3], "values 0 or 1 (1 = real token), or a bool array")


def _as_time(v, b: int) -> jax.Array:
    """[B] → [B, 1]; [B, L] stays; float32."""
    v = jnp.asarray(v, jnp.float32)
    return v[:, None] if v.ndim == 1 else v.reshape(b, -1)


class DiT(nnx.Module):
    """DiT denoiser; its input adapter is `config.input_adapter`, looked up in adapters.py's registry."""

    def __init__(self, config: DiTConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.adapter = make_input_adapter(config, rngs)
        self.self_cond = (SelfCondProjection(config.self_cond_dim, config.width, rngs=rngs)
                          if config.self_cond_dim else None)
        self.cond = Conditioner(config.cond_dim, config.conditioning, identity_init=config.identity_h_init,
                                rngs=rngs)
        self.blocks = nnx.List([DiTBlock(config, rngs=rngs) for _ in range(config.depth)])
        self.final = FinalLayer(config, rngs=rngs)

    def __call__(self, x, cond=None, *, dropout_rng=None) -> jax.Array:
        """Outputs float32 [B, L, num_classes]. cond: {"t": [B] | [B, L], "h": ..., "self_cond": [B, L, d],
        "padding_mask": [B, L]}; t and h are raw values in [0, 1], in the calling method's time direction."""
        cfg = self.config
        validate_inputs(cfg, x, cond)
        cond = dict(cond or {})
        b, length = x.shape[0], x.shape[1]

        h = self.adapter(x).astype(jnp.float32)
        if self.self_cond is not None:
            sc = cond.get("self_cond")
            if sc is not None:  # absent = zeros (first self-conditioning pass): contributes exactly 0
                h = h + self.self_cond(sc).astype(jnp.float32)

        if cfg.conditioning == "none":
            t = jnp.zeros((b, 1), jnp.float32)
        else:
            t = _as_time(cond["t"], b)
        hh = _as_time(cond["h"], b) if cfg.conditioning == "th" else None
        if hh is not None and hh.shape[1] != t.shape[1]:
            t, hh = jnp.broadcast_arrays(t, hh)
        c = self.cond(t, hh)
        pm = cond.get("padding_mask")
        key_mask = None if pm is None else jnp.asarray(pm) != 0  # absent = all real: no mask at all

        cos, sin = rotary_cos_sin(length, cfg.head_dim)
        for i, block in enumerate(self.blocks):
            rng = None if dropout_rng is None or cfg.dropout == 0.0 else jax.random.fold_in(dropout_rng, i)
            h = block(h, c, cos, sin, rng, key_mask)
        return self.final(h, c)
