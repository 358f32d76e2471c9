"""FS-DFM student method (METHODS §6.3, §6.6 check 4, T7): (t, h) policies against their exact laws,
RK-4 stage tables (faithful vs consistent labels) on a recording denoiser, zero distillation loss
at the oracle, the anchor at its analytic minimum, identity init and the pretrained-teacher anchor,
a few optimisation steps on a tiny DiT, and bad-input errors.
Time direction: t = 0 source (mask / uniform noise), t = 1 data; mask id = V."""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dlm_jax.methods import dfm, fsdfm
from dlm_jax.methods import fsdfm_teacher as ft
from dlm_jax.models import DiTConfig, build_model, init_student_from_teacher, make_apply
from dlm_jax.processes import flow
from dlm_jax.testing.oracles import MarkovChainLanguage


def _config(v, cond="th", seq_len=8, **method):
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict({"vocab_size": v, "conditioning": cond, "dropout": 0.0})
    c.data = ml_collections.ConfigDict({"seq_len": seq_len})
    c.method = ml_collections.ConfigDict({"name": "fsdfm", **method})
    return c


# ------------------------------------------------------------------------------------------------
# (t, h) policies.
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy,step", [("inverse_h", 0), ("uniform", 0), ("large_h", 0), ("annealed", 0),
                                         ("annealed", 60_000), ("annealed", 10**6)])
def test_policy_law_is_exact(policy, step):
    """Empirical P(h = 2^-k) within 3.5σ of the exact law (n = 100k draws, N_ref = 1024); t on the
    1/N_ref grid, t + h ≤ 1 always, and j | h uniform on {0..N−Nh} (mean within 4σ; both ends hit
    where there are ≥ 20 draws per value)."""
    n_ref, n = 1024, 100_000
    probs = ft.policy_probs(policy, n_ref, step)
    draw = jax.jit(lambda k, s: ft.sample_t_h(k, n, policy=policy, n_ref=n_ref, step=s))
    t, h = (np.asarray(a, np.float64) for a in draw(jax.random.key(0), step))
    k = np.round(-np.log2(h)).astype(int)
    np.testing.assert_array_equal(2.0**-k, h)
    freq = np.bincount(k, minlength=len(probs)) / n
    sigma = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(freq - probs) <= 3.5 * sigma + 1e-12), (freq, probs)
    j = t * n_ref
    np.testing.assert_array_equal(j, np.round(j))
    assert np.all(t + h <= 1.0) and np.all(t >= 0)
    for kk in range(len(probs)):
        sel = j[k == kk]
        top = n_ref - n_ref // 2**kk
        if sel.size < 200:
            continue
        assert sel.min() >= 0 and sel.max() <= top
        if sel.size >= 20 * (top + 1):
            assert sel.min() == 0 and sel.max() == top
        sd = np.sqrt(((top + 1) ** 2 - 1) / 12 / sel.size)
        assert abs(sel.mean() - top / 2) < 4 * sd + 1e-9


def test_policy_probabilities_closed_forms():
    """inverse_h: P(h = 2^-k) = 2^k/(2^11 − 1), so P(h = 1/1024) = 1024/2047 ≈ 0.5; annealed: equal
    to inverse_h at step 0, weights min(2^{k+m}, 2^K) at m = ⌊step/anneal_every⌋, uniform for m ≥ K."""
    p = ft.policy_probs("inverse_h", 1024)
    np.testing.assert_allclose(p, 2.0 ** np.arange(11) / 2047, rtol=1e-15)
    assert abs(p[-1] - 1024 / 2047) < 1e-15
    np.testing.assert_allclose(ft.policy_probs("annealed", 1024, 0), p, rtol=1e-15)
    w = 2.0 ** np.minimum(np.arange(11) + 3, 10)
    np.testing.assert_allclose(ft.policy_probs("annealed", 1024, 3 * 20_000 + 5), w / w.sum(), rtol=1e-15)
    np.testing.assert_allclose(ft.policy_probs("annealed", 1024, 10 * 20_000), np.full(11, 1 / 11), rtol=1e-15)
    np.testing.assert_allclose(ft.policy_probs("large_h", 64), 2.0 ** (6 - np.arange(7)) / 127, rtol=1e-15)
    lw = ft.policy_log_weights("annealed", 1024, jnp.int32(3 * 20_000))
    np.testing.assert_allclose(jax.nn.softmax(lw), w / w.sum(), rtol=1e-6)
    assert ft.anchor_threshold(1024) == 1 / 513 and 1 / 1024 < 1 / 513 < 1 / 512


# ------------------------------------------------------------------------------------------------
# RK-4 stage tables on a recording denoiser.
# ------------------------------------------------------------------------------------------------
def _product(v, length, seed=0):
    q = np.random.default_rng(seed).dirichlet(np.full(v, 0.7), size=length)
    return jnp.asarray(q)


def _recording(q, v, state_dependent=True):
    """Mask-source product oracle: q_ℓ at masked positions; δ at unmasked ones (state_dependent) or
    q_ℓ everywhere (a denoiser that ignores x). Records every (x, t, h) it is called with."""
    calls = []

    def fn(x, t, h):
        calls.append((np.asarray(x), np.asarray(t), np.asarray(h)))
        lq = jnp.broadcast_to(jnp.log(q), x.shape + (v,))
        if not state_dependent:
            return lq
        onehot = jax.nn.one_hot(jnp.minimum(x, v - 1), v, dtype=bool)
        return jnp.where((x == v)[..., None], lq, jnp.where(onehot, 0.0, -jnp.inf))

    return fn, calls


@pytest.mark.parametrize("labels", ["faithful", "consistent"])
def test_rk4_stage_times_and_states(labels):
    """Both variants query (t, t_m, t_m, t_e) with h' = h/2. Faithful chains x¹→x²→x³ (from t = 0,
    h = 1, x² has advanced a full h: fully unmasked); consistent restarts every stage from x_t
    (x² is a half step from x_t: about half masked; x³ a full step: unmasked)."""
    v, b, length = 5, 64, 32
    q = _product(v, length)
    fn, calls = _recording(q, v)
    x0 = jnp.full((b, length), v, jnp.int32)
    ft.teacher_logits(fn, jax.random.key(0), x0, jnp.zeros(b), jnp.ones(b), labels=labels)
    assert [float(c[1][0]) for c in calls] == [0.0, 0.5, 0.5, 1.0]
    assert all(np.all(c[2] == 0.5) for c in calls)
    masked = [float(np.mean(c[0] == v)) for c in calls]
    assert masked[0] == 1.0 and abs(masked[1] - 0.5) < 0.05 and masked[3] == 0.0
    if labels == "faithful":
        assert masked[2] == 0.0
    else:
        assert abs(masked[2] - 0.5) < 0.05
        assert np.any((calls[2][0] == v) & (calls[1][0] != v))  # x² is not a continuation of x¹

    fn, calls = _recording(q, v)
    t, h = jnp.full((4,), 0.25), jnp.full((4,), 0.5)
    ft.teacher_logits(fn, jax.random.key(1), x0[:4], t, h, labels=labels)
    assert [float(c[1][0]) for c in calls] == [0.25, 0.5, 0.5, 0.75]
    fn, calls = _recording(q, v)
    ft.teacher_logits(fn, jax.random.key(1), x0[:4], t, h, teacher="heun", labels=labels)
    assert [float(c[1][0]) for c in calls] == [0.25, 0.5] and all(np.all(c[2] == 0.25) for c in calls)


# ------------------------------------------------------------------------------------------------
# Zero loss at the oracle (§6.6 check 4, T7) and the anchor minimum.
# ------------------------------------------------------------------------------------------------
def _oracle_apply(q, v, state_dependent):
    def apply(params, x, cond, **_):
        del params
        assert set(cond) == {"t", "h"}
        lq = jnp.broadcast_to(jnp.log(q), x.shape + (v,))
        if state_dependent:
            onehot = jax.nn.one_hot(jnp.minimum(x, v - 1), v, dtype=bool)
            lq = jnp.where((x == v)[..., None], lq, jnp.where(onehot, 0.0, -1e30))
        return jnp.concatenate([lq, jnp.full(x.shape + (1,), 2.0, lq.dtype)], -1)

    return apply


@pytest.mark.parametrize("teacher", ["rk4", "heun"])
def test_distillation_loss_is_zero_at_the_oracle(teacher):
    """The same x-independent product oracle as student and EMA teacher: every stage returns q, the
    RK-4 logit average is q, and the distillation KL is 0 to 1e-12 (full ``loss``, all h ≥ h_th)."""
    with jax.enable_x64(True):
        v, length = 5, 8
        q = _product(v, length)
        method = fsdfm.build(_config(v, n_ref=64, teacher=teacher, policy="uniform"), _oracle_apply(q, v, False))
        x1 = jax.random.randint(jax.random.key(0), (64, length), 0, v)
        _, m = method.loss(None, {"tokens": x1}, jax.random.key(1), 0, {"ema_params": None})
        assert 0.0 < float(m["anchor_fraction"]) < 0.5
        assert abs(float(m["distill_loss"])) < 1e-12


def test_state_dependent_oracle_kl_is_zero_exactly_where_no_stage_moved():
    """With the exact mask-source oracle (δ at unmasked tokens) the RK-4 target equals the student's
    q_ℓ at every position that stays masked through x¹..x³ and δ = δ at positions already unmasked
    in x_t: KL = 0 there (1e-12); positions unmasked during the stages have KL > 0."""
    with jax.enable_x64(True):
        v, b, length = 5, 32, 16
        q = _product(v, length)
        fn, calls = _recording(q, v)
        x1 = jax.random.randint(jax.random.key(0), (b, length), 0, v)
        t, h = jnp.full((b,), 0.25), jnp.full((b,), 0.5)
        xt = flow.sample_path(jax.random.key(1), x1, t, source="mask", vocab_size=v)
        lt = ft.teacher_logits(fn, jax.random.key(2), xt, t, h)
        kl = np.asarray(ft.distill_kl(lt, fn(xt, t, h)))
        states = np.stack([c[0] for c in calls[:4]])
        still = np.all(states == v, 0)
        clean = np.asarray(xt) != v
        assert np.max(np.abs(kl[still | clean])) < 1e-12
        assert np.all(kl[~still & ~clean] > 1e-3) and np.sum(~still & ~clean) > 20


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_anchor_is_the_generalized_kl_at_its_minimum(source):
    """At h = 1/N_ref the loss is the data-anchored generalized KL: with the exact Markov posterior as
    the student, E_{x1|x_t}[terms] = −κ̇/(1−κ) Σ_{y≠x_t} q log q exactly (sum over x1, 1e-12)."""
    with jax.enable_x64(True):
        v, length, b, n_ref = 4, 6, 16, 64
        oracle = MarkovChainLanguage.random(4, v, length)
        x1 = oracle.sample(jax.random.key(0), b)
        t = jax.random.randint(jax.random.key(1), (b,), 0, n_ref) / n_ref
        h = jnp.full((b,), 1 / n_ref)
        xt = flow.sample_path(jax.random.key(2), x1, t, source=source, vocab_size=v)
        q = oracle.posteriors(flow.path_evidence(xt, t, source=source, vocab_size=v))
        junk = jax.random.normal(jax.random.key(3), q.shape)
        rows = []
        for y in range(v):
            terms, anchor = fsdfm.loss_terms(jnp.log(q), jnp.full(x1.shape, y), xt, t, h, junk, n_ref=n_ref)
            rows.append(terms)
        expected = jnp.sum(jnp.where(q > 0, q * jnp.stack(rows, -1), 0.0), -1)
        assert bool(jnp.all(anchor))
        err = jnp.max(jnp.abs(expected - flow.generalized_kl_minimum(q, xt, t)))
        assert float(err) < 1e-12


# ------------------------------------------------------------------------------------------------
# Networks: identity init, pretrained-teacher anchor, descent.
# ------------------------------------------------------------------------------------------------
V, L = 6, 8


def _dit(cond, seed=0, identity=False):
    return build_model(DiTConfig(vocab_size=V + 1, num_classes=V + 1, width=32, depth=1, heads=2, cond_dim=16,
                                 max_len=L, conditioning=cond, identity_h_init=identity), seed)


def _perturbed_teacher():
    graphdef, params = _dit("t")
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return graphdef, jax.tree.unflatten(tree, leaves)


def test_identity_init_student_equals_teacher_and_zeroes_the_pretrained_anchor():
    """A trained-looking (perturbed) DFM teacher copied into an identity-initialised "th" student:
    the student's log-probs equal the teacher's for any h (1e-5); with just_student=False the anchor
    KL(teacher ‖ student) is then 0 (1e-6) while the EMA-RK-4 distillation term is not."""
    t_graph, t_params = _perturbed_teacher()
    s_graph, s_params = _dit("th", seed=1, identity=True)
    cfg = DiTConfig(vocab_size=V + 1, num_classes=V + 1, width=32, depth=1, heads=2, cond_dim=16, max_len=L,
                    conditioning="th", identity_h_init=True)
    student = init_student_from_teacher(t_params, s_params, cfg)
    x = jax.random.randint(jax.random.key(0), (4, L), 0, V + 1)
    t = jnp.array([0.0, 0.3, 0.6, 0.9])
    teacher_lp = dfm.logprobs_fn(make_apply(t_graph), V)(t_params, x, t)
    for h in (1.0, 1 / 8, 1 / 1024):
        s_lp = dfm.logprobs_fn(make_apply(s_graph), V, h_conditioned=True)(student, x, t, jnp.full((4,), h))
        np.testing.assert_allclose(s_lp, teacher_lp, atol=5e-5)  # two graphs: float32 rounding apart
    assert float(jnp.std(teacher_lp)) > 0.1  # not the trivial zero-init output
    teacher = types.SimpleNamespace(apply=make_apply(t_graph), params=t_params)
    method = fsdfm.build(_config(V, n_ref=8, just_student=False), make_apply(s_graph), inputs={"teacher": teacher})
    extra = method.init_extra(student)
    x1 = jax.random.randint(jax.random.key(2), (64, L), 0, V)
    _, m = jax.jit(method.loss)(student, {"tokens": x1}, jax.random.key(3), 0, {"ema_params": student, **extra})
    assert 0.1 < float(m["anchor_fraction"]) < 0.9
    assert float(m["anchor_loss"]) < 1e-6 and float(m["distill_loss"]) > 1e-3


def test_tiny_dit_student_loss_is_differentiable_and_decreases():
    """25 Adam steps on one fixed batch and key (EMA = the current params) lower the loss."""
    graphdef, params = _dit("th")
    method = fsdfm.build(_config(V, n_ref=8, policy="uniform"), make_apply(graphdef))
    oracle = MarkovChainLanguage.random(1, V, L)
    batch = {"tokens": oracle.sample(jax.random.key(0), 16)}
    opt = optax.adam(3e-3)

    @jax.jit
    def step(p, s, key):
        f = lambda q: method.loss(q, batch, key, 0, {"ema_params": p})  # noqa: E731
        (val, _), g = jax.value_and_grad(f, has_aux=True)(p)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, val, optax.tree.norm(g)

    key = jax.random.key(1)
    state, first = opt.init(params), None
    for _ in range(25):
        params, state, val, gnorm = step(params, state, key)
        assert np.isfinite(float(gnorm))
        first = float(val) if first is None else first
    last = float(step(params, state, key)[2])
    assert np.isfinite(first) and last < 0.8 * first, (first, last)


# ------------------------------------------------------------------------------------------------
# Bad inputs.
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,value,match", [
    ("source", "gaussian", "method.source"),
    ("policy", "random", "method.policy"),
    ("teacher", "euler", "method.teacher"),
    ("rk4_labels", "exact", "method.rk4_labels"),
    ("n_ref", 100, "method.n_ref"),
    ("n_ref", 1, "method.n_ref"),
    ("tau", 0.0, "method.tau"),
    ("anneal_every", 0, "method.anneal_every"),
    ("just_student", "yes", "method.just_student"),
    ("teacher_weights", "best", "method.teacher_weights"),
])
def test_bad_config_raises(key, value, match):
    with pytest.raises(ValueError, match=match):
        fsdfm.build(_config(4, **{key: value}), lambda *a, **k: None)


def test_bad_model_and_step_inputs_raise():
    from dlm_jax.models import registry
    from dlm_jax.runs import resolve_inputs

    cfg = _config(4, cond="t")
    with pytest.raises(ValueError, match="^model.conditioning: 't'; expected 'th'"):
        registry.build(cfg, fsdfm.model_spec(cfg))
    with pytest.raises(ValueError, match="^method.teacher_workdir"):
        fsdfm.checkpoint_inputs(_config(4, just_student=False))
    with pytest.raises(ValueError, match="^workdir: '/nonexistent'"):
        resolve_inputs(fsdfm.checkpoint_inputs(_config(4, just_student=False, teacher_workdir="/nonexistent")))
    untrainable = fsdfm.build(_config(4, just_student=False), lambda *a, **k: None, inputs={})
    with pytest.raises(ValueError, match="^method.teacher_workdir"):
        untrainable.init_extra({})
    q = _product(4, 3)
    fn, _ = _recording(q, 4)
    x = jnp.full((2, 3), 4, jnp.int32)
    with pytest.raises(ValueError, match="^h: "):
        ft.teacher_logits(fn, jax.random.key(0), x, jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(ValueError, match="^h: "):
        ft.teacher_logits(fn, jax.random.key(0), x, jnp.zeros(2), jnp.full((2,), 1.5))
    with pytest.raises(ValueError, match="^t \\+ h"):
        ft.teacher_logits(fn, jax.random.key(0), x, jnp.full((2,), 0.75), jnp.full((2,), 0.5))
    method = fsdfm.build(_config(4, n_ref=8), _oracle_apply(q, 4, True))
    with pytest.raises(ValueError, match="steps"):
        method.sample(None, jax.random.key(0), num_samples=2, steps=0, length=3)
    with pytest.raises(ValueError, match="n_ref"):
        ft.sample_t_h(jax.random.key(0), 4, n_ref=12)


@pytest.mark.slow
def test_student_init_from_a_trained_dfm_workdir(tmp_path):
    """The two-stage recipe: ``teacher_tiny`` trained for 5 steps by the real trainer; its params
    read back by ``runs.load_params`` are bit-equal to the trainer's final params; the student
    config's ``init_from`` (mapping ``dit_t_to_th``, what the trainer runs on a fresh start) gives
    an identity-initialised student that computes the teacher's function; a uniform-source student
    from this mask-source teacher is refused with one line."""
    import sys

    from dlm_jax.methods.base import model_spec
    from dlm_jax.models import registry
    from dlm_jax.runs import init_from, load_params
    from dlm_jax.runs.workdir import local_mesh
    from dlm_jax.train import loop

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "configs"))
    import fsdfm as presets

    t_cfg = presets.get_config("teacher_tiny")
    t_cfg.train.steps, t_cfg.evals.eval.every, t_cfg.checkpoint.every = 5, 0, 5
    out = loop.train(t_cfg, str(tmp_path / "teacher"))
    teacher = load_params(str(tmp_path / "teacher"))
    assert teacher.config.method.name == "dfm" and teacher.config.model.vocab_size == 8 and teacher.step == 5
    for a, b in zip(jax.tree.leaves(teacher.params), jax.tree.leaves(jax.device_get(out["state"].params))):
        np.testing.assert_array_equal(a, b)
    s_cfg = presets.get_config("tiny")
    s_cfg.init_from.workdir = str(tmp_path / "teacher")
    s_cfg.model.vocab_size = 8
    student = registry.build(s_cfg, model_spec(s_cfg))
    init, inputs = init_from.initializer(s_cfg, student, local_mesh())
    s_params = jax.jit(init)(inputs)
    x = jax.random.randint(jax.random.key(0), (3, 16), 0, 9)
    t = jnp.array([0.1, 0.5, 0.9])
    ref = dfm.logprobs_fn(teacher.apply, 8)(teacher.params, x, t)
    got = dfm.logprobs_fn(student.apply, 8, h_conditioned=True)(s_params, x, t, jnp.full((3,), 0.25))
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert float(jnp.std(ref)) > 1e-4  # trained away from the zero-init output
    s_cfg.method.source = "uniform"
    init, inputs = init_from.initializer(s_cfg, student, local_mesh())
    with pytest.raises(ValueError, match="^method.source: 'uniform'; expected 'mask', the source of the init_from run"):
        jax.jit(init)(inputs)


def test_carry_over_reaches_student_shortcut_teacher_and_sampler():
    """``method.carry_over`` on a denoiser that ignores x equals that denoiser made to carry visible
    tokens over itself: the same loss terms (student, EMA shortcut teacher, anchor) and samples."""
    with jax.enable_x64(True):
        v, length = 5, 8
        q = _product(v, length)
        on = fsdfm.build(_config(v, n_ref=64, carry_over=True), _oracle_apply(q, v, False))
        built_in = fsdfm.build(_config(v, n_ref=64), _oracle_apply(q, v, True))
        plain = fsdfm.build(_config(v, n_ref=64), _oracle_apply(q, v, False))
        x1 = jax.random.randint(jax.random.key(0), (64, length), 0, v)
        m = [meth.loss(None, {"tokens": x1}, jax.random.key(1), 0, {"ema_params": None})[1]
             for meth in (on, built_in, plain)]
        for key in ("loss", "anchor_loss", "distill_loss"):
            np.testing.assert_allclose(float(m[0][key]), float(m[1][key]), rtol=1e-9, atol=1e-12)
        assert abs(float(m[0]["loss"]) - float(m[2]["loss"])) > 1e-2
        np.testing.assert_array_equal(on.sample(None, jax.random.key(3), num_samples=16, steps=4)[0],
                                      built_in.sample(None, jax.random.key(3), num_samples=16, steps=4)[0])
    with pytest.raises(ValueError, match=r"^method.carry_over: True; expected False with method.source='uniform'"):
        fsdfm.build(_config(v, source="uniform", carry_over=True), _oracle_apply(q, v, False))
