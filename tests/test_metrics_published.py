"""The papers' reference statistics by name (``--ref_stats cifar10-train``): the file in the project's cache, its
download (never over the network here: the download function is replaced), the one-line messages when it cannot be
had, and the resize a published file was computed with. Small fake files stand in for the published ones."""

import dataclasses
import hashlib
import shutil
import urllib.error

import numpy as np
import pytest
import torch

from ncsn_pl.metrics import (
    PUBLISHED_STATS,
    QualityOptions,
    ReferenceStatsError,
    read_reference_stats,
    resolve_reference_stats,
)
from ncsn_pl.metrics import published_stats as published


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty project cache (``$XDG_CACHE_HOME/ncsn_pl``) and a download that fails loudly if reached."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    def no_network(url, dst, *args, **kwargs):
        raise AssertionError(f"downloaded {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "xdg" / "ncsn_pl" / "reference_stats"


def fake_stats(path, d: int = 4, seed: int = 0):
    """A small file in the pytorch-fid / TTUR layout."""
    features = np.random.default_rng(seed).normal(size=(20, d))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=features.mean(0), sigma=np.cov(features, rowvar=False))
    return path


def test_a_name_resolves_to_the_file_in_the_cache(cache):
    placed = fake_stats(cache / "fid_stats_cifar10_train.npz")
    assert resolve_reference_stats("cifar10-train") == placed  # no download: it is there
    options = QualityOptions(feature_extractor=torch.nn.Identity(), num_features=4)
    stats = read_reference_stats("cifar10-train", options)
    assert stats.name == "cifar10-train" and stats.path == placed and stats.layout == "pytorch-fid"
    assert stats.resize == "tf1"  # TTUR's statistics: the TF 1.x resize inside its graph
    assert stats.num_features == 4
    # a path is taken as given, even one named like a published file
    assert resolve_reference_stats(str(placed)) == placed


def test_a_missing_file_is_downloaded_once_into_the_cache(cache, tmp_path, monkeypatch):
    source = fake_stats(tmp_path / "server" / "fid_stats_cifar10_train.npz")
    fetched = []

    def download(url, dst, *args, **kwargs):
        fetched.append(url)
        shutil.copyfile(source, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    path = resolve_reference_stats("cifar10-train")
    assert path == cache / "fid_stats_cifar10_train.npz" and path.read_bytes() == source.read_bytes()
    assert fetched == [PUBLISHED_STATS["cifar10-train"].url]
    assert fetched[0].startswith("http://bioinf.jku.at/research/ttur/ttur_stats/")
    resolve_reference_stats("cifar10-train")
    assert len(fetched) == 1  # the cached copy is used from then on


def test_offline_the_error_is_one_line_saying_where_to_put_the_file(cache, monkeypatch):
    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError) as error:
        resolve_reference_stats("cifar10-train")
    message = str(error.value)
    assert "\n" not in message
    assert "name resolution" in message and PUBLISHED_STATS["cifar10-train"].url in message
    assert "put it there" in message and str(cache / "fid_stats_cifar10_train.npz") in message
    assert not list(cache.glob("*.npz"))  # nothing half-written left behind
    # a file shared by hand only (no direct URL) says where to get it, without trying the network
    with pytest.raises(FileNotFoundError, match=r"cifar10_stats.npz is not there; download cifar10_stats.npz from "
                                                r"the score_sde checkpoints folder .* and put it there"):  # fmt: skip
        resolve_reference_stats("cifar10-train-score_sde")


def test_a_file_that_is_not_the_published_one_is_refused(cache, monkeypatch):
    placed = fake_stats(cache / "fid_stats_cifar10_train.npz")
    digest = hashlib.sha256(placed.read_bytes()).hexdigest()
    pinned = dataclasses.replace(PUBLISHED_STATS["cifar10-train"], sha256=digest)
    monkeypatch.setitem(published.PUBLISHED_STATS, "cifar10-train", pinned)
    assert resolve_reference_stats("cifar10-train") == placed
    fake_stats(placed, seed=1)  # another file under the same name
    with pytest.raises(ValueError, match=rf"has sha256 [0-9a-f]{{64}}, not the published {digest}; delete it"):
        resolve_reference_stats("cifar10-train")


def test_an_unknown_name_is_a_missing_file_that_lists_the_names(cache):
    with pytest.raises(FileNotFoundError, match=r"'cifar100-train' do not exist; .* or a published file by name "
                                                r"\(cifar10-train, lsun-bedroom-train, cifar10-train-score_sde\)"):
        read_reference_stats("cifar100-train", QualityOptions())


def test_statistics_of_another_resize_are_refused(cache, tmp_path):
    fake_stats(cache / "fid_stats_cifar10_train.npz", d=2048)
    with pytest.raises(ReferenceStatsError, match=r"computed with the 'tf1' resize to Inception's input, but this FID "
                                                  r"uses 'pytorch-fid'; set quality.resize to 'tf1'"):  # fmt: skip
        read_reference_stats("cifar10-train", QualityOptions(resize="pytorch-fid"))
    assert read_reference_stats("cifar10-train", QualityOptions()).resize == "tf1"
    # a file of our own records the resize it was made with
    ours = tmp_path / "ours.npz"
    np.savez(ours, mu=np.zeros(2048), sigma=np.eye(2048), resize=np.array("pytorch-fid"))
    assert read_reference_stats(ours, QualityOptions(resize="pytorch-fid")).resize == "pytorch-fid"
    with pytest.raises(ReferenceStatsError, match="computed with the 'pytorch-fid' resize"):
        read_reference_stats(ours, QualityOptions())
    # a file that records none (TTUR's own, or pytorch-fid's) is not checked
    np.savez(ours, mu=np.zeros(2048), sigma=np.eye(2048))
    assert read_reference_stats(ours, QualityOptions(resize="pytorch-fid")).resize is None
