"""MDLM: masked diffusion LM trained with the continuous-time NELBO, METHODS §2.1.

Time direction: **t = 0 clean, t = 1 masked** (α_t = probability a token is still clean).
The mask id is ``m = V`` (``vocab_size``); the model sees ids in ``[0, V]`` and outputs logits
over ``V + 1`` classes.

Loss (per sequence, before the per-token reduction)::

    L(x) = E_t E_{z_t ~ q(·|x)} [ w(t) Σ_ℓ 1[z_t^ℓ = m] · (−log x_θ^ℓ(z_t)[x^ℓ]) ],  w = −α'/(1−α)

with the SUBS parameterisation ``x_θ`` (mask logit at −∞, carry-over at unmasked positions, which
therefore contribute 0), antithetic times ``t_b = (u/B + b/B) mod 1`` then
``t ← (1 − sampling_eps) t + sampling_eps`` (grid rotated by a random number of rows,
see ``antithetic_times``), and a per-token mean over every real token
(``Σ loss·loss_mask / Σ loss_mask``), masked or not. ``exp`` of the mean is a PPL bound.

Pieces usable on their own (tests plug the exact oracle in instead of a network):

* ``nelbo_terms(logprobs_fn, x, z, t, schedule)`` — per-token weighted cross-entropy ``[B, L]``;
* ``antithetic_times(key, B, sampling_eps)`` — the stratified time draw;
* ``subs_logprobs(logits, z, vocab_size)`` — SUBS on raw ``[B, L, V+1]`` logits -> ``[B, L, V]``;
* ``logprobs_fn`` / ``denoise_fn`` — a model ``apply_fn`` turned into the masked sampler seam
  ``(z [B, L], t [B]) -> log-probs [B, L, V]``.

Config keys read by ``build`` (missing keys get these defaults, written back into the config):

=====================  ===============  ====================================================
``schedule``           ``"loglinear"``  masking schedule name (``processes.schedules``)
``eps``                ``None``         schedule ε; ``None`` = the schedule's default
``exponent``           ``None``         ``poly`` schedule exponent; ``None`` = 2
``sampling_eps``       ``1e-3``         lower end of the training time draw
``antithetic``         ``True``         antithetic (shifted-grid) time sampling
``rotate_times``       ``True``         rotate the grid by a random number of rows
``time_conditioning``  ``False``        feed time to the model; False feeds ``cond["t"] = 0``
``time_input``         ``"t"``          what ``cond["t"]`` carries when conditioned: ``"t"``
                                        or ``"sigma"`` (= −log α_t, MDLM's σ)
``sampler``            ``"mdlm"``       default sampler for ``sample`` (``samplers.get_sampler``)
=====================  ===============  ====================================================

plus ``config.model.vocab_size`` (fallback ``config.data.tokenizer_vocab_size``): V, the number
of clean classes; ``config.model.get("dropout", 0.0)``: when > 0 the loss passes
``dropout_rng`` to ``apply_fn``; ``config.data.get("seq_len")``: default sample length.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from dlm_jax.checks import check_bool, check_choice, check_float, check_str, resolve
from dlm_jax.methods.base import Method, masked_mean, vocab_size_from_config
from dlm_jax.models.registry import ModelSpec
from dlm_jax.processes.masking import carry_over, forward_mask
from dlm_jax.processes.schedules import MaskingSchedule, get_schedule, schedule_names

__all__ = [
    "antithetic_times",
    "subs_logprobs",
    "nelbo_terms",
    "masked_mean",
    "model_cond",
    "logprobs_fn",
    "denoise_fn",
    "schedule_from_config",
    "model_spec",
    "build",
]

_TIME_INPUTS = ("sigma", "t")


def antithetic_times(key, batch_size: int, sampling_eps: float = 1e-3, *, antithetic: bool = True,
                     rotate: bool = True, dtype=None):
    """Training times ``[B]`` in ``[sampling_eps, 1)`` (t: 0 clean, 1 masked).

    Antithetic: one ``u ~ U[0,1)``, ``t_b = (u/B + b/B) mod 1`` — a randomly shifted grid with
    spacing exactly 1/B — then ``t ← (1 − sampling_eps) t + sampling_eps``. In that formula the
    ``mod`` never wraps, so row b always lands in stratum ``[b/B, (b+1)/B)``: unbiased only when
    the data order is random (MDLM's behaviour; MDLM also draws a separate u per row, i.e.
    stratified instead of systematic sampling — same strata, same expectation). With ``rotate``
    (default) the grid is also rotated by a uniform random number of rows, ``t_b = (u + b/B) mod 1``
    with ``u ~ U[0,1)``: the same set of times, but every row's t is marginally uniform whatever
    the batch order. Not antithetic: i.i.d. uniform times.
    """
    dtype = dtype or jnp.result_type(float)
    if antithetic:
        u = jax.random.uniform(key, (), dtype=dtype)
        grid = jnp.arange(batch_size, dtype=dtype) / batch_size
        t = jnp.mod((u if rotate else u / batch_size) + grid, 1.0)
    else:
        t = jax.random.uniform(key, (batch_size,), dtype=dtype)
    return (1.0 - sampling_eps) * t + sampling_eps


def subs_logprobs(logits, z, vocab_size: int):
    """SUBS parameterisation: ``[B, L, V+1]`` logits -> log-probs ``[B, L, V]`` over clean tokens.

    The mask logit is dropped (= set to −∞ before the softmax, zero mass on ``m``); at unmasked
    positions (``z ≠ m = vocab_size``) the output is the carry-over ``log δ_{z}`` (0 / −∞).
    """
    logits = jnp.asarray(logits)
    lp = jax.nn.log_softmax(logits[..., :vocab_size].astype(jnp.promote_types(logits.dtype, jnp.float32)), -1)
    return carry_over(lp, z, vocab_size)


def nelbo_terms(logprobs_fn: Callable, x, z, t, schedule: MaskingSchedule, *, mask_id: int | None = None):
    """Per-token NELBO integrand ``w(t) · 1[z^ℓ = m] · (−log p_θ(x^ℓ | z))``, ``[B, L]``.

    ``logprobs_fn(z, t) -> [B, L, V]`` log-probs over clean tokens (a network through
    ``logprobs_fn``/``denoise_fn`` or an exact oracle's ``denoise_fn``); ``x`` clean tokens and
    ``z`` their masked version, int ``[B, L]``; ``t`` times ``[B]`` or per token ``[B, L]``
    (t: 0 clean, 1 masked). ``mask_id`` defaults to V (the last axis of the log-probs).
    Unmasked positions give exactly 0 (never ``0 · (−inf)``).
    """
    x, z, t = jnp.asarray(x), jnp.asarray(z), jnp.asarray(t)
    lp = logprobs_fn(z, t)
    mask_id = lp.shape[-1] if mask_id is None else mask_id
    ce = -jnp.take_along_axis(lp, x[..., None].astype(jnp.int32), axis=-1)[..., 0]
    w = schedule.weight(t)
    w = w[:, None] if w.ndim == 1 else w
    masked = z == mask_id
    return jnp.where(masked, w * jnp.where(masked, ce, 0.0), 0.0)


def model_cond(t, batch_size: int, schedule: MaskingSchedule, *, time_conditioning: bool, time_input: str = "t"):
    """The ``cond`` dict for the model: ``{"t": [B]}``, zeros when not time-conditioned (MDLM-OWT
    feeds σ = 0), else t itself or σ = −log α_t. t: 0 clean, 1 masked."""
    if not time_conditioning:
        return {"t": jnp.zeros((batch_size,), jnp.float32)}
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch_size,))
    if time_input == "sigma":
        t = -jnp.log(schedule.alpha(t))
    return {"t": t}


def logprobs_fn(apply_fn: Callable, vocab_size: int, schedule: MaskingSchedule | None = None, *,
                time_conditioning: bool = False, time_input: str = "t"):
    """``apply_fn(params, z, cond) -> logits [B, L, V+1]`` turned into
    ``(params, z, t, **apply_kw) -> log-probs [B, L, V]`` (SUBS). t ``[B]`` or scalar:
    0 clean, 1 masked."""
    schedule = schedule or get_schedule("loglinear")

    def fn(params, z, t, **apply_kw):
        z = jnp.asarray(z)
        cond = model_cond(t, z.shape[0], schedule, time_conditioning=time_conditioning, time_input=time_input)
        return subs_logprobs(apply_fn(params, z, cond, **apply_kw), z, vocab_size)

    return fn


def denoise_fn(apply_fn: Callable, params, vocab_size: int, schedule: MaskingSchedule | None = None, *,
               time_conditioning: bool = False, time_input: str = "t"):
    """The masked sampler seam ``(z [B, L] int32, t [B]) -> log-probs [B, L, V]`` for a model
    with parameters ``params`` (SUBS; mask id = ``vocab_size``; t: 0 clean, 1 masked)."""
    fn = logprobs_fn(apply_fn, vocab_size, schedule, time_conditioning=time_conditioning, time_input=time_input)

    def denoise(z, t=None, **_):
        t = jnp.zeros(()) if t is None else t
        return fn(params, z, t)

    return denoise


def schedule_from_config(method_cfg) -> MaskingSchedule:
    """The schedule named by ``method.schedule`` with ``method.eps`` / ``method.exponent``
    (defaults written back into ``method_cfg``)."""
    name = resolve(method_cfg, "schedule", "loglinear", prefix="method", check=check_choice,
                   allowed=schedule_names())
    kw = {"eps": resolve(method_cfg, "eps", None, prefix="method")}
    if name == "poly":
        kw["exponent"] = resolve(method_cfg, "exponent", None, prefix="method")
    return get_schedule(name, **kw)


def _get_sampler(name: str):
    """Resolve a sampler by name at call time (lazy: the samplers layer loads only when sampling)."""
    from dlm_jax.samplers import get_sampler

    return get_sampler(name)


def model_spec(config) -> ModelSpec:
    """Token ids in ``[0, V]`` (mask id V) in, ``V + 1`` logits out (the mask logit is dropped by SUBS)."""
    v = vocab_size_from_config(config)
    return ModelSpec(input="tokens", num_input_ids=v + 1, num_outputs=v + 1)


def build(config, apply_fn: Callable) -> Method:
    """The MDLM ``Method`` for a model ``apply_fn(params, z, cond, *, dropout_rng=None) -> logits
    [B, L, V+1]``; config keys in the module docstring. Validates before anything compiles."""
    mc = config.method
    vocab_size = vocab_size_from_config(config)
    schedule = schedule_from_config(mc)
    sampling_eps = resolve(mc, "sampling_eps", 1e-3, prefix="method", check=check_float, min=0.0, max=1.0,
                           max_open=True)
    time_conditioning = resolve(mc, "time_conditioning", False, prefix="method", check=check_bool)
    time_input = resolve(mc, "time_input", "t", prefix="method", check=check_choice, allowed=_TIME_INPUTS)
    antithetic = resolve(mc, "antithetic", True, prefix="method", check=check_bool)
    rotate_times = resolve(mc, "rotate_times", True, prefix="method", check=check_bool)
    default_sampler = resolve(mc, "sampler", "mdlm", prefix="method", check=check_str)
    use_dropout = "model" in config and float(config.model.get("dropout", 0.0) or 0.0) > 0.0
    default_length = config.data.get("seq_len", None) if "data" in config else None
    mask_id = vocab_size
    lp_fn = logprobs_fn(apply_fn, vocab_size, schedule, time_conditioning=time_conditioning, time_input=time_input)

    def _terms(params, batch, rng, train: bool):
        x = jnp.asarray(batch["tokens"])
        k_t, k_z, k_drop = jax.random.split(rng, 3)
        t = antithetic_times(k_t, x.shape[0], sampling_eps, antithetic=antithetic, rotate=rotate_times)
        z = forward_mask(k_z, x, schedule.alpha(t), mask_id, never_noise=batch.get("never_noise"))
        apply_kw = {"dropout_rng": k_drop} if (train and use_dropout) else {}
        terms = nelbo_terms(functools.partial(lp_fn, params, **apply_kw), x, z, t, schedule, mask_id=mask_id)
        return terms, z

    def loss(params, batch, rng, step=None, aux=None):
        """Per-token NELBO (nats/token) on ``batch["tokens"]`` with ``batch["loss_mask"]``."""
        del step, aux
        terms, z = _terms(params, batch, rng, train=True)
        loss_mask = batch.get("loss_mask")
        mean, total, count = masked_mean(terms, loss_mask)
        frac, _, _ = masked_mean((z == mask_id).astype(terms.dtype), loss_mask)
        return mean, {"loss": mean, "nelbo_sum": total, "num_tokens": count, "masked_fraction": frac}

    def evaluate(params, batch, rng):
        """Sums for the caller to average: ``nelbo_sum`` (nats) and ``num_tokens``."""
        terms, _ = _terms(params, batch, rng, train=False)
        _, total, count = masked_mean(terms, batch.get("loss_mask"))
        return {"nelbo_sum": total, "num_tokens": count}

    def sample(params, rng, *, num_samples, steps, sampler=None, length=None, **kw):
        """Generate with a masked sampler (default ``method.sampler``); returns ``(tokens, info)``."""
        length = length or default_length
        if length is None:
            raise ValueError("length: None; expected an int (or set config.data.seq_len)")
        fn = _get_sampler(sampler or default_sampler)
        denoise = denoise_fn(apply_fn, params, vocab_size, schedule, time_conditioning=time_conditioning,
                             time_input=time_input)
        # Masked samplers take the mask id to be ``vocab_size`` (docs/ARCHITECTURE.md).
        return fn(denoise, rng, num_samples=num_samples, length=length, steps=steps, vocab_size=vocab_size, **kw)

    return Method(name="mdlm", loss=loss, evaluate=evaluate, sample=sample, samplers=_family("MASKED"))


def _family(name: str) -> tuple[str, ...]:
    from dlm_jax import samplers

    return getattr(samplers, name)
