"""Refuse, never delete: resuming with a changed model stops with one line naming the first
differing parameter and both shapes; a workdir whose checkpoints are all unreadable is not
trained over. Nothing in the workdir is written or deleted in either case."""

import glob
import os

import pytest

import _tiny
from dlm_jax.train import loop


def _snapshot(workdir):
    return {p: (os.path.getsize(p), os.path.getmtime(p))
            for p in glob.glob(os.path.join(workdir, "**"), recursive=True) if os.path.isfile(p)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    loop.train(_tiny.tiny_config(), workdir, data_fn=_tiny.build_data)
    return workdir


def test_changed_model_is_refused_and_nothing_is_touched(trained):
    before = _snapshot(trained)
    cfg = _tiny.tiny_config()
    cfg.model.hidden = 48
    with pytest.raises(ValueError, match=r"^checkpoint .*/checkpoints/6: parameter down/kernel/value has shape "
                                         r"\(32, 16\) in the checkpoint and \(48, 16\) in this config; expected") as e:
        loop.train(cfg, trained, data_fn=_tiny.build_data)
    assert "\n" not in str(e.value)
    assert _snapshot(trained) == before


def test_all_checkpoints_unreadable_is_refused(trained, tmp_path):
    import shutil

    workdir = str(tmp_path / "w")
    shutil.copytree(trained, workdir)
    for path in glob.glob(os.path.join(workdir, "checkpoints", "*", "state", "**", "d", "*"), recursive=True):
        os.remove(path)
    before = _snapshot(workdir)
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match=r"^checkpoints: .*none of the steps \[3, 6\]"):
        loop.train(_tiny.tiny_config(), workdir, data_fn=_tiny.build_data)
    assert _snapshot(workdir) == before
