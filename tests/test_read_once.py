"""``sample`` and ``fid`` read, check and unpickle their checkpoint once, however many parts of them need it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from cli_runs import smoke_checkpoint

import ncsn_pl.system.files as files
from ncsn_pl.commands.cli import main
from ncsn_pl.system.files import one_read_per_file, read_torch_file

CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1"]


@pytest.fixture
def reads(monkeypatch):
    """How often each file's bytes were read and checked (its CRC-32s), by path."""
    counts: Counter[str] = Counter()
    check = files.check_zip_crcs

    def counting(data, path, *args, **kwargs):
        counts[str(Path(path).resolve())] += 1
        return check(data, path, *args, **kwargs)

    monkeypatch.setattr(files, "check_zip_crcs", counting)
    return counts


def test_sample_and_fid_read_their_checkpoint_once(tmp_path, reads):
    checkpoint = smoke_checkpoint(tmp_path / "run")
    reads.clear()
    main(["sample", "--ckpt_path", str(checkpoint), "--num_samples=2", "--batch_size=2",
          f"--out_dir={tmp_path / 'samples'}", *CPU])  # fmt: skip
    assert reads[str(checkpoint.resolve())] == 1
    assert (tmp_path / "samples" / "samples.npz").is_file()
    main(["fid", "--ckpt_path", str(checkpoint), "--quality.feature_extractor=tiny_models.TinyFeatures",
          "--num_real=30", "--num_samples=4", "--batch_size=4", f"--quality.cache_dir={tmp_path / 'cache'}",
          f"--out={tmp_path / 'fid.json'}", *CPU])  # fmt: skip
    assert reads[str(checkpoint.resolve())] == 2  # once more, for fid
    assert (tmp_path / "fid.json").is_file()


def test_a_changed_file_is_read_again_and_nothing_is_kept_after_the_block(tmp_path, reads):
    path = tmp_path / "t.pt"
    torch.save({"a": torch.zeros(2)}, path)
    with one_read_per_file():
        first, digest = read_torch_file(path, what="--x", expected="a test file")
        assert read_torch_file(path, what="--x", expected="a test file")[0] is first  # the same object
        torch.save({"a": torch.ones(3)}, path)  # another size: another file
        second, other = read_torch_file(path, what="--x", expected="a test file")
    assert second["a"].tolist() == [1.0, 1.0, 1.0] and digest != other
    assert read_torch_file(path, what="--x", expected="a test file")[0] is not second  # outside: read each time
    assert reads[str(path.resolve())] == 3
