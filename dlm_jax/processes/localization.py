"""DSL's localization channel over unit-norm token anchors, METHODS §4.1 and §4.3.

SNR direction: **s = 0 carries no information ("[MASK]"), s → ∞ is clean**; s grows as the
sample is revealed (the opposite of masked-diffusion time t, where t = 0 is clean).

* anchors ``e(v)``, ``[V, d]``, unit L2 norm (``random_anchors``, ``pca_anchors``,
  ``check_anchors``): with ``||e|| = 1`` the Gaussian likelihood of ``z`` depends on v only
  through ``⟨z, e(v)⟩``, so the exact posterior ``p(x | z) ∝ p(x) Π_i exp⟨z_i, e(x_i)⟩`` needs no
  SNR input (``log_evidence``);
* the channel ``z_i = s_i e(x_i) + √s_i ε_i`` (``encode``; s = 0 gives exactly z = 0);
* the mixed training SNRs (``sample_snr``): per sequence, smoothed ROAR with probability
  ``1/roar_frac``, else per-token LogNormal(μ, σ) clamped at ``ln_clamp``;
* the posterior mean ``x̂(z) = Σ_v p(v|z) e(v)`` (``posterior_mean``) that drives the SL dynamics
  ``dz = x̂(z) ds + dW`` (``sl_euler_maruyama``: the plain Euler–Maruyama reference integrator);
* the I-MMSE likelihood bound (``immse_bound``), per token, in nats::

      immse_bound(denoise_fn, tokens [B, L], anchors [V, d], key, *, grid [G], noise="brownian")
          -> [B, L],   mean = ∫_0^S ½ E||e(x_i) − x̂_i(z_s)||² ds + E[−log p_θ(x_i | z_S)],  S = grid[-1]

  all tokens at the same s; trapezoid rule on ``grid`` (increasing, from 0; dense near 0 where
  the mmse falls fastest: ``immse_grid``; the truncation S is ``grid[-1]``: report it);
  ``denoise_fn(z [B, L, d]) -> log-probs [B, L, V]``, called once per grid point. The noise is
  one Brownian path per token with a zero-mean Itô control variate (default; low variance) or
  one ε shared by every s (``"common"``, common random numbers). Summed over positions, its
  mean bounds the sequence NLL from above (the end term uses marginals ``p(x_i | z_S)``, the
  only slack besides S); for the exact denoiser of one token it equals ``−log p(x)`` for every
  S (METHODS §4.6 check 2) up to the trapezoid error and Monte Carlo noise, and for a prior-q
  Bayes denoiser the cross-entropy ``−log q(x)``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.checks import check_bool, check_choice, check_float, check_int, fail

__all__ = [
    "random_anchors",
    "pca_anchors",
    "check_anchors",
    "encode",
    "log_evidence",
    "check_snr_config",
    "sample_snr",
    "posterior_mean",
    "immse_grid",
    "immse_bound",
    "sl_euler_maruyama",
]

Array = jax.Array
NORM_TOL = 1e-3


def _normalise_rows(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def random_anchors(key, vocab_size: int, dim: int) -> Array:
    """Frozen random anchors: Gaussian rows L2-normalised, float32 ``[V, d]``."""
    v = check_int("vocab_size", vocab_size, min=1)
    d = check_int("dim", dim, min=1)
    return _normalise_rows(jax.random.normal(key, (v, d), jnp.float32))


def pca_anchors(embedding, dim: int) -> Array:
    """Anchors from a token embedding ``[V, D]``: the centred rows projected on their top-``dim``
    principal directions, then L2-normalised (float64 SVD in numpy; run once at set-up). Each
    direction's sign is fixed so that its largest-magnitude coordinate is positive (SVD leaves it
    free), so the result is a function of the embedding. Returns float32 ``[V, dim]``."""
    emb = np.asarray(embedding, np.float64)
    if emb.ndim != 2 or not np.all(np.isfinite(emb)):
        fail("embedding", f"shape {emb.shape}", "a finite 2-D array [V, D]")
    d = check_int("dim", dim, min=1, max=min(emb.shape))
    centred = emb - emb.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[:d].T
    proj = proj * np.where(proj[np.argmax(np.abs(proj), axis=0), np.arange(d)] < 0, -1.0, 1.0)
    norms = np.linalg.norm(proj, axis=-1, keepdims=True)
    if np.any(norms <= 1e-12 * max(1.0, float(np.abs(centred).max()))):
        fail("embedding", f"row {int(np.argmin(norms))} projects to 0", f"rows with a non-zero top-{d} PCA projection")
    return jnp.asarray(proj / norms, jnp.float32)


def check_anchors(anchors, *, vocab_size: int | None = None, dim: int | None = None, name: str = "anchors") -> Array:
    """``anchors`` as a jnp array after checking it is a finite 2-D ``[V, d]`` array of the given
    sizes whose rows have unit norm (to ``1e-3``): one-line ``ValueError`` otherwise. Needs
    concrete values (call before tracing)."""
    a = np.asarray(anchors)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.floating):
        fail(name, f"shape {a.shape} dtype {a.dtype}", "a 2-D float array [V, d]")
    if (vocab_size is not None and a.shape[0] != vocab_size) or (dim is not None and a.shape[1] != dim):
        want = f"[{vocab_size if vocab_size is not None else 'V'}, {dim if dim is not None else 'd'}]"
        fail(name, f"shape {a.shape}", f"shape {want}")
    norms = np.linalg.norm(a.astype(np.float64), axis=-1)
    if not np.all(np.isfinite(norms)) or np.any(np.abs(norms - 1.0) > NORM_TOL):
        worst = int(np.nanargmax(np.abs(np.nan_to_num(norms, nan=np.inf) - 1.0)))
        fail(name, f"row {worst} has norm {norms[worst]:.6g}", f"unit-norm rows (|norm - 1| <= {NORM_TOL})")
    return jnp.asarray(anchors)


def encode(key, tokens, snr, anchors) -> Array:
    """The localization channel ``z = s·e(x) + √s·ε``, ``ε ~ N(0, I_d)``, per token.

    ``tokens`` int ``[B, L]``; ids ``>= V`` (the mask id) are encoded at s = 0. ``snr`` (s: 0 =
    no information, large = clean) broadcastable to ``[B, L]`` (scalar, ``[B, 1]`` or
    ``[B, L]``), ``>= 0``. Returns ``z [B, L, d]`` in the anchors' float dtype (float32 for
    float32 anchors); exactly 0 where s = 0.
    """
    anchors = jnp.asarray(anchors)
    tokens = jnp.asarray(tokens)
    v = anchors.shape[0]
    dtype = jnp.result_type(anchors.dtype, jnp.float32)
    masked = tokens >= v
    s = jnp.where(masked, 0.0, jnp.broadcast_to(jnp.asarray(snr, dtype), tokens.shape)).astype(dtype)
    e = anchors.astype(dtype)[jnp.where(masked, 0, tokens)]
    eps = jax.random.normal(key, e.shape, dtype)
    return s[..., None] * e + jnp.sqrt(s)[..., None] * eps


def log_evidence(z, anchors) -> Array:
    """SNR-invariant log-evidence ``⟨z, e(v)⟩`` (up to a per-position constant), ``[..., d] ->
    [..., V]``; exact for unit-norm anchors at any SNR."""
    return jnp.einsum("...d,vd->...v", z, jnp.asarray(anchors).astype(jnp.result_type(z)))


def check_snr_config(*, s_max=100.0, roar_frac=10.0, mu=1.69, sigma=0.9, ln_clamp=40.0, per_token=True,
                     prefix: str = "") -> dict:
    """Validate the mixed-SNR settings (``s_max > 0``, ``roar_frac >= 1``, finite ``mu``,
    ``sigma > 0``, ``ln_clamp > 0``, bool ``per_token``) with one-line errors; returns them as
    floats/bool. ``prefix`` (e.g. ``"method."``) names the config section in errors."""
    return dict(
        s_max=check_float(f"{prefix}s_max", s_max, min=0.0, min_open=True),
        roar_frac=check_float(f"{prefix}roar_frac", roar_frac, min=1.0),
        mu=check_float(f"{prefix}mu", mu),
        sigma=check_float(f"{prefix}sigma", sigma, min=0.0, min_open=True),
        ln_clamp=check_float(f"{prefix}ln_clamp", ln_clamp, min=0.0, min_open=True),
        per_token=check_bool(f"{prefix}per_token", per_token),
    )


def sample_snr(key, batch: int, length: int, *, s_max: float = 100.0, roar_frac: float = 10.0, mu: float = 1.69,
               sigma: float = 0.9, ln_clamp: float = 40.0, per_token: bool = True):
    """Mixed ROAR + LogNormal training SNRs (s: 0 = no information, large = clean), METHODS §4.1.

    Per sequence, with probability ``1/roar_frac``: smoothed ROAR — ``k ~ U{0..L−1}`` uniformly
    chosen positions revealed at ``s ~ U[0.8, 1]·s_max``, the other ``L−k >= 1`` at
    ``s ~ U[0, 1)``. Otherwise ``s = min(exp(μ + σ N(0,1)), ln_clamp)``, one draw per token
    (``per_token``) or per sequence. Returns ``(snr [B, L] float32, roar [B] bool,
    revealed [B, L] bool)``; ``revealed`` marks ROAR's high-SNR positions (False off ROAR).
    """
    b = check_int("batch", batch, min=1)
    n = check_int("length", length, min=1)
    cfg = check_snr_config(s_max=s_max, roar_frac=roar_frac, mu=mu, sigma=sigma, ln_clamp=ln_clamp,
                           per_token=per_token)
    k_choice, k_count, k_order, k_hi, k_lo, k_ln = jax.random.split(key, 6)
    roar = jax.random.uniform(k_choice, (b,)) < 1.0 / cfg["roar_frac"]
    count = jax.random.randint(k_count, (b, 1), 0, n)  # k in {0..L-1}
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_order, (b, n)), axis=-1), axis=-1)
    revealed = (rank < count) & roar[:, None]  # a uniform k-subset
    s_hi = jax.random.uniform(k_hi, (b, n), minval=0.8, maxval=1.0) * cfg["s_max"]
    s_lo = jax.random.uniform(k_lo, (b, n))
    normal = jax.random.normal(k_ln, (b, n) if cfg["per_token"] else (b, 1))
    s_ln = jnp.minimum(jnp.exp(cfg["mu"] + cfg["sigma"] * normal), cfg["ln_clamp"])
    snr = jnp.where(roar[:, None], jnp.where(revealed, s_hi, s_lo), jnp.broadcast_to(s_ln, (b, n)))
    return snr.astype(jnp.float32), roar, revealed


def posterior_mean(logprobs, anchors, top_k: int | None = None) -> Array:
    """``x̂ = Σ_v p(v) e(v)`` with ``p = softmax(logprobs)`` (log-probs or logits ``[..., V]``);
    with ``top_k`` only the k most likely tokens, renormalised. Returns ``[..., d]``."""
    logprobs = jnp.asarray(logprobs)
    anchors = jnp.asarray(anchors).astype(jnp.result_type(logprobs.dtype, jnp.float32))
    v = anchors.shape[0]
    if logprobs.shape[-1] != v:
        fail("logprobs", f"last dim {logprobs.shape[-1]}", f"V = {v} (the anchors' rows)")
    if top_k is None or check_int("top_k", top_k, min=1) >= v:
        return jax.nn.softmax(logprobs, axis=-1).astype(anchors.dtype) @ anchors
    vals, idx = jax.lax.top_k(logprobs, top_k)
    p = jax.nn.softmax(vals, axis=-1).astype(anchors.dtype)
    return jnp.einsum("...k,...kd->...d", p, anchors[idx])


def immse_grid(s_max: float, *, num_dense: int = 200, dense_max: float = 1.0, num_geometric: int = 400) -> np.ndarray:
    """SNR grid for ``immse_bound``: ``num_dense`` linear points on ``[0, dense_max]`` (the mmse
    falls fastest near s = 0) then ``num_geometric`` geometric points up to ``s_max`` (the
    truncation S). Increasing float64 ``[G]``, starting at 0 and ending at ``s_max``."""
    s_max = check_float("s_max", s_max, min=0.0, min_open=True)
    dense_max = check_float("dense_max", dense_max, min=0.0, min_open=True)
    num_dense = check_int("num_dense", num_dense, min=2)
    num_geometric = check_int("num_geometric", num_geometric, min=0)
    if s_max <= dense_max or num_geometric == 0:
        return np.linspace(0.0, s_max, num_dense)
    dense = np.linspace(0.0, dense_max, num_dense)
    return np.concatenate([dense, np.geomspace(dense_max, s_max, num_geometric + 1)[1:]])


def _check_grid(grid) -> Array:
    g = np.asarray(grid, np.float64)
    if g.ndim != 1 or g.size < 2 or g[0] != 0.0 or not np.all(np.diff(g) > 0) or not np.all(np.isfinite(g)):
        fail("grid", f"shape {g.shape}", "an increasing finite 1-D SNR grid of >= 2 points starting at 0")
    return g


def immse_bound(denoise_fn: Callable, tokens, anchors, key, *, grid, noise: str = "brownian") -> Array:
    """Per-token I-MMSE bound in nats, ``[B, L]`` (see the module docstring); average it over
    draws. SNR direction: the integral runs from s = 0 (no information) to S = ``grid[-1]``.

    ``noise="common"``: ``z_s = s e(x) + √s ε`` with one ε per token at every s (common random
    numbers across s). ``noise="brownian"`` (default): ``z_s = s e(x) + W_s`` sampled exactly on
    the grid along one Brownian path per token, plus the Itô control variate
    ``Σ_k (e(x) − x̂(z_{s_k}))·(W_{s_{k+1}} − W_{s_k})``, which has mean exactly 0 on any grid:
    same expectation, but for a Bayes denoiser the pathwise sum equals ``−log p(x)`` up to
    discretisation, so the per-draw spread falls ~20× (CRN paths that start on the wrong side of
    two close anchors stay there, which makes CRN draws heavy-tailed).
    """
    g = _check_grid(grid)
    noise = check_choice("noise", noise, ("brownian", "common"))
    anchors = jnp.asarray(anchors)
    tokens = jnp.asarray(tokens)
    dtype = jnp.result_type(anchors.dtype, jnp.float32)
    anchors = anchors.astype(dtype)
    e = anchors[tokens]  # [B, L, d]
    grid = jnp.asarray(g, dtype)
    k_eps, k_path = jax.random.split(key)
    eps = jax.random.normal(k_eps, e.shape, dtype)

    def point(z):
        """(e − x̂(z), ½||e − x̂||², −log p(x|z)) at one SNR."""
        logp = denoise_fn(z)
        err = e - posterior_mean(logp, anchors)
        nll = -jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
        return err, 0.5 * jnp.sum(err**2, axis=-1), nll

    def step(carry, inputs):
        z, err, half_sq, _, integral, control = carry
        s0, s1, k = inputs
        h = s1 - s0
        if noise == "common":
            z_next, dw = s1 * e + jnp.sqrt(s1) * eps, None
        else:
            dw = jnp.sqrt(h) * jax.random.normal(k, e.shape, dtype)
            z_next = z + h * e + dw
            control = control + jnp.sum(err * dw, axis=-1)
        err1, half_sq1, nll1 = point(z_next)
        integral = integral + 0.5 * h * (half_sq + half_sq1)
        return (z_next, err1, half_sq1, nll1, integral, control), None

    z0 = grid[0] * e + jnp.sqrt(grid[0]) * eps  # = 0: the grid starts at s = 0
    err0, half_sq0, nll0 = point(z0)
    zeros = jnp.zeros_like(half_sq0)
    keys = jax.random.split(k_path, g.size - 1)
    carry, _ = jax.lax.scan(step, (z0, err0, half_sq0, nll0, zeros, zeros), (grid[:-1], grid[1:], keys))
    _, _, _, nll_end, integral, control = carry
    return integral + nll_end + control


def sl_euler_maruyama(denoise_fn: Callable, key, anchors, *, num_samples: int, length: int, grid,
                      top_k: int | None = None) -> Array:
    """Reference integrator of the exact SL dynamics ``dz = x̂(z) ds + dW`` from ``z = 0`` at
    s = 0 (no information) over the increasing SNR ``grid`` (starting at 0): plain
    Euler–Maruyama, one denoiser call per step. Returns ``z_S [num_samples, length, d]`` at
    S = ``grid[-1]``; draw tokens from ``p(x | z_S)`` (with the exact posterior the law of
    ``z_S`` is that of ``S e(X) + √S ε``, X ~ data, up to discretisation error)."""
    n = check_int("num_samples", num_samples, min=1)
    length = check_int("length", length, min=1)
    g = _check_grid(grid)
    anchors = jnp.asarray(anchors)
    dtype = jnp.result_type(anchors.dtype, jnp.float32)
    ds = jnp.asarray(np.diff(g), dtype)

    def step(z, inputs):
        h, k = inputs
        drift = posterior_mean(denoise_fn(z), anchors, top_k)
        return z + drift * h + jnp.sqrt(h) * jax.random.normal(k, z.shape, dtype), None

    z0 = jnp.zeros((n, length, anchors.shape[1]), dtype)
    z, _ = jax.lax.scan(step, z0, (ds, jax.random.split(key, ds.shape[0])))
    return z

