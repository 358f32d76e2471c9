"""`python -m dlm_jax` end to end, as a user runs it: train the tiny demo preset on the stdlib
corpus, run it again (resume, not restart), sample to JSONL, evaluate, and bad input gives one
line naming the key. Subprocesses, so the CLI's own device set-up and flag parsing are tested."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, timeout=600, devices=1):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.run([sys.executable, "-m", "dlm_jax", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("cli") / "run")
    out = cli("train", "--config", "configs/demo.py:tiny", "--workdir", workdir, "--config.train.steps=12",
              "--config.checkpoint.every=6", "--config.evals.eval.every=6")
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir, out


@pytest.mark.slow
def test_train_writes_checkpoints_metrics_and_prints_samples(trained):
    workdir, out = trained
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "6"]
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) >= 2 and all(2.0 < v < 12.0 for v in losses)
    assert any("eval/nelbo" in r for r in rows)
    assert "=== mdlm_cache, 8 steps: NFE" in out.stdout
    assert "validation [eval] (step 12" in out.stdout


@pytest.mark.slow
def test_rerun_resumes_and_continues(trained):
    workdir, _ = trained
    out = cli("train", "--config", "configs/demo.py:tiny", "--workdir", workdir, "--config.train.steps=14",
              "--config.checkpoint.every=6")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stdout and out.stdout.count("resumed from") == 1
    assert "/checkpoints/12" in out.stdout.split("resumed from")[1].splitlines()[0]
    assert "14" in os.listdir(os.path.join(workdir, "checkpoints"))


@pytest.mark.slow
def test_sample_to_jsonl_and_eval(trained, tmp_path):
    workdir, _ = trained
    path = str(tmp_path / "samples.jsonl")
    out = cli("sample", "--workdir", workdir, "--steps", "4,8", "--sampler", "remdm_loop", "--num-samples", "3",
              "--out", path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in open(path)]
    assert [(r["steps"], r["nfe"]) for r in rows] == [(4, 5)] * 3 + [(8, 9)] * 3
    assert all(len(r["tokens"]) == 64 and isinstance(r["text"], str) for r in rows)
    out = cli("eval", "--workdir", workdir, "--batches", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    line = [s for s in out.stdout.splitlines() if s.startswith("validation")][0]
    nelbo = float(line.split("nelbo ")[1].split()[0])
    bits = float(line.split("bits_per_token ")[1].split()[0])
    assert "nats/token" in line and "bits/token" in line
    assert 1.0 < nelbo < 12.0 and abs(bits - nelbo / 0.6931471805599453) < 1e-3


@pytest.mark.parametrize("args, message", [
    (("sample",), "--workdir: None; expected the run directory"),
    (("sample", "--workdir", "/nonexistent/run"), "workdir: '/nonexistent/run'; expected an existing run directory"),
    (("train", "--config", "configs/demo.py:tiny", "--workdir", "{tmp}", "--config.method.name=sedd"),
     "method.name: 'sedd'; expected one of"),
    (("train", "--config", "configs/demo.py:tiny", "--workdir", "{tmp}", "--config.data.source=web"),
     "data.source: 'web'; expected one of"),
    (("train", "--config", "configs/demo.py:tiny", "--workdir", "{tmp}", "--config.data.seq_len=4096"),
     "data.seq_len: 4096"),
    (("train", "--config", "configs/demo.py:tiny", "--workdir", "{tmp}", "--config.train.batch_size=7"),
     "train.batch_size: 7; expected a multiple of the data-parallel size 2"),
    (("train", "--config", "configs/demo.py:tiny", "--workdir", "{tmp}", "--config.mesh.data=4"),
     "mesh"),
])
def test_bad_input_is_one_line_before_compiling(args, message, tmp_path):
    out = cli(*[a.replace("{tmp}", str(tmp_path / "w")) for a in args], timeout=300, devices=2)
    assert out.returncode != 0
    err = [line for line in out.stderr.splitlines() if line.strip()]
    assert message in err[-1], out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_export_import_round_trip_through_the_cli(trained, tmp_path):
    """export (MDLM HF layout) -> import -> sample, as a user runs them: the imported run's params
    equal the trained run's bit for bit, and it samples with the same tokens under the same key."""
    import numpy as np

    from dlm_jax.runs import load_params

    workdir, _ = trained
    out, imported = str(tmp_path / "hf"), str(tmp_path / "imported")
    r = cli("export", "--workdir", workdir, "--format", "mdlm", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    data = json.dumps({"source": "stdlib", "tokenizer_path": os.path.join(workdir, "tokenizer", "spm_bpe1024.model")})
    r = cli("import", "--from", out, "--format", "mdlm", "--workdir", imported, "--seq-len", "64", "--data", data)
    assert r.returncode == 0, r.stderr[-3000:]
    for a, b in zip(jax_leaves(load_params(workdir).params), jax_leaves(load_params(imported).params)):
        np.testing.assert_array_equal(a, b)
    rows = []
    for run in (workdir, imported):
        path = str(tmp_path / f"{os.path.basename(run)}.jsonl")
        r = cli("sample", "--workdir", run, "--steps", "4", "--num-samples", "2", "--sampler", "mdlm", "--out", path)
        assert r.returncode == 0, r.stderr[-3000:]
        rows.append([json.loads(line)["tokens"] for line in open(path)])
    assert rows[0] == rows[1]
    r = cli("import", "--from", out, "--format", "mdlm", "--workdir", imported)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def jax_leaves(tree):
    import jax
    import numpy as np

    return [np.asarray(x) for x in jax.tree.leaves(tree)]
