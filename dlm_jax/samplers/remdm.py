"""ReMDM remasking samplers: strategies cap, rescale, conf and loop (METHODS §2.2).

Seam and time direction as in ``masked.py``: ``denoise_fn(z [B, L] int32, t [B]) -> log-probs
[B, L, V]``, mask id V, **t = 1 fully masked -> t = 0 clean**, grid ``t_k = 1 − k(1 − eps)/T``.

Posterior family, per position, with x replaced by the prediction p (SUBS: x = z at decoded ℓ)::

    z_t ≠ m:  z_s = m w.p. σ,                          else x
    z_t = m:  z_s = m w.p. (1 − α_s − σ α_t)/(1 − α_t),  else x ~ p
    valid iff 0 ≤ σ ≤ σ^max = min(1, (1 − α_s)/α_t); every valid σ keeps P(z_s = x) = α_s.

Strategies (α_t = 1 − t except for loop):
* ``cap``     σ = min(η, σ^max), η = 0.008;      * ``rescale`` σ = η σ^max, η = 0.015;
* ``conf``    σ^ℓ = η^ℓ σ^max with η = softmax_ℓ(c) over decoded positions (0 at masked), where
  ``c^ℓ = −p(token at the moment it was unmasked)``, −∞ initially and after a remask: Σ η ≤ 1.
  Because σ^ℓ = 0 in the masked branch while decoded ℓ remask at η^ℓ σ^max, conf is *not*
  marginal-preserving at the sampler level: it ends with more masked mass than 1 − α(t_T)
  (tests/samplers/test_remdm.py measures it; the final argmax fills those positions);
* ``loop``    α(t) = α_on(1−t)/(1−t_on) for t > t_on; α_on for t_off < t ≤ t_on; 1 − t(1−α_on)/t_off
  below. As in the reference (``_ddpm_caching_update``), a step's phase is that of its start t and
  both α_t and α_s use that phase's formula (``loop_rule="reference"``): phase-2 steps have
  α_s = α_t = α_on and σ = η ("remask w.p. η, unmask w.p. η α_on/(1−α_on)"), the others σ = 0
  (MDLM steps); α_s is capped at 1 (a coarse grid can overshoot past t_on, where the reference's
  negative weight never wins). ``loop_rule="continuous"`` (the rule before issue 14) evaluates
  α(t) and α(s) each in its own phase, so consecutive steps share α; it differs only at the two
  steps that straddle t_on and t_off (3.8e-3 and 3.7e-3 in P(mask) at T = 1024). Needs
  η ≤ (1 − α_on)/α_on. Defaults η = 0.02, t_on = 0.55, t_off = 0.05, α_on = 0.9.

Nucleus top-p = 0.9 by default for every strategy (ReMDM's setting), final noise-removal argmax as
in MDLM: NFE = T + 1. ``remdm_step`` is the reusable kernel (DSL plugs in its own denoiser).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm_jax.checks import check_choice, check_float, fail
from dlm_jax.samplers.driver import masked_time_grid, run_scan
from dlm_jax.samplers.masked import ancestral_draw, noise_removal, predictor, prepare_masked

Array = jax.Array

STRATEGIES = ("cap", "rescale", "conf", "loop")
LOOP_RULES = ("reference", "continuous")
DEFAULT_ETA = {"cap": 0.008, "rescale": 0.015, "conf": None, "loop": 0.02}

__all__ = ["STRATEGIES", "LOOP_RULES", "DEFAULT_ETA", "sigma_max", "mask_prob", "remdm_weights", "remdm_step",
           "conf_eta", "conf_update", "loop_alpha", "remdm_schedule", "check_remdm", "sample_remdm", "sample_remdm_cap",
           "sample_remdm_rescale", "sample_remdm_conf", "sample_remdm_loop"]


def sigma_max(alpha_s: Array, alpha_t: Array) -> Array:
    """``σ^max = min(1, (1 − α_s)/α_t)`` (1 where α_t = 0)."""
    alpha_s, alpha_t = jnp.asarray(alpha_s), jnp.asarray(alpha_t)
    safe = jnp.where(alpha_t > 0, alpha_t, 1.0)
    return jnp.where(alpha_t > 0, jnp.minimum(1.0, (1.0 - alpha_s) / safe), 1.0)


def mask_prob(is_masked: Array, sigma: Array, alpha_s: Array, alpha_t: Array) -> Array:
    """Probability that ``z_s^ℓ = m``: ``(1 − α_s − σ α_t)/(1 − α_t)`` at masked ℓ, ``σ`` at decoded ℓ."""
    alpha_s, alpha_t, sigma = jnp.asarray(alpha_s), jnp.asarray(alpha_t), jnp.asarray(sigma)
    one_minus = jnp.where(alpha_t < 1, 1.0 - alpha_t, 1.0)
    return jnp.where(is_masked, (1.0 - alpha_s - sigma * alpha_t) / one_minus, sigma)


def remdm_weights(probs: Array, z: Array, sigma: Array, alpha_s: Array, alpha_t: Array, *, mask_id: int,
                  carry_over: bool = True) -> Array:
    """The exact law of ``remdm_step``: weights ``[..., L, V+1]`` over (V tokens, mask) for each
    position, from probabilities ``probs [..., L, V]`` (carry-over: one-hot of z at decoded ℓ)."""
    probs = jnp.asarray(probs)
    masked = z == mask_id
    if carry_over:
        onehot = jax.nn.one_hot(jnp.where(masked, 0, z), probs.shape[-1], dtype=probs.dtype)
        probs = jnp.where(masked[..., None], probs, onehot)
    pi = jnp.broadcast_to(mask_prob(masked, sigma, alpha_s, alpha_t), z.shape).astype(probs.dtype)
    return jnp.concatenate([probs * (1.0 - pi)[..., None], pi[..., None]], axis=-1)


def remdm_step(key: Array, logp: Array, z: Array, sigma: Array, alpha_s: Array, alpha_t: Array, *,
               mask_id: int, categorical_method: str = "auto", greedy: bool = False,
               carry_over: bool = True) -> tuple[Array, Array]:
    """One ReMDM step (the reusable kernel): ``logp [B, L, V]`` log-probs (or logits) of the
    prediction, ``z [B, L]``, ``σ`` scalar or ``[B, L]``, scalars α_s ≥ α_t (α = P(clean), so
    time runs t -> s < t). ``carry_over=False`` re-draws decoded tokens from p (DSL's
    self-correction) instead of keeping them. Returns ``(z_s [B, L] int32, p_dec [B, L])`` where
    ``p_dec`` is the probability under p of the token drawn at each position (conf scores)."""
    pi = mask_prob(z == mask_id, sigma, alpha_s, alpha_t)
    z_s, x = ancestral_draw(key, logp, z, pi, mask_id=mask_id, categorical_method=categorical_method,
                            greedy=greedy, carry_over=carry_over)
    logp = jax.nn.log_softmax(logp, axis=-1)
    p_dec = jnp.exp(jnp.take_along_axis(logp, x[..., None], axis=-1)[..., 0])
    return z_s, p_dec


def conf_eta(conf: Array) -> Array:
    """``η^ℓ = softmax_ℓ(c^ℓ)`` over the positions with finite score (decoded ones), 0 elsewhere;
    all zeros when nothing is decoded. ``[..., L] -> [..., L]``, ``Σ_ℓ η^ℓ ∈ {0, 1}``."""
    finite = jnp.isfinite(conf)
    top = jnp.max(jnp.where(finite, conf, -jnp.inf), axis=-1, keepdims=True)
    w = jnp.where(finite, jnp.exp(jnp.where(finite, conf, 0.0) - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)
    total = w.sum(-1, keepdims=True)
    return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)


def conf_update(conf: Array, z: Array, z_s: Array, p_dec: Array, mask_id: int) -> Array:
    """Conf-score bookkeeping: newly unmasked ℓ get ``c^ℓ = −p_dec^ℓ`` (probability of the token
    when it was decoded), remasked ℓ get ``−∞``; the others keep their score."""
    was_masked, now_masked = z == mask_id, z_s == mask_id
    conf = jnp.where(was_masked & ~now_masked, -p_dec.astype(conf.dtype), conf)
    return jnp.where(now_masked, -jnp.inf, conf)


def loop_alpha(t: Array, t_on: float, t_off: float, alpha_on: float) -> Array:
    """ReMDM-loop's α(t) (t: 1 masked -> 0 clean): rises 0 -> α_on on [t_on, 1], holds α_on on
    [t_off, t_on], rises α_on -> 1 on [0, t_off]; continuous."""
    t = jnp.asarray(t)
    phase1 = alpha_on * (1.0 - t) / (1.0 - t_on)
    phase3 = 1.0 - t * (1.0 - alpha_on) / t_off
    return jnp.where(t > t_on, phase1, jnp.where(t > t_off, alpha_on, phase3))


def check_remdm(strategy: str, eta, t_on: float = 0.55, t_off: float = 0.05, alpha_on: float = 0.9):
    """Validate a strategy and its parameters (before tracing); returns η with defaults filled."""
    check_choice("strategy", strategy, STRATEGIES)
    if strategy == "conf":
        if eta is not None:
            fail("eta", eta, "None for strategy 'conf' (η comes from confidences)")
        return None
    eta = check_float("eta", DEFAULT_ETA[strategy] if eta is None else eta, min=0.0, max=1.0)
    if strategy == "loop":
        check_float("alpha_on", alpha_on, min=0.0, max=1.0, min_open=True, max_open=True)
        check_float("t_on", t_on)
        check_float("t_off", t_off)
        if not 0.0 < t_off < t_on < 1.0:
            fail("t_on, t_off", (t_on, t_off), "0 < t_off < t_on < 1")
        bound = (1.0 - alpha_on) / alpha_on
        if eta > bound:
            fail("eta", eta, f"eta <= (1 - alpha_on)/alpha_on = {bound:.6g} (else 1 - alpha_on - eta*alpha_on < 0)")
    return eta


def _loop_reference(t: Array, s: Array, t_on: float, t_off: float, alpha_on: float):
    """The reference's loop step (t: 1 masked -> 0 clean): the phase of t, its formula at t and s."""
    phase1, phase3 = t > t_on, t <= t_off
    def formula(x):
        return jnp.where(phase1, alpha_on * (1.0 - x) / (1.0 - t_on),
                         jnp.where(phase3, 1.0 - x * (1.0 - alpha_on) / t_off, alpha_on))
    return formula(t), jnp.minimum(formula(s), 1.0), ~phase1 & ~phase3


def remdm_schedule(strategy: str, grid: Array, eta=None, t_on: float = 0.55, t_off: float = 0.05,
                   alpha_on: float = 0.9, loop_rule: str = "reference") -> dict[str, Array]:
    """Per-step ``alpha_t``, ``alpha_s`` and ``sigma`` arrays ``[K]`` for a grid ``[K+1]`` (t: 1 -> 0).
    For ``conf``, ``sigma`` is σ^max; the step multiplies it by the per-position η^ℓ. ``loop_rule``:
    see the module docstring (loop only)."""
    eta = check_remdm(strategy, eta, t_on, t_off, alpha_on)
    check_choice("loop_rule", loop_rule, LOOP_RULES)
    t, s = grid[:-1], grid[1:]
    if strategy == "loop" and loop_rule == "reference":
        a_t, a_s, phase2 = _loop_reference(t, s, t_on, t_off, alpha_on)
    elif strategy == "loop":
        a_t, a_s = loop_alpha(t, t_on, t_off, alpha_on), loop_alpha(s, t_on, t_off, alpha_on)
        phase2 = (t > t_off) & (t <= t_on)
    else:
        a_t, a_s = 1.0 - t, 1.0 - s
    smax = sigma_max(a_s, a_t)
    if strategy == "cap":
        sigma = jnp.minimum(eta, smax)
    elif strategy == "rescale":
        sigma = eta * smax
    elif strategy == "conf":
        sigma = smax
    else:
        sigma = jnp.where(phase2, jnp.minimum(eta, smax), 0.0)
    return {"alpha_t": a_t, "alpha_s": a_s, "sigma": sigma.astype(grid.dtype)}


def sample_remdm(denoise_fn, key: Array, *, num_samples: int, length: int, steps: int, vocab_size: int,
                 strategy: str = "cap", eta: float | None = None, top_p: float = 0.9, greedy: bool = False,
                 categorical_method: str = "auto", fixed: Array | None = None, fixed_tokens: Array | None = None,
                 eps: float = 1e-5, t_on: float = 0.55, t_off: float = 0.05, alpha_on: float = 0.9,
                 carry_over: bool = True, loop_rule: str = "reference") -> tuple[Array, dict]:
    """ReMDM sampler: T = ``steps`` ReMDM steps + 1 noise-removal call (t: 1 masked -> 0 clean).

    ``eta=None`` takes the strategy default; ``loop_rule`` (loop only): ``"reference"`` or
    ``"continuous"``, see the module docstring. ``fixed``/``fixed_tokens`` positions are never
    remasked (σ = 0 there) and excluded from conf's softmax. Returns
    ``(tokens [B, L] int32, {"nfe": int32 T + 1})``."""
    z0, fixed = prepare_masked(denoise_fn, num_samples, length, steps, vocab_size, top_p, categorical_method, fixed,
                               fixed_tokens, eps)
    grid = masked_time_grid(steps, eps)
    sched = remdm_schedule(strategy, grid, eta, t_on, t_off, alpha_on, loop_rule)
    predict = predictor(denoise_fn, top_p)
    mask_id = vocab_size

    def step(carry, st):
        z, conf = carry
        logp = predict(z, st["t"])
        sigma = st["sigma"] * conf_eta(conf) if strategy == "conf" else jnp.broadcast_to(st["sigma"], z.shape)
        sigma = jnp.where(fixed, 0.0, sigma)
        z_s, p_dec = remdm_step(jax.random.fold_in(key, st["k"]), logp, z, sigma, st["alpha_s"], st["alpha_t"],
                                mask_id=mask_id, categorical_method=categorical_method, greedy=greedy,
                                carry_over=carry_over)
        z_s = jnp.where(fixed, z, z_s)
        if strategy == "conf":
            conf = conf_update(conf, z, z_s, p_dec, mask_id)
        return (z_s, conf), 1

    conf0 = jnp.full(z0.shape, -jnp.inf, grid.dtype)
    (z, _), nfe = run_scan(step, (z0, conf0), grid, sched)
    z = noise_removal(predict(z, grid[-1]), z, mask_id)
    return z, {"nfe": nfe + jnp.int32(1)}


def _fixed_strategy(strategy: str):
    def sampler(denoise_fn, key: Array, **kwargs) -> tuple[Array, dict]:
        if "strategy" in kwargs:
            fail("strategy", kwargs["strategy"], f"no strategy for 'remdm_{strategy}'")
        return sample_remdm(denoise_fn, key, strategy=strategy, **kwargs)

    sampler.__name__ = f"sample_remdm_{strategy}"
    sampler.__doc__ = f"``sample_remdm(..., strategy={strategy!r})``; same keyword arguments."
    return sampler


sample_remdm_cap = _fixed_strategy("cap")
sample_remdm_rescale = _fixed_strategy("rescale")
sample_remdm_conf = _fixed_strategy("conf")
sample_remdm_loop = _fixed_strategy("loop")
