"""AR: the autoregressive baseline — the same DiT with causal attention and next-token loss.

It is the offline judge of the stdlib corpus (``dlm_jax.eval.judges``, ``run:<workdir>``) and the
autoregressive row of every comparison table (MDLM, DUO and SEDD all report one).

Tokens ``x`` ``[B, L]`` in ``[0, V)``; the model reads ``[BOS, x_0, ..., x_{L-2}]`` with ``BOS = V``
(one extra input id, as the mask id of the masked family) and outputs ``V`` logits per position,
position ``i`` predicting ``x_i`` from ``x_{<i}``. So every one of the ``L`` tokens is scored and

    log p(x) = Σ_i log softmax(f(BOS, x_{<i}))[x_i]                   (exact, no bound)

``evaluate`` returns its sums (``nll_sum`` nats, ``num_tokens``) over ``loss_mask``; the loss is
their per-token mean. The model must be causal (``model.causal = True``: query i sees keys <= i),
so position i is independent of tokens > i exactly (tests/methods/test_ar.py). Time conditioning
is off (``conditioning = "none"``): there is no time.

``sample`` is ancestral, left to right, one model call per position: **NFE = L**, whatever
``steps`` says (it is accepted, so one call samples every method, and ignored). No KV cache: each
call recomputes the whole prefix (a ``lax.scan`` over positions, O(L²) work), simple and exact;
categorical draws go through ``samplers.categorical.sample_categorical`` (float64 Gumbel under
x64), with ``temperature`` and nucleus ``top_p``.

Config keys read by ``build`` (defaults written back): ``temperature`` (1.0), ``top_p`` (1.0).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dlm_jax import checks
from dlm_jax.methods.base import Method, masked_mean, vocab_size_from_config
from dlm_jax.models.registry import ModelSpec

__all__ = ["model_spec", "build", "shift_right", "token_nll", "sample_ancestral"]


def model_spec(config) -> ModelSpec:
    """Ids ``[0, V]`` in (``V`` = BOS), ``V`` logits out, no conditioning; ``model.causal`` must be True."""
    v = vocab_size_from_config(config)
    if "model" in config and config.model.get("name", "dit") == "dit":
        checks.resolve(config.model, "causal", True, prefix="model")
        if config.model.causal is not True:
            checks.fail("model.causal", config.model.causal, "True for method 'ar' (next-token prediction)")
    return ModelSpec(input="tokens", num_input_ids=v + 1, num_outputs=v, conditioning="none")


def shift_right(x, bos: int):
    """``[BOS, x_0, ..., x_{L-2}]``: the model input that predicts ``x`` position by position."""
    x = jnp.asarray(x)
    return jnp.concatenate([jnp.full(x.shape[:-1] + (1,), bos, x.dtype), x[..., :-1]], axis=-1)


def token_nll(apply_fn: Callable, params, x, bos: int, **apply_kw):
    """``−log p(x_i | x_{<i})`` per token ``[B, L]`` (float32), exact under a causal model."""
    x = jnp.asarray(x)
    logits = apply_fn(params, shift_right(x, bos), {}, **apply_kw)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, x[..., None].astype(jnp.int32), axis=-1)[..., 0]


def sample_ancestral(logits_fn: Callable, key, *, num_samples: int, length: int, bos: int,
                     temperature: float = 1.0, top_p: float = 1.0, categorical: str = "auto"):
    """Left-to-right sampling with one call of ``logits_fn(inputs [B, L]) -> [B, L, V]`` per position
    (full recompute, no cache). Returns ``(tokens [B, L] int32, {"nfe": [B]})``."""
    from dlm_jax.samplers.categorical import sample_categorical, top_p_filter

    checks.check_int("num_samples", num_samples, min=1)
    checks.check_int("length", length, min=1)
    checks.check_float("temperature", temperature, min=0.0, min_open=True)
    checks.check_float("top_p", top_p, min=0.0, max=1.0, min_open=True)
    inputs = jnp.full((num_samples, length), bos, jnp.int32)

    def step(carry, i):
        inputs, tokens = carry
        logits = jax.lax.dynamic_index_in_dim(logits_fn(inputs), i, axis=1, keepdims=False)
        logp = top_p_filter(logits.astype(jnp.float32) / temperature, top_p)
        tok = sample_categorical(jax.random.fold_in(key, i), logp, categorical).astype(jnp.int32)
        tokens = jax.lax.dynamic_update_index_in_dim(tokens, tok, i, axis=1)
        nxt = jnp.minimum(i + 1, length - 1)  # the last token feeds nothing
        inputs = jnp.where(i + 1 < length, jax.lax.dynamic_update_index_in_dim(inputs, tok, nxt, axis=1), inputs)
        return (inputs, tokens), None

    (_, tokens), _ = jax.lax.scan(step, (inputs, jnp.zeros((num_samples, length), jnp.int32)),
                                  jnp.arange(length))
    return tokens, {"nfe": jnp.full((num_samples,), length, jnp.int32)}


def build(config, apply_fn: Callable) -> Method:
    """The AR ``Method`` for a causal model ``apply_fn(params, x, cond) -> logits [B, L, V]``."""
    mc = config.method
    v = vocab_size_from_config(config)
    temperature = checks.resolve(mc, "temperature", 1.0, prefix="method", check=checks.check_float, min=0.0,
                                 min_open=True)
    top_p = checks.resolve(mc, "top_p", 1.0, prefix="method", check=checks.check_float, min=0.0, max=1.0,
                           min_open=True)
    use_dropout = "model" in config and float(config.model.get("dropout", 0.0) or 0.0) > 0.0
    default_length = config.data.get("seq_len", None) if "data" in config else None

    def loss(params, batch, rng, step=None, aux=None):
        """Mean next-token NLL (nats/token) over ``loss_mask``."""
        del step, aux
        kw = {"dropout_rng": rng} if use_dropout else {}
        nll = token_nll(apply_fn, params, batch["tokens"], v, **kw)
        mean, total, count = masked_mean(nll, batch.get("loss_mask"))
        return mean, {"loss": mean, "nll_sum": total, "num_tokens": count}

    def evaluate(params, batch, rng):
        """Exact sums: ``nll_sum`` = −Σ log p(x_i | x_{<i}) over ``loss_mask`` (nats), ``num_tokens``."""
        del rng
        _, total, count = masked_mean(token_nll(apply_fn, params, batch["tokens"], v), batch.get("loss_mask"))
        return {"nll_sum": total, "num_tokens": count}

    def sample(params, rng, *, num_samples, steps=None, sampler=None, length=None, temperature=temperature,
               top_p=top_p, categorical="auto", **kw):
        """Ancestral sampling (``steps`` ignored: NFE = L); ``sampler`` must be None or ``"ar"``."""
        del steps
        if sampler not in (None, "ar"):
            checks.fail("sampler", sampler, "None for method 'ar' (ancestral, left to right; NFE = L)")
        if kw:
            checks.fail("sample option", sorted(kw)[0], "temperature, top_p, categorical or length for method 'ar'")
        length = length or default_length
        if length is None:
            checks.fail("length", length, "an int (or set config.data.seq_len)")
        return sample_ancestral(lambda x: apply_fn(params, x, {}), rng, num_samples=num_samples, length=length,
                                bos=v, temperature=temperature, top_p=top_p, categorical=categorical)

    return Method(name="ar", loss=loss, evaluate=evaluate, sample=sample)
