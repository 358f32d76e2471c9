"""Initialise an FS-DFM student ("th") from a pretrained teacher ("t"), METHODS §6.2(b).

Every teacher weight is copied into the student Param at the same path (shapes must match). The student's
new weights (h embedder, W_f, per-block and final fusers) are:
* identity_h_init=False: left as the student's own random init (faithful to FS-DFM's
  `load_state_dict(strict=False)`: the student's conditioning at step 0 does NOT reproduce the teacher's);
* identity_h_init=True: W_f and every W_b set to the identity construction of conditioning.py, so the
  student computes exactly the teacher's function at step 0, whatever h is (to float rounding).
"""

from __future__ import annotations

import jax

from dlm_jax.models.conditioning import identity_block_fuser_kernel, identity_fuse_kernel
from dlm_jax.models.config import DiTConfig


def _names(path) -> tuple:
    out = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                out.append(getattr(k, attr))
                break
    if out and out[-1] == "value":  # the Variable's own pytree key
        out.pop()
    return tuple(out)


def _identity_value(names: tuple, cond_dim: int):
    """Identity-init value for a fuser Param path, or None for any other path."""
    if names == ("cond", "fuse", "kernel"):
        return identity_fuse_kernel(cond_dim)
    if names == ("cond", "fuse", "bias"):
        return jax.numpy.zeros((2 * cond_dim,), jax.numpy.float32)
    if len(names) >= 3 and names[-3:] == ("fuse", "proj", "kernel"):
        return identity_block_fuser_kernel(cond_dim)
    if len(names) >= 3 and names[-3:] == ("fuse", "proj", "bias"):
        return jax.numpy.zeros((cond_dim,), jax.numpy.float32)
    return None


def init_student_from_teacher(teacher_params, student_params, student_config: DiTConfig):
    """Return student params (same structure as `student_params`) with the teacher's weights copied in."""
    if not isinstance(student_config, DiTConfig):
        raise ValueError(f"student_config: {type(student_config).__name__}; expected a DiTConfig")
    teacher = {_names(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(teacher_params)[0]}
    student_paths = set()
    cond_dim = student_config.cond_dim

    def pick(path, leaf):
        names = _names(path)
        student_paths.add(names)
        if names in teacher:
            src = teacher[names]
            if src.shape != leaf.shape:
                raise ValueError(f"teacher_params: {'.'.join(map(str, names))} has shape {src.shape}; "
                                 f"expected the student's shape {leaf.shape}")
            return jax.numpy.asarray(src, leaf.dtype)
        if student_config.identity_h_init:
            ident = _identity_value(names, cond_dim)
            if ident is not None:
                return ident
        return leaf

    out = jax.tree_util.tree_map_with_path(pick, student_params)
    unused = sorted(".".join(map(str, n)) for n in teacher if n not in student_paths)
    if unused:
        raise ValueError(f"teacher_params: {unused[0]} (and {len(unused) - 1} more) not in the student; "
                         "expected every teacher weight to have a student counterpart")
    return out
