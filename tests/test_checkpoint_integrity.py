"""Checkpoints whose bytes changed on disk: every command that loads one refuses it in one line, before any run folder
or output is made, from the CRC-32s ``torch.save`` records in its zip; an intact file loads."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runs import smoke_checkpoint
from official_checkpoints import flip_tensor_byte, write_v2

from ncsn_pl.commands.cli import main
from ncsn_pl.system.files import check_zip_crcs, load_torch_file

CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]
CONFIGS = Path(__file__).parents[1] / "configs"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """A trained smoke checkpoint and a copy of it with one byte flipped inside a tensor's storage."""
    root = tmp_path_factory.mktemp("runs")
    intact = smoke_checkpoint(root / "trained")
    corrupt = flip_tensor_byte(Path(shutil.copy(intact, root / "corrupt.ckpt")))
    return intact, corrupt


def run(*args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ncsn_pl", *args], env=environment, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_torch_loads_the_flipped_byte_without_a_word_and_the_crc_check_finds_it(checkpoints):
    intact, corrupt = checkpoints
    before = torch.load(intact, weights_only=True)["state_dict"]
    after = torch.load(corrupt, weights_only=True)["state_dict"]  # torch itself does not check
    assert any(not torch.equal(before[k], after[k]) for k in before)
    check_zip_crcs(intact.read_bytes(), intact)
    with pytest.raises(ValueError, match=r"--ckpt_path '.*corrupt.ckpt' is corrupt \(Bad CRC-32 for file '.*/data/"):
        check_zip_crcs(corrupt.read_bytes(), corrupt)
    with pytest.raises(ValueError, match="is corrupt"):
        load_torch_file(corrupt)


def test_files_written_without_crcs_or_in_the_old_format_load(tmp_path, monkeypatch):
    import torch.utils.serialization as serialization

    monkeypatch.setattr(serialization.config.save, "compute_crc32", False)  # every part recorded with CRC 0
    torch.save({"w": torch.arange(4.0)}, tmp_path / "no_crc.pt")
    monkeypatch.undo()
    torch.save({"w": torch.arange(4.0)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("no_crc.pt", "legacy.pt"):
        assert torch.equal(load_torch_file(tmp_path / name)["w"], torch.arange(4.0))
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, buffer)
    check_zip_crcs(buffer.getvalue(), "in memory")


def test_fit_and_sample_refuse_a_corrupt_checkpoint_in_one_line_and_make_nothing(checkpoints, tmp_path):
    _, corrupt = checkpoints
    root = tmp_path / "fit"
    fit = run("fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "cpu_smoke.yaml"),
              f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
              "--trainer.callbacks=[]", "--trainer.limit_val_batches=0.0", f"--ckpt_path={corrupt}")  # fmt: skip
    sample = run("sample", f"--ckpt_path={corrupt}", f"--out_dir={tmp_path / 'samples'}", "--num_samples=2", *CPU)
    for done in (fit, sample):
        assert done.returncode == 2, done.stderr[-2000:]  # a mistake in the input
        assert done.stderr.startswith(f"error: --ckpt_path '{corrupt}' is corrupt (Bad CRC-32 for file")
        assert len(done.stderr.strip().splitlines()) == 2 and "Traceback" not in done.stderr  # + the NCSN_DEBUG hint
    assert not root.exists() and not (tmp_path / "samples").exists()


def test_fid_and_validate_refuse_a_corrupt_checkpoint_and_an_intact_one_passes(checkpoints, tmp_path):
    intact, corrupt = checkpoints
    fid = ["fid", "--quality.feature_extractor=tiny_models.TinyFeatures", f"--quality.cache_dir={tmp_path / 'cache'}",
           "--num_samples=4", "--batch_size=4", f"--out={tmp_path / 'fid.json'}", "--num_real=20", *CPU]  # fmt: skip
    with pytest.raises(ValueError, match="is corrupt"):
        main([*fid, f"--ckpt_path={corrupt}"])
    with pytest.raises(ValueError, match="is corrupt"):
        main(["validate", "--config", str(intact.parents[1] / "config.yaml"), f"--ckpt_path={corrupt}", *CPU])
    assert not (tmp_path / "fid.json").exists() and not (tmp_path / "fid_samples").exists()
    main([*fid, f"--ckpt_path={intact}"])
    assert json.loads((tmp_path / "fid.json").read_text())["fid"] >= 0


def test_an_official_checkpoint_with_a_flipped_byte_is_refused_and_an_intact_one_samples(tmp_path):
    ckpt, _ = write_v2(tmp_path / "logs")
    sample = ["sample", "--num_samples=2", *CPU]
    main([*sample, "--official_ckpt", str(ckpt), f"--out_dir={tmp_path / 'intact'}"])
    assert json.loads((tmp_path / "intact" / "sample.json").read_text())["official"] == "ncsnv2"
    flip_tensor_byte(ckpt)
    with pytest.raises(ValueError, match=r"--official_ckpt '.*checkpoint_5000.pth' is corrupt \(Bad CRC-32"):
        main([*sample, "--official_ckpt", str(ckpt), f"--out_dir={tmp_path / 'corrupt'}"])
    assert not (tmp_path / "corrupt").exists()
