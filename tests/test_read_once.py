"""``sample`` and ``fid`` read, check and unpickle their checkpoint once, however many parts of them need it, and
write nothing but their results; the checks before the parser read each config file once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from cli_runs import CONFIGS, SMOKE, smoke_checkpoint
from lightning.pytorch.cli import SaveConfigCallback

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


def test_sample_gets_a_trainer_with_no_logger_nor_config_saver_whatever_its_config_gives(tmp_path):
    root = tmp_path / "run"
    checkpoint = smoke_checkpoint(root)
    before = sorted(root.rglob("*"))
    cli = main(["sample", "--config", str(CONFIGS / "quickstart.yaml"), "--config", SMOKE,
                f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
                "--trainer.callbacks=[]", "--ckpt_path", str(checkpoint), "--num_samples=2", "--batch_size=2",
                f"--out_dir={tmp_path / 'samples'}", "--save_png=false", *CPU])  # fmt: skip
    assert cli.trainer.loggers == []  # the config's RunLogger is not built
    assert not [c for c in cli.trainer.callbacks if isinstance(c, SaveConfigCallback)]
    assert sorted(root.rglob("*")) == before  # no run folder, no config.yaml
    assert (tmp_path / "samples" / "samples.npz").is_file()


def test_the_checks_before_the_parser_read_each_config_file_once(monkeypatch, capsys):
    read_text, counts = Path.read_text, Counter()

    def counting(self, *args, **kwargs):
        counts[self.resolve()] += 1
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", SMOKE, "--print_config"])
    assert stop.value.code == 0 and "max_steps" in capsys.readouterr().out
    assert counts[(CONFIGS / "quickstart.yaml").resolve()] == 1 and counts[Path(SMOKE).resolve()] == 1
