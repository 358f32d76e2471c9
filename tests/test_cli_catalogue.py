"""A catalogue of bad inputs and faults for ``python -m dlm_jax {train,sample,eval}``.

The CLI promises (``dlm_jax/cli.py``, ``dlm_jax/cli_args.py``): bad input exits 2 with exactly one
line on stderr, ``error: <key>: <value>; expected <what is allowed>``, naming the key at fault,
before any work starts, and nothing in the workdir is written or deleted (a workdir that did not
exist is not created); ``-h``/``--help`` exits 0; a damaged newest checkpoint makes ``sample`` /
``eval`` fall back to the previous one with a warning; SIGTERM stops training with exit 75 after
saving. Each case runs the CLI as a subprocess with cwd = a fresh temp dir (relative paths cannot
touch the repo) and compares a snapshot (paths, sizes, mtimes) of that dir and of the run it reads.

The shared state, one tiny trained run (checkpoints at steps 2 and 4), is built once per module;
a case that damages a run works on its own copy.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs")
DEMO = os.path.join(CFG, "demo.py")
TINY = f"{DEMO}:tiny"
DEVICES = 2  # so a batch size or mesh can fail to divide the device count


def cli(*args, cwd, timeout=300, env_extra=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}")
    env.pop("DLM_JAX_TRACEBACK", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "dlm_jax", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def snapshot(root: str) -> dict | None:
    """``{relative path: (kind, size, mtime_ns)}`` of everything under ``root`` (None: absent)."""
    if not os.path.exists(root):
        return None
    out = {".": ("dir" if os.path.isdir(root) else "file", os.path.getsize(root), os.stat(root).st_mtime_ns)}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(base, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = ("dir" if name in dirs else "file", st.st_size, st.st_mtime_ns)
    return out


def _train_args(workdir, *overrides):
    return ("train", "--config", TINY, "--workdir", workdir, "--config.train.steps=4",
            "--config.checkpoint.every=2", "--config.evals.eval.every=0", *overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny MDLM run: checkpoints at steps 2 and 4 (never modified by a case). Trained once per
    session: under pytest-xdist the workers share it through their common temp root and a lock."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    workdir, done = str(root / "catalogue_run"), root / "catalogue_run.done"
    with open(root / "catalogue_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(workdir, ignore_errors=True)
            cwd = root / "catalogue_train_cwd"
            cwd.mkdir(exist_ok=True)
            out = cli(*_train_args(workdir), cwd=str(cwd), timeout=900)
            assert out.returncode == 0, out.stderr[-3000:]
            done.write_text("ok\n")
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    return workdir


@pytest.fixture(scope="module")
def damaged(trained, tmp_path_factory):
    """A copy of the run whose newest checkpoint (step 4) has every state data file truncated."""
    workdir = str(tmp_path_factory.mktemp("damaged") / "run")
    shutil.copytree(trained, workdir)
    files = [p for p in glob.glob(os.path.join(workdir, "checkpoints", "4", "state", "**", "d", "*"), recursive=True)
             if os.path.isfile(p)]
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(0)
    return workdir



# (id, argv with placeholders, the key the one line must name, an extra substring it must contain).
# Placeholders: {W} a workdir that does not exist, {RUN} the trained run (read-only cases),
# {COPY} a private copy of the trained run, {FILE} a file, {EMPTY} an empty directory,
# {DIR} a directory (for --out). Train cases write to {W} unless they name another workdir.
T = ("train", "--config", TINY, "--workdir", "{W}")
BAD = [
    # The command line itself.
    pytest.param(("trian", "--workdir", "{W}"), "command", "expected one of", id="unknown-command"),
    pytest.param(("--workdir", "{W}"), "command", "expected one of", id="no-command"),
    pytest.param((), "command", "expected one of", id="no-arguments"),
    pytest.param(("train", "--config", "{W}/nope.py", "--workdir", "{W}"), "--config",
                 "expected an existing config file", id="config-file-missing"),
    pytest.param(("train", "--config", f"{DEMO}:huge", "--workdir", "{W}"), "preset", "'huge'",
                 id="unknown-preset"),
    pytest.param((*T, "--config.train.stepz=5"), "train.stepz", "did you mean 'steps'", id="unknown-key-near-miss"),
    pytest.param((*T, "--config.trian.steps=5"), "trian", "expected a key the config declares",
                 id="unknown-section"),
    pytest.param((*T, "--config.train.steps=abc"), "train.steps", "'abc'; expected", id="train-steps-not-an-int"),
    pytest.param(("train", "--config", "", "--workdir", "{W}"), "--config", "expected an existing config file",
                 id="config-path-empty"),
    pytest.param((*T, "--config.train.lr=abc"), "config.train.lr", "expected a number", id="train-lr-not-a-number"),
    pytest.param((*T, "--config.data=3"), "config.data", "expected a config section", id="config-section-as-value"),
    pytest.param((*T, "--config.train.steps"), "config.train.steps", "expected a value", id="config-key-no-value"),
    pytest.param(("train", "--config", TINY, "--workdir", "{W}", "--frobnicate=1"), "--frobnicate",
                 "expected a flag of `train`", id="unknown-flag"),
    pytest.param(("sample", "--workdi={RUN}"), "--workdi", "did you mean --workdir", id="unknown-flag-near-miss"),
    pytest.param(("train", "--config", TINY, "--workdir="), "--workdir", "a directory path", id="train-workdir-empty"),
    pytest.param((*T, "--steps", "8,abc"), "--steps", "comma-separated ints", id="train-steps-flag-abc"),
    pytest.param((*T, "--config.sample.steps=0"), "sample.steps", ">= 1", id="train-sample-steps-0"),
    pytest.param((*T, "--config.sample.num_samples=0"), "sample.num_samples", ">= 1", id="train-sample-num-0"),
    pytest.param((*T, "--sampler", "nope"), "--sampler", "one of", id="train-sampler-unknown"),
    pytest.param((*T, "--config.sample.sampler=nope"), "sample.sampler", "one of", id="train-config-sampler-unknown"),
    pytest.param((*T, "--config.train.steps=1", "--sampler", "fsdfm"), "--sampler", "'mdlm'",
                 id="train-flow-sampler-on-mdlm"),
    pytest.param((*T, "--evals", "nope"), "--evals", "config.evals", id="train-evals-unknown"),
    pytest.param((*T, "extra"), "arguments", "expected only flags", id="train-positional"),
    # train: values of train keys.
    pytest.param((*T, "--config.train.steps=0"), "train.steps", ">= 1", id="train-steps-0"),
    pytest.param((*T, "--config.train.steps=-1"), "train.steps", ">= 1", id="train-steps-neg"),
    pytest.param((*T, "--config.train.lr=0"), "train.lr", "expected", id="train-lr-0"),
    pytest.param((*T, "--config.train.lr=inf"), "train.lr", "finite", id="train-lr-inf"),
    pytest.param((*T, "--config.train.lr=nan"), "train.lr", "finite", id="train-lr-nan"),
    pytest.param((*T, "--config.train.batch_size=7"), "train.batch_size", "data-parallel size 2",
                 id="train-batch-not-divisible"),
    pytest.param((*T, "--config.train.microbatches=3"), "train.microbatches", "divisor", id="train-microbatches"),
    pytest.param((*T, "--config.train.schedule=cosinus"), "train.schedule", "one of", id="train-schedule"),
    pytest.param((*T, "--config.train.ema_decay=1.0"), "train.ema_decay", "expected", id="train-ema-decay-1"),
    pytest.param((*T, "--config.train.b2=1.5"), "train.b2", "expected", id="train-b2"),
    pytest.param((*T, "--config.train.step_impl=pmap"), "train.step_impl", "one of", id="train-step-impl"),
    pytest.param((*T, "--config.train.max_nonfinite_steps=-1"), "train.max_nonfinite_steps", ">= 0",
                 id="train-max-nonfinite-neg"),
    # train: model keys.
    pytest.param((*T, "--config.model.heads=3"), "model.width", "heads=3", id="model-heads"),
    pytest.param((*T, "--config.model.dtype=float8"), "model.dtype", "", id="model-dtype"),
    pytest.param((*T, "--config.model.name=transformer"), "model.name", "one of", id="model-name"),
    # train: method keys.
    pytest.param((*T, "--config.method.name=sedd"), "method.name", "one of", id="method-name"),
    pytest.param((*T, "--config.method.schedule=cubic"), "method.schedule", "one of", id="method-schedule"),
    pytest.param((*T, "--config.method.sampling_eps=1.5"), "method.sampling_eps", "finite number",
                 id="method-sampling-eps"),
    pytest.param((*T, "--config.method.time_input=h"), "method.time_input", "one of", id="method-time-input"),
    # train: data keys.
    pytest.param((*T, "--config.data.source=web"), "data.source", "one of", id="data-source"),
    pytest.param((*T, "--config.data.seq_len=4096"), "data.seq_len", "max_len", id="data-seq-len-too-long"),
    pytest.param((*T, "--config.data.tokenizer_vocab_size=10"), "data.tokenizer_vocab_size", ">= 276",
                 id="data-tokenizer-vocab-small"),
    # train: mesh, checkpoint, evals, init_from, workdir.
    pytest.param((*T, "--config.mesh.data=3"), "mesh", "expected", id="mesh-data-3"),
    pytest.param((*T, "--config.checkpoint.every=-1"), "checkpoint.every", ">= 0", id="checkpoint-every-neg"),
    pytest.param((*T, "--config.evals.eval.kind=nope"), "evals.eval.kind", "one of", id="evals-kind"),
    pytest.param((*T, "--config.evals.eval.batches=0"), "evals.eval.batches", ">= 1", id="evals-batches-0"),
    pytest.param((*T, "--config.init_from.workdir={W}/nope"), "init_from.workdir", "a trained run",
                 id="init-from-missing"),
    pytest.param((*T, "--config.init_from.workdir={RUN}", "--config.init_from.mapping=magic"), "init_from.mapping",
                 "one of", id="init-from-mapping"),
    pytest.param(("train", "--config", TINY, "--workdir", "{FILE}"), "--workdir", "a directory",
                 id="train-workdir-is-a-file"),
    pytest.param(("train", "--config", TINY, "--workdir", "{COPY}", "--config.train.lr=-1"), "train.lr", "expected",
                 id="train-bad-lr-on-existing-run"),
    # sample / eval.
    pytest.param(("sample",), "--workdir", "the run directory", id="sample-no-workdir"),
    pytest.param(("eval",), "--workdir", "the run directory", id="eval-no-workdir"),
    pytest.param(("sample", "--workdir", "{EMPTY}"), "workdir", "a trained run", id="sample-no-checkpoints"),
    pytest.param(("eval", "--workdir", "{EMPTY}"), "workdir", "a trained run", id="eval-no-checkpoints"),
    pytest.param(("sample", "--workdir", "{W}"), "workdir", "an existing run directory", id="sample-no-such-workdir"),
    pytest.param(("eval", "--workdir", "{W}"), "workdir", "an existing run directory", id="eval-no-such-workdir"),
    pytest.param(("eval", "--workdir", "{FILE}"), "workdir", "an existing run directory", id="eval-workdir-is-a-file"),
    pytest.param(("sample", "--workdir", "{RUN}", "--steps", "8,abc"), "--steps", "comma-separated ints",
                 id="sample-steps-abc"),
    pytest.param(("sample", "--workdir", "{RUN}", "--steps", "0"), "--steps", ">= 1", id="sample-steps-0"),
    pytest.param(("sample", "--workdir", "{RUN}", "--num-samples", "0"), "--num-samples", ">= 1",
                 id="sample-num-samples-0"),
    pytest.param(("sample", "--workdir", "{RUN}", "--num-samples", "two"), "--num-samples", "expected an int",
                 id="sample-num-samples-not-int"),
    pytest.param(("sample", "--workdir", "{RUN}", "--steps", ""), "--steps", "comma-separated ints",
                 id="sample-steps-empty"),
    pytest.param(("sample", "--workdir", "{RUN}", "--seed", "x"), "--seed", "expected an int",
                 id="sample-seed-not-int"),
    pytest.param(("eval", "--workdir", "{RUN}", "--ema=maybe"), "--ema", "expected a bool", id="eval-ema-not-bool"),
    pytest.param(("eval", "--workdir", "{RUN}", "--steps", "8"), "--steps", "a flag of `eval`", id="eval-sample-flag"),
    pytest.param(("sample", "--workdir", "{RUN}", "--evals", "eval"), "--evals", "a flag of `sample`",
                 id="sample-eval-flag"),
    pytest.param(("sample", "--workdir", "{RUN}", "--config", TINY, "--config.train.steps=5"), "config",
                 "a flag of `sample`", id="sample-config-flag"),
    pytest.param(("eval", "--workdir", "{RUN}", "--batches", "0"), "--batches", ">= 1", id="eval-batches-0"),
    pytest.param(("eval", "--workdir", "{RUN}", "--batches", "-1"), "--batches", ">= 1", id="eval-batches-neg"),
    pytest.param(("sample", "--workdir", "{RUN}", "--out", "{DIR}"), "--out", "not a directory", id="sample-out-dir"),
    pytest.param(("sample", "--workdir", "{RUN}", "--sampler", "nope"), "--sampler", "one of",
                 id="sample-sampler-unknown"),
    pytest.param(("sample", "--workdir", "{RUN}", "--sampler", "fsdfm"), "--sampler", "'mdlm'",
                 id="sample-flow-sampler-on-mdlm"),
    pytest.param(("eval", "--workdir", "{RUN}", "--evals", "nope"), "--evals", "config.evals", id="eval-evals-unknown"),
    pytest.param(("sample", "--workdir", "{RUN}", "extra"), "arguments", "expected only flags", id="sample-positional"),
    pytest.param(("eval", "--workdir", "{RUN}", "extra"), "arguments", "expected only flags", id="eval-positional"),
]


@pytest.mark.parametrize("args, key, expect", BAD)
def test_bad_input_is_one_line_and_touches_nothing(args, key, expect, trained, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    places = {"{W}": str(tmp_path / "cwd" / "w"), "{RUN}": trained, "{COPY}": str(tmp_path / "copy"),
              "{FILE}": str(tmp_path / "cwd" / "file.txt"), "{EMPTY}": str(tmp_path / "cwd" / "empty"),
              "{DIR}": str(tmp_path / "cwd" / "outdir")}
    if any("{COPY}" in a for a in args):
        shutil.copytree(trained, places["{COPY}"])
    (cwd / "file.txt").write_text("not a run\n")
    (cwd / "empty").mkdir()
    (cwd / "outdir").mkdir()
    argv = []
    for a in args:
        for k, v in places.items():
            a = a.replace(k, v)
        argv.append(a)
    watched = {"cwd": str(cwd), "run": trained, "copy": places["{COPY}"]}
    before = {name: snapshot(path) for name, path in watched.items()}
    start = time.perf_counter()
    out = cli(*argv, cwd=str(cwd), timeout=120)
    seconds = time.perf_counter() - start
    lines = out.stderr.splitlines()
    detail = f"rc={out.returncode} in {seconds:.1f}s\nstderr:\n{out.stderr[-3000:]}\nstdout:\n{out.stdout[-1000:]}"
    assert out.returncode == 2, detail
    assert len(lines) == 1 and lines[0].strip(), detail
    assert lines[0].startswith("error: ") and key in lines[0] and expect in lines[0], detail
    assert "; expected " in lines[0], detail
    assert out.stdout == "" or not args, "work started before the error (stdout not empty): " + detail
    after = {name: snapshot(path) for name, path in watched.items()}
    for name in watched:
        assert after[name] == before[name], f"{name} changed: " + detail


@pytest.mark.parametrize("command", ["train", "sample", "eval"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_0_with_flags_and_presets(command, flag, tmp_path):
    out = cli(command, flag, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.strip() == ""
    own = {"train": ("--config", "--workdir"),
           "sample": ("--workdir", "--steps", "--sampler", "--num-samples", "--out"),
           "eval": ("--workdir", "--evals", "--batches")}[command]
    for name in own:
        assert name in out.stdout, out.stdout
    assert f"python -m dlm_jax {command}" in out.stdout
    assert "configs/demo.py: demo, tiny" in out.stdout
    assert os.listdir(tmp_path) == []


def test_sample_falls_back_from_damaged_newest(damaged, tmp_path):
    path = str(tmp_path / "samples.jsonl")
    before = snapshot(damaged)
    out = cli("sample", "--workdir", damaged, "--steps", "2", "--num-samples", "1", "--out", path, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert os.path.join("checkpoints", "4") in out.stderr and "falling back" in out.stderr, out.stderr[-3000:]
    rows = [json.loads(line) for line in open(path)]
    assert [r["step"] for r in rows] == [2]
    assert "step 2" in out.stdout
    assert snapshot(damaged) == before


def test_eval_falls_back_from_damaged_newest(damaged, tmp_path):
    before = snapshot(damaged)
    out = cli("eval", "--workdir", damaged, "--batches", "1", cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert os.path.join("checkpoints", "4") in out.stderr and "falling back" in out.stderr, out.stderr[-3000:]
    assert "(step 2" in out.stdout, out.stdout
    assert snapshot(damaged) == before
    assert os.listdir(tmp_path) == []


def test_sigterm_exits_75_after_saving(trained, tmp_path):
    """Resume a copy to a far step, SIGTERM after the first trained step: exit 75, a checkpoint
    past step 4 saved, "preempted" printed."""
    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}")
    args = [sys.executable, "-m", "dlm_jax", "train", "--config", TINY, "--workdir", workdir,
            "--config.train.steps=100000", "--config.checkpoint.every=100000", "--config.evals.eval.every=0",
            "--config.train.log_every=1"]
    metrics = os.path.join(workdir, "metrics.jsonl")
    start_lines = sum(1 for _ in open(metrics))
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(args, cwd=str(tmp_path), env=env, stdout=out, stderr=err)
        try:
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None:
                if sum(1 for _ in open(metrics)) > start_lines:  # a step past 4 has been trained
                    break
                time.sleep(0.2)
            assert proc.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stdout, stderr = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert proc.returncode == 75, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "preempted: saved" in stdout, stdout[-2000:]
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    assert steps[-1] > 4, steps
