"""The sampler registry and what every registered sampler shares (issue 8, "seams"):

* every public ``sample_*(denoise_fn, key, ...)`` in ``dlm_jax.samplers`` is reachable by name;
* a denoiser of the wrong output width raises one line before tracing (it used to sample
  all-zero or all-max ids silently);
* one conditioning API, ``fixed``/``fixed_tokens``: on a table whose last free token is a
  deterministic function of the fixed ones (an exact oracle with a point-mass conditional), every
  sampler returns the fixed tokens and exactly that completion, per row.
"""

import importlib
import inspect
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dlm_jax.samplers as samplers_pkg
from dlm_jax.samplers import DSL, SAMPLERS, get_sampler

TOKEN_SAMPLERS = sorted(n for n in SAMPLERS if n not in DSL)  # DSL samplers: tests/samplers/test_dsl_samplers.py
from dlm_jax.testing.oracles import JointTable, all_sequences

V, L = 3, 4
# FeF/LLaDA commit >= 1 token per step from the free positions of each block (1 here).
STEPS = {"fef": 1, "llada": 1}


def _public_samplers():
    """``{qualified name: function}`` for every public ``sample_*`` whose first parameter is
    ``denoise_fn`` (``sample_categorical`` draws from logits: not a sampler)."""
    found = {}
    for info in pkgutil.iter_modules(samplers_pkg.__path__):
        module = importlib.import_module(f"dlm_jax.samplers.{info.name}")
        for name, fn in vars(module).items():
            if name.startswith("sample_") and callable(fn) and getattr(fn, "__module__", None) == module.__name__:
                params = list(inspect.signature(fn).parameters)
                if params and params[0] == "denoise_fn":
                    found[f"{module.__name__}.{name}"] = fn
    return found


def test_every_public_sampler_is_registered():
    public = _public_samplers()
    registered = {get_sampler(name) for name in SAMPLERS}
    assert len(public) >= 11, sorted(public)  # mdlm x2, remdm x5, fsdfm, dfm_euler, llada, fef
    missing = sorted(q for q, fn in public.items() if fn not in registered)
    assert not missing, f"not reachable through get_sampler: {missing}"
    assert set(SAMPLERS) >= {"mdlm", "mdlm_cache", "remdm", "remdm_cap", "remdm_rescale", "remdm_conf",
                             "remdm_loop", "llada", "fef", "fsdfm", "dfm_euler"}
    with pytest.raises(ValueError, match=r"^sampler: 'x'; expected one of \("):
        get_sampler("x")


def test_no_sampler_takes_prefix_or_init():
    for name, fn in _public_samplers().items():
        params = inspect.signature(fn).parameters
        assert not {"prefix", "init"} & set(params), name
        if "kwargs" not in params:  # the fixed-strategy ReMDM wrappers forward **kwargs to sample_remdm
            assert {"fixed", "fixed_tokens"} <= set(params), name


def _zeros(width):
    def fn(z, *_):
        return jnp.zeros(z.shape + (width,), jnp.float32)
    return fn


@pytest.mark.parametrize("name", TOKEN_SAMPLERS)
@pytest.mark.parametrize("width", [V - 1, V + 1])
def test_wrong_width_denoiser_raises_for_every_sampler(name, width):
    with pytest.raises(ValueError, match=rf"^denoise_fn: output width {width}; expected vocab_size {V} ") as err:
        get_sampler(name)(_zeros(width), jax.random.key(0), num_samples=2, length=L, steps=STEPS.get(name, 2),
                          vocab_size=V)
    assert "\n" not in str(err.value)


def test_wrong_leading_shape_raises():
    def fn(z, *_):
        return jnp.zeros((1,) + z.shape[1:] + (V,))
    for name in ("mdlm", "fsdfm", "fef"):
        with pytest.raises(ValueError, match=rf"^denoise_fn: output shape \(1, {L}, {V}\); expected \(2, {L}, {V}\)"):
            get_sampler(name)(fn, jax.random.key(0), num_samples=2, length=L, steps=STEPS.get(name, 2), vocab_size=V)


def _sum_table():
    """p*(x) > 0 only where ``Σ x ≡ 0 (mod V)``: given any L - 1 tokens the last one is determined."""
    seqs = all_sequences(V, L)
    weights = np.random.default_rng(0).dirichlet(np.ones(len(seqs))) * (seqs.sum(-1) % V == 0)
    return JointTable(weights, V, L)


@pytest.mark.parametrize("name", TOKEN_SAMPLERS)
def test_every_sampler_conditions_through_fixed(name):
    """Rows with different prompts and different free positions, ``fixed`` ``[B, L]``."""
    table = _sum_table()
    base = table.denoise_fn(V)
    fn = lambda z, t, *_: base(z, t)  # noqa: E731  (flow samplers also pass h)
    rng = np.random.default_rng(1)
    b = 24
    free = rng.integers(0, L, size=b)
    free[:2] = (1, 3)
    fixed = np.arange(L)[None, :] != free[:, None]
    tokens = rng.integers(0, V, size=(b, L))
    expect = tokens.copy()
    expect[np.arange(b), free] = 0
    expect[np.arange(b), free] = (-expect.sum(-1)) % V  # the only completion with Σ x ≡ 0
    with jax.enable_x64(True):
        out, _ = get_sampler(name)(fn, jax.random.key(2), num_samples=b, length=L, steps=STEPS.get(name, 2),
                                   vocab_size=V, fixed=jnp.asarray(fixed), fixed_tokens=jnp.asarray(tokens))
    out = np.asarray(out)
    np.testing.assert_array_equal(out[fixed], tokens[fixed])
    np.testing.assert_array_equal(out, expect)
    np.testing.assert_array_equal(table.log_prob(jnp.asarray(out)) > -np.inf, True)


@pytest.mark.parametrize("name", ["mdlm", "remdm_cap", "fsdfm", "llada", "fef"])
def test_every_sampler_rejects_bad_fixed_before_compiling(name):
    fn = lambda z, t, *_: jnp.zeros(z.shape + (V,))  # noqa: E731
    common = dict(num_samples=2, length=L, steps=STEPS.get(name, 2), vocab_size=V)
    mask = np.array([True, False, False, False])
    for kwargs, pattern in ((dict(fixed=mask), r"^fixed_tokens: missing;"),
                            (dict(fixed=mask, fixed_tokens=np.array([V, 0, 0, 0])), r"^fixed_tokens: values \[3\];"),
                            (dict(fixed=mask, fixed_tokens=np.zeros(L)), r"^fixed_tokens: dtype float"),
                            (dict(fixed=mask.astype(int), fixed_tokens=np.zeros(L, int)), r"^fixed: dtype"),
                            (dict(fixed=np.ones(L + 1, bool), fixed_tokens=np.zeros(L + 1, int)), r"^fixed: shape")):
        with pytest.raises(ValueError, match=pattern):
            get_sampler(name)(fn, jax.random.key(0), **common, **kwargs)
