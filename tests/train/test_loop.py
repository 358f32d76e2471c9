"""End-to-end trainer: exact resume, SIGTERM, corrupted checkpoints, mesh changes, validation.

The tiny model / method / data of ``_tiny.py`` stand in for the DiT, MDLM and grain; one
module-scoped straight run (6 steps, checkpoints at 3 and 6) is the reference.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import _tiny
from dlm_jax.runs import checkpoint as ckpt_lib
from dlm_jax.train import loop

HERE = os.path.dirname(os.path.abspath(__file__))
COMPONENTS = dict(data_fn=_tiny.build_data)


def _losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def _assert_bit_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def _worker(spec, **popen):
    return subprocess.Popen([sys.executable, os.path.join(HERE, "_worker.py"), json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _result(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("straight"))
    out = loop.train(_tiny.tiny_config(eval_every=3), workdir, **COMPONENTS)
    assert out["step"] == 6 and not out["preempted"]
    return workdir, _losses(workdir), _leaves(out["state"])


def test_straight_run_logs_and_checkpoints(straight):
    workdir, losses, _ = straight
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    assert all(2.5 < v < 4.5 for v in losses.values()) and losses[6] < losses[1]
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    evals = [r for r in rows if "eval/nll" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert evals[0]["eval/nll"] == pytest.approx(evals[0]["eval/nll_sum"] / evals[0]["eval/num_tokens"])
    assert all(r["tokens_per_s"] > 0 for r in rows if "loss" in r)
    assert glob.glob(os.path.join(workdir, "tb", "events.out.tfevents.*"))
    assert ckpt_lib.Checkpointer(workdir, every=3).all_steps() == [3, 6]
    meta = json.load(open(os.path.join(workdir, "checkpoints", "6", "meta", "metadata")))
    assert meta["step"] == 6 and meta["config"]["train"]["steps"] == 6
    assert len(meta["git_sha"]) >= 40 and "jax" in meta["versions"]


def test_exact_resume_after_preemption_is_bit_identical(straight, tmp_path):
    """3 steps, SIGTERM (handled: save + return), a fresh train() call resumes for 3 more."""
    _, ref_losses, ref_leaves = straight
    workdir = str(tmp_path)

    class PreemptedData(_tiny.TinyData):
        def __next__(self):
            if self.index == 2:  # the batch of step 3 is being fetched: preempt after step 3
                os.kill(os.getpid(), signal.SIGTERM)
            return super().__next__()

    def data_fn(cfg, *, split, process_index, process_count):
        cls = PreemptedData if split == "train" else _tiny.TinyData
        return cls(cfg.seed + (0 if split == "train" else 1000), cfg.train.batch_size,
                   cfg.data.seq_len, process_index, process_count)

    first = loop.train(_tiny.tiny_config(eval_every=3), workdir, **dict(COMPONENTS, data_fn=data_fn))
    assert first["preempted"] and first["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler uninstalled
    second = loop.train(_tiny.tiny_config(eval_every=3), workdir, **COMPONENTS)
    assert second["step"] == 6 and not second["preempted"]
    assert _losses(workdir) == ref_losses  # bit-identical floats, steps 1..6
    _assert_bit_equal(_leaves(second["state"]), ref_leaves)


@pytest.mark.slow
def test_sigterm_in_subprocess_leaves_checkpoint_and_resume_is_exact(straight, tmp_path):
    _, ref_losses, ref_leaves = straight
    workdir = str(tmp_path)
    proc = _worker(dict(mode="train", devices=8, workdir=workdir, sleep=1.0,
                        train=dict(eval_every=3), checkpoint=dict(every=100)))
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and len(open(metrics).read().splitlines()) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    res = _result(proc)
    saved = res["step"]
    assert res["preempted"] and 2 <= saved < 6
    steps_dirs = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    assert steps_dirs == [str(saved)], steps_dirs  # complete, nothing half-written
    assert os.path.exists(os.path.join(workdir, "checkpoints", str(saved), "commit_success.txt"))
    out = loop.train(_tiny.tiny_config(eval_every=3), workdir, **COMPONENTS)  # this process
    assert out["step"] == 6
    assert _losses(workdir) == ref_losses
    _assert_bit_equal(_leaves(out["state"]), ref_leaves)


def _target(cfg):
    from dlm_jax.models import make_apply
    from dlm_jax import mesh as mesh_lib
    from dlm_jax.train import optim, state as state_lib

    mesh = mesh_lib.make_mesh(cfg.mesh)
    graphdef, init_params = state_lib.trace_model(lambda: _tiny.build_model(cfg))
    method = _tiny.build_method(cfg, make_apply(graphdef))
    return state_lib.abstract_train_state(init_params, optim.make_optimizer(cfg.train, 6),
                                          method.init_extra, 0, mesh, cfg.mesh.strategy)[0]


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_corrupted_latest_checkpoint_falls_back_with_warning(straight, tmp_path, damage):
    workdir = str(tmp_path / "w")
    shutil.copytree(straight[0], workdir)
    state_dir = os.path.join(workdir, "checkpoints", "6", "state")
    files = [f for f in glob.glob(os.path.join(state_dir, "**", "d", "*"), recursive=True)]
    if damage == "truncate":  # an interrupted copy: every data file cut short
        for path in files:
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
    else:
        for f in files:
            os.remove(f)
    ck = ckpt_lib.Checkpointer(workdir, every=3, keep=3)
    assert ck.latest_step() == 6  # still listed as complete: only a restore can tell
    with pytest.warns(RuntimeWarning, match=r"checkpoint .*/checkpoints/6 could not be restored"):
        state, meta = ck.restore_latest(_target(_tiny.tiny_config()))
    assert int(state.step) == 3 and meta["step"] == 3
    ck.close()


def test_crash_mid_save_is_never_latest(tmp_path):
    workdir = str(tmp_path)
    proc = _worker(dict(mode="crash_save", devices=1, workdir=workdir))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    dirs = json.loads(out.strip().splitlines()[-1])["dirs"]
    assert "1" in dirs and "2" not in dirs and any(d.startswith("2.orbax-checkpoint-tmp") for d in dirs)
    ck = ckpt_lib.Checkpointer(workdir, every=1)
    assert ck.all_steps() == [1] and ck.latest_step() == 1
    assert ck.removed_tmp == ["2.orbax-checkpoint-tmp"]
    assert sorted(os.listdir(ck.directory)) == ["1"]
    assert ck.save(2, {"step": np.int32(2), "w": np.zeros(3, np.float32)})  # step 2 saves again
    ck.close()
    assert ck.all_steps() == [1, 2]


@pytest.mark.slow
def test_restore_8_device_checkpoint_onto_4_devices_fsdp(straight, tmp_path):
    workdir, _, ref_leaves = straight
    out = str(tmp_path / "restored.npz")
    res = _result(_worker(dict(mode="restore", devices=4, workdir=workdir, out=out,
                               mesh=dict(data=1, fsdp=4, tensor=1, strategy="fsdp"))))
    assert res["devices"] == 4 and res["step"] == 6 and res["meta_step"] == 6
    assert res["up_kernel_spec"] == "P('fsdp', None)"
    got = np.load(out)
    _assert_bit_equal([got[f"arr_{i}"] for i in range(len(got.files))], ref_leaves)


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = dict(mode="train", mesh=dict(data=2, fsdp=2, tensor=1, strategy="fsdp"),
                  train=dict(steps=4), checkpoint=dict(every=2))
    ref = _worker(dict(common, devices=4, workdir=str(tmp_path / "one")))
    workers = [_worker(dict(common, devices=2, workdir=str(tmp_path / "two"),
                            distributed=dict(port=port, process_id=i, num_processes=2)))
               for i in range(2)]
    results = [_result(w) for w in workers]
    assert [r["step"] for r in results] == [4, 4] and [r["process"] for r in results] == [0, 1]
    _result(ref)
    one, two = _losses(str(tmp_path / "one")), _losses(str(tmp_path / "two"))
    assert sorted(one) == [1, 2, 3, 4]
    print("1x4 losses", one, "\n2x2 losses", two)
    np.testing.assert_allclose([two[k] for k in sorted(one)], [one[k] for k in sorted(one)],
                               rtol=0, atol=1e-6)
    data = sorted(os.listdir(str(tmp_path / "two" / "checkpoints" / "4" / "data")))
    assert data == ["commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]


@pytest.mark.slow
def test_dead_peer_ends_the_survivor_with_one_line(tmp_path):
    """Process 1 of a two-process job is SIGKILLed after step 1: process 0 (also the coordinator)
    exits with code 75 and one ``dlm_jax:`` line within the watchdog's 5 s (heartbeat timeout 10 s),
    not XLA's fatal log with a C++ stack trace (SIGABRT)."""
    import socket

    from dlm_jax.peers import PEER_LOST_EXIT_CODE

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = str(tmp_path)
    workers = [_worker(dict(mode="train", devices=2, workdir=workdir, sleep=0.5, train=dict(steps=200),
                            mesh=dict(data=2, fsdp=2, tensor=1, strategy="fsdp"), checkpoint=dict(every=1000),
                            distributed=dict(port=port, process_id=i, num_processes=2)))
               for i in range(2)]
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 180
    while time.time() < deadline and not (os.path.exists(metrics) and open(metrics).read().strip()):
        assert workers[0].poll() is None and workers[1].poll() is None
        time.sleep(0.1)
    workers[1].kill()
    killed = time.time()
    workers[1].communicate(timeout=60)
    _, err = workers[0].communicate(timeout=60)
    elapsed = time.time() - killed
    assert workers[0].returncode == PEER_LOST_EXIT_CODE, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("dlm_jax:")]
    assert lines == ["dlm_jax: process 0 stops: process 1 of this job died or stopped answering for 5 s; "
                     "restart the job and it resumes from the last checkpoint"], err[-3000:]
    assert "stack trace" not in err and elapsed < 10.0, (elapsed, err[-3000:])


@pytest.mark.parametrize("section, key, value, match", [
    ("train", "batch_size", 12, r"^train.batch_size: 12; expected a multiple of the data-parallel size 8"),
    ("mesh", "data", 3, r"^mesh: .*expected a product equal to the 8 available devices$"),
    ("data", "seq_len", 65, r"^data.seq_len: 65; expected <= model.max_len=64$"),
    ("train", "schedule", "step", r"^train.schedule: 'step'; expected one of"),
    ("train", "microbatches", 3, r"^train.microbatches: 3; expected a divisor of the per-device batch 2$"),
    ("train", "step_impl", "pmap", r"^train.step_impl: 'pmap'; expected one of \('jit', 'shard_map'\)$"),
])
def test_bad_config_raises_one_line_before_compiling(tmp_path, section, key, value, match):
    cfg = _tiny.tiny_config()
    cfg[section][key] = value
    with pytest.raises(ValueError, match=match) as e:
        loop.train(cfg, str(tmp_path), **COMPONENTS)
    assert "\n" not in str(e.value)
    assert not os.path.exists(os.path.join(str(tmp_path), "checkpoints"))


@pytest.mark.parametrize("section, key, value, match", [
    ("method", "name", "ddpm", r"^method.name: 'ddpm'; expected one of \("),
    ("data", "source", "web", r"^data.source: 'web'; expected one of \("),
])
def test_unknown_registry_names(tmp_path, section, key, value, match):
    cfg = _tiny.tiny_config()
    cfg.method.name = "mdlm"
    cfg[section][key] = value
    with pytest.raises(ValueError, match=match):
        loop.train(cfg, str(tmp_path))


@pytest.mark.slow
def test_sigkill_then_resume_logs_each_step_once(straight, tmp_path):
    """A run killed with SIGKILL after its step-3 checkpoint (steps 4.. logged, not saved) and
    resumed writes metrics.jsonl with every step exactly once, equal to the straight run's."""
    ref_dir, ref_losses, _ = straight
    workdir = str(tmp_path)
    proc = _worker(dict(mode="train", devices=8, workdir=workdir, sleep=1.0,
                        train=dict(eval_every=3), checkpoint=dict(every=3)))
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        steps = [json.loads(x)["step"] for x in open(metrics)] if os.path.exists(metrics) else []
        if any(s >= 4 for s in steps) and os.path.isdir(os.path.join(workdir, "checkpoints", "3")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    killed_at = max(json.loads(x)["step"] for x in open(metrics))
    assert killed_at >= 4
    out = loop.train(_tiny.tiny_config(eval_every=3), workdir, **COMPONENTS)
    assert out["step"] == 6
    rows = [json.loads(x) for x in open(metrics)]
    train_steps = [r["step"] for r in rows if "loss" in r]
    assert train_steps == [1, 2, 3, 4, 5, 6], train_steps  # no step twice
    assert [r["step"] for r in rows if "eval/nll" in r] == [3, 6]
    assert _losses(workdir) == ref_losses
