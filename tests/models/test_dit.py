"""DiT denoiser: numbers, not shapes. Tiny configs (width 32, depth 2) to stay fast on 2 CPU cores."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dlm_jax.models import (
    DiTConfig,
    abstract_model,
    build_model,
    count_params,
    init_student_from_teacher,
    make_apply,
)
from dlm_jax.models.attention import Attention, rotary_cos_sin
from dlm_jax.models.conditioning import identity_fuse_kernel

B, L = 2, 8
BASE = dict(vocab_size=11, num_classes=10, width=32, depth=2, heads=4, cond_dim=16, max_len=16)


def cfg(**kw):
    return DiTConfig(**{**BASE, **kw})


def perturb(params, seed=1, scale=0.3):
    """Add noise to every weight so zero-initialised layers become live."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def tokens(seed=0, vocab=11, length=L):
    return jax.random.randint(jax.random.key(seed), (B, length), 0, vocab)


T = jnp.array([0.2, 0.7])
H = jnp.array([0.125, 0.5])


@functools.lru_cache(maxsize=None)
def built(config):
    """(graphdef, zero-init params, perturbed params, jitted apply), built once per config per session."""
    g, p = build_model(config, 0)
    return g, p, perturb(p), jax.jit(make_apply(g))


def model(config):
    _, _, p, apply = built(config)
    return apply, p


def apply_of(config):
    """Jitted apply from the abstract graphdef alone (no init) for configs that share another's params."""
    return jax.jit(make_apply(abstract_model(config)[0]))


TH = cfg(conditioning="th", per_token_time=True)  # the workhorse config of this file


def maxdiff(a, b):
    return float(jnp.max(jnp.abs(a - b)))


def test_zero_init_output_and_gradients():
    g, p0, p1, apply = built(TH)
    raw = make_apply(g)
    x, cond = tokens(), {"t": T, "h": H}
    out = apply(p0, x, cond)
    assert out.dtype == jnp.float32 and out.shape == (B, L, 10)
    assert float(jnp.max(jnp.abs(out))) == 0.0
    w = jax.random.normal(jax.random.key(3), (B, L, 10))
    grad = jax.jit(jax.grad(lambda q: jnp.sum(raw(q, x, cond) * w)))
    g0, g1 = grad(p0), grad(p1)
    # at init only the final linear is live: adaLN-zero blocks everything upstream
    assert float(jnp.max(jnp.abs(g0["final"]["linear"]["kernel"][...]))) > 1e-3
    assert float(jnp.max(jnp.abs(g0["blocks"][0]["attn"]["qkv"]["kernel"][...]))) == 0.0
    for path, leaf in jax.tree_util.tree_flatten_with_path(g1)[0]:
        assert bool(jnp.all(jnp.isfinite(leaf))), jax.tree_util.keystr(path)
        assert float(jnp.max(jnp.abs(leaf))) > 0.0, jax.tree_util.keystr(path)


def test_output_depends_on_t_and_h():
    apply, p = model(TH)
    x = tokens()
    base = apply(p, x, {"t": T, "h": H})
    assert maxdiff(base, apply(p, x, {"t": T + 0.1, "h": H})) > 1e-3
    assert maxdiff(base, apply(p, x, {"t": T, "h": H * 0.5})) > 1e-3
    assert maxdiff(base, apply(p, x, {"t": T, "h": H})) == 0.0


def test_per_token_t_all_equal_matches_per_sequence_t():
    apply, p = model(TH)
    x = tokens()
    seq = apply(p, x, {"t": T, "h": H})
    tok = apply(p, x, {"t": jnp.repeat(T[:, None], L, 1), "h": H})
    assert maxdiff(seq, tok) < 1e-5
    # changing t at one position changes that position's output
    t2 = jnp.repeat(T[:, None], L, 1).at[:, 3].set(0.95)
    diff = jnp.max(jnp.abs(apply(p, x, {"t": t2, "h": H}) - tok), axis=(0, 2))
    assert float(diff[3]) > 1e-3


def test_none_conditioning_ignores_t_and_equals_t_model_at_zero():
    apply_t, p = model(cfg())
    apply_none = apply_of(cfg(conditioning="none"))  # same param structure
    x = tokens()
    a = apply_none(p, x, None)
    assert maxdiff(a, apply_none(p, x, {"t": T})) == 0.0
    assert maxdiff(a, apply_t(p, x, {"t": jnp.zeros(B)})) < 1e-6


def test_rotary_breaks_shift_equivariance():
    apply, p = model(cfg())
    x = tokens()
    out = apply(p, x, {"t": T})
    shifted = apply(p, jnp.roll(x, 1, axis=1), {"t": T})
    assert maxdiff(jnp.roll(out, 1, axis=1), shifted) > 1e-3


def _reference_attention(x, wqkv, wout, heads):
    """float64 softmax(QK^T/sqrt(d))V with half-split rotary, written out by hand."""
    x, wqkv, wout = (np.asarray(a, np.float64) for a in (x, wqkv, wout))
    b, n, w = x.shape
    d = w // heads
    qkv = np.einsum("blw,wthd->bltdh", x, wqkv.reshape(w, 3, heads, d)).transpose(0, 1, 2, 4, 3)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [b, n, heads, d]

    def rot(a):
        out = np.empty_like(a)
        for pos in range(n):
            for j in range(d // 2):
                ang = pos * 10000.0 ** (-2.0 * j / d)
                x1, x2 = a[:, pos, :, j], a[:, pos, :, j + d // 2]
                out[:, pos, :, j] = x1 * math.cos(ang) - x2 * math.sin(ang)
                out[:, pos, :, j + d // 2] = x2 * math.cos(ang) + x1 * math.sin(ang)
        return out

    q, k = rot(q), rot(k)
    s = np.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d)
    s = np.exp(s - s.max(-1, keepdims=True))
    prob = s / s.sum(-1, keepdims=True)
    o = np.einsum("bhij,bjhd->bihd", prob, v)
    return o.reshape(b, n, w) @ wout.reshape(w, w)


def test_attention_matches_handwritten_rotary_reference():
    with nnx.use_eager_sharding(False):
        attn = Attention(32, 4, rngs=nnx.Rngs(params=5))
    x = jax.random.normal(jax.random.key(6), (B, L, 32))
    cos, sin = rotary_cos_sin(L, 8)
    got = jax.jit(lambda a: attn(a, cos, sin))(x)
    ref = _reference_attention(x, attn.qkv.kernel[...], attn.out.kernel[...], 4)
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5, rtol=1e-5)


def test_bfloat16_compute_close_to_float32():
    apply32, p = model(cfg())
    apply16 = apply_of(cfg(dtype="bfloat16"))
    x = tokens()
    a, b = apply32(p, x, {"t": T}), apply16(p, x, {"t": T})
    assert b.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(abstract_model(cfg(dtype="bfloat16"))[1]))
    rel = maxdiff(a, b) / float(jnp.max(jnp.abs(a)))
    assert 0.0 < rel < 0.05


def test_every_param_has_logical_partitioning():
    allowed = {"vocab", "embed", "mlp", "heads", "kv", "cond", "norm", None}
    _, p = abstract_model(cfg(conditioning="th", self_cond_dim=3))
    n = 0
    for path, var in nnx.to_flat_state(p):
        names = var.get_metadata().get("out_sharding")
        assert names is not None, path
        assert len(names) == len(var.get_value().shape) and set(names) <= allowed, (path, names)
        real = [a for a in names if a is not None]
        assert len(real) == len(set(real)), (path, names)
        n += 1
    assert n == len(jax.tree.leaves(p))
    # and on the concrete state
    assert nnx.get_partition_spec(built(TH)[1])["blocks"][0]["attn"]["qkv"]["kernel"].get_value() == \
        jax.sharding.PartitionSpec("embed", None, "heads", "kv")


def test_build_works_under_a_mesh():
    mesh = jax.make_mesh((len(jax.devices()),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    with jax.set_mesh(mesh):
        g, p = build_model(cfg(), 0)
        _, a = abstract_model(cfg())
    g0, p0 = built(cfg())[:2]
    assert g == g0 and count_params(a) == count_params(p0) == 37738
    assert all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(p), jax.tree.leaves(p0)))


def _hand_count(c: DiTConfig) -> int:
    w, k, m = c.width, c.cond_dim, c.mlp_ratio * c.width
    embed = c.vocab_size * w if c.input == "tokens" else c.input_dim * w + w
    temb = 256 * k + k + k * k + k
    block = 2 * w + w * 3 * w + w * w + (w * m + m) + (m * w + w) + (k * 6 * w + 6 * w)
    final = w + (k * 2 * w + 2 * w) + (w * c.num_classes + c.num_classes)
    total = embed + temb + c.depth * block + final + c.self_cond_dim * w
    if c.conditioning == "th":
        total += temb + (2 * k * 2 * k + 2 * k) + (c.depth + 1) * (2 * k * k + k)
    return total


@pytest.mark.parametrize("kw", [dict(), dict(conditioning="th"),
                                dict(input="vectors", input_dim=6, vocab_size=0, self_cond_dim=5)])
def test_param_count_matches_formula(kw):
    c = cfg(**kw)
    assert count_params(abstract_model(c)[1]) == _hand_count(c)


def test_param_count_tiny_by_hand():
    # vocab 11, width 32, cond 16, classes 10, depth 2, "t": worked out as numbers
    emb, temb = 11 * 32, 256 * 16 + 16 + 16 * 16 + 16
    block = 64 + 3072 + 1024 + (4096 + 128) + (4096 + 32) + (3072 + 192)
    final = 32 + (1024 + 64) + (320 + 10)
    assert count_params(built(cfg())[1]) == emb + temb + 2 * block + final == 37738
    th_extra = temb + (32 * 32 + 32) + 3 * (32 * 16 + 16)
    assert count_params(built(TH)[1]) == 37738 + th_extra == 44762


def test_student_from_teacher():
    apply_t, pt = model(cfg())
    sc_id = cfg(conditioning="th", per_token_time=True, identity_h_init=True)
    _, ps_raw, _, apply_s = built(TH)  # same param structure and same apply as sc_id
    x = tokens()
    teacher = apply_t(pt, x, {"t": T})
    hs = (H, jnp.array([0.9, 0.01]))
    # identity_h_init: exact teacher function, whatever h; built params already carry the identity fusers
    _, ps_id = build_model(sc_id, 7)
    assert bool(jnp.array_equal(ps_id["cond"]["fuse"]["kernel"][...], identity_fuse_kernel(16)))
    for start in (ps_id, ps_raw):
        ps = init_student_from_teacher(pt, start, sc_id)
        assert bool(jnp.array_equal(ps["blocks"][1]["mlp"]["fc_in"]["kernel"][...],
                                    pt["blocks"][1]["mlp"]["fc_in"]["kernel"][...]))
        for h in hs:  # two graphs (the fuser's identity matmul): float32 rounding apart, not more
            assert maxdiff(teacher, apply_s(ps, x, {"t": T, "h": h})) < 5e-5
    # FS-DFM's own init (random new layers): shared weights copied, function differs
    ps = init_student_from_teacher(pt, ps_raw, TH)
    assert bool(jnp.array_equal(ps["final"]["linear"]["kernel"][...], pt["final"]["linear"]["kernel"][...]))
    assert maxdiff(teacher, apply_s(ps, x, {"t": T, "h": H})) > 1e-3


def test_student_from_teacher_rejects_mismatched_teacher():
    _, pt = abstract_model(cfg(conditioning="t", width=64))
    with pytest.raises(ValueError, match="teacher_params"):
        init_student_from_teacher(pt, built(TH)[1], TH)


def test_vector_input_and_self_conditioning():
    c = cfg(input="vectors", input_dim=6, vocab_size=0, self_cond_dim=5)
    apply, p = model(c)
    x = jax.random.normal(jax.random.key(8), (B, L, 6))
    sc = jax.random.normal(jax.random.key(9), (B, L, 5))
    base = apply(p, x, {"t": T})
    assert maxdiff(base, apply(p, x, {"t": T, "self_cond": jnp.zeros((B, L, 5))})) < 1e-6
    assert maxdiff(base, apply(p, x, {"t": T, "self_cond": sc})) > 1e-3
    assert maxdiff(base, apply(p, x * 1.5, {"t": T})) > 1e-3


def test_dropout_uses_explicit_rng():
    apply0, p = model(cfg())
    apply = apply_of(cfg(dropout=0.5))
    x, k = tokens(), jax.random.key(11)
    det = apply(p, x, {"t": T})
    assert maxdiff(det, apply0(p, x, {"t": T})) == 0.0
    d1 = apply(p, x, {"t": T}, dropout_rng=k)
    assert maxdiff(d1, apply(p, x, {"t": T}, dropout_rng=k)) == 0.0
    assert maxdiff(d1, det) > 1e-3
    assert maxdiff(d1, apply(p, x, {"t": T}, dropout_rng=jax.random.key(12))) > 1e-3


def test_bad_inputs_raise_value_error_naming_the_key():
    g, p = abstract_model(cfg(conditioning="th"))  # validation raises before any compute
    apply, x = make_apply(g), tokens()
    good = {"t": T, "h": H}
    cases = [
        (x.at[0, 0].set(11), good, "x: token ids"),
        (x.at[0, 0].set(-1), good, "x: token ids"),
        (tokens(length=17), good, "max_len"),
        (x[..., None], good, "x: shape"),
        (x.astype(jnp.float32), good, "x: dtype"),
        (x, {"h": H}, r"cond\['t'\]: missing"),
        (x, {"t": T}, r"cond\['h'\]: missing"),
        (x, {"t": jnp.ones((B, L)), "h": H}, r"cond\['t'\]: shape"),
        (x, {"t": T, "h": H, "tt": T}, "cond: key"),
        (x, {**good, "self_cond": jnp.ones((B, L, 3))}, r"cond\['self_cond'\]"),
    ]
    for xx, cc, msg in cases:
        with pytest.raises(ValueError, match=msg):
            apply(p, xx, cc)
    gt, pt = abstract_model(cfg())
    with pytest.raises(ValueError, match=r"cond\['h'\]: given"):
        make_apply(gt)(pt, x, good)


@pytest.mark.parametrize("d,key", [
    (dict(conditioning="tt"), "conditioning"), (dict(width=30), "width"), (dict(dropout=1.0), "dropout"),
    (dict(input="vectors"), "input_dim"), (dict(identity_h_init=True), "identity_h_init"),
    (dict(bogus=1), "bogus"), (dict(dtype="float16"), "dtype"), (dict(depth=0), "depth"),
])
def test_bad_config_raises(d, key):
    with pytest.raises(ValueError, match=f"^{key}: "):
        DiTConfig.from_dict({**BASE, **d})
