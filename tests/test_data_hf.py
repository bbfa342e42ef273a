"""``data.dataset: hf:NAME``: Hugging Face ``datasets`` data sets built here (``Dataset.from_dict`` with PIL images,
``save_to_disk``), read from disk without network: splits, the image column, bit depths, unusable rows, FID.

``datasets`` is in the ``dev`` extras (``pip install -e .[dev]``), so these run wherever the tests are meant to run.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ncsn_pl.commands.cli import main
from ncsn_pl.data import ImageDataModule
from ncsn_pl.metrics import real_images

datasets = pytest.importorskip("datasets", reason="the dev extras install datasets: pip install -e .[dev]")
datasets.disable_progress_bars()

CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]


def _rgb(i: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (size, size, 3)).astype(np.uint8)


def _grey16(i: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(100 + i).integers(0, 65536, (size, size)).astype(np.uint16)


def _save(data, path):
    data.save_to_disk(str(path))
    return path


def _images(dm: ImageDataModule, split: str) -> torch.Tensor:
    return dm.train_data() if split == "train" else dm.val_data()


def test_a_saved_dataset_dict_gives_its_train_and_test_splits_with_their_values(tmp_path):
    features = datasets.Features({"label": datasets.Value("int64"), "img": datasets.Image()})
    train = datasets.Dataset.from_dict({"label": [0, 1, 2], "img": [Image.fromarray(_rgb(i)) for i in range(3)]},
                                       features=features)  # fmt: skip
    test = datasets.Dataset.from_dict({"label": [5, 6], "img": [Image.fromarray(_rgb(i)) for i in (5, 6)]},
                                      features=features)  # fmt: skip
    path = _save(datasets.DatasetDict({"train": train, "test": test}), tmp_path / "rgb")
    dm = ImageDataModule(f"hf:{path}", batch_size=2)
    assert dm.data_shape == (3, 8, 8)
    for split, seeds in (("train", (0, 1, 2)), ("val", (5, 6))):
        expected = torch.stack([torch.tensor(_rgb(i) / 255.0, dtype=torch.float32).permute(2, 0, 1) for i in seeds])
        torch.testing.assert_close(_images(dm, split), expected, rtol=0, atol=1e-7)  # the first Image column
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 3, 8, 8)


def test_one_split_of_16bit_images_is_split_by_seed_and_scaled_by_its_bit_depth(tmp_path):
    pixels = [_grey16(i) for i in range(10)]
    data = datasets.Dataset.from_dict({"image": [Image.fromarray(p) for p in pixels]})  # I;16, stored as TIFF
    path = _save(data, tmp_path / "deep")
    dm = ImageDataModule(f"hf:{path}", val_fraction=0.2, seed=3)
    assert dm.data_shape == (1, 8, 8)
    train, val = dm.train_data(), dm.val_data()
    assert (len(train), len(val)) == (8, 2)
    everything = torch.tensor(np.stack(pixels) / 65535.0, dtype=torch.float32)[:, None]
    rows = dm.train_set.base.rows + dm.val_set.base.rows
    assert sorted(rows) == list(range(10))
    torch.testing.assert_close(torch.cat([train, val]), everything[rows], rtol=0, atol=1e-7)
    other = ImageDataModule(f"hf:{path}", val_fraction=0.2, seed=4)
    other.setup()
    assert other.val_set.base.rows != dm.val_set.base.rows  # another seed, another split


def test_the_image_column_can_be_chosen_and_must_hold_images(tmp_path):
    data = datasets.Dataset.from_dict({
        "photo": [Image.fromarray(_rgb(i)) for i in range(4)],
        "mask": [Image.fromarray(_rgb(i)[..., 0]) for i in range(4)],
        "caption": ["a", "b", "c", "d"],
    })  # fmt: skip
    path = _save(data, tmp_path / "two")
    assert ImageDataModule(f"hf:{path}").data_shape == (3, 8, 8)  # the first column of images
    masks = ImageDataModule(f"hf:{path}", image_column="mask", val_fraction=0.25)
    assert masks.data_shape == (1, 8, 8)
    masks.setup()
    row = masks.train_set.base.rows[0]
    torch.testing.assert_close(masks.train_data(1)[0, 0], torch.tensor(_rgb(row)[..., 0] / 255.0, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"image_column 'caption' is not a column of images .* photo \(Image\), "
                                         r"mask \(Image\), caption \(Value\)"):  # fmt: skip
        ImageDataModule(f"hf:{path}", image_column="caption").data_shape  # noqa: B018
    with pytest.raises(ValueError, match="data.image_column is for hf:NAME data sets"):
        ImageDataModule("folder", image_column="mask")
    captions = _save(datasets.Dataset.from_dict({"caption": ["a", "b"]}), tmp_path / "text")
    with pytest.raises(ValueError, match=r"has no column of images \(datasets.Image\); its columns: caption"):
        ImageDataModule(f"hf:{captions}").data_shape  # noqa: B018


def test_rows_that_are_not_images_are_named_before_training(tmp_path):
    good = [{"bytes": _png(_rgb(i)), "path": None} for i in range(3)]
    data = datasets.Dataset.from_dict({"image": [good[0], {"bytes": b"not an image", "path": None}, *good[1:]]},
                                      features=datasets.Features({"image": datasets.Image()}))  # fmt: skip
    path = _save(data, tmp_path / "broken")
    with pytest.raises(ValueError, match=r"^Cannot use image 'hf:\S*broken row 1': not an image PIL can read") as e:
        ImageDataModule(f"hf:{path}", val_fraction=0.25).data_shape  # noqa: B018
    assert "\n" not in str(e.value)


def _png(pixels: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_hub_name_is_loaded_with_load_dataset_and_a_missing_package_is_named(tmp_path, monkeypatch):
    local = datasets.Dataset.from_dict({"image": [Image.fromarray(_rgb(i)) for i in range(4)]})
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name: asked.append(name) or datasets.DatasetDict(train=local))
    assert ImageDataModule("hf:someone/tiny-images").data_shape == (3, 8, 8)
    assert asked == ["someone/tiny-images"]

    def offline(name):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub\n(more lines)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match=r"^Cannot load the Hugging Face data set 'someone/x' .*ConnectionError: "
                                         r"Couldn't reach 'someone/x' on the Hub\)\. Give a folder") as e:  # fmt: skip
        ImageDataModule("hf:someone/x").data_shape  # noqa: B018
    assert "\n" not in str(e.value)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(ValueError, match=r"datasets package, which is not installed: pip install 'ncsn-pl\[hf\]'"):
        ImageDataModule("hf:someone/x").data_shape  # noqa: B018


def test_fid_against_a_saved_dataset_is_cached_under_its_folder_and_its_files(tmp_path):
    data = datasets.Dataset.from_dict({"image": [Image.fromarray(_rgb(i)) for i in range(12)]})
    path = _save(data, tmp_path / "real")
    fake = tmp_path / "fake"
    fake.mkdir()
    for i in range(6):
        Image.fromarray(_rgb(50 + i)).save(fake / f"{i}.png")
    args = ["fid", "--quality.feature_extractor=tiny_models.TinyFeatures", f"--quality.cache_dir={tmp_path / 'c'}",
            f"--out={tmp_path / 'fid.json'}", *CPU, "--images", str(fake), f"--dataset=hf:{path}"]  # fmt: skip
    main(args)
    record = json.loads((tmp_path / "fid.json").read_text())
    assert record["real"]["dataset"] == f"hf:{path.resolve()}" and record["real"]["num_images"] == 11
    assert record["fid"] > 0
    key = real_images(ImageDataModule(f"hf:{path}"), "train").cache_key()
    assert key["settings"]["files"] and key["settings"]["image_column"] is None
    other_column = real_images(ImageDataModule(f"hf:{path}", image_column="image"), "train").cache_key()
    assert other_column["settings"] != key["settings"]  # another column, other images: another entry
