"""Expected speculative rounds and speed-up of a FeF-DLLM step (METHODS §5.4), beside measured ones.

Model: every (target P, draft D) pair of a step has the same overlap ``a = Σ_v min(P, D)(v)``
(= 1 − TV), so each proposal is accepted independently w.p. ``a``. A round with ``n`` remaining
positions commits ``N`` of them, ``P(N = k) = a^{k−1}(1 − a)`` (k < n), ``P(N = n) = a^{n−1}``, and

    R(0) = 0,   R(n) = 1 + Σ_{k=1}^{n} P(N = k) R(n − k),      S(K, a) = K / R(K).

Every position is proposed exactly once in a step and a round ends at each rejection that is not at
the last position, so ``R(K) = 1 + (K − 1)(1 − a)`` in closed form, and ``S → 1/(1 − a)`` as
``K → ∞`` (``S → K`` as ``a → 1``).

FeF refinements (``speculative.py``): the first slot of a step is proposed from ``f(X_t)``, the
very context its target is computed from, so it is committed without verification; the rounds of a
step cover the other ``K − 1`` slots, ``R(K − 1)`` rounds in expectation (``step_rounds``, 0 for
``K = 1``). A step's drafts come for free from the previous step's lookahead row unless that step
ended with a rejection at its last slot (probability ``1 − a``) or had ``K = 1``: then one draft
call. Rows: a round evaluates one row per remaining slot, ``W(n) = n + Σ_k P(N = k) W(n − k)``, plus
one lookahead row (none in the last step). ``schedule_cost`` adds these up over a step schedule.
"""

from __future__ import annotations

import numpy as np

__all__ = ["round_law", "rounds_recursion", "rounds_closed_form", "step_rounds", "speedup", "speedup_large_k",
           "rows_recursion", "schedule_cost", "acceptance_rate", "rounds_report"]


def round_law(n: int, a: float) -> np.ndarray:
    """``P(N = k)`` for ``k = 1..n`` tokens committed by a round with ``n`` remaining positions."""
    k = np.arange(1, n + 1, dtype=np.float64)
    law = a ** (k - 1) * (1.0 - a)
    law[-1] = a ** (n - 1)
    return law


def _recursion(kmax: int, a: float, cost) -> np.ndarray:
    out = np.zeros(kmax + 1)
    for n in range(1, kmax + 1):
        law = round_law(n, a)
        out[n] = cost(n) + law @ out[n - 1::-1]  # Σ_k P(N = k) out[n − k]
    return out


def rounds_recursion(k: int, a: float) -> float:
    """Expected rounds ``R(K, a)`` by the exact recursion."""
    return float(_recursion(int(k), float(a), lambda n: 1.0)[int(k)])


def rounds_closed_form(k, a):
    """``R(K, a) = 1 + (K − 1)(1 − a)`` for ``K ≥ 1`` (0 for ``K = 0``); array friendly."""
    k = np.asarray(k, np.float64)
    return np.where(k > 0, 1.0 + (k - 1.0) * (1.0 - np.asarray(a, np.float64)), 0.0)


def step_rounds(k, a):
    """Expected rounds of a FeF step, whose first slot is free: ``R(K − 1, a)`` (0 for ``K ≤ 1``)."""
    return rounds_closed_form(np.asarray(k, np.float64) - 1.0, a)


def speedup(k: int, a: float) -> float:
    """``S(K, a) = K / R(K, a)``: sequential calls of exact one-by-one decoding over rounds."""
    return float(k) / rounds_recursion(k, a)


def speedup_large_k(a: float) -> float:
    """``lim_{K→∞} S(K, a) = 1 / (1 − a)``."""
    return float("inf") if a >= 1.0 else 1.0 / (1.0 - a)


def rows_recursion(k: int, a: float) -> float:
    """Expected useful batch rows over a step's rounds, ``W(K, a)``."""
    return float(_recursion(int(k), float(a), float)[int(k)])


def schedule_cost(ks, a: float) -> dict:
    """Expected per-sample cost of FeF over a step schedule ``ks`` (committed count per step) at
    constant overlap ``a``: ``nfe`` (draft calls + rounds), ``rows`` (draft rows + verification rows
    + lookahead rows), ``rounds`` and ``draft_calls``."""
    ks = [int(k) for k in ks]
    rounds = [float(step_rounds(k, a)) for k in ks]
    # Step s > 0 needs a draft call unless step s − 1 ended on an all-accepting round (K ≥ 2).
    drafts = 1.0 + sum(1.0 if k == 1 else 1.0 - a for k in ks[:-1])
    verify = sum(rows_recursion(k - 1, a) for k in ks)
    look = sum(rounds[:-1])
    return dict(nfe=drafts + sum(rounds), rows=drafts + verify + look, rounds=sum(rounds), draft_calls=drafts)


def acceptance_rate(info: dict) -> float:
    """Measured acceptance rate of verified proposals, ``accepted / (accepted + rejected)``, from a
    sampler's info (the free first slots are not proposals)."""
    acc = float(np.sum(np.asarray(info["accepted"])))
    rej = float(np.sum(np.asarray(info["rejected"])))
    return acc / max(acc + rej, 1.0)


def rounds_report(info: dict, a: float) -> list[dict]:
    """Per step: K, measured mean rounds ± standard error, and the recursion ``R(K, a)`` and FeF
    step prediction ``R(K − 1, a)`` beside it (K taken from the first sample)."""
    rounds = np.asarray(info["rounds"], np.float64)
    ks = np.asarray(info["k"])
    rows = []
    for s in range(rounds.shape[1]):
        k = int(ks[0, s])
        rows.append(dict(step=s, k=k, measured=rounds[:, s].mean(),
                         stderr=rounds[:, s].std(ddof=1) / np.sqrt(max(rounds.shape[0], 2) - 1),
                         recursion=rounds_recursion(k, a), fef_step=float(step_rounds(k, a))))
    return rows
