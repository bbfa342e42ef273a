"""Files written whole or not at all, and torch files checked before they are unpickled."""

import errno
import os
import stat

import pytest
import torch

from ncsn_pl.system import files
from ncsn_pl.system.files import atomic_torch_save, atomic_write_text, check_torch_file, load_torch_file


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "out.pt"
    atomic_torch_save({"a": torch.ones(2)}, target)

    def broken_save(obj, f):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(files.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"a": torch.zeros(2)}, target)
    assert torch.equal(torch.load(target)["a"], torch.ones(2))  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.pt"]


def test_a_full_disk_says_so_in_one_line_and_leaves_nothing_under_the_name(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(OSError, match=r"No space left on the device while writing .*config.yaml; nothing was written"):
        atomic_write_text("a: 1\n", tmp_path / "run" / "config.yaml")
    assert list((tmp_path / "run").iterdir()) == []


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b""])
def test_files_that_are_not_torch_files_are_refused_before_unpickling(tmp_path, content):
    path = tmp_path / "notes.ckpt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="notes.ckpt' is not a PyTorch checkpoint"):
        check_torch_file(path)
    with pytest.raises(FileNotFoundError, match="does not exist; give the path of a .ckpt file"):
        load_torch_file(tmp_path / "missing.ckpt")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_torch_file(tmp_path)
    torch.save({"w": torch.ones(3)}, tmp_path / "ok.pt")
    assert torch.equal(load_torch_file(tmp_path / "ok.pt")["w"], torch.ones(3))


@pytest.mark.parametrize("umask", [0o002, 0o022])
def test_written_files_follow_the_umask_as_open_does(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write_text("a: 1\n", tmp_path / "config.yaml")
        atomic_torch_save({"a": torch.ones(1)}, tmp_path / "last.ckpt")
        with open(tmp_path / "plain.txt", "w") as file:
            file.write("a")
        assert files.current_umask() == umask
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == expected
    for name in ("config.yaml", "last.ckpt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
