"""DFM: discrete flow matching on the mixture path (Gat et al.), the FS-DFM teacher, METHODS §2.3.

Time direction: **t = 0 is the source (all-mask or uniform noise), t = 1 is the data.**
``κ(t) = t^n`` (``exponent`` n, 1 for FS-DFM) is the probability a token has reached its data value.

* Path: ``x_t^i = x_1^i`` w.p. ``κ(t)``, else the source token (mask id ``V``, or uniform on ``[V]``).
* Model: the DiT (``conditioning="t"``) sees ``x_t`` (ids in ``[0, V]``) and ``cond={"t": t}``; its
  logits ``[B, L, C]`` (``C = V + 1`` from the trainer, or ``V``) are cut to the ``V`` clean classes and
  log-softmax normalised: the mask logit is dropped (``flow_logprobs``). This is the flow sampler seam.
  With ``carry_over`` (mask source) a visible position's output is ``log δ(x_t)``: exact, since the
  mask path's posterior of a visible token is that token. Without it the network must learn to copy,
  and the generalized KL's copy term ``κ̇/(1−κ)(1 − p(x_t))`` gives a softmax at ``p ≈ 1/V`` almost no
  gradient: on the 512-piece stdlib corpus the reference parameterisation never learns to copy.
* Loss (per token, ``Σ loss·loss_mask / Σ loss_mask``): the generalized KL (default)
  ``ℓ = −κ̇/(1−κ) [p(x_t) − δ(x_1=x_t) + (1 − δ(x_1=x_t)) log p(x_1)]`` or the cross-entropy
  ``−log p(x_1)``, with ``t ~ U[0, 1 − time_epsilon)``, ``time_epsilon = 1e-5``: i.i.d. per row
  (the reference), or antithetic (one randomly rotated grid of spacing 1/B: every 1/B stratum of
  times once per batch, as MDLM; it lowers the variance of the ``1/(1 − t)``-weighted loss, but did
  not rescue the generalized KL on real text: that was the copy term, below).
* ELBO evaluation (§2.3(c), ``elbo_terms``): the generalized KL of the *linear* path at K stratified
  values ``κ_k = ((k + u_b)/K mod 1)·(1 − 10⁻³)`` (one uniform offset ``u_b`` per sequence, shared by
  its K points), with the model queried at ``t = κ^{-1}(κ_k)`` (``κ^{1/n}``); the mean over k is a
  per-token bound on ``−log p(x)`` in nats.

Config keys read by ``build`` (missing keys get these defaults, written back into the config):

=================  ==============  ========================================================
``source``         ``"mask"``      ``"mask"`` or ``"uniform"``
``schedule``       ``"polynomial"`` κ schedule (``processes.flow``): polynomial / cosine
``exponent``       ``1.0``         n of ``κ = t^n`` (polynomial only)
``loss``           ``"gkl"``       ``"gkl"`` (generalized KL) or ``"ce"`` (cross-entropy)
``time_epsilon``   ``1e-5``        training times ``t ~ U[0, 1 − time_epsilon)``
``time_sampling``  ``"iid"``       ``"iid"`` or ``"antithetic"`` (``training_times``)
``carry_over``     ``False``       mask source only: a visible token's log-probs are ``log δ(x_t)``
                                   (``processes.masking.carry_over``), as MDLM's SUBS
``elbo_points``    ``32``          K, κ grid size of the ELBO evaluation
``elbo_eps``       ``1e-3``        the grid is scaled by ``1 − elbo_eps``
``sampler``        ``"dfm_euler"`` default sampler of ``sample`` (``samplers.get_sampler``)
=================  ==============  ========================================================

plus ``config.model.vocab_size`` (V clean classes; fallback ``config.data.tokenizer_vocab_size``),
``config.model.dropout`` and
``config.data.seq_len`` (default sample length).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from dlm_jax.checks import check_bool, check_choice, check_float, check_int, check_str, fail, resolve
from dlm_jax.methods.base import Method, masked_mean, vocab_size_from_config
from dlm_jax.models.registry import ModelSpec
from dlm_jax.processes import flow, masking

__all__ = [
    "LOSSES",
    "TIME_SAMPLING",
    "flow_logprobs",
    "check_carry_over",
    "logprobs_fn",
    "denoise_fn",
    "kappa_inverse",
    "training_times",
    "loss_terms",
    "elbo_kappas",
    "elbo_terms",
    "masked_mean",
    "schedule_from_config",
    "vocab_size_from_config",
    "check_source",
    "model_spec",
    "build",
]

LOSSES = ("gkl", "ce")
TIME_SAMPLING = ("iid", "antithetic")


def flow_logprobs(logits, vocab_size: int):
    """``[B, L, C ≥ V]`` logits -> log-probs ``[B, L, V]`` over the clean tokens (the mask logit and
    any other extra class dropped), float32 or wider."""
    logits = jnp.asarray(logits)
    return jax.nn.log_softmax(logits[..., :vocab_size].astype(jnp.promote_types(logits.dtype, jnp.float32)), -1)


def check_carry_over(method_cfg, source: str) -> bool:
    """``method.carry_over`` (default False, the reference); True needs the mask source."""
    on = resolve(method_cfg, "carry_over", False, prefix="method", check=check_bool)
    if on and source != "mask":
        fail("method.carry_over", on, f"False with method.source={source!r} (a visible token may be noise there)")
    return on


def logprobs_fn(apply_fn: Callable, vocab_size: int, *, h_conditioned: bool = False, carry: bool = False):
    """``apply_fn(params, x, cond) -> logits`` turned into ``(params, x, t, h=None, **apply_kw) ->
    log-probs [B, L, V]``. ``t`` (and ``h``) ``[B]`` or scalar; t: 0 = source, 1 = data. ``h`` is fed
    only to an h-conditioned model (the FS-DFM student); a teacher ignores it. ``carry``: visible tokens
    carried over (``processes.masking.carry_over``)."""

    def fn(params, x, t, h=None, **apply_kw):
        x = jnp.asarray(x)
        b = x.shape[0]
        cond = {"t": jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))}
        if h_conditioned:
            if h is None:
                raise ValueError("h: None; expected step sizes [B] for an h-conditioned model")
            cond["h"] = jnp.broadcast_to(jnp.asarray(h, jnp.float32), (b,))
        lp = flow_logprobs(apply_fn(params, x, cond, **apply_kw), vocab_size)
        return masking.carry_over(lp, x, vocab_size) if carry else lp

    return fn


def denoise_fn(apply_fn: Callable, params, vocab_size: int, *, h_conditioned: bool = False, carry: bool = False):
    """The flow sampler seam ``(x [B, L], t [B], h [B]) -> log-probs [B, L, V]`` (t: 0 = source,
    1 = data) for a model with parameters ``params``."""
    fn = logprobs_fn(apply_fn, vocab_size, h_conditioned=h_conditioned, carry=carry)

    def denoise(x, t, h=None, **_):
        return fn(params, x, t, h)

    return denoise


def kappa_inverse(kappa, schedule):
    """``t`` with ``κ(t) = kappa`` (t: 0 = source, 1 = data): ``κ^{1/n}`` or ``(2/π) arcsin κ``."""
    schedule = flow.get_schedule(schedule)
    kappa = jnp.asarray(kappa)
    if schedule.name == "cosine":
        return jnp.arcsin(kappa) * (2.0 / jnp.pi)
    return kappa if schedule.exponent == 1 else kappa ** (1.0 / schedule.exponent)


def training_times(key, batch_size: int, time_epsilon: float = 1e-5, dtype=None, *, antithetic: bool = False):
    """Training times ``[B]`` in ``[0, 1 − time_epsilon)`` (t: 0 = source, 1 = data), each row marginally
    ``U[0, 1 − time_epsilon)``. i.i.d. by default; ``antithetic``: ``t_b = ((u + b/B) mod 1)(1 − ε)`` with
    one ``u ~ U[0, 1)``, so the batch holds exactly one time in each stratum ``[k/B, (k+1)/B)(1 − ε)``."""
    dtype = dtype or jnp.result_type(float)
    if antithetic:
        u = jax.random.uniform(key, (), dtype=dtype)
        t = jnp.mod(u + jnp.arange(batch_size, dtype=dtype) / batch_size, 1.0)
    else:
        t = jax.random.uniform(key, (batch_size,), dtype=dtype)
    return t * (1.0 - time_epsilon)


def loss_terms(log_p, x1, xt, t, schedule, loss: str = "gkl"):
    """Per-position DFM loss ``[B, L]``: generalized KL (rate of ``schedule`` at t) or cross-entropy.
    ``log_p [B, L, V]`` over clean tokens; ``x_t`` may hold the mask id V; t: 0 = source, 1 = data."""
    if loss == "ce":
        return flow.cross_entropy_loss(log_p, x1)
    return flow.generalized_kl_loss(log_p, x1, xt, t, schedule)


def elbo_kappas(key, batch_size: int, num_points: int, eps: float = 1e-3, dtype=None):
    """The ELBO grid ``[K, B]``: ``κ_{k,b} = ((k/K + u_b) mod 1)·(1 − eps)``, one offset ``u_b`` per
    sequence shared by its K points (stratified in κ with a random shift)."""
    dtype = dtype or jnp.result_type(float)
    u = jax.random.uniform(key, (1, batch_size), dtype=dtype)
    grid = jnp.arange(num_points, dtype=dtype)[:, None] / num_points
    return jnp.mod(grid + u, 1.0) * (1.0 - eps)


def elbo_terms(lp_fn: Callable, key, x1, *, source: str, vocab_size: int, schedule="linear",
               num_points: int = 32, eps: float = 1e-3):
    """Per-token ELBO integrand averaged over the K-point grid, ``[B, L]`` (nats; its per-token mean
    bounds ``−log p(x)/L``). ``lp_fn(x_t, t) -> log-probs [B, L, V]`` with t in the model's time
    (``t = κ^{-1}(κ_k)``; t: 0 = source, 1 = data). The path and the loss use the linear κ."""
    x1 = jnp.asarray(x1)
    k_grid, k_path = jax.random.split(key)
    kappas = elbo_kappas(k_grid, x1.shape[0], num_points, eps)

    def one(total, inputs):
        kap, k = inputs
        xt = flow.sample_path(k, x1, kap, source=source, vocab_size=vocab_size, schedule="linear")
        lp = lp_fn(xt, kappa_inverse(kap, schedule))
        return total + flow.generalized_kl_loss(lp, x1, xt, kap, "linear"), None

    total, _ = jax.lax.scan(one, jnp.zeros(x1.shape, kappas.dtype), (kappas, jax.random.split(k_path, num_points)))
    return total / num_points


def schedule_from_config(method_cfg) -> flow.KappaSchedule:
    """``method.schedule`` (``"polynomial"`` with ``method.exponent``, or a named κ schedule);
    defaults written back into ``method_cfg``."""
    name = resolve(method_cfg, "schedule", "polynomial", prefix="method")
    if name == "polynomial":
        exponent = resolve(method_cfg, "exponent", 1.0, prefix="method", check=check_float, min=0.0, min_open=True)
        return flow.KappaSchedule("polynomial", exponent)
    check_choice("method.schedule", name, flow.SCHEDULES)
    return flow.get_schedule(name)


def check_source(method_cfg) -> str:
    return resolve(method_cfg, "source", "mask", prefix="method", check=check_choice, allowed=flow.SOURCES)


def model_spec(config, conditioning: str = "t") -> ModelSpec:
    """Ids in ``[0, V]`` (mask id V) in, ``V + 1`` logits out (the mask logit is dropped), time ``t``."""
    v = vocab_size_from_config(config)
    return ModelSpec(input="tokens", num_input_ids=v + 1, num_outputs=v + 1, conditioning=conditioning)


def get_sampler(name: str):
    """Resolve a sampler by name at call time (the samplers layer loads only when sampling)."""
    from dlm_jax.samplers import get_sampler as _get

    return _get(name)


def build(config, apply_fn: Callable) -> Method:
    """The DFM ``Method`` for ``apply_fn(params, x, cond, *, dropout_rng=None) -> logits [B, L, C]``;
    config keys in the module docstring. Validates before anything compiles."""
    mc = config.method
    vocab_size = vocab_size_from_config(config)
    source = check_source(mc)
    carry = check_carry_over(mc, source)
    schedule = schedule_from_config(mc)
    loss_name = resolve(mc, "loss", "gkl", prefix="method", check=check_choice, allowed=LOSSES)
    time_epsilon = resolve(mc, "time_epsilon", 1e-5, prefix="method", check=check_float, min=0.0, max=1.0,
                           max_open=True)
    antithetic = resolve(mc, "time_sampling", "iid", prefix="method", check=check_choice,
                         allowed=TIME_SAMPLING) == "antithetic"
    num_points = resolve(mc, "elbo_points", 32, prefix="method", check=check_int, min=1)
    elbo_eps = resolve(mc, "elbo_eps", 1e-3, prefix="method", check=check_float, min=0.0, max=1.0, max_open=True)
    default_sampler = resolve(mc, "sampler", "dfm_euler", prefix="method", check=check_str)
    use_dropout = "model" in config and float(config.model.get("dropout", 0.0) or 0.0) > 0.0
    default_length = config.data.get("seq_len", None) if "data" in config else None
    lp_fn = logprobs_fn(apply_fn, vocab_size, carry=carry)

    def loss(params, batch, rng, step=None, aux=None):
        """Per-token DFM loss (nats/token for "gkl") on ``batch["tokens"]`` and ``loss_mask``."""
        del step, aux
        x1 = jnp.asarray(batch["tokens"])
        k_t, k_path, k_drop = jax.random.split(rng, 3)
        t = training_times(k_t, x1.shape[0], time_epsilon, antithetic=antithetic)
        xt = flow.sample_path(k_path, x1, t, source=source, vocab_size=vocab_size, schedule=schedule)
        apply_kw = {"dropout_rng": k_drop} if use_dropout else {}
        terms = loss_terms(lp_fn(params, xt, t, **apply_kw), x1, xt, t, schedule, loss_name)
        mask = batch.get("loss_mask")
        mean, total, count = masked_mean(terms, mask)
        changed, _, _ = masked_mean((xt != x1).astype(terms.dtype), mask)
        return mean, {"loss": mean, "loss_sum": total, "num_tokens": count, "noised_fraction": changed}

    def evaluate(params, batch, rng):
        """Sums for the caller: ``nelbo_sum`` (the §2.3(c) ELBO, nats) and ``num_tokens``."""
        x1 = jnp.asarray(batch["tokens"])
        terms = elbo_terms(functools.partial(lp_fn, params), rng, x1, source=source, vocab_size=vocab_size,
                           schedule=schedule, num_points=num_points, eps=elbo_eps)
        _, total, count = masked_mean(terms, batch.get("loss_mask"))
        return {"nelbo_sum": total, "num_tokens": count}

    def sample(params, rng, *, num_samples, steps, sampler=None, length=None, **kw):
        """Generate with a flow sampler (default ``method.sampler``, the original DFM Euler solver);
        the teacher ignores h. Returns ``(tokens, info)`` with ``info["nfe"]``."""
        length = length or default_length
        if length is None:
            raise ValueError("length: None; expected an int (or set config.data.seq_len)")
        fn = get_sampler(sampler or default_sampler)
        kw.setdefault("source", source)
        kw.setdefault("schedule", schedule)
        return fn(denoise_fn(apply_fn, params, vocab_size, carry=carry), rng, num_samples=num_samples, length=length,
                  steps=steps, vocab_size=vocab_size, **kw)

    return Method(name="dfm", loss=loss, evaluate=evaluate, sample=sample, samplers=_family("FLOW"))


def _family(name: str) -> tuple[str, ...]:
    from dlm_jax import samplers

    return getattr(samplers, name)
