"""Exact oracles: languages whose conditionals and likelihoods are known in closed form.

Two families (METHODS §1.4–1.5), used by tests AND benchmarks to certify losses and samplers
without training a network:

* ``MarkovChainLanguage`` — a first-order chain ``p(x) = π0(x¹) Π A(x^{ℓ-1}, x^ℓ)``. Exact
  per-position posteriors under *any* per-token evidence come from forward–backward in
  O(L V²): masked/clean tokens (MDLM), ``κ δ + (1-κ)/V`` (uniform-source DFM), soft evidence
  ``exp⟨z, e(v)⟩`` (DSL). Prefix conditionals (FeF) are evidence with clean prefixes.
* ``JointTable`` — an arbitrary table ``p*(x)`` over ``V^L`` sequences (tiny V, L); exact
  conditionals under any partial observation by summing entries.

Both expose the same protocol:

``log_prob(x)``                exact log-likelihood of integer sequences ``[..., L]``;
``posteriors(log_evidence)``   ``[..., L, V]`` log-evidence -> ``[..., L, V]`` posterior marginals;
``masked_posteriors(z, m)``    posteriors when tokens equal to ``m`` are masked, the rest observed;
``denoise_fn(m)``              a sampler-ready ``(z [B,L], t) -> log-probs [B,L,V]`` callable;
``dsl_denoise_fn(lang, e)``    the exact DSL denoiser ``z [B,L,d] -> log p(x^ℓ | z) [B,L,V]`` (module level);
``sample(key, n)``             exact draws ``[n, L]``;
``entropy()``                  exact ``H(p*)`` in nats.

Everything is ``jax.numpy`` and traceable (usable inside ``jit``/``lax.scan``); run it under
``jax.enable_x64(True)`` when a test needs 1e-12 agreement.
"""

from __future__ import annotations

import itertools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
DenoiseFn = Callable[..., Array]

__all__ = [
    "MarkovChainLanguage",
    "JointTable",
    "mask_log_evidence",
    "all_sequences",
    "empirical_law",
    "total_variation",
    "dsl_denoise_fn",
]


def mask_log_evidence(z: Array, mask_id: int, vocab_size: int) -> Array:
    """Log-evidence of a partially masked sequence: 0 everywhere at masked positions,
    0 at the observed value and -inf elsewhere at clean positions. ``[..., L] -> [..., L, V]``."""
    z = jnp.asarray(z)
    onehot = jax.nn.one_hot(jnp.where(z == mask_id, 0, z), vocab_size, dtype=bool)
    observed = jnp.where(onehot, 0.0, -jnp.inf)
    return jnp.where((z == mask_id)[..., None], 0.0, observed)


def all_sequences(vocab_size: int, length: int) -> np.ndarray:
    """Every sequence in ``[V]^L`` in lexicographic order, ``[V^L, L]`` int32 (row index =
    the sequence read as a base-V number)."""
    return np.array(list(itertools.product(range(vocab_size), repeat=length)), dtype=np.int32)


def empirical_law(samples: np.ndarray, vocab_size: int) -> np.ndarray:
    """Histogram of sequences ``[n, L]`` over ``[V]^L`` in ``all_sequences`` order, normalised."""
    samples = np.asarray(samples, dtype=np.int64)
    length = samples.shape[-1]
    index = samples @ (vocab_size ** np.arange(length - 1, -1, -1))
    counts = np.bincount(index, minlength=vocab_size**length)
    return counts / counts.sum()


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """½ Σ |p − q|."""
    return 0.5 * float(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())


def dsl_denoise_fn(lang, anchors) -> DenoiseFn:
    """Exact DSL denoiser (METHODS §4.1): ``(z [B, L, d], *unused) -> log p(x^ℓ | z) [B, L, V]``
    with soft evidence ``⟨z_ℓ, e(v)⟩`` (= ``processes.localization.log_evidence``). No SNR
    input: with unit-norm ``anchors [V, d]`` the posterior does not depend on it (s = 0 is
    "[MASK]", large s is clean)."""
    anchors = jnp.asarray(anchors)
    if anchors.ndim != 2 or anchors.shape[0] != lang.vocab_size:
        raise ValueError(f"anchors: shape {anchors.shape}; expected [{lang.vocab_size}, d]")

    def fn(z, *_, **__):
        ev = jnp.einsum("...d,vd->...v", z, anchors.astype(jnp.result_type(z)))
        # Subtract the per-position max (the posterior is unchanged): at high SNR the raw
        # evidence is ~s, and float32 forward-backward would lose ~s·1e-7 of log-precision.
        return jnp.log(lang.posteriors(ev - jnp.max(ev, axis=-1, keepdims=True)))

    return fn


class _ExactLanguage:
    """Shared methods; subclasses define ``vocab_size``, ``length``, ``posteriors``,
    ``log_prob``, ``sample`` and ``entropy``."""

    vocab_size: int
    length: int

    def masked_posteriors(self, z: Array, mask_id: int) -> Array:
        """Exact ``p(x^ℓ | unmasked part of z)`` for every ℓ, ``[..., L, V]``. At observed
        positions the result is the one-hot of the observed token."""
        return self.posteriors(mask_log_evidence(z, mask_id, self.vocab_size))

    def denoise_fn(self, mask_id: int) -> DenoiseFn:
        """Masked-diffusion denoiser: ``(z [B, L], t, **unused) -> log p(x^ℓ | z)`` over the V
        clean tokens. Ignores t (the exact conditional does not depend on it)."""

        def fn(z, t=None, **_):
            del t
            return jnp.log(self.masked_posteriors(z, mask_id))

        return fn

    def law(self) -> np.ndarray:
        """The full table ``p*(x)`` over ``all_sequences(V, L)`` (tiny V, L only)."""
        seqs = all_sequences(self.vocab_size, self.length)
        return np.exp(np.asarray(self.log_prob(jnp.asarray(seqs)), np.float64))


class MarkovChainLanguage(_ExactLanguage):
    """First-order Markov chain over ``V`` tokens and length ``L`` (METHODS §1.4)."""

    def __init__(self, initial: Array, transition: Array, length: int):
        initial = jnp.asarray(initial)
        transition = jnp.asarray(transition)
        v = initial.shape[-1]
        if transition.shape != (v, v):
            raise ValueError(f"transition: shape {transition.shape}; expected ({v}, {v})")
        if length < 1:
            raise ValueError(f"length: {length}; expected >= 1")
        self.initial, self.transition, self.length, self.vocab_size = initial, transition, length, v

    @classmethod
    def random(cls, seed: int, vocab_size: int, length: int, concentration: float = 0.5) -> "MarkovChainLanguage":
        """Dirichlet(concentration) initial distribution and transition rows (seeded numpy).
        Small concentrations give peaked, strongly dependent chains."""
        rng = np.random.default_rng(seed)
        initial = rng.dirichlet(np.full(vocab_size, concentration))
        transition = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size)
        return cls(initial, transition, length)

    def log_prob(self, x: Array) -> Array:
        """``log π0(x¹) + Σ log A(x^{ℓ-1}, x^ℓ)`` for ``x [..., L]``."""
        x = jnp.asarray(x)
        lp = jnp.log(self.initial)[x[..., 0]]
        return lp + jnp.log(self.transition)[x[..., :-1], x[..., 1:]].sum(-1)

    def _forward(self, log_evidence: Array) -> Array:
        """Log forward messages ``α_ℓ(v) = log p(evidence_{≤ℓ}, x^ℓ = v)``, ``[..., L, V]``."""
        log_a = jnp.log(self.transition).astype(log_evidence.dtype)
        ev = jnp.moveaxis(log_evidence, -2, 0)
        first = jnp.log(self.initial).astype(log_evidence.dtype) + ev[0]

        def step(alpha, e):
            nxt = jax.nn.logsumexp(alpha[..., :, None] + log_a, axis=-2) + e
            return nxt, nxt

        _, rest = jax.lax.scan(step, first, ev[1:])
        return jnp.moveaxis(jnp.concatenate([first[None], rest], 0), 0, -2)

    def posteriors(self, log_evidence: Array) -> Array:
        """Forward–backward posterior marginals ``p(x^ℓ | evidence)`` for log-evidence
        ``[..., L, V]`` (any per-token likelihood, up to a per-position constant)."""
        log_evidence = jnp.asarray(log_evidence)
        log_a = jnp.log(self.transition).astype(log_evidence.dtype)
        alpha = self._forward(log_evidence)
        ev = jnp.moveaxis(log_evidence, -2, 0)

        def back(beta, e):
            prev = jax.nn.logsumexp(log_a + (e + beta)[..., None, :], axis=-1)
            return prev, prev

        last = jnp.zeros_like(ev[0])
        _, betas = jax.lax.scan(back, last, ev[1:], reverse=True)
        beta = jnp.moveaxis(jnp.concatenate([betas, last[None]], 0), 0, -2)
        return jax.nn.softmax(alpha + beta, axis=-1)

    def log_marginal(self, log_evidence: Array) -> Array:
        """``log Σ_x p(x) Π_ℓ exp(log_evidence[ℓ, x^ℓ])``, ``[...]``."""
        return jax.nn.logsumexp(self._forward(jnp.asarray(log_evidence))[..., -1, :], axis=-1)

    def sample(self, key: Array, num: int) -> Array:
        """``num`` exact draws from the chain, ``[num, L]`` int32."""
        return self.sample_posterior(key, jnp.zeros((num, self.length, self.vocab_size)))

    def sample_posterior(self, key: Array, log_evidence: Array) -> Array:
        """Exact joint draws from ``p(x | evidence)`` by forward filtering, backward sampling.
        ``log_evidence [B, L, V] -> [B, L]``."""
        log_evidence = jnp.asarray(log_evidence)
        log_a = jnp.log(self.transition).astype(log_evidence.dtype)
        alpha = jnp.moveaxis(self._forward(log_evidence), -2, 0)
        keys = jax.random.split(key, self.length)
        last = jax.random.categorical(keys[-1], alpha[-1])

        def step(nxt, inputs):
            k, a = inputs
            cur = jax.random.categorical(k, a + log_a[:, nxt].T)
            return cur, cur

        _, xs = jax.lax.scan(step, last, (keys[:-1], alpha[:-1]), reverse=True)
        return jnp.moveaxis(jnp.concatenate([xs, last[None]], 0), 0, -1).astype(jnp.int32)

    def marginals(self) -> np.ndarray:
        """Unconditional per-position marginals ``p(x^ℓ)``, ``[L, V]`` (numpy float64)."""
        a = np.asarray(self.transition, np.float64)
        out = [np.asarray(self.initial, np.float64)]
        for _ in range(self.length - 1):
            out.append(out[-1] @ a)
        return np.stack(out)

    def entropy(self) -> float:
        """Exact ``H(p*) = H(π0) + Σ_{ℓ≥2} Σ_a p(x^{ℓ-1}=a) H(A[a])`` in nats."""
        a = np.asarray(self.transition, np.float64)
        pi = np.asarray(self.initial, np.float64)
        row_h = -(a * np.log(np.where(a > 0, a, 1.0))).sum(-1)
        h = -(pi * np.log(np.where(pi > 0, pi, 1.0))).sum()
        return float(h + (self.marginals()[:-1] @ row_h).sum())


class JointTable(_ExactLanguage):
    """An arbitrary joint ``p*(x)`` over ``[V]^L`` stored as a table (METHODS §1.5)."""

    def __init__(self, probs: Array, vocab_size: int, length: int):
        probs = np.asarray(probs, np.float64).reshape(-1)
        if probs.shape[0] != vocab_size**length:
            raise ValueError(f"probs: {probs.shape[0]} entries; expected V^L = {vocab_size ** length}")
        self.vocab_size, self.length = vocab_size, length
        self.probs = jnp.asarray(probs / probs.sum())
        self.sequences = jnp.asarray(all_sequences(vocab_size, length))

    @classmethod
    def random(cls, seed: int, vocab_size: int = 3, length: int = 4, concentration: float = 0.3,
               parity_weight: float = 0.5) -> "JointTable":
        """Dirichlet table with ``parity_weight`` of its mass moved onto sequences whose token
        sum is even: strong dependencies that independent per-token sampling cannot capture."""
        rng = np.random.default_rng(seed)
        base = rng.dirichlet(np.full(vocab_size**length, concentration))
        even = (all_sequences(vocab_size, length).sum(-1) % 2 == 0).astype(np.float64)
        parity = base * even
        probs = (1 - parity_weight) * base + parity_weight * parity / parity.sum()
        return cls(probs, vocab_size, length)

    @classmethod
    def from_product(cls, marginals: Array) -> "JointTable":
        """Independent tokens: ``p(x) = Π_ℓ q_ℓ(x^ℓ)`` from ``marginals [L, V]``."""
        q = np.asarray(marginals, np.float64)
        length, v = q.shape
        seqs = all_sequences(v, length)
        return cls(np.prod(q[np.arange(length), seqs], axis=-1), v, length)

    def log_prob(self, x: Array) -> Array:
        x = jnp.asarray(x)
        index = (x * (self.vocab_size ** jnp.arange(self.length - 1, -1, -1))).sum(-1)
        return jnp.log(self.probs)[index]

    def posteriors(self, log_evidence: Array) -> Array:
        """Exact marginals ``p(x^ℓ | evidence)`` by summing the table, ``[..., L, V]``."""
        log_evidence = jnp.asarray(log_evidence)
        pos = jnp.arange(self.length)
        seq_ev = log_evidence[..., pos, self.sequences].sum(-1)  # [..., S]
        logw = jnp.log(self.probs).astype(log_evidence.dtype) + seq_ev
        w = jax.nn.softmax(logw, axis=-1)
        onehot = jax.nn.one_hot(self.sequences, self.vocab_size, dtype=w.dtype)  # [S, L, V]
        return jnp.einsum("...s,slv->...lv", w, onehot)

    def sample(self, key: Array, num: int) -> Array:
        index = jax.random.categorical(key, jnp.log(self.probs), shape=(num,))
        return self.sequences[index]

    def law(self) -> np.ndarray:
        return np.asarray(self.probs, np.float64)

    def entropy(self) -> float:
        p = np.asarray(self.probs, np.float64)
        return float(-(p * np.log(np.where(p > 0, p, 1.0))).sum())
