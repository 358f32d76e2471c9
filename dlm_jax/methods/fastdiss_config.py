"""FastDiSS's config keys (METHODS §3.7): every reconstructed choice behind a named key, with its
default, validated into a frozen ``Settings`` before anything compiles (defaults written back).

=====================  ===================  ===================================================
key                    default              meaning
=====================  ===================  ===================================================
``dim``                16                   latent width d (target embedding, x0)
``schedule``           "interchangeable"    or "sqrt" (§3.1)
``time_sampler``       "clipped"            t ~ U[t_min, 1], t_min from the table every step; "uniform": U[0, 1]
``clip_plus_one``      False                DINOISER's clipped_s variant (var + 1)
``scp``                False                self-conditioning perturbation on/off
``scp_mode``           "previous_step"      λ, γ from t⁺ = t + Δ (exact marginal at t⁺); "constant"
``scp_delta``          "steps"              Δ = 1/K, K uniform over ``scp_steps``; "uniform": U[0, scp_delta_max]
``scp_steps``          (1, 2, 5, 10)
``scp_delta_max``      0.5
``scp_lambda``         0.9                  constant mode: λ > 0
``scp_gamma``          0.1                  constant mode: γ >= 0
``scp_shared_noise``   False                True: the SC latent reuses the main pass's ε (METHODS §3's
                                            default) — a shortcut: (z_t, z') then fix z_0 exactly, and a
                                            trained +SCP run reads 95.6% of tokens right with the shared ε vs
                                            18.0% with a fresh one (BENCHMARKS, FastDiSS); so fresh by default
``scp_time_label``     "t_plus"             the SC pass is told t⁺ ("t": told t)
``mans``               False                model-aware noise scaling on/off
``mans_betas``         (2.0, 3.0, 4.0)      β per phase
``beta_phases``        None                 phase boundaries in updates; None = ⅓ and ⅔ of train.steps
``mans_t_max``         1.0                  τ = min(β t, t_max)
``mans_scale``         "noise_and_label"    or "label_only" (latent at t, label τ)
``first_pass``         0.5                  probability per batch of the no-SC first-pass loss on z_t
``rounding_weight``    1.0                  rounding cross-entropy CE(z_0 Eᵀ, y)
``length_weight``      0.1                  length-predictor cross-entropy
``sampler``            "ddim"               or "cedi" (§2.4), "diffuseq" (ancestral, fresh noise)
``t_end``, ``cedi_end``  1e-3, 0.99         latent grid end; CEDI model-time end
``length_mode``        "predict"            length predictor (beam); "source": the source length
``length_beam``        1                    lengths per source
``mbr``                1                    noise draws per length; candidates = beam × mbr, MBR-selected
=====================  ===================  ===================================================

SCP off ⇔ λ = 1, γ = 0, t_sc = t; MANS off ⇔ β ≡ 1 (§3.3).
"""

from __future__ import annotations

import dataclasses

from dlm_jax.checks import check_bool, check_choice, check_float, check_int, fail, resolve
from dlm_jax.processes.embedding_diffusion import DELTA_MODES, SCHEDULES, check_phases
from dlm_jax.samplers.ddim_sc import MODES

TIME_SAMPLERS = ("clipped", "uniform")
SCP_MODES = ("previous_step", "constant")
TIME_LABELS = ("t_plus", "t")
MANS_SCALES = ("noise_and_label", "label_only")
LENGTH_MODES = ("predict", "source")
SAMPLERS = MODES + ("diffuseq",)  # DDIM / CEDI (samplers.ddim_sc), DiffuSeq-style (samplers.diffuseq)


@dataclasses.dataclass(frozen=True)
class Settings:
    dim: int
    schedule: str
    time_sampler: str
    clip_plus_one: bool
    scp: bool
    scp_mode: str
    scp_delta: str
    scp_steps: tuple
    scp_delta_max: float
    scp_lambda: float
    scp_gamma: float
    scp_shared_noise: bool
    scp_time_label: str
    mans: bool
    mans_betas: tuple
    beta_phases: tuple
    mans_t_max: float
    mans_scale: str
    first_pass: float
    rounding_weight: float
    length_weight: float
    sampler: str
    t_end: float
    cedi_end: float
    length_mode: str
    length_beam: int
    mbr: int


def _tuple(key, value, kind):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not value:
        fail(key, value, f"a non-empty tuple of {kind.__name__}s")
    return tuple(value)


def settings(config) -> Settings:
    """Read, default (written back) and check every key of ``config.method``."""
    mc = config.method

    def r(key, default, check=None, **kw):
        return resolve(mc, key, default, prefix="method", check=check, **kw)

    pos = dict(min=0.0, min_open=True)
    steps = r("scp_steps", (1, 2, 5, 10))
    steps = _tuple("method.scp_steps", steps, int)
    for k in steps:
        check_int("method.scp_steps", k, min=1)
    betas = tuple(float(check_float("method.mans_betas", b, min=0.0, min_open=True))
                  for b in _tuple("method.mans_betas", r("mans_betas", (2.0, 3.0, 4.0)), float))
    phases = r("beta_phases", None)
    if phases is None:
        total = config.train.get("steps", None) if "train" in config else None
        if isinstance(total, int) and total >= 3:
            phases = tuple(total * i // len(betas) for i in range(1, len(betas)))
        else:
            phases = tuple(range(1, len(betas)))
    phases, betas = check_phases(tuple(phases), betas)
    return Settings(
        dim=r("dim", 16, check_int, min=1),
        schedule=r("schedule", "interchangeable", check_choice, allowed=SCHEDULES),
        time_sampler=r("time_sampler", "clipped", check_choice, allowed=TIME_SAMPLERS),
        clip_plus_one=r("clip_plus_one", False, check_bool),
        scp=r("scp", False, check_bool),
        scp_mode=r("scp_mode", "previous_step", check_choice, allowed=SCP_MODES),
        scp_delta=r("scp_delta", "steps", check_choice, allowed=DELTA_MODES),
        scp_steps=steps,
        scp_delta_max=r("scp_delta_max", 0.5, check_float, min=0.0, max=1.0),
        scp_lambda=r("scp_lambda", 0.9, check_float, **pos),
        scp_gamma=r("scp_gamma", 0.1, check_float, min=0.0),
        scp_shared_noise=r("scp_shared_noise", False, check_bool),
        scp_time_label=r("scp_time_label", "t_plus", check_choice, allowed=TIME_LABELS),
        mans=r("mans", False, check_bool),
        mans_betas=betas,
        beta_phases=phases,
        mans_t_max=r("mans_t_max", 1.0, check_float, min=0.0, max=1.0, min_open=True),
        mans_scale=r("mans_scale", "noise_and_label", check_choice, allowed=MANS_SCALES),
        first_pass=r("first_pass", 0.5, check_float, min=0.0, max=1.0),
        rounding_weight=r("rounding_weight", 1.0, check_float, min=0.0),
        length_weight=r("length_weight", 0.1, check_float, min=0.0),
        sampler=r("sampler", "ddim", check_choice, allowed=SAMPLERS),
        t_end=r("t_end", 1e-3, check_float, min=0.0, max=1.0, max_open=True),
        cedi_end=r("cedi_end", 0.99, check_float, min=0.0, max=1.0),
        length_mode=r("length_mode", "predict", check_choice, allowed=LENGTH_MODES),
        length_beam=r("length_beam", 1, check_int, min=1),
        mbr=r("mbr", 1, check_int, min=1),
    )
