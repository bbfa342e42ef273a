"""KID's subsets and the Inception Score's splits come from a generator of their own, seeded by ``quality.seed``: the
same images give the same numbers whatever torch's global generator holds (the callback against the ``fid`` command is
in test_commands.py)."""

import pytest
import torch
from tiny_models import TinyFeatures
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from ncsn_pl.core.seeding import step_seed
from ncsn_pl.metrics import QualityOptions, SampleQuality
from ncsn_pl.metrics.features import PrecomputedFeatures
from ncsn_pl.metrics.seeded_metrics import (
    IS_STREAM,
    KID_STREAM,
    SeededInceptionScore,
    SeededKernelInceptionDistance,
)

REAL = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(1))
FAKE = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(2))


def scores(seed: int = 0) -> dict[str, float]:
    options = QualityOptions(feature_extractor=TinyFeatures(), fid=False, kid=True, kid_subsets=5, kid_subset_size=8,
                             inception_score=True, is_splits=3, seed=seed)  # fmt: skip
    quality = SampleQuality(options)
    quality.update_real(REAL)
    quality.update_fake(FAKE)
    return quality.compute()


def test_kid_and_is_do_not_depend_on_what_the_global_generator_drew_before():
    torch.manual_seed(0)
    first = scores()
    torch.rand(1000)  # training, sampling, another metric...
    torch.manual_seed(123)
    assert scores() == first  # exact
    assert scores(seed=1)["kid"] != first["kid"]  # the seed chooses the subsets
    assert scores(seed=1)["is"] != first["is"]


def test_the_estimators_are_torchmetrics_own_with_the_generator_seeded():
    features = torch.randn(50, 6, generator=torch.Generator().manual_seed(3))
    fake = features[:25] + 0.3
    ours = SeededKernelInceptionDistance(feature=PrecomputedFeatures(6), subsets=4, subset_size=10, seed=7)
    theirs = KernelInceptionDistance(feature=PrecomputedFeatures(6), subsets=4, subset_size=10)
    for kid in (ours, theirs):
        kid.real_features, kid.fake_features = [features], [fake]
    torch.manual_seed(step_seed(7, KID_STREAM))  # torchmetrics draws the same subsets from the global generator
    expected = theirs.compute()
    torch.manual_seed(0)
    for value, reference in zip(ours.compute(), expected, strict=True):
        assert value.item() == pytest.approx(reference.item(), rel=1e-12)

    ours = SeededInceptionScore(feature=PrecomputedFeatures(6), splits=5, seed=7)
    theirs = InceptionScore(feature=PrecomputedFeatures(6), splits=5)
    ours.features, theirs.features = [features], [features]
    torch.manual_seed(step_seed(7, IS_STREAM))
    expected = theirs.compute()
    torch.manual_seed(0)
    for value, reference in zip(ours.compute(), expected, strict=True):
        assert value.item() == pytest.approx(reference.item(), rel=1e-12)


def test_the_seed_is_checked():
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        QualityOptions(seed=-1)
