"""FS-DFM training pieces: (t, h) sampling policies, the RK-4 / Heun shortcut teachers and the
distillation KL (METHODS §6.3). Pure functions, jit/scan friendly; used by ``methods.fsdfm``.

Time direction: **t = 0 is the source (mask or uniform noise), t = 1 is the data.**

(t, h) policies over ``H = {1, 1/2, …, 1/N_ref}`` (``N_ref`` a power of two; ``h = 2^-k``,
``k = 0..K``, ``K = log2 N_ref``), then ``t = j/N_ref`` with ``j ~ U{0, …, N_ref − N_ref·h}``, so
``t + h ≤ 1`` exactly (integer arithmetic):

* ``"inverse_h"`` (default, the repository's ``dt_weights = [1, 2, …, 1024]``):
  ``P(h = 2^-k) = 2^k / (2^{K+1} − 1)`` (h = 1/1024 in ≈ 50% of draws for N_ref = 1024);
* ``"uniform"``: ``1/(K+1)`` each;
* ``"large_h"``: the mirror image, ``P(h = 2^-k) ∝ 2^{K−k}`` (emphasis on the largest steps);
* ``"annealed"`` (``dt_weights_2``): weights ``min(2^k · 2^m, 2^K)`` with
  ``m = ⌊step / anneal_every⌋`` — inverse_h at step 0, uniform once ``m ≥ K``.

Teachers (``denoise_fn(x, t, h) -> logits or log-probs [B, L, V]``, here the EMA student under
stop-gradient), with ``h' = h/2``, ``t_m = t + h/2``, ``t_e = t + h`` and ``Jump`` the cumulative-scalar
step of ``processes.flow.jump``:

* ``rk4`` with ``labels="faithful"`` (default, the reference code exactly):
  ``ℓ1 = f(x_t, t, h')``, ``x¹ = Jump(x_t; t, h')``, ``ℓ2 = f(x¹, t_m, h')``, ``x² = Jump(x¹; t_m, h')``,
  ``ℓ3 = f(x², t_m, h')``, ``x³ = Jump(x²; t_m, h')``, ``ℓ4 = f(x³, t_e, h')`` — the chained states
  x², x³ have advanced h and 1.5h but are labelled t_m and t_e;
* ``rk4`` with ``labels="consistent"`` (classical RK-4 stages: every stage state starts from x_t,
  so each label is the time its state is actually at): ``x¹ = Jump(x_t, ℓ1; t, h')``,
  ``x² = Jump(x_t, ℓ2; t, h')``, ``x³ = Jump(x_t, ℓ3; t, h)``; the model sees the same
  ``(t, t_m, t_m, t_e)`` and ``h'`` as in the faithful variant;
* target ``ℓ_T = (ℓ1 + 2ℓ2 + 2ℓ3 + ℓ4)/6`` (a weighted geometric mean of the four distributions);
* ``heun``: ``ℓ_T = (ℓ1 + ℓ2)/2`` with ``ℓ2 = f(x¹, t_m, h')``.

``RK4_STAGES`` states each variant as a table (which state a stage jumps from, the jump's
interval, the time the result is evaluated at); ``teacher_logits`` follows it literally.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.processes import flow
from dlm_jax.samplers.jump import jump

__all__ = [
    "POLICIES",
    "TEACHERS",
    "LABELS",
    "RK4_STAGES",
    "check_n_ref",
    "step_sizes",
    "policy_log_weights",
    "policy_probs",
    "sample_t_h",
    "anchor_threshold",
    "teacher_logits",
    "distill_kl",
]

POLICIES = ("inverse_h", "uniform", "large_h", "annealed")
TEACHERS = ("rk4", "heun")
LABELS = ("faithful", "consistent")

# Stage table: (jump from state index, jump start "t"|"t_m", jump length "h'"|"h", evaluate at).
# State 0 is x_t; stage s produces state s from `from` and is then evaluated by the model.
RK4_STAGES = {
    "faithful": ((0, "t", "h'", "t_m"), (1, "t_m", "h'", "t_m"), (2, "t_m", "h'", "t_e")),
    "consistent": ((0, "t", "h'", "t_m"), (0, "t", "h'", "t_m"), (0, "t", "h", "t_e")),
}
RK4_WEIGHTS = (1.0, 2.0, 2.0, 1.0)


def check_n_ref(n_ref) -> int:
    """``N_ref``: an int power of two >= 1 (so that every h in H lies on the t grid)."""
    if isinstance(n_ref, bool) or not isinstance(n_ref, (int, np.integer)) or n_ref < 1 or n_ref & (n_ref - 1):
        raise ValueError(f"n_ref: {n_ref!r}; expected a power of two >= 1 (1024 in the paper)")
    return int(n_ref)


def step_sizes(n_ref: int) -> np.ndarray:
    """``H = [1, 1/2, …, 1/N_ref]`` (float64, index k holds ``2^-k``)."""
    n_ref = check_n_ref(n_ref)
    return 2.0 ** -np.arange(int(math.log2(n_ref)) + 1)


def _check_policy(policy: str, anneal_every) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy: {policy!r}; expected one of {POLICIES}")
    if policy == "annealed" and (isinstance(anneal_every, bool) or not isinstance(anneal_every, (int, np.integer))
                                 or anneal_every < 1):
        raise ValueError(f"anneal_every: {anneal_every!r}; expected an int >= 1")


def policy_log_weights(policy: str, n_ref: int, step=0, anneal_every: int = 20_000):
    """Unnormalised log-weights ``[K+1]`` over ``H`` (index k: ``h = 2^-k``). ``step`` may be traced
    (the annealed policy reads the global step)."""
    _check_policy(policy, anneal_every)
    big_k = int(math.log2(check_n_ref(n_ref)))
    k = jnp.arange(big_k + 1, dtype=jnp.float32)
    ln2 = math.log(2.0)
    if policy == "inverse_h":
        return k * ln2
    if policy == "uniform":
        return jnp.zeros_like(k)
    if policy == "large_h":
        return (big_k - k) * ln2
    m = (jnp.asarray(step, jnp.int32) // int(anneal_every)).astype(jnp.float32)
    return jnp.minimum(k + m, float(big_k)) * ln2


def policy_probs(policy: str, n_ref: int, step: int = 0, anneal_every: int = 20_000) -> np.ndarray:
    """Exact ``P(h = 2^-k)``, ``[K+1]`` float64 (for tests and logs)."""
    _check_policy(policy, anneal_every)
    big_k = int(math.log2(check_n_ref(n_ref)))
    k = np.arange(big_k + 1)
    if policy == "inverse_h":
        w = 2.0**k
    elif policy == "uniform":
        w = np.ones(big_k + 1)
    elif policy == "large_h":
        w = 2.0 ** (big_k - k)
    else:
        w = 2.0 ** np.minimum(k + int(step) // int(anneal_every), big_k)
    return w / w.sum()


def sample_t_h(key, batch_size: int, *, policy: str = "inverse_h", n_ref: int = 1024, step=0,
               anneal_every: int = 20_000, dtype=None):
    """Draw ``(t [B], h [B])``: ``h`` from the policy over H, ``t = j/N_ref`` with
    ``j ~ U{0, …, N_ref − N_ref·h}`` (t: 0 = source, 1 = data; ``t + h ≤ 1`` exactly)."""
    dtype = dtype or jnp.result_type(float)
    n_ref = check_n_ref(n_ref)
    k_h, k_t = jax.random.split(key)
    logw = policy_log_weights(policy, n_ref, step, anneal_every)
    idx = jax.random.categorical(k_h, logw, shape=(batch_size,))
    h_units = jnp.right_shift(jnp.int32(n_ref), idx.astype(jnp.int32))  # N_ref · h, an int
    j = jax.random.randint(k_t, (batch_size,), 0, n_ref - h_units + 1)
    return j.astype(dtype) / n_ref, h_units.astype(dtype) / n_ref


def anchor_threshold(n_ref: int) -> float:
    """``h_th = 1/(N_ref/2 + 1)``: only ``h = 1/N_ref`` lies below it (for N_ref ≥ 2)."""
    return 1.0 / (check_n_ref(n_ref) / 2 + 1)


def _normalise(out):
    out = jnp.asarray(out)
    return jax.nn.log_softmax(out.astype(jnp.promote_types(out.dtype, jnp.float32)), -1)


def teacher_logits(denoise_fn, key, x, t, h, *, teacher: str = "rk4", labels: str = "faithful",
                   schedule="linear", categorical_method: str = "auto"):
    """Shortcut-teacher target ``ℓ_T [B, L, V]`` (log-probs) for a step of size h from ``(x, t)``.

    ``denoise_fn(x [B, L], t [B], h [B]) -> [B, L, V]`` (logits or log-probs; normalised here);
    t: 0 = source, 1 = data; ``t + h ≤ 1``. No stop-gradient here: the caller passes EMA params
    under ``jax.lax.stop_gradient``. See the module docstring for the stage tables."""
    if teacher not in TEACHERS:
        raise ValueError(f"teacher: {teacher!r}; expected one of {TEACHERS}")
    if labels not in LABELS:
        raise ValueError(f"labels: {labels!r}; expected one of {LABELS}")
    flow.check_step(t, h)
    x, t, h = jnp.asarray(x), jnp.asarray(t), jnp.asarray(h)
    half = h / 2.0
    times = {"t": t, "t_m": jnp.minimum(t + half, 1.0), "t_e": jnp.minimum(t + h, 1.0)}
    lengths = {"h'": half, "h": h}
    stages = RK4_STAGES[labels][:1] if teacher == "heun" else RK4_STAGES[labels]
    weights = (1.0, 1.0) if teacher == "heun" else RK4_WEIGHTS
    keys = jax.random.split(key, len(stages))
    states = [x]
    outs = [_normalise(denoise_fn(x, t, half))]
    for (src, start, length, at), k in zip(stages, keys):
        # Jump with the previous stage's output from the stage's source state.
        nxt = jump(k, states[src], outs[-1], times[start], lengths[length], schedule,
                        categorical_method=categorical_method)
        states.append(nxt)
        outs.append(_normalise(denoise_fn(nxt, times[at], half)))
    return sum(w * o for w, o in zip(weights, outs)) / sum(weights)


def distill_kl(teacher_logits_, student_logits, tau: float = 1.0):
    """Per-position ``τ² KL(softmax(ℓ_T/τ) ‖ softmax(ℓ_S/τ))``, ``[B, L]``; exact 0 terms where the
    teacher puts no mass (no ``0·(−inf)``)."""
    lt = jax.nn.log_softmax(jnp.asarray(teacher_logits_) / tau, -1)
    ls = jax.nn.log_softmax(jnp.asarray(student_logits) / tau, -1)
    pt = jnp.exp(lt)
    diff = jnp.where(pt > 0, lt - jnp.where(pt > 0, ls, 0.0), 0.0)
    return (tau**2) * jnp.sum(pt * diff, -1)
