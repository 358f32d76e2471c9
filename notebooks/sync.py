"""Regenerate the notebooks' ``.ipynb`` from their jupytext percent-format ``.py`` sources.

The ``.py`` files are the source of truth (readable diffs, reviewable); the ``.ipynb`` files are
generated, output-free, and committed so that Colab opens them from the repository.
``tests/test_notebooks.py`` fails when a committed ``.ipynb`` differs from what this writes.

    python notebooks/sync.py            # rewrite every notebooks/NN_*.ipynb
    python notebooks/sync.py --check    # exit 1, naming each stale .ipynb
"""

from __future__ import annotations

import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def sources() -> list[str]:
    """The notebook sources: ``notebooks/NN_name.py`` (``sync.py`` and ``conftest.py`` are not)."""
    return sorted(glob.glob(os.path.join(HERE, "[0-9][0-9]_*.py")))


def render(source: str) -> str:
    """The ``.ipynb`` text jupytext makes of ``source`` (no outputs), with cell ids numbered in
    order instead of random, so the same ``.py`` always gives the same bytes."""
    import jupytext

    notebook = jupytext.read(source)
    for i, cell in enumerate(notebook.cells):
        cell.id = f"cell-{i:02d}"
    return jupytext.writes(notebook, fmt="ipynb")


def target(source: str) -> str:
    return os.path.splitext(source)[0] + ".ipynb"


def stale() -> list[str]:
    """``.ipynb`` files that are missing or differ from their ``.py``."""
    out = []
    for source in sources():
        path = target(source)
        if not os.path.isfile(path) or open(path, encoding="utf-8").read() != render(source):
            out.append(path)
    return out


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print(f"usage: python notebooks/sync.py [--check]; got {' '.join(argv)}", file=sys.stderr)
        return 2
    if argv:
        bad = stale()
        for path in bad:
            print(f"stale: {os.path.relpath(path)} (run python notebooks/sync.py)")
        return 1 if bad else 0
    for source in sources():
        with open(target(source), "w", encoding="utf-8") as f:
            f.write(render(source))
        print(f"wrote {os.path.relpath(target(source))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
