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
