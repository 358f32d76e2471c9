"""DSL input adapters (METHODS §4.2): the converter's soft retrieval against the exact single-token
posterior (JointTable oracle), its [MASK] slot, the linear map, the high-pass residual and SNR gate
against float64 numpy, the adapter names, and bad input. SNR direction: s = 0 is "[MASK]" (z = 0),
large s is clean."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dlm_jax.models import DiTConfig, build_model, make_apply
from dlm_jax.models import converter as cv
from dlm_jax.processes import localization as loc
from dlm_jax.testing.oracles import JointTable

V, D, WIDTH = 7, 5, 16


def _conv(**opts):
    with nnx.use_eager_sharding(False):
        return cv.Converter(V, D, WIDTH, cv.ConverterOptions(**opts), rngs=nnx.Rngs(0))


def _z(seed, shape=(3, 4), scale=2.0):
    return scale * jax.random.normal(jax.random.key(seed), shape + (D,), jnp.float32)


def _softmax64(x):
    x = x - x.max(-1, keepdims=True)
    return np.exp(x) / np.exp(x).sum(-1, keepdims=True)


def test_anchors_are_localization_random_anchors_bit_for_bit():
    a = cv.frozen_anchors(3, V, D)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(loc.random_anchors(jax.random.key(3), V, D)))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(a, np.float64), axis=-1), 1.0, atol=1e-6)
    loc.check_anchors(a, vocab_size=V, dim=D)
    np.testing.assert_array_equal(np.asarray(_conv(seed=3).anchors()), np.asarray(a))


def test_mask_slot_is_one_half_at_z_zero():
    """b_mask = log V, b_v = 0: at z = 0 (s = 0) π_mask = V/(V + V) = 1/2, each token 1/(2V)."""
    pi = np.asarray(_conv().probs(jnp.zeros((2, 3, D))), np.float64)
    np.testing.assert_allclose(pi[..., -1], 0.5, atol=1e-7)
    np.testing.assert_allclose(pi[..., :-1], 1.0 / (2 * V), atol=1e-7)
    assert float(_conv().beta[...]) == pytest.approx(1.0 / np.sqrt(D), rel=1e-7)  # β init 1/√d


def test_retrieval_is_the_exact_single_token_posterior():
    """β = 1, b_v = log prior: π_v ∝ prior_v e^{⟨z, e_v⟩} — the oracle's p(v|z) under soft evidence
    ⟨z, e_v⟩ (1-token JointTable), to 1e-6; with b_mask = log V the token slots renormalised are it too."""
    prior = np.random.default_rng(0).dirichlet(np.ones(V))
    anchors = cv.frozen_anchors(cv.DEFAULT_SEED, V, D)
    s = jnp.array([0.0, 0.5, 3.0, 20.0])[:, None]
    x = jnp.array([[0], [3], [5], [6]])
    z = loc.encode(jax.random.key(1), x, s, anchors)  # [4, 1, D]
    exact = np.asarray(JointTable.from_product(prior[None]).posteriors(loc.log_evidence(z, anchors)), np.float64)
    conv = _conv()
    conv.beta[...] = jnp.float32(1.0)
    conv.logit_bias[...] = jnp.concatenate([jnp.log(jnp.asarray(prior, jnp.float32)), jnp.array([-1e30])])
    np.testing.assert_allclose(np.asarray(conv.probs(z))[..., :V], exact, atol=1e-6)
    conv.logit_bias[...] = conv.logit_bias[...].at[-1].set(np.log(V))
    pi = np.asarray(conv.probs(z), np.float64)
    np.testing.assert_allclose(pi[..., :V] / pi[..., :V].sum(-1, keepdims=True), exact, atol=1e-6)
    assert pi[0, 0, -1] > 0.49 and pi[-1, 0, -1] < 1e-6  # s = 0 leans [MASK]; s = 20 does not


def test_linear_map_and_clean_endpoint():
    """h = W π + c against float64 numpy; with β large a clean z = s·e(x) retrieves row x exactly."""
    conv = _conv(beta_init=0.7)
    z = _z(2)
    anchors = np.asarray(conv.anchors(), np.float64)
    logits = np.concatenate([0.7 * np.asarray(z, np.float64) @ anchors.T, np.full(z.shape[:-1] + (1,), np.log(V))], -1)
    want = _softmax64(logits) @ np.asarray(conv.kernel[...], np.float64) + np.asarray(conv.bias[...], np.float64)
    np.testing.assert_allclose(np.asarray(conv(z), np.float64), want, atol=2e-6)
    conv.beta[...] = jnp.float32(50.0)
    x = jnp.array([[1, 4, 6]])
    h = conv(30.0 * jnp.asarray(anchors, jnp.float32)[x])
    np.testing.assert_allclose(np.asarray(h), np.asarray(conv.kernel[...][x] + conv.bias[...]), atol=1e-6)


def test_highpass_residual_and_snr_gate():
    """h − h_low = g · (W_r z_⊥ + c_r), z_⊥ ⊥ û = x̂/||x̂||, g = sigmoid(−ŝ/5 + 2), ŝ² + ŝ·d = ||z||²."""
    conv = _conv(highpass=True, snr_gate=True)
    conv.residual_bias[...] = 0.1 * jnp.arange(WIDTH, dtype=jnp.float32)  # c_r = 0 at init: make it count
    z = _z(3)
    z64 = np.asarray(z, np.float64)
    anchors = np.asarray(conv.anchors(), np.float64)
    pi = np.asarray(conv.probs(z), np.float64)
    xhat = pi[..., :V] @ anchors
    u = xhat / np.linalg.norm(xhat, axis=-1, keepdims=True)
    z_perp = z64 - (z64 * u).sum(-1, keepdims=True) * u
    np.testing.assert_allclose((z_perp * u).sum(-1), 0.0, atol=1e-12)
    q = (z64**2).sum(-1)
    s_hat = (np.sqrt(D * D + 4 * q) - D) / 2
    np.testing.assert_allclose(s_hat**2 + s_hat * D, q, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(cv.snr_estimate(z), np.float64), s_hat, rtol=1e-5)
    gate = 1 / (1 + np.exp(s_hat / 5.0 - 2.0))
    res = z_perp @ np.asarray(conv.residual_kernel[...], np.float64) + np.asarray(conv.residual_bias[...], np.float64)
    h_low = pi @ np.asarray(conv.kernel[...], np.float64) + np.asarray(conv.bias[...], np.float64)
    np.testing.assert_allclose(np.asarray(conv(z), np.float64), h_low + gate[..., None] * res, atol=2e-6)
    assert float(cv.snr_estimate(jnp.zeros((D,)))) == 0.0
    # ŝ is a consistent SNR estimate: mean over 4k draws of z = s e + √s ε within 2% of s = 10
    e = np.asarray(cv.frozen_anchors(0, 1, 48))
    zz = 10.0 * e + np.sqrt(10.0) * np.asarray(jax.random.normal(jax.random.key(0), (4000, 48)))
    assert abs(float(np.mean(cv.snr_estimate(jnp.asarray(zz)))) - 10.0) < 0.2


def test_linear_ablation_is_wz_plus_c():
    cfg = DiTConfig(input="vectors", input_dim=D, num_classes=V, width=WIDTH, depth=1, heads=2, cond_dim=8,
                    conditioning="none", input_adapter=cv.LINEAR)
    g, p = build_model(cfg, 0)
    adapter = nnx.merge(g, p).adapter
    z = _z(4)
    want = np.asarray(z, np.float64) @ np.asarray(p["adapter"]["proj"]["kernel"][...], np.float64)
    want += np.asarray(p["adapter"]["proj"]["bias"][...], np.float64)
    np.testing.assert_allclose(np.asarray(adapter(z), np.float64), want, atol=2e-6)


def test_dit_with_converter_trains_beta_and_biases_anchors_are_not_params():
    name = cv.ensure_adapter("dsl_converter:seed=5,highpass=1") and "dsl_converter:seed=5,highpass=1"
    cfg = DiTConfig(input="vectors", input_dim=D, num_classes=V, width=WIDTH, depth=1, heads=2, cond_dim=8,
                    conditioning="none", input_adapter=name)
    g, p = build_model(cfg, 0)
    p["final"]["linear"]["kernel"][...] = jax.random.normal(jax.random.key(1), (WIDTH, V))  # zero-init: unblock
    assert set(p["adapter"].keys()) == {"kernel", "bias", "beta", "logit_bias", "residual_kernel", "residual_bias"}
    apply = make_apply(g)
    z, y = _z(5), jnp.array([[0, 1, 2, 3]] * 3)

    def loss(params):
        lp = jax.nn.log_softmax(apply(params, z, {}), -1)
        return -jnp.take_along_axis(lp, y[..., None], -1).mean()

    grads = jax.grad(loss)(p)["adapter"]
    for key in ("beta", "logit_bias", "kernel", "residual_kernel"):
        assert float(jnp.abs(grads[key][...]).max()) > 0.0, key


def test_names_round_trip():
    opts = cv.ConverterOptions(seed=7, beta_init=5.0, highpass=True, snr_gate=True)
    name = cv.adapter_name(opts)
    assert name == "dsl_converter:seed=7,beta_init=5.0,highpass=1,snr_gate=1"
    assert cv.parse_adapter_name(name) == opts
    assert cv.adapter_name(cv.ConverterOptions()) == cv.CONVERTER
    assert cv.parse_adapter_name(cv.LINEAR).kind == cv.LINEAR
    assert cv.is_dsl_adapter(name) and not cv.is_dsl_adapter("token_embedding")


@pytest.mark.parametrize("name,match", [
    ("dsl_converter:color=1", r"^model\.input_adapter: 'dsl_converter:color=1'; expected"),
    ("dsl_converter:seed=x", r"^model\.input_adapter option seed: 'x'; expected"),
    ("dsl_converter:highpass=1,seed=3", r"expected the canonical spelling 'dsl_converter:seed=3,highpass=1'"),
    ("dsl_converter:snr_gate=1", r"^snr_gate: True; expected False unless highpass=True"),
    ("dsl_linear:seed=3", r"^model\.input_adapter: 'dsl_linear:seed=3'; expected"),
    ("dsl_converter:beta_init=-1.0", r"^beta_init: -1\.0; expected a finite number in \(0"),
    ("token_embedding", r"^model\.input_adapter: 'token_embedding'; expected 'dsl_converter'"),
])
def test_bad_names_are_one_line_errors(name, match):
    with pytest.raises(ValueError, match=match) as err:
        cv.parse_adapter_name(name)
    assert "\n" not in str(err.value)


def test_converter_needs_vector_input():
    with pytest.raises(ValueError, match=r"^input_adapter: 'dsl_converter'; expected an adapter for input='tokens'|"
                                         r"^model\.input: 'tokens'; expected 'vectors'") as err:
        build_model(DiTConfig(vocab_size=V + 1, num_classes=V, width=WIDTH, depth=1, heads=2, cond_dim=8,
                              input_adapter=cv.CONVERTER), 0)
    assert "\n" not in str(err.value)
