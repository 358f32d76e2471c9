"""LLaDA block plan and standard sampler under the one conditioning API (``fixed``/``fixed_tokens``).

* the block layout: blocks start after the prefix fixed in every sample and cover the rest;
  fixed positions inside a block are not generated (numbers of the plan);
* exactness: one token per step (K = 1) decodes the exact conditional, so with a fixed prompt
  per row the output law is p*(x | prompt) of the JointTable, by Monte Carlo at the noise floor;
  with K = 2 in one step the standard sampler's exact law is the product of the conditional
  marginals (its factorisation error), also matched by Monte Carlo;
* a traced ``fixed_tokens`` (prompts as jit arguments) gives the same tokens as concrete ones;
* the default temperature is LLaDA's (0: greedy), checked against a hand-run greedy decode.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.samplers.llada import make_plan, sample_llada
from dlm_jax.testing.oracles import JointTable, all_sequences, empirical_law, total_variation

V, L = 3, 4


def _ok(z, t):
    return jnp.zeros(z.shape + (V,))


def _plan(**kw):
    args = dict(num_samples=2, length=8, steps=3, vocab_size=V)
    args.update(kw)
    return make_plan(lambda z, t: jnp.zeros(z.shape + (V,)), **args)


def test_blocks_start_after_the_common_fixed_prefix():
    prefix = np.arange(8) < 2
    plan, state = _plan(fixed=prefix, fixed_tokens=np.array([1, 2, 0, 0, 0, 0, 0, 0]), block_length=2)
    assert plan.block_start == (2, 4, 6) and plan.block_end == (4, 6, 8) and plan.steps_left == (1, 1, 1)
    np.testing.assert_array_equal(np.asarray(state), [[1, 2] + [V] * 6] * 2)
    # Ragged prompts [B, L]: blocks start after the prefix fixed in EVERY sample (2); the longer prompt's
    # third token sits inside block 0, which then has one free position for that sample.
    ragged = np.stack([np.arange(8) < 2, np.arange(8) < 3])
    plan, state = _plan(fixed=ragged, fixed_tokens=np.ones((2, 8), int), block_length=2)
    assert plan.block_start == (2, 4, 6) and plan.k_max == 2
    np.testing.assert_array_equal(np.asarray(state)[1], [1, 1, 1] + [V] * 5)
    # Scattered fixed positions (no common prefix): blocks cover the whole sequence.
    scattered = np.zeros(8, bool)
    scattered[[1, 6]] = True
    plan, _ = _plan(fixed=scattered, fixed_tokens=np.zeros(8, int), block_length=4, steps=2)
    assert plan.block_start == (0, 4) and plan.k_max == 3
    # No conditioning: one block over everything.
    plan, _ = _plan(steps=4)
    assert plan.block_start == (0,) * 4 and plan.block_end == (8,) * 4 and plan.k_max == 2


def test_plan_errors_name_the_conditioning():
    for kw, pattern in ((dict(fixed=np.arange(8) >= 6, fixed_tokens=np.zeros(8, int), block_length=2, steps=4),
                         r"^fixed: 'block 3 \(positions 6..7\) with no free position'"),
                        (dict(fixed=np.ones(8, bool), fixed_tokens=np.zeros(8, int)),
                         r"^fixed: 'every position fixed'"),
                        (dict(fixed=np.arange(8) < 2, fixed_tokens=np.zeros(8, int), block_length=4),
                         r"^block_length: 4; expected a divisor of the generated length 6$"),
                        (dict(undecided_init=np.zeros(8, int)), r"^undecided_init: 'ids \[0\] at free positions'"),
                        (dict(undecided_init=np.zeros(8)), r"^undecided_init: 'shape \(8,\) dtype float"),
                        (dict(mask_id=2), r"^mask_id: 2; expected an int >= vocab_size = 3")):
        with pytest.raises(ValueError, match=pattern) as err:
            _plan(**kw)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^fixed: a traced array; expected a concrete mask"):
        jax.jit(lambda f: _plan(fixed=f, fixed_tokens=np.zeros(8, int))[1])(np.arange(8) < 2)


def _conditional(law, fixed, tokens):
    seqs = all_sequences(V, L)
    w = law * (seqs[:, fixed] == tokens[fixed]).all(-1)
    return w / w.sum()


def _floor(p, n, reps=300, seed=0):
    rng = np.random.default_rng(seed)
    tvs = [total_variation(rng.multinomial(n, p) / n, p) for _ in range(reps)]
    return float(np.mean(tvs) + 4 * np.std(tvs))


@pytest.mark.parametrize("block_length,selection", [(1, "low_confidence"), (2, "confidence"), (2, "random")])
def test_one_token_per_step_is_the_exact_conditional(block_length, selection):
    """Prompt of 2 (different per row half), blocks after it, 2 steps: K = 1 per step in an
    X_t-measurable order, so the law is p*(x2, x3 | x0, x1). (LLaDA's ``low_confidence`` looks at
    the sampled value, so it is exact only when the block forces the order: block_length 1.)"""
    n = 20_000
    table = JointTable.random(0, vocab_size=V, length=L)
    prompts = np.array([[1, 0, 0, 0], [2, 2, 0, 0]])
    tokens = np.repeat(prompts, n, axis=0)
    fixed = np.arange(L) < 2
    with jax.enable_x64(True):
        out, info = sample_llada(table.denoise_fn(V), jax.random.key(3), num_samples=2 * n, length=L, steps=2,
                                 vocab_size=V, block_length=block_length, selection=selection, fixed=fixed,
                                 fixed_tokens=tokens, temperature=1.0)
    out = np.asarray(out)
    np.testing.assert_array_equal(np.asarray(info["nfe"]), 2)
    for half, prompt in enumerate(prompts):
        rows = out[half * n:(half + 1) * n]
        np.testing.assert_array_equal(rows[:, :2], np.broadcast_to(prompt[:2], (n, 2)))
        want = _conditional(table.law(), fixed, prompt)
        tv = total_variation(empirical_law(rows, V), want)
        print(f"prompt {prompt[:2]}: TV {tv:.4f} (floor {_floor(want, n):.4f})")
        assert tv < _floor(want, n)


def test_two_tokens_in_one_step_is_the_product_of_conditional_marginals():
    """The standard sampler's factorisation error, exactly: K = 2 in one step draws x2, x3 from
    their marginals given the prompt independently."""
    n = 20_000
    table = JointTable.random(0, vocab_size=V, length=L)
    fixed, prompt = np.arange(L) < 2, np.array([1, 0, 0, 0])
    with jax.enable_x64(True):
        out, _ = sample_llada(table.denoise_fn(V), jax.random.key(4), num_samples=n, length=L, steps=1,
                              vocab_size=V, fixed=jnp.asarray(fixed), fixed_tokens=jnp.asarray(prompt), temperature=1.0)
        marg = np.asarray(table.masked_posteriors(jnp.asarray([[1, 0, V, V]]), V))[0]
    cond = _conditional(table.law(), fixed, prompt)
    seqs = all_sequences(V, L)
    product = np.where((seqs[:, :2] == prompt[:2]).all(-1), marg[2, seqs[:, 2]] * marg[3, seqs[:, 3]], 0.0)
    tv = total_variation(empirical_law(np.asarray(out), V), product)
    print(f"K=2: TV to product {tv:.4f} (floor {_floor(product, n):.4f}); product vs p*(.|prompt) "
          f"{total_variation(product, cond):.3f}")
    assert tv < _floor(product, n)
    assert total_variation(product, cond) > 10 * _floor(product, n)  # the test can see the error


def test_traced_fixed_tokens_match_concrete():
    table = JointTable.random(0, vocab_size=V, length=L)
    fixed, tokens = np.arange(L) < 1, np.array([[2, 0, 0, 0], [0, 0, 0, 0]])
    common = dict(num_samples=2, length=L, steps=3, vocab_size=V, fixed=fixed)
    with jax.enable_x64(True):
        eager, _ = sample_llada(table.denoise_fn(V), jax.random.key(5), fixed_tokens=tokens, **common)
        traced, _ = jax.jit(lambda tok: sample_llada(table.denoise_fn(V), jax.random.key(5), fixed_tokens=tok,
                                                     **common))(jnp.asarray(tokens))
    np.testing.assert_array_equal(np.asarray(traced), np.asarray(eager))
    np.testing.assert_array_equal(np.asarray(eager)[:, 0], [2, 0])


def test_default_temperature_is_greedy_as_in_llada():
    """LLaDA's generate.py defaults to temperature 0: x̂ = argmax, confidence = its probability. With
    one token per step the output is then the greedy decode (most confident masked position first,
    its argmax), the same for every key and row, computed here step by step from the table."""
    assert inspect.signature(sample_llada).parameters["temperature"].default == 0.0
    table = JointTable.random(0, vocab_size=V, length=L)
    with jax.enable_x64(True):
        z = np.full((1, L), V)
        for _ in range(L):
            q = np.asarray(table.masked_posteriors(jnp.asarray(z), V))[0]
            masked = np.flatnonzero(z[0] == V)
            j = masked[np.argmax(q[masked].max(-1))]
            z[0, j] = q[j].argmax()
        outs = [np.asarray(sample_llada(table.denoise_fn(V), jax.random.key(seed), num_samples=3, length=L,
                                        steps=L, vocab_size=V)[0]) for seed in (0, 1)]
    np.testing.assert_array_equal(np.concatenate(outs), np.repeat(z, 6, axis=0))
