"""asr_kd.checkpoint: atomic writes keep the old file on failure and give usual permissions."""

import os
import stat

import pytest
import torch

from asr_kd.checkpoint import atomic_torch_save, atomic_write


def test_atomic_write_gives_the_umask_permissions_not_mkstemps_0600(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = tmp_path / "x.ckpt"
    atomic_torch_save({"a": torch.ones(2)}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "index.json"
    atomic_write(path, lambda f: f.write(b"old"))

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


MARKER_NAME = "payload_ran"


def _touch_marker(path: str) -> str:
    """What the pickled payload calls when it is unpickled: leaves a file behind."""
    open(path, "w").close()
    return "ran"


class _Payload:
    """Unpickles by calling ``_touch_marker``: a checkpoint that runs code when loaded."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (_touch_marker, (self.marker,))


class _CustomObject:
    """A plain custom class: not code on its own, but not data either."""

    def __init__(self):
        self.value = 3


def _asr_kd_checkpoint_with(extra) -> dict:
    meta = {"model_config": {"_target_": "asr_kd.models.ConformerCTC"}, "role": "teacher"}
    return {"state_dict": {"model.w": torch.ones(2)}, "asr_kd": {**meta, "extra": extra}}


@pytest.mark.parametrize("loader", ["load_checkpoint", "load_model"])
def test_a_checkpoint_whose_pickle_runs_code_is_refused_without_running_it(tmp_path, loader):
    from asr_kd import checkpoint
    from asr_kd.models import loading

    marker = tmp_path / MARKER_NAME
    path = tmp_path / "evil.ckpt"
    torch.save(_asr_kd_checkpoint_with(_Payload(str(marker))), path)
    load = checkpoint.load_checkpoint if loader == "load_checkpoint" else loading.load_model
    with pytest.raises(ValueError, match=r"cannot read .*evil\.ckpt as a torch checkpoint"):
        load(path)
    assert not marker.exists()
    # the payload is real: an unrestricted load runs it
    assert torch.load(path, weights_only=False)["asr_kd"]["extra"] == "ran"
    assert marker.exists()


def test_a_checkpoint_carrying_a_custom_object_is_refused(tmp_path):
    from asr_kd.checkpoint import load_checkpoint

    path = tmp_path / "custom.ckpt"
    torch.save(_asr_kd_checkpoint_with(_CustomObject()), path)
    with pytest.raises(ValueError, match=r"cannot read .*custom\.ckpt as a torch checkpoint"):
        load_checkpoint(path)
    # the same contents as plain data read fine
    path = tmp_path / "plain.ckpt"
    torch.save(_asr_kd_checkpoint_with({"value": 3}), path)
    assert load_checkpoint(path)["asr_kd"]["extra"] == {"value": 3}


def test_a_missing_best_ckpt_names_last_ckpt(tmp_path):
    """Regression: the README distilled from ``best.ckpt``, which exists only once a validation
    has run; the error said ``checkpoint not found`` and nothing of ``last.ckpt``."""
    from asr_kd.checkpoint import load_checkpoint
    from asr_kd.errors import MissingFileError

    (tmp_path / "last.ckpt").write_bytes(b"")
    with pytest.raises(MissingFileError) as err:
        load_checkpoint(tmp_path / "best.ckpt")
    assert str(err.value).startswith(f"checkpoint not found: {tmp_path / 'best.ckpt'}; best.ckpt")
    assert f"use {tmp_path / 'last.ckpt'}; {tmp_path} holds last.ckpt" in str(err.value)
    assert "trainer.val_check_interval" in str(err.value)


def test_a_refused_pickle_is_told_in_asr_kd_words(tmp_path):
    """Regression: the refusal carried torch's advice to load with ``weights_only=False``."""
    from asr_kd.checkpoint import load_checkpoint
    from asr_kd.errors import BadFileError

    path = tmp_path / "code.ckpt"
    torch.save({"state_dict": {}, "asr_kd": {"extra": print}}, path)  # a global: code, not data
    with pytest.raises(BadFileError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message == (
        f"cannot read {path} as a torch checkpoint: it holds objects that are not tensors or "
        "plain data (a checkpoint is data; asr_kd loads only tensors, dicts, lists, numbers and "
        "strings; this one asks for print); re-save it with asr_kd or give the right file"
    )
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no torch text
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(BadFileError, match=r"as a torch checkpoint \(.*\); expected a \.ckpt"):
        load_checkpoint(path)
