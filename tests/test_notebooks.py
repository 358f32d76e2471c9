"""The notebooks' frame (notebooks/): every committed .ipynb is exactly what jupytext makes of its
percent-format .py (so the two cannot drift), each starts with a Colab-only setup cell that CI
skips, reads its scale from DLM_NOTEBOOK_SCALE, and has its Colab badge in the README. Executing
them is ``pytest --nbmake notebooks/`` (the README's test command)."""

import importlib.util
import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
EXPECTED = ("01_quickstart", "02_exact_samplers", "03_few_step_fsdfm", "04_tpu_pod", "05_dsl", "06_interop",
            "07_fastdiss")


def _sync():
    spec = importlib.util.spec_from_file_location("notebooks_sync", os.path.join(NOTEBOOKS, "sync.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _names():
    return [os.path.splitext(os.path.basename(p))[0] for p in _sync().sources()]


def test_every_notebook_has_a_source_and_a_generated_ipynb():
    names = _names()
    assert tuple(names) == EXPECTED
    ipynbs = sorted(f[:-6] for f in os.listdir(NOTEBOOKS) if f.endswith(".ipynb"))
    assert ipynbs == names  # no .ipynb without its .py


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_ipynb_matches_its_py(name):
    sync = _sync()
    source = os.path.join(NOTEBOOKS, f"{name}.py")
    with open(sync.target(source), encoding="utf-8") as f:
        committed = f.read()
    assert committed == sync.render(source), f"notebooks/{name}.ipynb is stale: run python notebooks/sync.py"


@pytest.mark.parametrize("name", EXPECTED)
def test_setup_cell_is_colab_only_and_scale_comes_from_one_variable(name):
    with open(os.path.join(NOTEBOOKS, f"{name}.ipynb"), encoding="utf-8") as f:
        nb = json.load(f)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    setup = "".join(code[0]["source"])
    assert code[0]["metadata"].get("tags") == ["skip-execution"]  # nbclient / nbmake skip it
    assert 'if "google.colab" in sys.modules:' in setup and "pip" in setup
    assert all("skip-execution" not in c["metadata"].get("tags", []) for c in code[1:])
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)  # committed without outputs
    text = "\n".join("".join(c["source"]) for c in code)
    assert set(re.findall(r"DLM_NOTEBOOK_\w+", text)) <= {"DLM_NOTEBOOK_SCALE"}
    assert "ROOT, SCALE = setup()" in "".join(code[1]["source"])  # dlm_jax.notebook, not a copy each
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_sync_check_reports_a_stale_ipynb(tmp_path, monkeypatch):
    sync = _sync()
    source = tmp_path / "07_probe.py"
    source.write_text("# %% [markdown]\n# probe\n\n# %%\nx = 1\n")
    monkeypatch.setattr(sync, "HERE", str(tmp_path))
    assert sync.stale() == [str(tmp_path / "07_probe.ipynb")]  # missing
    assert sync.main([]) == 0 and sync.stale() == [] and sync.main(["--check"]) == 0
    source.write_text("# %% [markdown]\n# probe\n\n# %%\nx = 2\n")
    assert sync.main(["--check"]) == 1
    assert sync.main(["--bogus"]) == 2


def test_readme_runs_the_notebooks_and_has_a_badge_each():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    command = readme.split("<!-- test-command -->", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert "--nbmake notebooks/" in command
    for name in EXPECTED:
        assert (f"https://colab.research.google.com/github/YOUR_ORG/dlm_jax/blob/main/notebooks/{name}.ipynb"
                in readme), name


def test_kernel_environment_of_the_notebooks():
    spec = importlib.util.spec_from_file_location("notebooks_conftest", os.path.join(NOTEBOOKS, "conftest.py"))
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    env = conftest.kernel_env({"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_dump_to=/x"})
    assert env == {"DLM_NOTEBOOK_SCALE": "0.025", "XLA_FLAGS": "--xla_dump_to=/x --xla_backend_optimization_level=0 "
                   "--xla_llvm_disable_expensive_passes=true"}
    env = conftest.kernel_env({"DLM_NOTEBOOK_SCALE": "0.5", "XLA_FLAGS": env["XLA_FLAGS"]})
    assert env["DLM_NOTEBOOK_SCALE"] == "0.5" and env["XLA_FLAGS"].count("optimization_level") == 1


def test_notebook_setup_finds_the_checkout_and_reads_the_scale(tmp_path, monkeypatch):
    from dlm_jax import notebook

    deep = tmp_path / "notebooks" / "sub"
    deep.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="configs/demo.py: not found"):
        notebook.checkout_root(str(deep))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.py").write_text("")
    assert notebook.checkout_root(str(deep)) == str(tmp_path)
    monkeypatch.chdir(deep)
    monkeypatch.setattr("sys.path", ["x"])
    monkeypatch.setenv("DLM_NOTEBOOK_SCALE", "0.025")
    assert notebook.setup() == (str(tmp_path), 0.025)
    assert notebook.setup() == (str(tmp_path), 0.025)
    import sys

    assert sys.path == [str(tmp_path), "x"]  # put first, once
    assert notebook.notebook_scale({}) == 1.0
    for bad in ("0", "-1", "nan", "big"):
        with pytest.raises(ValueError, match=f"DLM_NOTEBOOK_SCALE: '{bad}'; expected a number > 0"):
            notebook.notebook_scale({"DLM_NOTEBOOK_SCALE": bad})
