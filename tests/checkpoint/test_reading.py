"""load_checkpoint: formats, safe unpickling, one-line errors."""
from __future__ import annotations

import logging
import pickle
import struct
import sys
import types

import pytest
import torch

from ldm.checkpoint import (
    CheckpointError,
    UnsafePickleError,
    detect_format,
    load_checkpoint,
    save_checkpoint,
)
from ldm.checkpoint.safe_unpickle import PicklePlaceholder
from tests.checkpoint.helpers import write_malicious


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


def test_plain_state_dict_and_wrapper(tmp_path):
    sd = {"a": torch.arange(3.0)}
    torch.save(sd, tmp_path / "plain.pt")
    torch.save({"state_dict": sd, "global_step": 7}, tmp_path / "wrapped.ckpt")
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    for name in ("plain.pt", "wrapped.ckpt", "legacy.pth"):
        ckpt = load_checkpoint(tmp_path / name)
        assert torch.equal(ckpt["state_dict"]["a"], sd["a"])
    assert load_checkpoint(tmp_path / "wrapped.ckpt")["global_step"] == 7
    assert detect_format(tmp_path / "legacy.pth") == "torch-legacy"


def _fake_lightning_class(monkeypatch):
    """A class pickled under Lightning 1.x's name, like the callbacks key of released files."""
    name = "pytorch_lightning.callbacks.model_checkpoint"
    mod = types.ModuleType(name)

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__ = name
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    mod.ModelCheckpoint = ModelCheckpoint
    # stand-in packages, so that pickling does not import the real (slow) pytorch_lightning
    for parent in ("pytorch_lightning", "pytorch_lightning.callbacks"):
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    monkeypatch.setitem(sys.modules, name, mod)
    return ModelCheckpoint


@pytest.mark.parametrize("legacy", [False, True])
def test_lightning1_file_with_pickled_classes_loads_without_them(tmp_path, monkeypatch, legacy):
    import numpy as np

    cls = _fake_lightning_class(monkeypatch)
    path = tmp_path / "released.ckpt"
    torch.save({"epoch": 1, "global_step": 5, "pytorch-lightning_version": "1.4.2",
                "state_dict": {"w": torch.ones(2)},
                "callbacks": {cls: {"best_model_score": np.float64(0.5)}}},
               path, _use_new_zipfile_serialization=not legacy)
    monkeypatch.delitem(sys.modules, "pytorch_lightning.callbacks.model_checkpoint")
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2))
    (key,) = ckpt["callbacks"]
    assert issubclass(key, PicklePlaceholder) and key.pickled_name.endswith("ModelCheckpoint")
    assert "pytorch_lightning.callbacks.model_checkpoint" not in sys.modules


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_that_runs_code_is_refused(tmp_path, legacy):
    marker = tmp_path / "PWNED"
    path = write_malicious(str(tmp_path / "evil.ckpt"), str(marker), legacy=legacy)
    with pytest.raises(UnsafePickleError) as info:
        load_checkpoint(path)
    assert "system" in one_line(info.value) and "--unsafe-pickle" in str(info.value)
    assert not marker.exists()


def test_bare_pickle_that_runs_code_is_refused(tmp_path):
    from tests.checkpoint.helpers import _RunsCode

    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    for protocol in (2, 4):
        path.write_bytes(pickle.dumps({"state_dict": _RunsCode(str(marker))}, protocol=protocol))
        with pytest.raises(UnsafePickleError):
            load_checkpoint(path)
    assert not marker.exists()


def test_unsafe_pickle_opt_in_warns(tmp_path, caplog, monkeypatch):
    mod = types.ModuleType("my_trusted_module")

    class Trusted:
        pass

    Trusted.__module__ = "my_trusted_module"
    Trusted.__qualname__ = "Trusted"
    mod.Trusted = Trusted
    monkeypatch.setitem(sys.modules, "my_trusted_module", mod)
    path = tmp_path / "trusted.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "obj": Trusted()}, path)
    with pytest.raises(UnsafePickleError):
        load_checkpoint(path)
    with caplog.at_level(logging.WARNING):
        ckpt = load_checkpoint(path, unsafe_pickle=True)
    assert isinstance(ckpt["obj"], Trusted)
    assert any("unsafe-pickle" in r.message for r in caplog.records)


def test_missing_file_names_the_download_scripts(tmp_path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "models" / "model.ckpt")
    msg = one_line(info.value)
    assert "download_models.sh" in msg and "download_first_stages.sh" in msg


def test_empty_file(tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty") as info:
        load_checkpoint(tmp_path / "empty.ckpt")
    one_line(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_torch_file(tmp_path, keep):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "truncated" in one_line(info.value) or "corrupt" in str(info.value)


def test_bad_safetensors_header(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 40) + b'{"w": {"dtype": "F32", "shape": [2], "data_offse')
    with pytest.raises(CheckpointError, match="safetensors") as info:
        load_checkpoint(path)
    one_line(info.value)
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_checkpoint({"w": torch.randn(128)}, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    one_line(info.value)


def test_zip_archive_of_a_download_is_explained(tmp_path):
    import zipfile

    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.ckpt", b"not really")
    with pytest.raises(CheckpointError, match="unpack") as info:
        load_checkpoint(path)
    one_line(info.value)


def test_non_checkpoint_objects(tmp_path):
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list"):
        load_checkpoint(tmp_path / "list.pt")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "text.ckpt")
