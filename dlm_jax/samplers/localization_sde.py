"""DSL continuous samplers: the stochastic-localization SDE with Heun (METHODS §4.4 d2) and the
hybrid continuous-then-discrete sampler (d4). Seam and conditioning as in ``localization.py``:
``denoise_fn(z [B, L, d]) -> log-probs [B, L, V]``, no time input.

SNR direction: **s grows from s_min (almost no information) to s_max (clean)**. The exact SL
dynamics are ``dz = x̂(z) ds + dW`` from z = 0 at s = 0, with ``x̂(z) = Σ_v p(v|z) e(v)``; in the
state ``y = z/s`` (which localises on an anchor) they read ``dy = (x̂ − y)/s ds + dW/s``. The
sampler integrates ``dy = (x̂ − y)/s ds + η dW/s`` with Heun on an increasing grid; η = 1 is the
exact SL law (as the grid is refined), η < 1 a low-temperature heuristic. Because x̂ takes no
SNR input, starting at z = 0 at any s_min is the exact process shifted by s_min (start "zero").
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.checks import check_choice, check_float, check_int, fail
from dlm_jax.processes.localization import posterior_mean
from dlm_jax.samplers.driver import run_scan
from dlm_jax.samplers.localization import (check_discrete_options, discrete_scan, discrete_schedule, dsl_predictor,
                                           prepare_dsl)

Array = jax.Array

GRIDS = ("geometric", "sensitive")
INITS = ("norm", "gaussian", "zero")
DEFAULT_S_MIN = {"norm": 3.0, "gaussian": 0.01, "zero": 0.01}
SENSITIVE_BREAKS = (7.0, 74.0)

__all__ = ["GRIDS", "INITS", "snr_grid", "check_sde_options", "sde_scan", "sample_dsl_sde", "sample_dsl_hybrid"]


def snr_grid(grid: str, steps: int, s_min: float, s_max: float, *, max_name: str = "s_max") -> np.ndarray:
    """Increasing SNR grid ``[K+1]`` (float64) from s_min to s_max.

    ``"geometric"``: K geometric steps. ``"sensitive"`` (DSL-LLaDA's 3 segments, geometric in
    each): ``n1 = max(1, ⌊0.05K⌋)`` steps s_min -> 7, ``n2 = max(1, ⌊0.9K⌋)`` steps 7 -> 74, the
    ``n3`` rest 74 -> s_max; where that leaves ``n3 = 0`` (e.g. K = 10) one step moves from the
    middle segment to the last, so the grid always ends at s_max. Needs K >= 3 and
    ``s_min < 7 < 74 < s_max`` (else one-line error: use "geometric")."""
    check_choice("grid", grid, GRIDS)
    k = check_int("steps", steps, min=1)
    s_min = check_float("s_min", s_min, min=0.0, min_open=True)
    s_max = check_float(max_name, s_max, min=0.0, min_open=True)
    if s_min >= s_max:
        fail("s_min", s_min, f"< {max_name} = {s_max}")
    if grid == "geometric":
        return np.geomspace(s_min, s_max, k + 1)
    lo, hi = SENSITIVE_BREAKS
    if k < 3:
        fail("steps", k, "an int >= 3 for grid 'sensitive' (one step per segment); or grid 'geometric'")
    if not s_min < lo < hi < s_max:
        fail(f"s_min, {max_name}", (s_min, s_max), f"s_min < {lo} and {max_name} > {hi} for grid 'sensitive'; or "
             "grid 'geometric'")
    n1 = max(1, int(k * 0.05))
    n2 = max(1, int(k * 0.90))
    n2 = min(n2, k - n1 - 1)
    n3 = k - n1 - n2
    return np.concatenate([np.geomspace(s_min, lo, n1 + 1), np.geomspace(lo, hi, n2 + 1)[1:],
                           np.geomspace(hi, s_max, n3 + 1)[1:]])


def check_sde_options(*, grid, steps, s_min, s_max, eta, start, top_k, max_name="s_max", eta_name="eta"):
    """Validate the SDE options (before tracing); returns ``(grid [K+1], top_k)``."""
    check_choice("start", start, INITS)
    check_float(eta_name, eta, min=0.0)
    if top_k is not None:
        check_int("top_k", top_k, min=1)
    s_min = DEFAULT_S_MIN[start] if s_min is None else s_min
    return snr_grid(grid, steps, s_min, s_max, max_name=max_name), top_k


def _init_y(key: Array, shape, start: str) -> Array:
    """Initial ``y = z/s``: "norm" unit-norm Gaussian direction, "gaussian" N(0, I), "zero" 0."""
    if start == "zero":
        return jnp.zeros(shape, jnp.float32)
    y = jax.random.normal(key, shape, jnp.float32)
    return y / jnp.linalg.norm(y, axis=-1, keepdims=True) if start == "norm" else y


def sde_scan(denoise_fn, key: Array, y0: Array, z_fixed: Array, fixed: Array, anchors: Array, grid: np.ndarray, *,
             eta: float, top_k: int | None) -> tuple[Array, Array]:
    """Heun on ``dy = (x̂(s y) − y)/s ds + η dW/s`` over the increasing SNR ``grid``, one ``lax.scan``
    (two denoiser calls per step). Fixed positions are fed ``z_fixed`` (their clean encoding)
    instead of ``s·y``. Returns ``(y at grid[-1], nfe = 2K)``."""

    def xhat(y, s):
        z = jnp.where(fixed[..., None], z_fixed, s * y)
        return posterior_mean(jnp.asarray(denoise_fn(z)).astype(jnp.float32), anchors, top_k)

    def step(y, st):
        s, s2 = st["t"], st["s"]
        ds = s2 - s
        dw = jnp.sqrt(jnp.abs(ds)) * jax.random.normal(jax.random.fold_in(key, st["k"]), y.shape, y.dtype)
        f, g = (xhat(y, s) - y) / s, eta / s
        y_e = y + f * ds + g * dw
        f2, g2 = (xhat(y_e, s2) - y_e) / s2, eta / s2
        return y + 0.5 * (f + f2) * ds + 0.5 * (g + g2) * dw, 2

    return run_scan(step, y0, jnp.asarray(grid, jnp.float32))


def _continuous_start(key, anchors, x0, fixed, s_clean, start):
    """``(y0 [B, L, d], z_fixed [B, L, d])``: the initial state and the fixed positions' clean
    encoding ``s_clean·e(x)`` (zero elsewhere)."""
    v = anchors.shape[0]
    e = anchors[jnp.where(x0 >= v, 0, x0)]
    z_fixed = jnp.where(fixed[..., None], s_clean * e, 0.0)
    return _init_y(key, e.shape, start), z_fixed


def sample_dsl_sde(denoise_fn, key: Array, *, num_samples: int, length: int, steps: int, vocab_size: int, anchors,
                   fixed: Array | None = None, fixed_tokens: Array | None = None, grid: str = "sensitive",
                   s_min: float | None = None, s_max: float = 80.0, eta: float = 0.3, start: str = "norm",
                   top_k: int | None = 512) -> tuple[Array, dict]:
    """SL-SDE sampler (METHODS §4.4 d2): K = ``steps`` Heun steps of ``y = z/s`` on the SNR grid
    s_min -> s_max (s increasing = cleaner), ``x̂`` the top-k renormalised posterior mean, then
    ``tokens = argmax denoise(s_max·y)``: NFE = 2K + 1.

    Defaults follow DSL-LLaDA: "sensitive" grid, "norm" start (``y0`` a random unit vector,
    s_min = 3), s_max = 80 (its demo; the sensitive grid needs s_max > 74), η = 0.3, top-k 512.
    ``start="gaussian"`` (``y0 ~ N(0, I)``) defaults to s_min = 0.01, as does ``"zero"`` (z = 0:
    with η = 1 the exact SL process). Fixed positions are fed ``s_max·e(x)`` (clean) throughout."""
    grid_np, top_k = check_sde_options(grid=grid, steps=steps, s_min=s_min, s_max=s_max, eta=eta, start=start,
                                       top_k=top_k)
    anchors, x0, fixed = prepare_dsl(denoise_fn, num_samples=num_samples, length=length, steps=steps,
                                     vocab_size=vocab_size, anchors=anchors, fixed=fixed, fixed_tokens=fixed_tokens)
    k_init, k_run = jax.random.split(key)
    y0, z_fixed = _continuous_start(k_init, anchors, x0, fixed, float(s_max), start)
    y, nfe = sde_scan(denoise_fn, k_run, y0, z_fixed, fixed, anchors, grid_np, eta=float(eta), top_k=top_k)
    z = jnp.where(fixed[..., None], z_fixed, float(grid_np[-1]) * y)
    tokens = jnp.argmax(jnp.asarray(denoise_fn(z)), axis=-1).astype(jnp.int32)
    return jnp.where(fixed, x0, tokens), {"nfe": nfe + jnp.int32(1)}


def sample_dsl_hybrid(denoise_fn, key: Array, *, num_samples: int, length: int, steps: int, vocab_size: int,
                      anchors, fixed: Array | None = None, fixed_tokens: Array | None = None,
                      sde_steps: int | None = None, s_switch: float = 20.0, threshold: float = 0.9,
                      sde_grid: str = "geometric", s_min: float | None = None, sde_eta: float = 0.3,
                      start: str = "norm", top_k: int | None = 512, discrete: str = "remdm_loop",
                      eta: float = 0.02, t_on: float = 0.55, t_off: float = 0.05, alpha_on: float = 0.9,
                      top_p: float = 0.9, s_max: float = 100.0, encode: str = "noisy", self_correct: bool = False,
                      categorical_method: str = "auto", eps: float = 1e-5) -> tuple[Array, dict]:
    """Hybrid continuous-then-discrete sampler (METHODS §4.4 d4) with a total budget of
    ``steps`` NFEs (T = 48 in the paper):

    1. K_c = ``sde_steps`` (default ``⌊steps/4⌋``) SL-SDE Heun steps (2K_c NFE; ``sde_grid``,
       ``start``, ``sde_eta``, ``top_k`` as in ``sample_dsl_sde``) from s_min up to ``s_switch``;
    2. the switch rule (our choice; §4.4 d4 leaves it open): one call at ``s_switch·y`` gives
       ``p``; a position is kept, as the discrete token ``argmax p``, iff ``max p >= threshold``,
       the others become masked (1 NFE);
    3. T_d = ``steps − 2K_c − 2`` discrete steps (``discrete``: ``"remdm_loop"`` or ``"mdlm"``)
       over the full masked-time grid t: 1 -> 0 starting from that partially decoded state (kept
       tokens carry over, or self-correct), encoded as in ``sample_dsl_remdm_loop`` at ``s_max``,
       then the noise-removal call (T_d + 1 NFE).

    NFE = ``steps`` exactly; needs T_d >= 1. ``info["kept"]``: fraction of free positions kept
    at the switch."""
    steps = check_int("steps", steps, min=1)
    k_c = steps // 4 if sde_steps is None else check_int("sde_steps", sde_steps, min=1)
    t_d = steps - 2 * k_c - 2
    if k_c < 1 or t_d < 1:
        fail("steps", steps, f"an int >= {2 * max(k_c, 1) + 3} (2 x sde_steps continuous + 1 switch + >= 1 discrete "
             "+ 1 final NFE)")
    check_float("threshold", threshold, min=0.0, max=1.0)
    grid_np, top_k = check_sde_options(grid=sde_grid, steps=k_c, s_min=s_min, s_max=s_switch, eta=sde_eta,
                                       start=start, top_k=top_k, max_name="s_switch", eta_name="sde_eta")
    check_discrete_options(s_max=s_max, encode=encode, top_p=top_p, self_correct=self_correct,
                           categorical_method=categorical_method, discrete=discrete, eta=eta, t_on=t_on,
                           t_off=t_off, alpha_on=alpha_on, eps=eps)
    anchors, x0, fixed = prepare_dsl(denoise_fn, num_samples=num_samples, length=length, steps=steps,
                                     vocab_size=vocab_size, anchors=anchors, fixed=fixed, fixed_tokens=fixed_tokens)
    k_init, k_sde, k_disc = jax.random.split(key, 3)
    y0, z_fixed = _continuous_start(k_init, anchors, x0, fixed, float(s_max), start)
    y, nfe_c = sde_scan(denoise_fn, k_sde, y0, z_fixed, fixed, anchors, grid_np, eta=float(sde_eta), top_k=top_k)
    z = jnp.where(fixed[..., None], z_fixed, float(grid_np[-1]) * y)
    logp = dsl_predictor(denoise_fn)(z)
    keep = (jnp.max(logp, axis=-1) >= math.log(threshold) if threshold > 0 else True) & ~fixed
    state = jnp.where(fixed, x0, jnp.where(keep, jnp.argmax(logp, axis=-1).astype(jnp.int32), vocab_size))
    grid, sched = discrete_schedule(discrete, t_d, eta, t_on, t_off, alpha_on, eps)
    tokens, nfe_d = discrete_scan(denoise_fn, k_disc, state, fixed, anchors, grid, sched, s_max=float(s_max),
                                  encode=encode, top_p=float(top_p), self_correct=self_correct,
                                  categorical_method=categorical_method)
    free = jnp.maximum(jnp.sum(~fixed), 1)
    return tokens, {"nfe": nfe_c + jnp.int32(1) + nfe_d, "kept": jnp.sum(keep) / free}
