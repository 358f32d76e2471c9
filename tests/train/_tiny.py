"""Tiny stand-ins for the model / method / data seams, used by the train-layer tests.

The model and the method are registered by name from here (``"tiny_mlp"``, ``"tiny"``), exactly as
a user's own would be, so the real trainer builds them through its registries.

* ``build_model(config)`` -> ``(graphdef, params)``:
  embedding ("vocab","embed") -> MLP
  ("embed","mlp") / ("mlp","embed") -> tied-free readout ("embed","vocab"); LayerNorm ("norm").
* ``build_method(config, apply_fn)`` -> a ``Method`` whose loss is token cross-entropy on a
  corrupted input: ``stochastic=True`` masks tokens with ``rng`` (exercises key handling across
  resume); ``False`` corrupts deterministically (for exact equality of parallel forms).
* ``TinyData`` — deterministic iterator with ``get_state`` / ``set_state``; each process yields
  its rows of the global batch, so N processes == 1 process bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from dlm_jax.methods.base import Method, register_method
from dlm_jax.models.api import make_apply
from dlm_jax.models.registry import ModelDef, ModelSpec, module_init, register_model

VOCAB = 32


class TinyNet(nnx.Module):
    def __init__(self, vocab: int, width: int, hidden: int, rngs: nnx.Rngs):
        part = nnx.with_partitioning
        self.embed = nnx.Embed(vocab + 1, width, rngs=rngs,
                               embedding_init=part(nnx.initializers.normal(0.5), ("vocab", "embed")))
        self.up = nnx.Linear(width, hidden, rngs=rngs,
                             kernel_init=part(nnx.initializers.lecun_normal(), ("embed", "mlp")),
                             bias_init=part(nnx.initializers.zeros, ("mlp",)))
        self.down = nnx.Linear(hidden, width, rngs=rngs,
                               kernel_init=part(nnx.initializers.lecun_normal(), ("mlp", "embed")),
                               bias_init=part(nnx.initializers.zeros, ("embed",)))
        self.norm = nnx.LayerNorm(width, rngs=rngs,
                                  scale_init=part(nnx.initializers.ones, ("norm",)),
                                  bias_init=part(nnx.initializers.zeros, ("norm",)))
        self.out = nnx.Linear(width, vocab, rngs=rngs,
                              kernel_init=part(nnx.initializers.lecun_normal(), ("embed", "vocab")))

    def __call__(self, x, cond, *, dropout_rng=None):
        h = self.embed(x)
        h = h + self.down(jax.nn.gelu(self.up(h)))
        return self.out(self.norm(h)).astype(jnp.float32)


def build_model(config):
    m = config.model
    with nnx.use_eager_sharding(False):
        net = TinyNet(VOCAB, m.get("width", 16), m.get("hidden", 32), nnx.Rngs(config.seed))
    return nnx.split(net, nnx.Param)


def _make_init(fields):
    return module_init(lambda rngs: TinyNet(VOCAB, fields.get("width", 16), fields.get("hidden", 32), rngs))


register_model("tiny_mlp", ModelDef(configure=lambda fields, spec: dict(fields), make_init=_make_init,
                                    make_apply=make_apply))


def build_method(config, apply_fn) -> Method:
    stochastic = config.method.get("stochastic", True)

    def corrupt(tokens, rng):
        if stochastic:
            keep = jax.random.bernoulli(rng, 0.5, tokens.shape)
        else:
            keep = (jnp.arange(tokens.shape[1]) % 2 == 0)[None, :]
        return jnp.where(keep, tokens, VOCAB)

    def nll(params, batch, rng):
        tokens = batch["tokens"]
        logits = apply_fn(params, corrupt(tokens, rng), {})
        lp = jax.nn.log_softmax(logits.astype(jnp.float32))
        tok_nll = -jnp.take_along_axis(lp, tokens[..., None], -1)[..., 0]
        mask = batch.get("loss_mask", jnp.ones_like(tok_nll))
        return tok_nll * mask, mask

    nan_steps = jnp.asarray(tuple(config.method.get("nan_steps", ())) or (-1,), jnp.int32)

    def loss(params, batch, rng, step, aux):
        del aux
        nll_tok, mask = nll(params, batch, rng)
        value = nll_tok.sum() / mask.sum()
        value = jnp.where(jnp.isin(step, nan_steps), jnp.nan, value)  # fault injection (state.step)
        return value, {"nll": value, "num_tokens": mask.sum()}

    def evaluate(params, batch, rng):
        nll_tok, mask = nll(params, batch, rng)
        return {"nll_sum": nll_tok.sum(), "num_tokens": mask.sum()}

    def sample(params, rng, **kw):
        raise NotImplementedError

    return Method(name="tiny", loss=loss, evaluate=evaluate, sample=sample)


class TinyMethod:
    """The method as the registry sees it: ``model_spec`` and ``build``."""

    @staticmethod
    def model_spec(config):
        return ModelSpec(num_outputs=VOCAB, num_input_ids=VOCAB + 1)

    build = staticmethod(build_method)


register_method("tiny", TinyMethod)


class TinyData:
    """Deterministic batches ``{"tokens", "loss_mask"}``: batch ``i`` depends on (seed, i) only."""

    def __init__(self, seed: int, batch_size: int, seq_len: int, process_index: int = 0,
                 process_count: int = 1):
        assert batch_size % process_count == 0
        self.seed, self.batch_size, self.seq_len = seed, batch_size, seq_len
        self.rows = slice(process_index * batch_size // process_count,
                          (process_index + 1) * batch_size // process_count)
        self.index = 0

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng((self.seed, self.index))
        tokens = rng.integers(0, VOCAB, (self.batch_size, self.seq_len), dtype=np.int32)
        self.index += 1
        t = tokens[self.rows]
        return {"tokens": t, "loss_mask": np.ones(t.shape, np.float32)}

    def get_state(self):
        return {"index": self.index}

    def set_state(self, state):
        self.index = int(state["index"])


def build_data(config, *, split: str, process_index: int, process_count: int):
    seed = config.seed + (0 if split == "train" else 1000)
    return TinyData(seed, config.train.batch_size, config.data.seq_len, process_index,
                    process_count)


def tiny_config(**train_overrides) -> ml_collections.ConfigDict:
    """``eval_every`` / ``eval_batches`` among the overrides set the ``evals.eval`` block."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = ml_collections.ConfigDict(dict(source="tiny", seq_len=8))
    c.model = ml_collections.ConfigDict(dict(name="tiny_mlp", width=16, hidden=32, max_len=64))
    every, batches = train_overrides.pop("eval_every", 0), train_overrides.pop("eval_batches", 1)
    c.evals = ml_collections.ConfigDict({"eval": dict(kind="sums", split="validation", batches=batches,
                                                      every=every, ema=False)})
    c.method = ml_collections.ConfigDict(dict(name="tiny", stochastic=True))
    c.train = ml_collections.ConfigDict(dict(
        steps=6, batch_size=16, lr=1e-2, warmup_steps=2, schedule="cosine", final_lr_frac=0.1,
        weight_decay=0.01, b1=0.9, b2=0.99, eps=1e-8, grad_clip=1.0, ema_decay=0.9,
        microbatches=1, compute_dtype="float32", log_every=1, step_impl="jit"))
    c.train.update(train_overrides)
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, strategy="dp"))
    c.checkpoint = ml_collections.ConfigDict(dict(every=3, keep=3, async_save=True))
    return c
