"""Improved precision and recall (Kynkäänniemi et al. 2019) on small feature sets with known answers.

The two-process (gloo) check is in test_metrics_ddp.py.
"""

import numpy as np
import pytest
import torch
from torch import nn

from ncsn_pl.metrics import PrecisionRecall, QualityOptions, SampleQuality, precision_recall


def flat_quality(d: int, **kwargs) -> SampleQuality:
    """Features = the raw input vectors: the metric sees exactly the points the test builds."""
    options = QualityOptions(feature_extractor=nn.Flatten(), num_features=d, **kwargs)
    return SampleQuality(options, quantize=False)


def cluster(n: int, center: float, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return center + torch.randn(n, d, generator=g)


def brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Eqs. 1-2 of the paper written out: phi is in the manifold of Phi if it lies within some phi' in Phi's
    distance to its k-th nearest neighbour in Phi (phi' itself not counted)."""

    def radii(x: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    def inside(points: np.ndarray, manifold: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(points[:, None] - manifold[None], axis=-1)
        return (d <= radii(manifold)[None]).any(axis=1)

    return float(inside(fake, real).mean()), float(inside(real, fake).mean())


def test_a_set_against_itself_has_precision_and_recall_one():
    f = cluster(40, 0.0, 5, seed=0)
    assert precision_recall(f, f) == (1.0, 1.0)
    q = flat_quality(5, fid=False, precision_recall=True)
    q.update_real(f[:25])
    q.update_real(f[25:])
    q.update_fake(f)
    assert q.compute() == {"precision": 1.0, "recall": 1.0}


def test_two_clusters_with_one_missing():
    # A (20 points) and B (10 points) are 100 standard deviations apart; the k-NN radii stay inside a cluster
    a, b = cluster(20, 0.0, 4, seed=1), cluster(10, 100.0, 4, seed=2)
    # generated = A only: every generated point is a real point (precision 1), B is not covered (recall 20/30)
    q = flat_quality(4, precision_recall=True)
    q.update_real(torch.cat([a, b]))
    for batch in a.split(7):
        q.update_fake(batch)
    out = q.compute()
    assert out["precision"] == 1.0
    assert out["recall"] == pytest.approx(20 / 30, abs=1e-6)
    # the other way round: generated = A and B against real = A
    precision, recall = precision_recall(a, torch.cat([a, b]))
    assert precision == pytest.approx(20 / 30, abs=1e-6)
    assert recall == 1.0


@pytest.mark.parametrize("k, batch_size", [(3, 10000), (1, 7), (5, 16)])
def test_precision_recall_match_the_papers_definition(k, batch_size):
    g = torch.Generator().manual_seed(3)
    real = torch.randn(60, 3, generator=g, dtype=torch.float64)
    fake = 1.0 + 0.7 * torch.randn(50, 3, generator=g, dtype=torch.float64)  # shifted and narrower
    expected = brute_force(real.numpy(), fake.numpy(), k)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # a case that distinguishes the two manifolds
    q = flat_quality(3, fid=False, precision_recall=True, pr_neighborhood=k, pr_batch_size=batch_size)
    q.update_real(real.float())
    q.update_fake(fake.float())
    out = q.compute()
    assert (out["precision"], out["recall"]) == pytest.approx(expected, abs=1e-6)


def test_too_few_features_and_bad_options():
    q = flat_quality(2, fid=False, precision_recall=True)
    q.update_real(torch.randn(10, 2))
    q.update_fake(torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"neighborhood k=3 needs more than k features.*got 3 in fake_features"):
        q.compute()
    with pytest.raises(ValueError, match="pr_neighborhood must be a positive integer"):
        QualityOptions(precision_recall=True, pr_neighborhood=0)
    with pytest.raises(ValueError, match="pr_batch_size must be a positive integer"):
        QualityOptions(precision_recall=True, pr_batch_size=1.5)
    with pytest.raises(ValueError, match=r"fid: precision/recall with pr_neighborhood=3 needs more"):
        QualityOptions(precision_recall=True).check_sample_count(3, "fid")
    QualityOptions(fid=False, precision_recall=True)  # precision/recall alone is something to compute
    with pytest.raises(ValueError, match="differ in dimension"):
        precision_recall(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        precision_recall(torch.randn(5, 2), torch.full((5, 2), float("nan")))
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        PrecisionRecall(4).update(torch.randn(3, 2), real=True)


def test_reset_keeps_the_real_features_unless_asked():
    q = flat_quality(3, fid=False, precision_recall=True)
    q.update_real(torch.randn(8, 3))
    q.update_fake(torch.randn(6, 3))
    assert (q.num_real, q.num_fake) == (8, 6)
    q.reset()
    assert (q.num_real, q.num_fake) == (8, 0)
    q.reset(real=True)
    assert (q.num_real, q.num_fake) == (0, 0)
    assert q.precision_recall.reset_real_features is False


class CountingFlatten(nn.Flatten):
    num_features = 3

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)


def test_cache_keeps_the_real_features(tmp_path):
    g = torch.Generator().manual_seed(4)
    real, fake = torch.rand(12, 3, generator=g), torch.rand(10, 3, generator=g) ** 2

    def prepare(q: SampleQuality) -> bool:
        return q.load_or_compute_real(
            [real[:5], real[5:]], dataset="toy", split="train", image_size=1, num_images=12, cache_dir=tmp_path
        )

    def quality(**kwargs) -> tuple[SampleQuality, CountingFlatten]:
        ext = CountingFlatten()
        return SampleQuality(QualityOptions(feature_extractor=ext, **kwargs), quantize=False), ext

    # an FID-only entry has no feature matrix: precision/recall recompute and store one
    fid_only, _ = quality()
    assert prepare(fid_only) is False
    live, ext = quality(precision_recall=True)
    assert prepare(live) is False and ext.calls == 2
    live.update_fake(fake)
    expected = live.compute()
    assert expected["recall"] < 1.0

    cached, ext = quality(precision_recall=True)
    assert prepare(cached) is True and ext.calls == 0
    cached.update_fake(fake)
    assert cached.compute() == pytest.approx(expected, rel=1e-9)
