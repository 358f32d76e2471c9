"""The command functions the CLI wires: arguments checked first (one line, nothing written), then the work."""

import os

import pytest

import _export_helpers as H
from dlm_jax.export import commands, dit_formats


def _mdlm_src(tmp_path):
    src = tmp_path / "mdlm"
    src.mkdir()
    dit_formats.write_mdlm(H.checkpoint(H.fields("none"), dit_formats.mdlm_method(False)), str(src))
    return str(src)


def test_import_and_export_commands(tmp_path, capsys):
    src = _mdlm_src(tmp_path)
    s = commands.import_command(src, "mdlm", str(tmp_path / "wd"), seq_len=8, data='{"num_threads": 1}',
                                model=None, heads=None)
    assert s["vocab_size"] == 8 and "sample with `python -m dlm_jax sample --workdir" in capsys.readouterr().out
    out = commands.export_command(str(tmp_path / "wd"), "dlm_jax", str(tmp_path / "own"), max_shard_size="3KB")
    assert out["format"] == "dlm_jax" and len(out["files"]) > 3  # shards + index + config.json
    assert commands.parse_size("2GiB") == 2**31 and commands.parse_size("500MB") == 5 * 10**8


@pytest.mark.parametrize("call,match", [
    (lambda t, s: commands.export_command(str(t / "wd"), "onnx", str(t / "o")), "--format: 'onnx'"),
    (lambda t, s: commands.export_command(str(t / "wd"), "mdlm", str(t / "o"), max_shard_size="lots"),
     "--max-shard-size: 'lots'"),
    (lambda t, s: commands.export_command(str(t / "nowhere"), "mdlm", str(t / "o")), "workdir"),
    (lambda t, s: commands.import_command(s, "mdlm", str(t / "o"), data="{not json"), "--data"),
    (lambda t, s: commands.import_command(s, "mdlm", str(t / "o"), seq_len=0), "--seq-len: 0"),
    (lambda t, s: commands.import_command(s, "fsdfm", str(t / "o"), heads=-2), "--heads: -2"),
    (lambda t, s: commands.import_command(s, "mdlm", str(t / "o"), data='{"source": "nope"}'), "data.source"),
    (lambda t, s: commands.parity_command(str(t / "wd"), exported=str(t / "x")), "--format: None"),
])
def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, call, match):
    src = _mdlm_src(tmp_path)
    with pytest.raises(ValueError, match=match) as e:
        call(tmp_path, src)
    assert "\n" not in str(e.value) and not os.path.exists(tmp_path / "o")


def test_parity_command_passes_on_an_imported_run(tmp_path, capsys):
    pytest.importorskip("torch")
    commands.import_command(_mdlm_src(tmp_path), "mdlm", str(tmp_path / "wd"))
    fig = commands.parity_command(str(tmp_path / "wd"), num_sequences=2, length=12)
    assert fig["passes"] and fig["format"] == "mdlm" and "PASS" in capsys.readouterr().out
