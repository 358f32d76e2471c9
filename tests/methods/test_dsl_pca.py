"""DSL anchors from the PCA of the init_from MDLM's token embedding (METHODS §4.1 "a PCA-of-wte
option"): the PCA against a closed form, the mapping under jit against numpy's float64 SVD, bad
values. The run through the real trainer (source deleted, samples drawn with the anchors it trained
on) is tests/methods/test_dsl.py::test_tiny_run_through_the_real_trainer_from_an_mdlm_run."""

import jax
import ml_collections
import numpy as np
import pytest

from dlm_jax.methods import dsl
from dlm_jax.processes import localization as loc


def test_pca_anchors_closed_form_and_sign_convention():
    """Centred rows (3,0,0), (−1,0,0), (−1,±1,0): principal axes x (variance 12) then y (2),
    cross term 0, so the d = 2 anchors are the normalised (x, y) coordinates; each direction's
    largest-magnitude coordinate is positive, so −emb gives the same anchors."""
    emb = np.array([[3.0, 0, 0], [-1, 0, 0], [-1, 1, 0], [-1, -1, 0]]) + np.array([0.5, -2.0, 5.0])
    r = 1 / np.sqrt(2)
    want = np.array([[1, 0], [-1, 0], [-r, r], [-r, -r]])
    np.testing.assert_allclose(np.asarray(loc.pca_anchors(emb, 2)), want, atol=1e-7)
    np.testing.assert_allclose(np.asarray(loc.pca_anchors(-emb, 2)), want, atol=1e-7)
    # A random embedding: numpy's float64 SVD by hand, same sign rule.
    e = np.random.default_rng(0).normal(size=(30, 12))
    c = e - e.mean(0)
    proj = c @ np.linalg.svd(c, full_matrices=False)[2][:5].T
    proj *= np.sign(proj[np.argmax(np.abs(proj), 0), np.arange(5)])
    np.testing.assert_allclose(np.asarray(loc.pca_anchors(e, 5)), proj / np.linalg.norm(proj, axis=1, keepdims=True),
                               atol=1e-6)
    got = jax.jit(lambda x: dsl.source_pca_anchors(x, 5))(e.astype(np.float32))  # the mapping's path, under jit
    np.testing.assert_allclose(np.asarray(got), np.asarray(loc.pca_anchors(e.astype(np.float32), 5)), rtol=0, atol=0)


def _config(**method):
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict({"vocab_size": 8, "width": 6, "depth": 1, "heads": 2, "cond_dim": 4,
                                         "max_len": 16})
    c.data = ml_collections.ConfigDict({"seq_len": 16})
    c.method = ml_collections.ConfigDict({"name": "dsl", "dim": 4, "anchors": "pca", **method})
    c.init_from = ml_collections.ConfigDict({"workdir": "runs/x", "mapping": "mdlm_to_dsl"})
    return c


@pytest.mark.parametrize("change,match", [
    (dict(init_from={"workdir": ""}), r"^method\.anchors: 'pca'; expected 'random' unless init_from\.workdir"),
    (dict(init_from={"mapping": "copy"}), r"^method\.anchors: 'pca'; expected 'random' unless init_from\.workdir"),
    (dict(method={"dim": 7}), r"^method\.dim: 7; expected <= 6 = min\(V, model\.width\)"),
    (dict(model={"input_adapter": "dsl_linear"}), r"^method\.anchors: 'pca'; expected 'random' with model\.input_adapt"),
    (dict(model={"input_adapter": "dsl_converter:anchors=umap"}), r"^anchors: 'umap'; expected one of"),
])
def test_bad_pca_settings_are_one_line_errors(change, match):
    config = _config()
    for section, values in change.items():
        config[section].update(values)
    with pytest.raises(ValueError, match=match) as err:
        dsl.model_spec(config)
    assert "\n" not in str(err.value)
