"""A checkpoint draws at the image size it was trained for: ``fid --dataset`` gives the real images the checkpoint's
size, and data of another size are refused with both sizes named (official and Lightning checkpoints)."""

import json

import pytest
from cli_runs import smoke_checkpoint
from fake_datasets import write_images
from official_checkpoints import write_v2

from ncsn_pl.commands.cli import main

CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]
TINY = ["--quality.feature_extractor=tiny_models.TinyFeatures", "--num_samples=4", "--batch_size=4"]


def test_an_official_model_draws_at_its_size_against_a_folder_of_smaller_images(tmp_path):
    ckpt, _ = write_v2(tmp_path / "logs", image_size=16)  # the network of 16 px images, the folder's are 8 px
    write_images(tmp_path / "png8", n=10, size=(8, 8))
    main(["fid", "--official_ckpt", str(ckpt), "--dataset=folder", f"--data_root={tmp_path / 'png8'}", *TINY,
          f"--quality.cache_dir={tmp_path / 'cache'}", f"--out={tmp_path / 'fid.json'}", *CPU])  # fmt: skip
    result = json.loads((tmp_path / "fid.json").read_text())
    assert result["real"]["image_size"] == 16 and result["real"]["settings"]["data_shape"] == [3, 16, 16]
    assert json.loads((tmp_path / "fid_samples" / "sample.json").read_text())["data_shape"] == [3, 16, 16]

    refused = r"checkpoint_5000.pth \(config .*\) is a network for 3x16x16 data, but the data given are 3x8x8; "
    with pytest.raises(ValueError, match=refused + r".*\(--data.init_args.image_size 16 resizes images to it\)"):
        main(["sample", "--official_ckpt", str(ckpt), "--data.init_args.image_size=8", "--num_samples=2",
              f"--out_dir={tmp_path / 'samples'}", *CPU])  # fmt: skip
    assert not (tmp_path / "samples").exists()


def test_a_trained_checkpoint_keeps_its_size_and_channels_and_refuses_another(tmp_path):
    ckpt = smoke_checkpoint(tmp_path / "run")  # digits: 1x8x8
    write_images(tmp_path / "rgb12", n=10, size=(12, 12))
    main(["fid", f"--ckpt_path={ckpt}", "--dataset=folder", f"--data_root={tmp_path / 'rgb12'}", *TINY,
          f"--quality.cache_dir={tmp_path / 'cache'}", f"--out={tmp_path / 'fid.json'}", *CPU])  # fmt: skip
    result = json.loads((tmp_path / "fid.json").read_text())
    assert result["real"]["settings"]["data_shape"] == [1, 8, 8]  # the folder's RGB 12 px images as gray 8 px
    assert json.loads((tmp_path / "fid_samples" / "sample.json").read_text())["data_shape"] == [1, 8, 8]

    for size in (["--data.init_args.image_size=16"], ["--data.init_args.image_size=16", "--model.n_steps_each=1"]):
        with pytest.raises(ValueError, match=r"last.ckpt is a network for 1x8x8 data, but the data given are 1x16x16"):
            main(["sample", f"--ckpt_path={ckpt}", *size, "--num_samples=2", f"--out_dir={tmp_path / 's'}", *CPU])
    assert not (tmp_path / "s").exists()
