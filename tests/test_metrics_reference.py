"""The papers' reference statistics files (pytorch-fid / TTUR ``mu``/``sigma``, score_sde ``pool_3``) as the real
statistics, our statistics exported in the pytorch-fid layout, and the messages for bad files.

Small injected feature extractors keep this fast; the files are written by the tests.
"""

import numpy as np
import pytest
import torch
from frechet import frechet_distance
from torch import nn

from ncsn_pl.metrics import (
    QualityOptions,
    RealStats,
    ReferenceStatsError,
    SampleQuality,
    export_fid_stats,
    load_real_stats,
    load_reference_stats,
)


class TinyExtractor(nn.Module):
    """A fixed random projection of 3 x 8 x 8 images to 6 features."""

    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Parameter(torch.randn(3 * 8 * 8, 6, generator=g) / 8, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x.flatten(1) @ self.proj)


def images(n: int, seed: int, power: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g) ** power


def quality(**kwargs) -> SampleQuality:
    return SampleQuality(QualityOptions(feature_extractor=TinyExtractor(), **kwargs))


REAL, FAKE = images(40, seed=1), images(30, seed=2, power=2.0)


def real_features() -> np.ndarray:
    return quality().extract(REAL).numpy()


def write_pytorch_fid(path, features: np.ndarray):
    np.savez(path, mu=features.astype(np.float64).mean(0), sigma=np.cov(features.astype(np.float64), rowvar=False))
    return path


def write_score_sde(path, features: np.ndarray):
    np.savez_compressed(path, pool_3=features.astype(np.float32), logits=np.zeros((len(features), 10), np.float32))
    return path


# --- the reference file gives the same metrics as the images it was computed from


def live_metrics(**kwargs) -> dict[str, float]:
    q = quality(**kwargs)
    q.update_real(REAL[:25])
    q.update_real(REAL[25:])
    q.update_fake(FAKE)
    return q.compute()


@pytest.mark.parametrize("layout", ["pytorch-fid", "score_sde"])
def test_fid_against_a_reference_file_equals_fid_against_its_images(tmp_path, layout):
    write = write_pytorch_fid if layout == "pytorch-fid" else write_score_sde
    path = write(tmp_path / "ref.npz", real_features())
    ref = load_reference_stats(path, num_features=6)
    assert ref.layout == layout and ref.num_features == 6
    assert ref.num_samples == (None if layout == "pytorch-fid" else 40)
    q = quality()
    q.update_fake(FAKE)  # generated images added first are kept
    assert q.use_reference_stats(path).layout == layout
    fid = q.compute()["fid"]
    assert fid == pytest.approx(live_metrics()["fid"], rel=1e-9)
    fake_mu, fake_sigma = RealStats.from_features(q.extract(FAKE)).mean_and_covariance()
    assert fid == pytest.approx(frechet_distance(ref.mu, ref.sigma, fake_mu, fake_sigma), rel=1e-6)
    q.reset()  # the reference stays the real statistics
    q.update_fake(FAKE)
    assert q.compute()["fid"] == pytest.approx(fid, rel=1e-12)


def test_score_sde_features_serve_kid_and_precision_recall(tmp_path):
    path = write_score_sde(tmp_path / "cifar10_stats.npz", real_features())
    options = dict(kid=True, kid_subsets=2, kid_subset_size=30, precision_recall=True)
    q = quality(**options)
    q.use_reference_stats(path)
    q.update_fake(FAKE)
    out = q.compute()  # KID's random subsets: the same seeded draws, and the features are in the same order
    live = live_metrics(**options)
    assert out["fid"] == pytest.approx(live["fid"], rel=1e-9)
    assert out["kid"] == pytest.approx(live["kid"], rel=1e-5)
    assert (out["precision"], out["recall"]) == (live["precision"], live["recall"])
    assert out["recall"] < 1.0


@pytest.mark.parametrize("n", [2, 3, 50000])
def test_sums_from_mu_and_sigma_reproduce_them(n):
    g = torch.Generator().manual_seed(5)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    mu, sigma = torch.randn(6, generator=g, dtype=torch.float64) * 3, m @ m.T
    stats = RealStats.from_mean_and_covariance(mu, sigma, num_samples=n)
    mu2, sigma2 = stats.mean_and_covariance()  # the formulas of torchmetrics' FrechetInceptionDistance.compute
    assert torch.allclose(mu2, mu, rtol=1e-14, atol=0) and torch.allclose(sigma2, sigma, rtol=1e-12, atol=1e-14)
    if n == 2:
        assert torch.equal(mu2, mu)
    with pytest.raises(ValueError, match="at least 2"):
        RealStats.from_mean_and_covariance(mu, sigma, num_samples=1)


def test_export_then_import_round_trips(tmp_path):
    q = quality()
    q.update_real(REAL)
    path = q.export_real_stats(tmp_path / "ours.npz")
    with np.load(path) as data:
        assert sorted(data.files) == ["mu", "sigma"]
        assert data["mu"].dtype == np.float64 and data["mu"].shape == (6,)
        assert data["sigma"].dtype == np.float64 and data["sigma"].shape == (6, 6)
        features = real_features().astype(np.float64)
        np.testing.assert_allclose(data["mu"], features.mean(0), rtol=1e-6)
        np.testing.assert_allclose(data["sigma"], np.cov(features, rowvar=False), rtol=1e-5, atol=1e-9)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]

    again = quality()
    again.use_reference_stats(path)
    again.update_fake(FAKE)
    assert again.compute()["fid"] == pytest.approx(live_metrics()["fid"], rel=1e-9)
    second = again.export_real_stats(tmp_path / "again.npz")  # from the nominal sums of mu and sigma
    first, back = load_reference_stats(path, 6), load_reference_stats(second, 6)
    assert torch.equal(back.mu, first.mu)
    assert torch.allclose(back.sigma, first.sigma, rtol=1e-13, atol=1e-16)


def test_a_cache_entry_exports_in_the_pytorch_fid_layout(tmp_path):
    q = quality()
    q.load_or_compute_real([REAL], dataset="toy", split="train", image_size=8, num_images=40, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("toy-*.pt")
    stats = load_real_stats(entry, q.real_stats_key("toy", "train", 8, 40))
    ref = load_reference_stats(export_fid_stats(tmp_path / "toy.npz", stats), num_features=6)
    mu, sigma = stats.mean_and_covariance()
    assert torch.equal(ref.mu, mu) and torch.equal(ref.sigma, sigma)


def test_export_needs_real_statistics(tmp_path):
    with pytest.raises(ValueError, match="at least 2 images, got 0; call load_or_compute_real"):
        quality().export_real_stats(tmp_path / "none.npz")
    assert not (tmp_path / "none.npz").exists()


# --- bad files: a message that says what was found and what to do; nothing is deleted


def _arrays() -> dict[str, np.ndarray]:
    f = real_features().astype(np.float64)
    a = {"f": f, "mu": f.mean(0), "sigma": np.cov(f, rowvar=False)}
    a["asymmetric"], a["negative"] = a["sigma"].copy(), a["sigma"].copy()
    a["nan_mu"], a["inf_pool"] = a["mu"].copy(), f.copy()
    a["asymmetric"][0, 1] += 1.0
    a["negative"][2, 2] = -1.0
    a["nan_mu"][3] = np.nan
    a["inf_pool"][4, 1] = np.inf
    return a


def _npy(path, array: np.ndarray) -> None:
    with open(path, "wb") as file:  # np.save(path) would append .npy to the name
        np.save(file, array)


BAD_FILES = {
    r"unknown layout, keys \['bar', 'foo'\]": lambda p, a: np.savez(p, foo=a["mu"], bar=a["sigma"]),
    "it holds mu but no sigma": lambda p, a: np.savez(p, mu=a["mu"]),
    "it holds sigma but no mu": lambda p, a: np.savez(p, sigma=a["sigma"]),
    r"mu has shape \(6,\) and sigma \(5, 5\)": lambda p, a: np.savez(p, mu=a["mu"], sigma=a["sigma"][:5, :5]),
    "mu and sigma describe 64-dimensional features, but the feature extractor in use gives 6": lambda p, a: np.savez(
        p, mu=np.zeros(64), sigma=np.eye(64)
    ),
    "pool_3 holds 64-dimensional features, but the feature extractor in use gives 6": lambda p, a: np.savez(
        p, pool_3=np.zeros((10, 64), np.float32)
    ),
    r"pool_3 has shape \(40,\)": lambda p, a: np.savez(p, pool_3=a["f"][:, 0]),
    "pool_3 holds 1 feature vector": lambda p, a: np.savez(p, pool_3=a["f"][:1]),
    r"mu has 1 NaN/inf value\(s\) of 6": lambda p, a: np.savez(p, mu=a["nan_mu"], sigma=a["sigma"]),
    r"pool_3 has 1 NaN/inf value\(s\)": lambda p, a: np.savez(p, pool_3=a["inf_pool"]),
    r"sigma is not symmetric \(max \|sigma - sigma\^T\| = 1": lambda p, a: np.savez(
        p, mu=a["mu"], sigma=a["asymmetric"]
    ),
    "sigma has 1 negative variance": lambda p, a: np.savez(p, mu=a["mu"], sigma=a["negative"]),
    r"a single array of shape \(6,\) \(\.npy\)": lambda p, a: _npy(p, a["mu"]),
    "looks like a torch.save file .*export_fid_stats": lambda p, a: torch.save({"mu": torch.zeros(6)}, p),
    r"not a readable NumPy \.npz archive \(it starts with b'mu,sigma'": lambda p, a: p.write_text("mu,sigma\n1,2\n"),
}


@pytest.mark.parametrize("message", list(BAD_FILES))
def test_bad_reference_files_are_refused_with_a_message(tmp_path, message):
    path = tmp_path / "ref.npz"
    BAD_FILES[message](path, _arrays())
    before = path.read_bytes()
    with pytest.raises(ReferenceStatsError, match=message) as info:
        load_reference_stats(path, num_features=6)
    assert str(info.value).startswith(f"Reference statistics {str(path)!r}: ")
    assert path.read_bytes() == before  # read only, never deleted or rewritten


def test_bad_reference_files_say_what_to_do(tmp_path):
    path = tmp_path / "ref.npz"
    np.savez(path, mu=np.zeros(64), sigma=np.eye(64))
    with pytest.raises(ReferenceStatsError, match=r"gives 2048 .*use statistics of the same 2048-d features"):
        load_reference_stats(path)  # default: Inception's 2048-d pool3
    np.savez(path, foo=np.zeros(3))
    with pytest.raises(ReferenceStatsError, match=r"give an \.npz file with mu \(d,\) and sigma \(d, d\)"):
        load_reference_stats(path)
    with pytest.raises(FileNotFoundError, match="do not exist; give an .npz file"):
        load_reference_stats(tmp_path / "missing.npz")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_reference_stats(tmp_path)


def test_sample_quality_refuses_files_it_cannot_use_and_keeps_its_statistics(tmp_path):
    mu_sigma = write_pytorch_fid(tmp_path / "mu_sigma.npz", real_features())
    wide = tmp_path / "wide.npz"
    np.savez(wide, mu=np.zeros(2048), sigma=np.eye(2048))
    kid, pr = dict(kid=True, kid_subset_size=4), dict(precision_recall=True)
    cases = [
        (kid, "KID", "kid"),
        (pr, "precision/recall", "precision_recall"),
        ({**kid, **pr}, "KID and precision/recall", "kid and precision_recall"),
    ]
    for options, names, flags in cases:
        q = quality(**options)
        q.update_real(REAL[:10])
        expected = (rf"only mu and sigma .*, and {names} needs? the real images' feature vectors; compare with real "
                    rf"images instead .* or with a file of the features .* or turn {flags} off to score FID")
        with pytest.raises(ReferenceStatsError, match=expected):
            q.use_reference_stats(mu_sigma)
        assert q.num_real == 10  # unchanged
    q = quality()
    q.update_real(REAL)
    q.update_fake(FAKE)
    before = q.compute()["fid"]
    with pytest.raises(ReferenceStatsError, match="2048-dimensional features, but the feature extractor in use gives"):
        q.use_reference_stats(wide)
    assert q.compute()["fid"] == before
    assert mu_sigma.exists() and wide.exists()


@pytest.mark.slow  # about 12 s: six images through the real Inception network
def test_inception_statistics_export_and_read_back(tmp_path):
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (3, 3, 32, 32), generator=g).to(torch.uint8)
    fake = torch.randint(0, 128, (3, 3, 32, 32), generator=g).to(torch.uint8)
    q = SampleQuality(QualityOptions())  # the offline Inception weights
    q.update_real(real)
    q.update_fake(fake)
    fid = q.compute()["fid"]
    path = q.export_real_stats(tmp_path / "inception.npz")
    ref = load_reference_stats(path)  # the default expects Inception's 2048-d pool3 features
    assert ref.layout == "pytorch-fid" and ref.num_features == 2048
    q.reset(real=True)
    q.use_reference_stats(path)
    q.update_fake(fake)
    assert q.compute()["fid"] == pytest.approx(fid, rel=1e-6)
