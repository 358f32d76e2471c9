"""Subprocess worker for the train-layer tests (its own device count / JAX process).

    python _worker.py '<json spec>'

spec keys: ``mode`` ("train" | "restore" | "crash_save"), ``devices`` (fake CPU devices in this
process), ``workdir``, ``train`` / ``mesh`` / ``checkpoint`` (overrides of ``_tiny.tiny_config``),
``sleep`` (seconds per batch, train), ``out`` (npz path, restore), ``distributed``
(``{"port", "process_id", "num_processes"}``).  The last stdout line is a JSON result.
"""

import json
import os
import sys
import time

from dlm_jax.testing import FAST_CPU_COMPILE  # imports no jax

SPEC = json.loads(sys.argv[1])
os.environ["XLA_FLAGS"] = " ".join((f"--xla_force_host_platform_device_count={SPEC.get('devices', 8)}",)
                                   + FAST_CPU_COMPILE)  # as tests/conftest.py
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
jax.config.update("jax_compilation_cache_dir", os.path.join(_root, ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import numpy as np  # noqa: E402

import _tiny  # noqa: E402


def config():
    train = dict(SPEC.get("train", {}))
    c = _tiny.tiny_config(**{k: train.pop(k) for k in ("eval_every", "eval_batches") if k in train})
    c.train.update(train)
    for section in ("mesh", "checkpoint", "method"):
        c[section].update(SPEC.get(section, {}))
    d = SPEC.get("distributed")
    if d:
        c.mesh.update(dict(distributed="explicit", coordinator_address=f"127.0.0.1:{d['port']}",
                           num_processes=d["num_processes"], process_id=d["process_id"],
                           initialization_timeout=30, heartbeat_timeout_seconds=10))
    return c


class SlowData(_tiny.TinyData):
    def __next__(self):
        time.sleep(SPEC.get("sleep", 0.0))
        return super().__next__()


def slow_data(cfg, *, split, process_index, process_count):
    seed = cfg.seed + (0 if split == "train" else 1000)
    return SlowData(seed, cfg.train.batch_size, cfg.data.seq_len, process_index, process_count)


def train():
    from dlm_jax.train import loop

    out = loop.train(config(), SPEC["workdir"], data_fn=slow_data)
    return {"step": out["step"], "preempted": out["preempted"], "process": jax.process_index()}


def restore():
    from dlm_jax.models import make_apply
    from dlm_jax import mesh as mesh_lib
    from dlm_jax.runs import checkpoint
    from dlm_jax.train import optim, state as state_lib

    c = config()
    mesh = mesh_lib.make_mesh(c.mesh)
    graphdef, init_params = state_lib.trace_model(lambda: _tiny.build_model(c))
    method = _tiny.build_method(c, make_apply(graphdef))
    target, _ = state_lib.abstract_train_state(init_params, optim.make_optimizer(c.train, c.train.steps),
                                               method.init_extra, c.seed, mesh, c.mesh.strategy)
    ck = checkpoint.Checkpointer(SPEC["workdir"], every=0, keep=10)
    state, meta = ck.restore_latest(target)
    leaves = jax.tree.leaves(jax.device_get(state))
    np.savez(SPEC["out"], *leaves)
    spec = state.params["up"]["kernel"].get_value().sharding.spec
    return {"step": int(state.step), "meta_step": meta["step"], "up_kernel_spec": str(spec),
            "devices": jax.device_count()}


def crash_save():
    """Save step 1, start an async save of step 2 and die while it is being written."""
    from dlm_jax.runs import checkpoint

    ck = checkpoint.Checkpointer(SPEC["workdir"], every=1, keep=5)
    state = {"step": np.int32(1), "w": jax.numpy.ones((1024, 1024, 16))}
    ck.save(1, state)
    ck.wait()
    ck.save(2, dict(state, step=np.int32(2)))
    deadline = time.time() + 30  # die while step 2 is being written (its tmp dir exists), not before
    while time.time() < deadline and not any(d.startswith("2.orbax-checkpoint-tmp") for d in os.listdir(ck.directory)):
        time.sleep(0.005)
    print(json.dumps({"dirs": sorted(os.listdir(ck.directory))}), flush=True)
    os._exit(3)


if __name__ == "__main__":
    result = {"train": train, "restore": restore, "crash_save": crash_save}[SPEC["mode"]]()
    print(json.dumps(result), flush=True)
