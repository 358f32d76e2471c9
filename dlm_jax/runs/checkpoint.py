"""Checkpoints: one Orbax CheckpointManager per workdir (``<workdir>/checkpoints/<step>/``).

Each step directory holds three items:
  * ``state`` — the TrainState (``StandardSave``; async: the save call only blocks while arrays
    are copied off the devices);
  * ``data``  — the data iterator's ``get_state()``, one JSON file per JAX process (works for
    any object with ``get_state`` / ``set_state``, grain iterators included);
  * ``meta``  — JSON: config, step, git SHA, library versions.

Atomicity: Orbax writes ``<step>.orbax-checkpoint-tmp`` and renames it when every item is
committed; a tmp directory is never listed as a step (and is removed on the next start), so a
crash mid-save cannot produce a "latest" checkpoint (leftover tmp directories are deleted when
the next Checkpointer opens the workdir; Orbax 0.12.8's own cleanup leaves them).  A latest checkpoint that is complete but
damaged (a truncated or deleted file) fails to restore: ``restore_latest`` warns, naming the
step directory, and falls back to the previous one.

Restoring onto a different mesh: pass an abstract target whose leaves carry NamedShardings on
the *current* mesh (``state.abstract_train_state``); Orbax reshards on read.

``PreemptionGuard`` turns SIGTERM / SIGINT into a flag the loop polls: it saves and exits.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import time
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath


# ----------------------------------------------------------------------------------------------
# Data-iterator state as an Orbax item (one JSON file per process).
# ----------------------------------------------------------------------------------------------
def _encode(state):
    if isinstance(state, bytes):
        return {"__bytes__": base64.b64encode(state).decode("ascii")}
    return state


def _decode(state):
    if isinstance(state, dict) and set(state) == {"__bytes__"}:
        return base64.b64decode(state["__bytes__"])
    return state


class IteratorHandler(ocp.CheckpointHandler):
    """Saves the (already captured) iterator state of this process as JSON."""

    def _file(self, directory: epath.Path) -> epath.Path:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    def save(self, directory: epath.Path, args: "IteratorSave"):
        self._file(epath.Path(directory)).write_text(json.dumps(_encode(args.state)))

    def restore(self, directory: epath.Path, args: "IteratorRestore | None" = None):
        f = self._file(epath.Path(directory))
        if not f.exists():
            raise FileNotFoundError(f"{f}: no data-iterator state for this process")
        return _decode(json.loads(f.read_text()))

    def metadata(self, directory):
        return None

    def finalize(self, directory):
        pass

    def close(self):
        pass


@ocp.args.register_with_handler(IteratorHandler, for_save=True)
@dataclasses.dataclass
class IteratorSave(ocp.args.CheckpointArgs):
    state: Any  # the value of ``iterator.get_state()`` at save time (JSON-able or bytes)


@ocp.args.register_with_handler(IteratorHandler, for_restore=True)
@dataclasses.dataclass
class IteratorRestore(ocp.args.CheckpointArgs):
    pass


# ----------------------------------------------------------------------------------------------
# Metadata.
# ----------------------------------------------------------------------------------------------
@functools.cache
def git_sha() -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        sha = out.stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def library_versions() -> dict[str, str]:
    from importlib import metadata as md

    out = {"python": platform.python_version()}
    for name in ("dlm_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _config_dict(config) -> dict:
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    return json.loads(json.dumps(d, default=str))


def run_metadata(config, step: int) -> dict:
    return {"step": int(step), "config": _config_dict(config), "git_sha": git_sha(),
            "versions": library_versions(), "time": time.time()}


# ----------------------------------------------------------------------------------------------
# The manager.
# ----------------------------------------------------------------------------------------------
def _shapes(tree) -> dict[str, tuple]:
    """``{"a/b/value": shape}`` for every array leaf (checkpoint metadata or abstract arrays)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path)
        out[name] = tuple(getattr(leaf, "shape", ()))
    return out


class Checkpointer:
    """Keep-last-K, every-N-steps, async checkpoints of (state, data iterator, metadata)."""

    def __init__(self, workdir: str, *, every: int, keep: int = 2, async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.every = int(every)
        self.last_save_block_s = 0.0
        self.removed_tmp = self._remove_unfinished()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=int(keep), enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True, create=True))

    def _remove_unfinished(self) -> list[str]:
        """Delete ``<step>.orbax-checkpoint-tmp*`` left by a crash mid-save (process 0)."""
        removed = []
        if jax.process_index() == 0 and os.path.isdir(self.directory):
            for name in sorted(os.listdir(self.directory)):
                if ".orbax-checkpoint-tmp" in name:
                    shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
                    removed.append(name)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("dlm_jax checkpoint tmp cleanup")
        return removed

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, step: int, state, data_iter=None, config=None) -> bool:
        """Start an (async) save of ``step``; returns False if that step already exists."""
        step = int(step)
        if step in self.manager.all_steps():
            return False
        items = {"state": ocp.args.StandardSave(state),
                 "meta": ocp.args.JsonSave(run_metadata(config, step))}
        if data_iter is not None and hasattr(data_iter, "get_state"):
            items["data"] = IteratorSave(data_iter.get_state())
        t0 = time.perf_counter()
        saved = self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        self.last_save_block_s = time.perf_counter() - t0
        return saved

    def restore(self, step: int, target, data_iter=None):
        """Restore ``step`` onto ``target`` (abstract state with NamedShardings); sets the
        iterator's state. Returns ``(state, metadata)``; raises if the checkpoint is damaged."""
        items = {"state": ocp.args.StandardRestore(target), "meta": ocp.args.JsonRestore()}
        has_data = os.path.isdir(os.path.join(self.step_dir(step), "data"))
        if data_iter is not None and hasattr(data_iter, "set_state") and has_data:
            items["data"] = IteratorRestore()
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        state = out["state"]
        jax.block_until_ready(state)
        if int(np.asarray(jax.device_get(state.step))) != step:
            raise ValueError(f"{self.step_dir(step)}: state.step={state.step}; expected {step}")
        if "data" in items:
            data_iter.set_state(out["data"])
        return state, out["meta"]

    def params_mismatch(self, step: int, target) -> str | None:
        """One line naming the first parameter whose name or shape differs between checkpoint
        ``step`` and ``target.params``; None when they agree or the metadata cannot be read (a
        damaged checkpoint, for ``restore`` to find)."""
        try:
            saved = ocp.StandardCheckpointer().metadata(os.path.join(self.step_dir(step), "state")).item_metadata.tree
            saved = saved["params"]
        except Exception:  # noqa: BLE001 - unreadable metadata: damaged, not mismatched
            return None
        have, want = _shapes(saved), _shapes(target.params if hasattr(target, "params") else target["params"])
        where = f"checkpoint {self.step_dir(step)}"
        fix = ("the config this run was trained with; start a fresh --workdir, or fine-tune from this run "
               "with init_from (nothing was deleted)")
        for name, shape in want.items():
            if name not in have:
                return f"{where}: parameter {name} {shape} is not in the checkpoint; expected {fix}"
            if have[name] != shape:
                return (f"{where}: parameter {name} has shape {have[name]} in the checkpoint and {shape} in this "
                        f"config; expected {fix}")
        extra = [n for n in have if n not in want]
        if extra:
            return f"{where}: parameter {extra[0]} {have[extra[0]]} is not in this config's model; expected {fix}"
        return None

    def restore_latest(self, target, data_iter=None):
        """Restore the newest checkpoint that restores cleanly; ``None`` if there is none.

        A damaged checkpoint is skipped with a warning naming its directory. A checkpoint whose
        parameters do not match ``target`` (a changed model config) stops the run with one line,
        and so does a directory where no checkpoint can be read: a run never starts afresh over
        checkpoints it could not read (keep-last-K would delete them).
        """
        self.manager.reload()
        steps = sorted(self.manager.all_steps(), reverse=True)
        for step in steps:
            mismatch = self.params_mismatch(step, target)
            if mismatch:
                raise ValueError(mismatch)
            try:
                state, meta = self.restore(step, target, data_iter)
            except Exception as e:  # noqa: BLE001 - any failure means "damaged": try older
                warnings.warn(f"checkpoint {self.step_dir(step)} could not be restored "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}); "
                              "falling back to the previous checkpoint", RuntimeWarning)
                continue
            return state, meta
        if steps:
            raise ValueError(f"checkpoints: {self.directory}; none of the steps {sorted(steps)} could be restored "
                             "(see the warnings); expected a readable checkpoint — move the folder away to start "
                             "afresh (nothing was deleted)")
        return None

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


# ----------------------------------------------------------------------------------------------
# Preemption.
# ----------------------------------------------------------------------------------------------
class PreemptionGuard:
    """Context manager: SIGTERM / SIGINT set a flag instead of killing the process.

    The loop polls ``should_stop()`` once per step, saves a checkpoint and returns. A second
    SIGINT raises KeyboardInterrupt (force quit). In multi-process runs the flag is OR-ed over
    processes so that every process saves the same step.
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT), enabled: bool = True):
        self.signals = tuple(signals) if enabled else ()
        self.signum: int | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        try:
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: signals cannot be caught here
            self._previous.clear()
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()
        return False

    def should_stop(self) -> bool:
        flag = self.signum is not None
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            flag = bool(np.max(multihost_utils.process_allgather(np.int32(flag))))
        return flag
