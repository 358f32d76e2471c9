"""FeF-DLLM sampler against exact oracles (METHODS §5.6, T11).

* the single-position speculative step reproduces P (closed form to 1e-12; 10⁶ jitted draws);
* the end-to-end law equals p* on a parity-weighted JointTable for one step K = L, two steps
  K = 2 and random position sets: exactly by enumerating every draft/accept/resample branch
  (TV ≤ 1e-12) and by Monte Carlo of the jitted sampler (TV at the calibrated MC floor), while the
  standard independent sampler is far off; the same with fixed positions (``fixed``/``fixed_tokens``)
  against the exact conditional, per row;
* greedy mode equals sequential greedy decoding; the Markov-chain language keeps E log p* = −H
  at every step count while the standard sampler degrades; Lemma 1's product of experts on a toy
  noisy corruption; bad input.
"""

import itertools
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.samplers.llada import sample_llada
from dlm_jax.samplers.speculative import residual_logp, sample_fef, speculative_step
from dlm_jax.testing.oracles import (JointTable, MarkovChainLanguage, all_sequences, empirical_law,
                                     total_variation)

V, L, MASK = 3, 4, 3


@pytest.fixture(scope="module")
def table():
    with jax.enable_x64(True):  # float64 table: p* itself must be exact to 1e-12
        return JointTable.random(0, vocab_size=V, length=L)


# ----------------------------------------------------------------- single position


def _random_pairs(n, vocab=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(vocab, 0.7), n), rng.dirichlet(np.full(vocab, 0.7), n)


def test_single_step_closed_form():
    p, d = _random_pairs(200)
    mn = np.minimum(p, d)
    res = np.maximum(p - d, 0)
    law = mn + (1 - mn.sum(-1, keepdims=True)) * res / res.sum(-1, keepdims=True)
    assert np.abs(law - p).max() < 1e-12
    with jax.enable_x64(True):  # the kernel's own residual
        res_k = np.exp(np.asarray(residual_logp(jnp.log(p), jnp.log(d))))
    law_k = mn + (1 - mn.sum(-1, keepdims=True)) * res_k
    assert np.abs(law_k - p).max() < 1e-12


def test_single_step_monte_carlo():
    n = 1_000_000
    p, d = _random_pairs(1, seed=1)
    with jax.enable_x64(True):
        lp = jnp.broadcast_to(jnp.log(p[0]), (n, 5))
        ld = jnp.broadcast_to(jnp.log(d[0]), (n, 5))
        tok, acc = jax.jit(speculative_step)(jax.random.key(0), lp, ld)
    freq = np.bincount(np.asarray(tok), minlength=5) / n
    tv = total_variation(freq, p[0])
    print(f"single-step MC TV {tv:.2e}; acceptance {float(acc.mean()):.4f} vs {np.minimum(p, d).sum():.4f}")
    assert tv < 2e-3
    assert abs(float(acc.mean()) - np.minimum(p, d).sum()) < 5 * np.sqrt(0.25 / n)


# ----------------------------------------------------------------- exact law by enumeration


def _context_table(table):
    """f(c) for all (V+1)^L partially masked contexts, keyed by tuple."""
    ctxs = np.array(list(itertools.product(range(V + 1), repeat=L)), np.int32)
    with jax.enable_x64(True):
        post = np.asarray(table.masked_posteriors(jnp.asarray(ctxs), MASK), np.float64)
    return {tuple(c): post[i] for i, c in enumerate(ctxs)}


def _set(ctx, pos, val):
    out = list(ctx)
    out[pos] = val
    return tuple(out)


def _fef_round_law(f, ctx, slots, drafts):
    """Law of the final context after speculative rounds over ``slots`` (left to right) with
    ``drafts``: accept branch weight min(P, D)(v); rejection at slot i resamples y with weight
    (P − D)_+(y) and refreshes the remaining drafts from C^(i) = the current context."""
    out = defaultdict(float)

    def walk(c, i, w):
        if i == len(slots):
            out[c] += w
            return
        p, d = f[c][slots[i]], drafts[i]
        for v in range(V):
            if min(p[v], d[v]) > 0:
                walk(_set(c, slots[i], v), i + 1, w * min(p[v], d[v]))
        res = np.maximum(p - d, 0.0)
        fresh = [f[c][s] for s in slots[i + 1:]]
        for y in range(V):
            if res[y] > 0:
                for c2, w2 in _fef_round_law(f, _set(c, slots[i], y), slots[i + 1:], fresh).items():
                    out[c2] += w * res[y] * w2

    walk(ctx, 0, 1.0)
    return out


def _fef_step_law(f, ctx, slots):
    """One FeF step: slot 1 is committed straight from its draft f(ctx) (its target context is
    ctx itself), then rounds over the other slots with drafts f(ctx)."""
    out = defaultdict(float)
    d0 = f[ctx][slots[0]]
    for v in range(V):
        if d0[v] > 0:
            c = _set(ctx, slots[0], v)
            for c2, w2 in _fef_round_law(f, c, slots[1:], [f[ctx][s] for s in slots[1:]]).items():
                out[c2] += d0[v] * w2
    return out


def _vanilla_step_law(f, ctx, slots):
    out = {}
    for vals in itertools.product(range(V), repeat=len(slots)):
        c, w = ctx, 1.0
        for s, v in zip(slots, vals):
            w *= f[ctx][s][v]
            c = _set(c, s, v)
        out[c] = out.get(c, 0.0) + w
    return out


def _exact_law(f, k_schedule, selection, fef=True, start=None):
    states = {tuple(start) if start is not None else (MASK,) * L: 1.0}
    for k in k_schedule:
        nxt = defaultdict(float)
        for ctx, w in states.items():
            masked = [i for i in range(L) if ctx[i] == MASK]
            if selection == "random":
                sets = list(itertools.combinations(masked, k))
            else:  # marginal confidence, ties by position (stable sort)
                conf = {i: f[ctx][i].max() for i in masked}
                sets = [tuple(sorted(sorted(masked, key=lambda i: -conf[i])[:k]))]
            for slots in sets:
                law = _fef_step_law(f, ctx, slots) if fef else _vanilla_step_law(f, ctx, slots)
                for c2, w2 in law.items():
                    nxt[c2] += w * w2 / len(sets)
        states = nxt
    law = np.zeros(V**L)
    for ctx, w in states.items():
        law[int(np.dot(ctx, V ** np.arange(L - 1, -1, -1)))] += w
    return law


@pytest.mark.parametrize("k_schedule,selection", [((4,), "confidence"), ((2, 2), "confidence"),
                                                   ((2, 2), "random"), ((1, 3), "random")])
def test_exact_law_by_enumeration(table, k_schedule, selection):
    f = _context_table(table)
    fef = _exact_law(f, k_schedule, selection)
    vanilla = _exact_law(f, k_schedule, selection, fef=False)
    tv_fef, tv_van = total_variation(fef, table.law()), total_variation(vanilla, table.law())
    print(f"K={k_schedule} {selection}: FeF TV {tv_fef:.1e}, standard TV {tv_van:.3f}")
    assert abs(fef.sum() - 1) < 1e-12 and tv_fef <= 1e-12
    assert tv_van > 0.2


def _conditional(law, fixed, tokens):
    """p*(x | x_fixed = tokens_fixed) over ``all_sequences``."""
    w = law * (all_sequences(V, L)[:, fixed] == np.asarray(tokens)[fixed]).all(-1)
    return w / w.sum()


@pytest.mark.parametrize("k_schedule,selection", [((3,), "confidence"), ((1, 2), "random"), ((2, 1), "confidence")])
def test_exact_conditional_law_with_fixed_positions_by_enumeration(table, k_schedule, selection):
    """Fixed positions are part of every context and never candidates: FeF's law is p*(x | x1 = 2)."""
    f = _context_table(table)
    fixed, tokens = np.array([False, True, False, False]), np.array([0, 2, 0, 0])
    start = np.where(fixed, tokens, MASK)
    law = _exact_law(f, k_schedule, selection, start=start)
    want = _conditional(table.law(), fixed, tokens)
    tv, tv_van = total_variation(law, want), total_variation(_exact_law(f, k_schedule, selection, False, start), want)
    print(f"fixed x1=2, K={k_schedule} {selection}: FeF TV {tv:.1e}, standard TV {tv_van:.3f}")
    assert tv <= 1e-12 and tv_van > 0.05


def _mc_floor(p, n, reps=300, seed=0):
    """Mean and spread of TV(empirical, p) for n exact draws from p."""
    rng = np.random.default_rng(seed)
    tvs = [total_variation(rng.multinomial(n, p) / n, p) for _ in range(reps)]
    return float(np.mean(tvs)), float(np.std(tvs))


@pytest.mark.parametrize("k_schedule,selection,n", [((4,), "confidence", 100_000), ((2, 2), "confidence", 40_000),
                                                     ((1, 3), "random", 40_000), ((1, 1, 2), "confidence", 40_000)])
def test_end_to_end_monte_carlo(table, k_schedule, selection, n):
    """The jitted sampler itself against p* (exactness proper is the enumeration above; this checks
    the compiled code path: free first slots, lookahead drafts across steps, draft calls after a
    last-slot rejection or K = 1, compacted calls); the standard sampler's exact law for comparison.
    Accounting identities: nfe = draft calls + rounds; the first step always drafts."""
    fn = table.denoise_fn(MASK)
    with jax.enable_x64(True):
        tok, info = sample_fef(fn, jax.random.key(len(k_schedule)), num_samples=n, length=L, steps=len(k_schedule),
                               mask_id=MASK, vocab_size=V, k_schedule=k_schedule, selection=selection)
        f = _context_table(table)
    law = table.law()
    tv = total_variation(empirical_law(np.asarray(tok), V), law)
    floor, spread = _mc_floor(law, n)
    tv_std = total_variation(_exact_law(f, k_schedule, selection, fef=False), law)
    info = {k: np.asarray(v) for k, v in info.items()}
    print(f"MC K={k_schedule} {selection}: FeF TV {tv:.4f} (floor {floor:.4f} ± {spread:.4f}); standard TV "
          f"{tv_std:.3f}; nfe {info['nfe'].mean():.3f}, rows {info['rows'].mean():.3f}, rounds/step "
          f"{info['rounds'].mean(0)}, batched calls {int(info['nfe_batched'])}, rows {int(info['rows_batched']) / n:.3f}/sample")
    assert tv < floor + 4 * spread
    assert tv_std > 0.1
    np.testing.assert_array_equal(info["nfe"], info["draft_calls"] + info["rounds"].sum(1))
    assert info["draft_calls"].min() >= 1 + sum(k == 1 for k in k_schedule[:-1])
    np.testing.assert_array_equal(info["rounds"][:, np.asarray(k_schedule) == 1], 0)  # K = 1: no rounds
    assert np.all(info["rounds"] <= np.maximum(np.asarray(k_schedule) - 1, 0))


def test_end_to_end_conditioning_per_row_monte_carlo(table):
    """The jitted sampler with ``fixed`` ``[B, L]``: one half of the rows clamps x1 = 2, the other
    x0 = 1 and x3 = 0 (no common prefix: one block over L; K = (2, 1) and (1, 1)). Each half follows
    its exact conditional; traced ``fixed_tokens`` (prompts as jit arguments) give the same tokens."""
    n = 20_000
    rows = [(np.array([False, True, False, False]), np.array([0, 2, 0, 0])),
            (np.array([True, False, False, True]), np.array([1, 0, 0, 0]))]
    fixed = np.repeat(np.stack([r[0] for r in rows]), n, axis=0)
    tokens = np.repeat(np.stack([r[1] for r in rows]), n, axis=0)
    fn = table.denoise_fn(MASK)
    common = dict(num_samples=2 * n, length=L, steps=2, mask_id=MASK, vocab_size=V, fixed=fixed)
    with jax.enable_x64(True):
        tok, info = sample_fef(fn, jax.random.key(11), fixed_tokens=tokens, **common)
        traced, _ = jax.jit(lambda t: sample_fef(fn, jax.random.key(11), fixed_tokens=t, **common))(jnp.asarray(tokens))
    tok = np.asarray(tok)
    np.testing.assert_array_equal(np.asarray(traced), tok)
    np.testing.assert_array_equal(tok[fixed], tokens[fixed])
    np.testing.assert_array_equal(np.asarray(info["k"])[[0, -1]], [[2, 1], [1, 1]])
    for half, (mask, prompt) in enumerate(rows):
        want = _conditional(table.law(), mask, prompt)
        tv = total_variation(empirical_law(tok[half * n:(half + 1) * n], V), want)
        floor, spread = _mc_floor(want, n)
        print(f"fixed {mask.astype(int)}: FeF TV {tv:.4f} (floor {floor:.4f} ± {spread:.4f})")
        assert tv < floor + 4 * spread


# ----------------------------------------------------------------- greedy


def _greedy_reference(denoise, steps_k, vocab, length, mask):
    """Sequential greedy: each step takes its top-K positions by marginal confidence, then decodes
    them left to right, each from the model on the prefix-filled context."""
    z = np.full((1, length), mask, np.int32)
    for k in steps_k:
        q = np.asarray(denoise(jnp.asarray(z), None))[0]
        masked = np.flatnonzero(z[0] == mask)
        order = masked[np.argsort(-q[masked].max(-1), kind="stable")][:k]
        for j in sorted(order):
            z[0, j] = int(np.argmax(np.asarray(denoise(jnp.asarray(z), None))[0, j]))
    return z[0]


@pytest.mark.parametrize("which,steps", [("table", 1), ("chain", 4)])
def test_greedy_equals_sequential_greedy(table, which, steps):
    with jax.enable_x64(True):
        lang = table if which == "table" else MarkovChainLanguage.random(1, vocab_size=8, length=16)
        vocab, length = lang.vocab_size, lang.length
        fn = jax.jit(lang.denoise_fn(vocab))
        tok, info = sample_fef(fn, jax.random.key(0), num_samples=1, length=length, steps=steps, mask_id=vocab,
                               vocab_size=vocab, temperature=0.0)
        ref = _greedy_reference(fn, [length // steps] * steps, vocab, length, vocab)
    print(f"greedy {which}: rounds per step {np.asarray(info['rounds'])[0]}")
    np.testing.assert_array_equal(np.asarray(tok)[0], ref)


# ----------------------------------------------------------------- compacted calls


def test_compaction_changes_cost_not_samples():
    """Compacted calls evaluate only the needed rows: with the same key the tokens and per-sample
    accounting are identical to the full padded batch (row_buckets=0), the physical rows fewer."""
    with jax.enable_x64(True):
        chain = MarkovChainLanguage.random(2, vocab_size=8, length=16)
        common = dict(num_samples=500, length=16, steps=4, mask_id=8, vocab_size=8)
        tok_c, info_c = sample_fef(chain.denoise_fn(8), jax.random.key(7), **common)
        tok_f, info_f = sample_fef(chain.denoise_fn(8), jax.random.key(7), row_buckets=0, **common)
    np.testing.assert_array_equal(np.asarray(tok_c), np.asarray(tok_f))
    for name in ("nfe", "rows", "rounds", "draft_calls", "accepted", "rejected"):
        np.testing.assert_array_equal(np.asarray(info_c[name]), np.asarray(info_f[name]))
    useful, phys_c, phys_f = (float(np.asarray(info_c["rows"]).sum()), int(info_c["rows_batched"]),
                              int(info_f["rows_batched"]))
    print(f"rows per sample: useful {useful / 500:.2f}, compacted {phys_c / 500:.2f}, padded {phys_f / 500:.2f}")
    assert useful <= phys_c <= 2 * useful + int(info_c["nfe_batched"]) * 500 * 5 / 64 and phys_c < phys_f / 2


# ----------------------------------------------------------------- Markov-chain language


def test_markov_chain_log_likelihood_flat_in_steps():
    fef_ll, std_ll = {}, {}
    with jax.enable_x64(True):
        chain = MarkovChainLanguage.random(2, vocab_size=8, length=16)
        fn, h, n = chain.denoise_fn(8), chain.entropy(), 1000
        for steps in (1, 2, 4, 16):
            common = dict(num_samples=n, length=16, steps=steps, mask_id=8, vocab_size=8)
            tok, info = sample_fef(fn, jax.random.key(steps), **common)
            lp = np.asarray(chain.log_prob(tok))
            fef_ll[steps] = (lp.mean(), lp.std(ddof=1) / np.sqrt(n), np.asarray(info["nfe"]).mean())
            if steps == 2:
                continue  # standard sampler at 1, 4, 16 steps suffices to show the trend
            tok, _ = sample_llada(fn, jax.random.key(100 + steps), selection="confidence", temperature=1.0,
                                  **common)
            lp = np.asarray(chain.log_prob(tok))
            std_ll[steps] = (lp.mean(), lp.std(ddof=1) / np.sqrt(n))
    for steps in fef_ll:
        print(f"steps {steps:2d}: -H {-h:.3f} | FeF {fef_ll[steps][0]:.3f} ± {fef_ll[steps][1]:.3f} "
              f"(nfe {fef_ll[steps][2]:.2f}) | standard {std_ll.get(steps, (np.nan, np.nan))[0]:.3f}")
        assert abs(fef_ll[steps][0] + h) < 3 * fef_ll[steps][1]
    assert abs(std_ll[16][0] + h) < 3 * std_ll[16][1]  # K = 1 per step: exact
    assert std_ll[1][0] < std_ll[4][0] < std_ll[16][0]
    assert std_ll[1][0] + h < -10 * std_ll[1][1]


# ----------------------------------------------------------------- Lemma 1 (noisy corruption)


def _noisy_denoiser(table, kappa):
    """State ids: clean 0..V-1, mask V, noisy observation y as V+1+y with channel κδ + (1-κ)/V."""
    chan = np.log(kappa * np.eye(V) + (1 - kappa) / V)  # [y, x]

    def fn(z, t=None):
        clean = jnp.where(jnp.arange(V) == z[..., None], 0.0, -jnp.inf)
        noisy = jnp.asarray(chan)[jnp.clip(z - V - 1, 0, V - 1)]
        ev = jnp.where((z < V)[..., None], clean, jnp.where((z == V)[..., None], 0.0, noisy))
        return jnp.log(table.posteriors(ev))
    return fn, chan


def test_poe_target_on_noisy_corruption(table):
    kappa, y, n = 0.6, np.array([0, 2, 1, 1]), 40_000
    fn, chan = _noisy_denoiser(table, kappa)
    seqs = all_sequences(V, L)
    target = table.law() * np.exp(chan[y[None, :], seqs].sum(-1))
    target /= target.sum()
    with jax.enable_x64(True):
        # Lemma 1 identity on one context: f(X_t)_i f(C_del)_i / f(X_t,del)_i ∝ f(C)_i.
        xt = jnp.asarray(V + 1 + y)[None]
        ctx = xt.at[0, 0].set(2)
        q, g = fn(xt)[0, 1], fn(ctx.at[0, 1].set(V))[0, 1]
        h, direct = fn(xt.at[0, 1].set(V))[0, 1], fn(ctx)[0, 1]
        poe = jax.nn.softmax(q + g - h)
        assert float(jnp.abs(poe - jnp.exp(direct)).max()) < 1e-12
        tok, info = sample_fef(fn, jax.random.key(0), num_samples=n, length=L, steps=2, mask_id=V, vocab_size=V,
                               undecided_init=V + 1 + y, target="poe", selection="random")
    tv = total_variation(empirical_law(np.asarray(tok), V), target)
    floor, spread = _mc_floor(target, n)
    print(f"PoE noisy: TV {tv:.4f} (floor {floor:.4f} ± {spread:.4f}); nfe {np.asarray(info['nfe']).mean():.2f}")
    assert tv < floor + 4 * spread


# ----------------------------------------------------------------- bad input


def _ok(z, t):
    return jnp.zeros(z.shape + (V,))


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(steps=0), r"^steps: 0; expected an int >= 1$"),
    (dict(steps=5), r"^steps: 5; expected <= 1 x 4"),
    (dict(block_length=3), r"^block_length: 3; expected a divisor of the generated length 4$"),
    (dict(block_length=2, steps=3), r"^steps: 3; expected a multiple of the number of blocks \(2\)$"),
    (dict(k_schedule=(3, 3), steps=2), r"^k_schedule: \(3, 3\); expected at most the 4 undecided .*K larger"),
    (dict(k_schedule=(2,), steps=1), r"^k_schedule: \(2,\); expected block 0 steps summing"),
    (dict(fixed=np.array([False, False, True, True]), fixed_tokens=np.array([0, 0, 1, 2]), block_length=2, steps=2),
     r"^fixed: 'block 1 \(positions 2..3\) with no free position'"),
    (dict(fixed=np.ones(L, bool), fixed_tokens=np.zeros(L, int)), r"^fixed: 'every position fixed'"),
    (dict(fixed=np.array([True, False, False, False]), fixed_tokens=np.array([V, 0, 0, 0])),
     r"^fixed_tokens: values \[3\]; expected ids in \[0, 3\)$"),
    (dict(fixed=np.array([True, False, False, False])), r"^fixed_tokens: missing;"),
    (dict(undecided_init=np.array([MASK, 1, MASK, MASK])), r"^undecided_init: 'ids \[1\] at free positions'"),
    (dict(undecided_init=np.array([MASK, -1, MASK, MASK])), r"^undecided_init: 'ids \[-1\] at free positions'"),
    (dict(denoise_fn=lambda z, t: jnp.zeros(z.shape + (V + 1,))),
     r"^denoise_fn: output width 4; expected vocab_size 3"),
    (dict(selection="low_confidence"), r"^selection: 'low_confidence'; expected one of"),
    (dict(target="joint"), r"^target: 'joint'; expected"),
    (dict(temperature=-1.0), r"^temperature: -1.0; expected"),
    (dict(mask_id=1), r"^mask_id: 1; expected an int >= vocab_size = 3"),
    (dict(mask_id=-1), r"^mask_id: -1; expected an int >= vocab_size = 3"),
    (dict(row_buckets=-1), r"^row_buckets: -1; expected an int >= 0 and <= 16$"),
])
def test_bad_input(kwargs, pattern):
    args = dict(denoise_fn=_ok, key=jax.random.key(0), num_samples=2, length=L, steps=1, mask_id=MASK, vocab_size=V)
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern) as err:
        sample_fef(args.pop("denoise_fn"), args.pop("key"), **args)
    assert "\n" not in str(err.value)
