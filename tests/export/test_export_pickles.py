"""PyTorch pickles (needs torch): FS-DFM ``.pth`` round trip with wrapper prefixes, MDLM ``pytorch_model.bin``,
and a malicious pickle that is refused without running."""

import os
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import _export_helpers as H  # noqa: E402
from dlm_jax.export import dit_formats, exporter, files, importer  # noqa: E402
from dlm_jax.export.params import flatten  # noqa: E402
from dlm_jax.runs import load_params  # noqa: E402


def test_fsdfm_pth_with_wrapper_prefixes_round_trips(tmp_path):
    f = H.fields("th")
    ckpt = H.checkpoint(f, dit_formats.fsdfm_method("student", "mask"), seed=11)
    ckpt.ema_params = H.random_dit(f, seed=12)
    path = str(tmp_path / "checkpoint.pth")
    dit_formats.write_fsdfm(ckpt, path)
    saved = torch.load(path, weights_only=True)
    assert sorted(saved) == ["step", "student_ema_model", "student_model"]
    # What DDP + torch.compile leave in a real checkpoint: prefixed keys, plus optimizer state beside them.
    saved["student_ema_model"] = {f"module._orig_mod.{k}": v for k, v in saved["student_ema_model"].items()}
    saved["student_optimizer"] = {"state": {}, "param_groups": [{"lr": 1e-5}]}
    torch.save(saved, path)
    importer.import_checkpoint(path, "fsdfm", str(tmp_path / "wd"), model="student_ema", source="mask", heads=2)
    got = flatten(load_params(str(tmp_path / "wd")).params)
    assert all(np.array_equal(got[k], ckpt.ema_params[k]) for k in ckpt.ema_params)
    exporter.export_run(str(tmp_path / "wd"), "fsdfm", str(tmp_path / "out.pth"))
    back = torch.load(str(tmp_path / "out.pth"), weights_only=True)
    for k, v in back["student_model"].items():
        assert torch.equal(v, saved["student_ema_model"][f"module._orig_mod.{k}"]), k


def test_mdlm_pytorch_model_bin_imports(tmp_path):
    f = H.fields("none")
    src = tmp_path / "mdlm"
    src.mkdir()
    dit_formats.write_mdlm(H.checkpoint(f, dit_formats.mdlm_method(False), seed=2), str(src))
    sd = files.read_weights_dir(str(src))
    os.remove(src / "model.safetensors")
    torch.save({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, str(src / "pytorch_model.bin"))
    importer.import_checkpoint(str(src), "mdlm", str(tmp_path / "wd"))
    got = flatten(load_params(str(tmp_path / "wd")).params)
    assert all(np.array_equal(got[k], v) for k, v in H.random_dit(f, seed=2).items())


class _Payload:
    """Unpickling this would create a file: the test checks it never exists."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, writer):
    marker = tmp_path / "PWNED"
    path = str(tmp_path / "evil.pth")
    obj = {"teacher_model": {"vocab_embed.weight": torch.zeros(2, 2)}, "step": _Payload(str(marker))}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh)
    assert not marker.exists()
    with pytest.raises(ValueError, match="weights-only PyTorch checkpoint.*was not run — convert it to safetensors") as e:
        importer.import_checkpoint(path, "fsdfm", str(tmp_path / "wd"), source="mask")
    assert "\n" not in str(e.value)
    assert not marker.exists() and not (tmp_path / "wd").exists()
