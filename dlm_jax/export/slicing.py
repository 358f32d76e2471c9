"""An own-named param as a function of the box of it a device holds: reads only the rows and columns
of the layout's tensors that the box needs (numpy only).

``dit_layout.from_layout(..., lazy=True)`` returns one ``OwnTensor`` per param instead of an array.
``t[index]`` (``index``: one slice per own axis, as ``jax.make_array_from_callback`` passes) maps
the box back through the table row's transform (``dit_layout``'s convention):

* ``n_in = None`` (same shape): the same box of their tensor;
* ``n_in = 0`` (a flattened bias): their whole (small) vector, reshaped, then the box;
* ``n_in = k >= 1`` (their ``[prod(out), prod(in)]`` = our ``[in..., out...]`` transposed and
  flattened): the flat row / column ranges spanning the box, then the exact entries. When only
  the leading axis of the in-axes or of the out-axes is split — every rule of ``mesh.RULES`` on the
  DiT's and LLaDA's kernels except ``tp``'s head split of the fused ``[W, 3, H, D]`` qkv — the
  ranges are exactly the box, so nothing else is read;
* several rows for one param (FS-DFM's q / k / v stacked on axis 1 of ``[W, 3, H, D]``): the rows
  the box's axis-1 range selects, each read as above.

Their tensors are ``files.LazyTensor`` (safetensors: slices are read from disk) or numpy arrays
(pickles, already in memory). Values come back as float32, the params' dtype.
"""

from __future__ import annotations

import numpy as np

__all__ = ["OwnTensor"]


def _ranges(index, shape: tuple) -> list[tuple[int, int]]:
    """``[(start, stop)]`` per axis from a tuple of unit-step slices (``None`` / missing = whole axis)."""
    index = tuple(index) if isinstance(index, tuple) else (index,)
    index = index + (slice(None),) * (len(shape) - len(index))
    out = []
    for sl, n in zip(index, shape):
        if not isinstance(sl, slice):
            raise TypeError(f"index {index!r}: expected slices (a device's box of the array)")
        start, stop, step = sl.indices(n)
        if step != 1:
            raise ValueError(f"index {index!r}: expected unit-step slices")
        out.append((start, stop))
    return out


def _flat(ranges: list[tuple[int, int]], dims: tuple) -> np.ndarray:
    """Row-major flat indices (into ``prod(dims)``) of the box ``ranges`` over axes ``dims``."""
    if not dims:
        return np.zeros((1,), np.int64)
    grids = np.meshgrid(*[np.arange(a, b) for a, b in ranges], indexing="ij")
    return np.ravel_multi_index(tuple(g.ravel() for g in grids), dims).astype(np.int64)


def _read_part(theirs, n_in, shape: tuple, ranges: list[tuple[int, int]]) -> np.ndarray:
    box = tuple(slice(a, b) for a, b in ranges)
    if n_in is None:
        return np.asarray(theirs[box])
    if n_in == 0:
        return np.asarray(theirs).reshape(shape)[box]
    rows = _flat(ranges[n_in:], shape[n_in:])  # their rows = our out axes
    cols = _flat(ranges[:n_in], shape[:n_in])  # their columns = our in axes
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    block = np.asarray(theirs[r0:r1, c0:c1])
    part = block[np.ix_(rows - r0, cols - c0)].T  # [in box size, out box size]
    return part.reshape(tuple(b - a for a, b in ranges))


class OwnTensor:
    """A param (float32, ``shape``) assembled from ``parts`` = ``[(their tensor, n_in)]`` on demand."""

    dtype = np.dtype(np.float32)

    def __init__(self, parts: list, shape: tuple):
        self.parts, self.shape = list(parts), tuple(int(n) for n in shape)

    def __getitem__(self, index) -> np.ndarray:
        ranges = _ranges(index, self.shape)
        if len(self.parts) == 1:
            theirs, n_in = self.parts[0]
            return _read_part(theirs, n_in, self.shape, ranges).astype(np.float32)
        sub_shape = (self.shape[0],) + self.shape[2:]  # q / k / v stacked on axis 1
        pieces = [_read_part(theirs, 1, sub_shape, [ranges[0]] + ranges[2:])
                  for theirs, _ in self.parts[ranges[1][0]:ranges[1][1]]]
        return np.stack(pieces, axis=1).astype(np.float32)

    def __array__(self, dtype=None, copy=None):
        out = self[tuple(slice(None) for _ in self.shape)]
        return out if dtype is None else out.astype(dtype)
