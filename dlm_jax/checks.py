"""The one-line validators every layer uses: ``<key>: <value>; expected <what is allowed>``.

Each ``check_*`` returns the (normalised) value or raises ``ValueError`` with exactly one line
naming the key, the value and what is allowed, so bad input stops before anything compiles.
``resolve`` reads an optional config key and writes its default back, so the config that is
printed and stored is the effective one.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, NoReturn

import numpy as np

__all__ = ["fail", "check_int", "check_float", "check_bool", "check_choice", "check_str", "resolve"]

_MISSING = object()


def fail(key: str, value: Any, expected: str) -> NoReturn:
    """Raise the one-line ``ValueError``: ``key: value; expected ...``."""
    raise ValueError(f"{key}: {value!r}; expected {expected}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(key: str, value: Any, *, min: int | None = None, max: int | None = None) -> int:
    """An int (not a bool) in ``[min, max]``."""
    if not _is_int(value) or (min is not None and value < min) or (max is not None and value > max):
        bounds = ("" if min is None else f" >= {min}") + ("" if max is None else f"{' and' if min is not None else ''} <= {max}")
        fail(key, value, f"an int{bounds}")
    return int(value)


def check_float(key: str, value: Any, *, min: float | None = None, max: float | None = None,
                min_open: bool = False, max_open: bool = False) -> float:
    """A finite real number (ints accepted, bools not) in the interval given by ``min``/``max``;
    ``min_open``/``max_open`` exclude the endpoint."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
    if ok and min is not None:
        ok = value > min if min_open else value >= min
    if ok and max is not None:
        ok = value < max if max_open else value <= max
    if not ok:
        lo = "" if min is None else ("(" if min_open else "[") + f"{min}"
        hi = "" if max is None else f"{max}" + (")" if max_open else "]")
        where = f" in {lo or '(-inf'}, {hi or 'inf)'}" if (min is not None or max is not None) else ""
        fail(key, value, f"a finite number{where}")
    return float(value)


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        fail(key, value, "a bool (True or False)")
    return bool(value)


def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> Any:
    allowed = tuple(allowed)
    if value not in allowed:
        fail(key, value, f"one of {allowed}")
    return value


def check_str(key: str, value: Any, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        fail(key, value, "a non-empty string" if not empty else "a string")
    return value


def resolve(section, key: str, default: Any, *, prefix: str | None = None, check=None, **check_kw) -> Any:
    """``section[key]`` or ``default`` (written back into ``section`` so the stored config is the
    effective one), validated by ``check(name, value, **check_kw)`` when given. ``prefix`` names
    the section in errors (e.g. ``"method"`` -> ``method.<key>``)."""
    value = section.get(key, _MISSING) if hasattr(section, "get") else _MISSING
    if value is _MISSING:
        value = default
        try:
            if hasattr(section, "unlocked"):
                with section.unlocked():
                    section[key] = default
            else:
                section[key] = default
        except (TypeError, AttributeError):  # frozen or read-only mapping: validate only
            pass
    name = f"{prefix}.{key}" if prefix else key
    return check(name, value, **check_kw) if check is not None else value
