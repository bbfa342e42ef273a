"""Sample-quality metrics: FID, KID, Inception Score and precision/recall with offline Inception weights.

Typical use (in a Callback, never as a LightningModule attribute)::

    quality = SampleQuality(QualityOptions(fid=True))     # resolves the Inception weights offline first
    quality.load_or_compute_real(loader, dataset="cifar10", split="train", image_size=32, num_images=50000)
    quality.update_fake(samples)                          # float images in [0, 1], (N, 3, H, W)
    quality.compute()                                     # {"fid": ...}
    quality.reset()                                       # drop the samples, keep the real statistics

or against a paper's reference statistics (``mu``/``sigma`` or score_sde's ``pool_3``)::

    quality.use_reference_stats("fid_stats_cifar10_train.npz")   # or by name: "cifar10-train"

The modules read top-down, each importing only those above it: ``distributed`` (counts across processes),
``inception_weights``, ``features`` (and the Inception input resize), ``options``, ``precision_recall``,
``sample_distances``, ``seeded_metrics`` (KID and IS with their own generator), ``noisy_share`` (samples noisier than
every real image); ``real_stats`` (the real statistics, their cache and the metric states), ``published_stats`` (the
papers' files by name, fetched into the cache), ``reference_stats`` (reading the papers' files), ``real_images``
(which images); ``quality`` (:class:`SampleQuality`, which uses them all).
"""

from ncsn_pl.metrics.features import InceptionFeatureExtractor
from ncsn_pl.metrics.inception_weights import (
    InceptionWeightsNotFoundError,
    convert_fid_helper_weights,
    default_cache_dir,
    has_classifier_head,
    hub_weights_path,
    package_weights_file,
    resolve_inception_weights,
    state_dict_sha256,
)
from ncsn_pl.metrics.noisy_share import NoiseReference, NoisyShare, noise_reference, total_variation
from ncsn_pl.metrics.options import QualityOptions
from ncsn_pl.metrics.precision_recall import PrecisionRecall, precision_recall
from ncsn_pl.metrics.published_stats import PUBLISHED_STATS, resolve_reference_stats
from ncsn_pl.metrics.quality import SampleQuality
from ncsn_pl.metrics.real_images import RealImages, real_images
from ncsn_pl.metrics.real_stats import RealStats, RealStatsKey, load_real_stats, save_real_stats
from ncsn_pl.metrics.reference_stats import (
    ReferenceStats,
    ReferenceStatsError,
    export_fid_stats,
    load_reference_stats,
    read_reference_stats,
)

__all__ = [
    "PUBLISHED_STATS",
    "InceptionFeatureExtractor",
    "InceptionWeightsNotFoundError",
    "NoiseReference",
    "NoisyShare",
    "PrecisionRecall",
    "QualityOptions",
    "RealImages",
    "RealStats",
    "RealStatsKey",
    "ReferenceStats",
    "ReferenceStatsError",
    "SampleQuality",
    "convert_fid_helper_weights",
    "default_cache_dir",
    "export_fid_stats",
    "has_classifier_head",
    "hub_weights_path",
    "load_real_stats",
    "load_reference_stats",
    "noise_reference",
    "package_weights_file",
    "precision_recall",
    "read_reference_stats",
    "real_images",
    "resolve_inception_weights",
    "resolve_reference_stats",
    "save_real_stats",
    "state_dict_sha256",
    "total_variation",
]
