"""Data sources by name, and the ``data`` config keys they read.

``register_source(name, builder, ...)`` adds a source; ``source_names()`` lists them (the four
built-ins of ``dlm_jax.data.builtin`` first, in registration order); ``get_source(name)`` returns
its ``SourceSpec``. Any module may register one (a project, a test) before the pipeline is built.

A builder is called as ``builder(config, split, seq_len, seed) -> Examples`` with the validated
``data`` config (a plain dict), the split ("train", "validation"; "all" where a source allows it),
the row length L (``None`` when only the text is wanted, to train a tokenizer) and the seed.
``Examples`` pairs a grain random-access source (``len`` + ``__getitem__``) with the row maker
that turns its examples into fixed-length rows: dicts of named arrays (``dlm_jax.data.rows``).

Config keys: the common ones below (``source``, tokenizer, shuffle, epochs, threads; ``seq_len``
is accepted and ignored so callers can pass the whole ``config.data``) plus every key a
registered source declares with its default. Unknown keys are an error; a source checks its own
keys (``validate``) only when it is the one chosen.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable, Iterable, Mapping

from dlm_jax.checks import check_bool, check_choice, check_int, check_str, fail

__all__ = ["Examples", "SourceSpec", "register_source", "source_names", "get_source", "validate_data_config",
           "default_data_config", "optional_int", "COMMON_DEFAULTS"]

# Keys every source shares. tokenizer_*: the sentencepiece model trained on the train split
# (sources with their own tokenizer ignore them); shuffle: seeded global example shuffle, fresh
# every epoch; shuffle_window: rows shuffled in windows of this size by row makers that pack
# (0 or 1: off); num_epochs: None repeats forever; num_threads: grain read threads.
COMMON_DEFAULTS: Mapping[str, Any] = types.MappingProxyType(dict(
    source="stdlib", tokenizer_vocab_size=1024, tokenizer_train_chars=2_000_000, tokenizer_path="",
    shuffle=True, shuffle_window=1024, num_epochs=None, num_threads=2,
))
_IGNORED = frozenset({"seq_len"})  # the trainer's key inside config.data; the pipeline gets it as an argument


def _texts(example) -> Iterable[str]:
    """Default text of an example for tokenizer training: a str itself; a mapping's str values."""
    if isinstance(example, str):
        return (example,)
    if isinstance(example, Mapping):
        return tuple(v for v in example.values() if isinstance(v, str))
    return ()


@dataclasses.dataclass(frozen=True)
class Examples:
    """What a builder returns.

    ``source``: random-access examples (``len`` + ``__getitem__``; ``len == sys.maxsize`` means
    infinite). ``rows``: a row maker, ``rows(examples: grain.MapDataset, tokenizer, *, seq_len,
    seed, training, read_options) -> grain.IterDataset`` of dicts of fixed-shape arrays (see
    ``dlm_jax.data.rows``); it checks the tokenizer it is given. ``shuffle``: whether the
    pipeline's seeded global shuffle applies (False for iid draws or infinite sources).
    ``texts``: the strings of one example that train a tokenizer.
    """

    source: Any
    rows: Callable[..., Any]
    shuffle: bool = True
    texts: Callable[[Any], Iterable[str]] = _texts


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """A registered source: its builder, the config keys it reads (with defaults), a check of
    those keys, and optionally a fixed tokenizer (``tokenizer(config)``) instead of sentencepiece."""

    name: str
    builder: Callable[[dict, str, Any, int], Examples]
    defaults: Mapping[str, Any]
    validate: Callable[[dict], None] | None = None
    tokenizer: Callable[[dict], Any] | None = None


_REGISTRY: dict[str, SourceSpec] = {}


def _ensure_builtins() -> None:
    import dlm_jax.data.builtin  # noqa: F401  (registers stdlib, files, tfds, markov on first import)


def register_source(name: str, builder: Callable[[dict, str, Any, int], Examples], *,
                    defaults: Mapping[str, Any] | None = None, validate: Callable[[dict], None] | None = None,
                    tokenizer: Callable[[dict], Any] | None = None, replace: bool = False):
    """Register ``builder`` as ``data.source=name``; returns ``builder``.

    ``defaults``: the config keys this source reads beyond the common ones, with their defaults
    (a key shared with another source must have the same default). ``validate(config)``: raise
    the one-line ``ValueError`` on a bad value of those keys. ``tokenizer(config)``: a fixed
    tokenizer (else sentencepiece is trained on ``Examples.texts``). ``replace``: allow
    re-registering ``name``."""
    _ensure_builtins()
    check_str("source name", name)
    if not callable(builder):
        fail(f"source {name!r} builder", builder, "a callable (config, split, seq_len, seed) -> Examples")
    if name in _REGISTRY and not replace:
        fail("source name", name, f"a name not registered yet (registered: {source_names()}), or replace=True")
    defaults = dict(defaults or {})
    for key, value in defaults.items():
        check_str(f"source {name!r} config key", key)
        if key in COMMON_DEFAULTS or key in _IGNORED:
            fail(f"source {name!r} config key", key, f"a key other than the common ones {tuple(COMMON_DEFAULTS)}")
        for other in _REGISTRY.values():
            if other.name != name and key in other.defaults and other.defaults[key] != value:
                fail(f"source {name!r} default of data.{key}", value,
                     f"{other.defaults[key]!r}, the default source {other.name!r} declares")
    _REGISTRY[name] = SourceSpec(name, builder, types.MappingProxyType(defaults), validate, tokenizer)
    return builder


def source_names() -> tuple[str, ...]:
    """Names of the registered sources, in registration order (built-ins first)."""
    _ensure_builtins()
    return tuple(_REGISTRY)


def get_source(name: str) -> SourceSpec:
    """The ``SourceSpec`` registered as ``name`` (``data.source: ...; expected one of ...`` if none)."""
    return _REGISTRY[check_choice("data.source", name, source_names())]


def _all_defaults() -> dict[str, Any]:
    out = dict(COMMON_DEFAULTS)
    for spec in _REGISTRY.values():
        for key, value in spec.defaults.items():
            out.setdefault(key, value)
    return out


def validate_data_config(data_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge ``data_config`` (a dict or ``ConfigDict``; may be the whole ``config.data``) over the
    defaults of every registered source and check the common keys and the chosen source's keys.
    Returns a plain dict without ``seq_len``."""
    _ensure_builtins()
    given = {k: v for k, v in (data_config.items() if data_config is not None else ()) if k not in _IGNORED}
    defaults = _all_defaults()
    for key in sorted(given):
        if key not in defaults:
            fail(f"data.{key}", given[key], f"a known key, one of {tuple(sorted(defaults))}")
    cfg = {**defaults, **given}
    spec = get_source(cfg["source"])
    check_int("data.tokenizer_vocab_size", cfg["tokenizer_vocab_size"], min=276)
    check_int("data.tokenizer_train_chars", cfg["tokenizer_train_chars"], min=1)
    check_str("data.tokenizer_path", cfg["tokenizer_path"], empty=True)
    check_bool("data.shuffle", cfg["shuffle"])
    check_int("data.shuffle_window", cfg["shuffle_window"], min=0)
    check_int("data.num_threads", cfg["num_threads"], min=0)
    optional_int("data.num_epochs", cfg["num_epochs"], min=1)
    if spec.validate is not None:
        spec.validate(cfg)
    return cfg


def optional_int(key: str, value: Any, *, min: int) -> int | None:
    """``None`` or an int >= ``min`` (the one-line error names both)."""
    if value is None:
        return None
    try:
        return check_int(key, value, min=min)
    except ValueError:
        pass
    fail(key, value, f"None or an int >= {min}")


def default_data_config():
    """A ``ConfigDict`` with every registered key and its default (``None`` defaults become
    placeholders, so configs can set them)."""
    import ml_collections

    _ensure_builtins()
    cfg = ml_collections.ConfigDict()
    for key, value in _all_defaults().items():
        setattr(cfg, key, ml_collections.config_dict.placeholder(object) if value is None else value)
    return cfg
