"""Images of a Hugging Face ``datasets`` data set (``data.dataset: hf:NAME``), where that package is installed.

``NAME`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read with
``datasets.load_from_disk``: Arrow files and JSON, nothing unpickled) or a data set on the Hugging Face Hub (read with
``datasets.load_dataset``, from the Hub's cache when it is there; ``HF_HUB_OFFLINE=1`` never goes online). The images
are one column of the ``datasets.Image`` feature; the splits are ``train`` and ``validation`` (or ``test``), else a
seeded share of the one split.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from ncsn_pl.data.image_decoding import ImageHeader, check_headers

__all__ = ["HF_PREFIX", "HFImages", "hf_headers", "hf_name", "load_hf_splits"]

HF_PREFIX = "hf:"
VAL_SPLITS = ("validation", "valid", "val", "test")


def hf_name(dataset: str) -> str | None:
    """``NAME`` of ``hf:NAME``, else None."""
    return dataset[len(HF_PREFIX) :] if dataset.startswith(HF_PREFIX) else None


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as err:
        raise ValueError(
            "data.dataset 'hf:...' reads Hugging Face data sets with the datasets package, which is not installed: "
            "pip install 'ncsn-pl[hf]' (or pip install datasets)."
        ) from err
    return datasets


def _load(name: str) -> Any:
    """The data set ``name``: a ``save_to_disk`` folder, else a Hub data set (all its splits)."""
    datasets = _datasets()
    if Path(name).is_dir():
        try:
            return datasets.load_from_disk(name)
        except FileNotFoundError as err:
            raise ValueError(
                f"{name!r} is a folder but not one written by Dataset.save_to_disk ({err}); give such a folder, or "
                "a data set's name on the Hugging Face Hub."
            ) from err
    try:
        return datasets.load_dataset(name)
    except Exception as err:  # noqa: BLE001 - offline, unknown name, gated: the Hub's own reason, in one line
        raise ValueError(
            f"Cannot load the Hugging Face data set {name!r} (no such folder here; from the Hub: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Give a folder written by "
            "save_to_disk, or a Hub name that is in the cache or reachable."
        ) from err


def _image_column(data: Any, image_column: str | None, name: str) -> str:
    """The column of ``datasets.Image`` feature: ``image_column``, else the first one."""
    image_type = _datasets().Image
    images = [column for column, feature in data.features.items() if isinstance(feature, image_type)]
    described = ", ".join(f"{c} ({type(f).__name__})" for c, f in data.features.items())
    if image_column is None:
        if not images:
            raise ValueError(f"hf:{name} has no column of images (datasets.Image); its columns: {described}.")
        return images[0]
    if image_column not in images:
        raise ValueError(
            f"data.image_column {image_column!r} is not a column of images (datasets.Image) of hf:{name}; its "
            f"columns: {described}."
        )
    return image_column


class HFImages(Dataset):
    """The images of one column of a ``datasets.Dataset``, optionally a subset of its rows: item ``i`` is a PIL
    image, decoded by ``datasets`` (with the file's own mode: 16-bit stays 16-bit).

    Args:
        data: a ``datasets.Dataset``.
        column: the column of images.
        rows: the rows to use (default all), in this order.
        name: names the images in messages (``hf:NAME[split]``).
    """

    def __init__(self, data: Any, column: str, rows: list[int] | None = None, name: str = "hf") -> None:
        self.data = data.select_columns([column])
        self.column = column
        self.rows = list(range(len(data))) if rows is None else [int(r) for r in rows]
        self.name = name

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Image.Image:
        return self.data[self.rows[index]][self.column]

    def describe(self, index: int) -> str:
        """Where item ``index`` comes from, for messages."""
        return f"{self.name} row {self.rows[index]}"


def _split_rows(data: Any, split_rows: Callable, name: str) -> tuple[list[int], list[int]]:
    """``split_rows(len(data))`` as lists, for a split of at least 2 images."""
    if len(data) < 2:
        raise ValueError(f"{name} holds {len(data)} image(s), the only split; it needs 2 or more (one for validation).")
    train_rows, val_rows = split_rows(len(data))
    return [int(r) for r in train_rows], [int(r) for r in val_rows]


def hf_headers(images: HFImages) -> list[ImageHeader]:
    """The header of every image (the encoded bytes are opened, no pixels decoded); one ``ValueError`` line names
    the rows that are not images PIL can read (:func:`~ncsn_pl.data.image_decoding.check_headers`)."""
    raw = images.data.cast_column(images.column, _datasets().Image(decode=False))

    def open_row(index: int) -> Image.Image:
        encoded = raw[images.rows[index]][images.column]
        return Image.open(io.BytesIO(encoded["bytes"]) if encoded.get("bytes") else encoded["path"])

    sources = [images.describe(i) for i in range(len(images))]
    return check_headers(sources, open_row, "Remove or replace those rows")


def load_hf_splits(
    name: str, image_column: str | None, split_rows: Callable[[int], tuple[Sequence[int], Sequence[int]]]
) -> tuple[HFImages, HFImages]:
    """The train and val images of the data set ``name``.

    Args:
        name: a ``save_to_disk`` folder or a Hub data set.
        image_column: the column of images; None: the first column of ``datasets.Image`` feature.
        split_rows: ``n -> (train rows, val rows)``, the seeded split of a data set with one split only.

    Returns:
        The ``train`` split (or the only one) and ``validation`` / ``valid`` / ``val`` / ``test``, else the two parts
        of the one split.

    Raises:
        ValueError: the package is missing, the data set cannot be loaded, has no column of images, or several
            splits but no ``train``.
    """
    data = _load(name)
    if hasattr(data, "features"):  # one Dataset
        column = _image_column(data, image_column, name)
        train_rows, val_rows = _split_rows(data, split_rows, f"hf:{name}")
        return (HFImages(data, column, train_rows, f"hf:{name}"), HFImages(data, column, val_rows, f"hf:{name}"))
    splits = list(data)
    if "train" not in splits and len(splits) != 1:
        raise ValueError(f"hf:{name} has the splits {', '.join(splits)} but no 'train'; give a data set with one.")
    train_split = "train" if "train" in splits else splits[0]
    train = data[train_split]
    column = _image_column(train, image_column, name)
    val_split = next((s for s in VAL_SPLITS if s in splits), None)
    if val_split is None:
        train_rows, val_rows = _split_rows(train, split_rows, f"hf:{name}[{train_split}]")
        return (HFImages(train, column, train_rows, f"hf:{name}[{train_split}]"),
                HFImages(train, column, val_rows, f"hf:{name}[{train_split}]"))  # fmt: skip
    val = data[val_split]
    _image_column(val, column, name)
    return (HFImages(train, column, None, f"hf:{name}[{train_split}]"),
            HFImages(val, column, None, f"hf:{name}[{val_split}]"))  # fmt: skip
