"""What every notebook in ``notebooks/`` does first, in one place: find the checkout (the notebooks
import its ``configs/`` and read its ``launch/``) and read the run's scale from ``DLM_NOTEBOOK_SCALE``.

    from dlm_jax.notebook import setup
    ROOT, SCALE = setup()
"""

from __future__ import annotations

import os
import sys

SCALE_VARIABLE = "DLM_NOTEBOOK_SCALE"


def checkout_root(start: str | None = None) -> str:
    """The first folder at or above ``start`` (default: the working directory) that holds
    ``configs/demo.py``: the dlm_jax checkout a notebook runs in."""
    root = os.path.abspath(start or os.getcwd())
    while not os.path.isfile(os.path.join(root, "configs", "demo.py")):
        if os.path.dirname(root) == root:
            raise FileNotFoundError(f"configs/demo.py: not found at or above {start or os.getcwd()}; "
                                    "expected to run inside a dlm_jax checkout")
        root = os.path.dirname(root)
    return root


def notebook_scale(environ=None) -> float:
    """``DLM_NOTEBOOK_SCALE`` as a float (default 1: the full run; CI uses 0.025)."""
    raw = (os.environ if environ is None else environ).get(SCALE_VARIABLE, "1")
    try:
        scale = float(raw)
    except ValueError:
        scale = float("nan")
    if not scale > 0:
        raise ValueError(f"{SCALE_VARIABLE}: {raw!r}; expected a number > 0")
    return scale


def setup(start: str | None = None) -> tuple[str, float]:
    """``(ROOT, SCALE)``, with ROOT put first on ``sys.path`` so that ``import configs`` works."""
    root = checkout_root(start)
    if root not in sys.path:
        sys.path.insert(0, root)
    return root, notebook_scale()
