"""FID / KID / Inception Score / precision and recall of generated images, with one shared Inception forward per
batch.

Pipeline (as in the NCSNv2 evaluation, ermongroup/ncsnv2 ``evaluation/fid_score.py``, and torch-fidelity / TF-FID):

1. images in [0, 1] are quantised like ``torchvision.utils.save_image``, which the papers used to write their
   samples: ``uint8((x * 255 + 0.5).clamp(0, 255))``, i.e. **rounded** (score_sde's ``run_lib.py`` truncates
   instead; torchmetrics' own ``normalize=True`` truncates too, which is why it is not used);
2. the uint8 images go through torch-fidelity's Inception-v3 (``inception-v3-compat``) with TF-1.x bilinear
   resizing to 299 px (torchmetrics' ``antialias=False``; the antialiased resize is *not* TF-FID) and
   ``(x - 128) / 128`` scaling, or pytorch-fid's resize and scaling (``options.resize``; see
   :class:`~ncsn_pl.metrics.features.InceptionFeatureExtractor`); the 2048-d pool3 features feed FID and KID, and
   ``features @ fc.weight.T`` (torch-fidelity's ``logits_unbiased``) feeds the Inception Score;
3. torchmetrics ``FrechetInceptionDistance``, ``KernelInceptionDistance`` and ``InceptionScore`` (and
   :class:`~ncsn_pl.metrics.precision_recall.PrecisionRecall`) accumulate those features; KID's subsets and the
   Inception Score's splits are drawn from a generator seeded by ``options.seed``
   (:mod:`ncsn_pl.metrics.seeded_metrics`), never from torch's global one. They are built on a
   pass-through feature module, so the 95 MB network exists once instead of once per metric and runs once per batch.

The real statistics come from real images, the cache (:meth:`SampleQuality.load_or_compute_real`) or a paper's
reference file (:meth:`SampleQuality.use_reference_stats`, :mod:`ncsn_pl.metrics.reference_stats`).

``SampleQuality`` is deliberately not an ``nn.Module``: keep it in a Callback, not in the LightningModule, so
it never lands in checkpoints (the Inception weights would add 95 MB to each).

Distributed use: all states are torchmetrics states, so ``compute()`` all-reduces them and every rank gets the
value for all images of all ranks; call ``compute()`` and ``load_or_compute_real()`` on every rank. Under
``ddp_spawn``, create the object in ``setup()`` (after the processes are spawned) or call ``reset(real=True)``
there: ``mp.spawn`` moves pickled CPU tensors into shared memory and the ranks would otherwise add into the
same state tensors.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance

from ncsn_pl.metrics.distributed import compact, global_count, list_count
from ncsn_pl.metrics.features import InceptionFeatureExtractor, PrecomputedFeatures, extractor_input
from ncsn_pl.metrics.inception_weights import NUM_CLASSES, resolve_inception_weights, state_dict_sha256
from ncsn_pl.metrics.options import QualityOptions
from ncsn_pl.metrics.precision_recall import PrecisionRecall
from ncsn_pl.metrics.published_stats import file_sha256
from ncsn_pl.metrics.real_stats import (
    RealStatsKey,
    add_real_features,
    install_real_states,
    load_or_compute_real_stats,
    real_count,
)
from ncsn_pl.metrics.reference_stats import ReferenceStats, export_real_states, read_reference_stats
from ncsn_pl.metrics.seeded_metrics import SeededInceptionScore, SeededKernelInceptionDistance


class SampleQuality:
    """FID, KID, Inception Score and precision/recall of generated images against real ones.

    Feed images in [0, 1] (float, any size, 3 or 1 channels; uint8 in [0, 255] is taken as already quantised)
    with :meth:`update_real` / :meth:`update_fake`, or load the real statistics from a cache with
    :meth:`load_or_compute_real` or from a paper's reference file with :meth:`use_reference_stats`, then call
    :meth:`compute`. :meth:`reset` clears the generated images and keeps the real statistics. See the module
    docstring for the preprocessing and for DDP.

    Args:
        options: the metrics (FID, KID, IS, precision/recall), their parameters and the feature extractor. A custom
            ``feature_extractor`` receives float images: quantised to the 256 levels (``uint8 / 255``) when
            ``quantize`` is True, the raw input otherwise; the Inception Score takes its ``logits(features)`` (a
            classifier head, ``num_classes`` wide) when it has one, else its features.
        device: device of the feature extractor and the metric states.
        quantize: round images to 8 bits as ``save_image`` does; only a custom extractor may set it False.
        feature_extractor_id: names a custom extractor in real-statistics cache keys (default: its class name
            and a hash of its state dict).
        weights_cache_dir: where the converted offline Inception weights are kept (default ``~/.cache/ncsn_pl``).
    """

    def __init__(
        self,
        options: QualityOptions = QualityOptions(),
        *,
        device: str | torch.device = "cpu",
        quantize: bool = True,
        feature_extractor_id: str | None = None,
        weights_cache_dir: str | None = None,
    ) -> None:
        self.options = options
        self.quantize = quantize
        self._custom_id = feature_extractor_id
        self._feature_id: str | None = None

        if options.feature_extractor is None:
            if not quantize:
                raise ValueError(
                    "quantize=False is only for a custom feature_extractor: Inception takes uint8 images."
                )
            self.weights_path: Path | None = resolve_inception_weights(
                options.weights_path, weights_cache_dir, require_classifier=options.inception_score
            )
            self.extractor: nn.Module = InceptionFeatureExtractor(self.weights_path, options.resize)
            d, num_logits = InceptionFeatureExtractor.num_features, NUM_CLASSES
        else:
            self.weights_path = None
            self.extractor = options.feature_extractor.eval()
            d = options.num_features
            if d is None:
                d = getattr(options.feature_extractor, "num_features", None)
            if isinstance(d, Tensor):
                d = int(d.item())
            if not isinstance(d, int) or d < 1:
                raise ValueError(
                    "A custom feature_extractor needs its feature dimension: pass num_features=d or give the "
                    "module an int attribute num_features."
                )
            # a classifier head (``logits(features)``, ``num_classes``) feeds the Inception Score, else the features
            num_logits = int(getattr(options.feature_extractor, "num_classes", d))

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
            self.fid = (
                FrechetInceptionDistance(feature=PrecomputedFeatures(d), reset_real_features=False)
                if options.fid
                else None
            )
            self.kid = (
                SeededKernelInceptionDistance(
                    feature=PrecomputedFeatures(d),
                    subsets=options.kid_subsets,
                    subset_size=options.kid_subset_size,
                    reset_real_features=False,
                    seed=options.seed,
                )
                if options.kid
                else None
            )
            self.inception_score = (
                SeededInceptionScore(
                    feature=PrecomputedFeatures(num_logits), splits=options.is_splits, seed=options.seed
                )
                if options.inception_score
                else None
            )
        self.precision_recall = (
            PrecisionRecall(d, options.pr_neighborhood, options.pr_batch_size, reset_real_features=False)
            if options.precision_recall
            else None
        )
        self.num_features = d
        self._num_logits = num_logits
        #: where the real statistics came from (cache key and ``from_cache``, or the reference file), for records
        self.real_source: dict[str, object] | None = None
        self.to(device)

    # --- plumbing
    @property
    def metrics(self) -> dict[str, Metric]:
        """The enabled torchmetrics objects by name (``fid``, ``kid``, ``is``, ``pr``)."""
        named = {"fid": self.fid, "kid": self.kid, "is": self.inception_score, "pr": self.precision_recall}
        return {k: m for k, m in named.items() if m is not None}

    @property
    def real_feature_metrics(self) -> list[Metric]:
        """The enabled metrics that keep the real feature matrix (KID, precision/recall)."""
        return [m for m in (self.kid, self.precision_recall) if m is not None]

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: str | torch.device) -> SampleQuality:
        """Move the feature extractor and the metric states to ``device``."""
        self._device = torch.device(device)
        self.extractor.to(self._device)
        for m in self.metrics.values():
            m.to(self._device)
        return self

    @property
    def uses_inception(self) -> bool:
        return isinstance(self.extractor, InceptionFeatureExtractor)

    @property
    def resize(self) -> str | None:
        """The resize of the images to Inception's input (``options.resize``), None for a custom extractor."""
        return self.options.resize if self.uses_inception else None

    @property
    def feature_extractor_id(self) -> str:
        """Names the extractor, its weights and the preprocessing (used in real-statistics cache keys)."""
        if self._feature_id is None:
            if self.uses_inception:
                net = self.extractor.net
                digest = state_dict_sha256(net.state_dict())[:16]
                resize = self.resize.replace("-", "")  # tf1resize (as before), pytorchfidresize
                base = f"inception-v3-compat-pool3-{resize}resize-{digest}"
            elif self._custom_id is not None:
                base = self._custom_id
            else:
                cls = type(self.extractor)
                digest = state_dict_sha256(self.extractor.state_dict(), exclude_prefixes=())[:16]
                base = f"{cls.__module__}.{cls.__qualname__}-{digest}"
            self._feature_id = f"{base}-{'round8bit' if self.quantize else 'float'}"
        return self._feature_id

    # --- features
    @torch.no_grad()
    def extract(self, images: Tensor) -> Tensor:
        """Features (N, d) of a batch through exactly the path :meth:`update_real`/:meth:`update_fake` use.

        Args:
            images: (N, C, H, W) float in [0, 1] or uint8; for Inception C is 3 or 1 (gray becomes RGB).
        """
        x = extractor_input(images, self._device, inception=self.uses_inception, quantize=self.quantize)
        features = self.extractor(x)
        if features.dim() != 2 or features.shape != (images.shape[0], self.num_features):
            raise ValueError(
                f"The feature extractor returned shape {tuple(features.shape)}, expected "
                f"({images.shape[0]}, {self.num_features})."
            )
        return features

    def _logits(self, features: Tensor) -> Tensor:
        """The Inception Score's logits: the extractor's classifier head (``logits(features)``) when it has one, else
        the features themselves."""
        head = getattr(self.extractor, "logits", None)
        return head(features) if callable(head) else features

    # --- accumulation
    def update_real(self, images: Tensor) -> None:
        """Add real images (for FID/KID/precision-recall; a no-op when only the Inception Score is on)."""
        if self.fid is None and not self.real_feature_metrics:
            return
        add_real_features(self.fid, self.real_feature_metrics, self.extract(images))

    def update_fake(self, images: Tensor) -> None:
        """Add generated images."""
        features = self.extract(images)
        for m in (self.fid, self.kid, self.precision_recall):
            if m is not None:
                m.update(features, real=False)
        if self.inception_score is not None:
            self.inception_score.update(self._logits(features))

    @property
    def num_real(self) -> int:
        """Real images accumulated on this process."""
        return real_count(self.fid, self.real_feature_metrics)

    @property
    def num_fake(self) -> int:
        """Generated images accumulated on this process."""
        if self.fid is not None:
            return int(self.fid.fake_features_num_samples)
        if self.real_feature_metrics:
            return list_count(self.real_feature_metrics[0].fake_features)
        return list_count(self.inception_score.features)

    def reset(self, real: bool = False) -> None:
        """Forget the generated images; with ``real=True`` forget the real statistics too."""
        for m in (self.fid, self.kid, self.precision_recall):
            if m is not None:
                m.reset_real_features = real
                m.reset()
                m.reset_real_features = False
        if self.inception_score is not None:
            self.inception_score.reset()
        if real:
            self.real_source = None

    def compute(self) -> dict[str, float]:
        """The enabled metrics over all images of all processes (collective under DDP: call on every rank).

        Returns:
            A dict with ``"fid"``; ``"kid"`` and ``"kid_std"`` (mean and std over subsets); ``"is"`` and
            ``"is_std"`` (mean and std over splits); ``"precision"`` and ``"recall"``, for the enabled metrics.

        Raises:
            ValueError: too few images for a metric (FID needs 2 real and 2 generated, KID ``kid_subset_size``
                of each, IS ``is_splits`` generated, precision/recall more than ``pr_neighborhood`` of each).
        """
        out: dict[str, float] = {}
        if self.fid is not None:
            n_real = global_count(int(self.fid.real_features_num_samples), self._device)
            n_fake = global_count(int(self.fid.fake_features_num_samples), self._device)
            if n_real < 2 or n_fake < 2:
                raise ValueError(
                    "FID needs at least 2 real and 2 generated images (a covariance per set), got "
                    f"{n_real} real and {n_fake} generated over all processes. Call update_real() or "
                    "load_or_compute_real() and update_fake() with more images (FID is strongly biased "
                    "below thousands of images)."
                )
            out["fid"] = float(self.fid.compute())
        if self.kid is not None:
            n_real = global_count(list_count(self.kid.real_features), self._device)
            n_fake = global_count(list_count(self.kid.fake_features), self._device)
            if min(n_real, n_fake) < self.options.kid_subset_size:
                raise ValueError(
                    f"KID draws subsets of kid_subset_size={self.options.kid_subset_size} images but got {n_real} "
                    f"real and {n_fake} generated images; add images or set kid_subset_size <= "
                    f"{min(n_real, n_fake)}."
                )
            compact(self.kid, ("real_features", "fake_features"), self.num_features)
            mean, std = self.kid.compute()
            out["kid"], out["kid_std"] = float(mean), float(std)
        if self.inception_score is not None:
            n_fake = global_count(list_count(self.inception_score.features), self._device)
            if n_fake < self.options.is_splits:
                raise ValueError(
                    f"The Inception Score with is_splits={self.options.is_splits} needs at least that many generated "
                    f"images, got {n_fake}; add images or lower is_splits."
                )
            compact(self.inception_score, ("features",), self._num_logits)
            mean, std = self.inception_score.compute()
            out["is"], out["is_std"] = float(mean), float(std)
        if self.precision_recall is not None:
            # the features of all ranks are gathered before the k-NN (compute() syncs the list states)
            compact(self.precision_recall, ("real_features", "fake_features"), self.num_features)
            precision, recall = self.precision_recall.compute()
            out["precision"], out["recall"] = float(precision), float(recall)
        return out

    # --- real statistics cache
    def real_stats_key(
        self, dataset: str, split: str, image_size: int, num_images: int, settings: Mapping[str, Any] | None = None
    ) -> RealStatsKey:
        """The cache key of a real data set for this extractor and preprocessing."""
        return RealStatsKey(
            dataset, split, int(image_size), int(num_images), self.feature_extractor_id,
            RealStatsKey.settings_json(settings),
        )  # fmt: skip

    def load_or_compute_real(
        self,
        images: Iterable[Tensor | tuple | list] | Callable[[], Iterable[Tensor | tuple | list]],
        *,
        dataset: str,
        split: str,
        image_size: int,
        num_images: int,
        settings: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> bool:
        """Set the real statistics from the cache, or compute them from ``images`` and cache them.

        Replaces any real statistics already held (generated images are kept). A cache entry holds the FID
        sums (and the feature matrix when KID or precision/recall is on) and is written atomically by rank 0; a
        corrupt or mismatched entry is recomputed with a warning.

        Collective under DDP: every rank must call it. On a miss each rank adds its own shard of ``images`` (e.g.
        :meth:`RealImages.shard`, streamed a batch at a time) and the statistics of all ranks are gathered;
        either way rank 0 then holds the FID sums (the other ranks zeros) and the features of KID and
        precision/recall are split over the ranks, so the all-reduce in :meth:`compute` counts each real image
        once, and a FID is the same bit for bit whether its real statistics came from the cache or not.

        Args:
            images: batches of real images (tensors, or tuples/lists whose first item is the images), or a
                callable returning such an iterable; it is only called/iterated on a cache miss.
            dataset: dataset name for the key.
            split: split name for the key.
            image_size: image side length for the key.
            num_images: number of real images (all ranks together) for the key; a mismatch with the count seen
                is warned about.
            settings: everything else that selects or transforms the images, for the key (the DataModule's settings:
                :attr:`RealImages.settings`); a changed setting misses.
            cache_dir: directory of the cache (default: ``options.cache_dir``, else ``~/.cache/ncsn_pl/real_stats``).

        Returns:
            True when the statistics came from the cache, False when they were computed.
        """
        key = self.real_stats_key(dataset, split, image_size, num_images, settings)
        cache_dir = cache_dir if cache_dir is not None else self.options.cache_dir
        cached = load_or_compute_real_stats(
            self.fid, self.real_feature_metrics, self.extract, self.num_features, images, key, cache_dir
        )
        self.real_source = {**{k: v for k, v in asdict(key).items() if k not in ("feature_extractor", "settings")},
                            "settings": json.loads(key.settings), "from_cache": cached}  # fmt: skip
        return cached

    # --- reference statistics files
    def use_reference_stats(self, ref: str | os.PathLike[str]) -> ReferenceStats:
        """Take the real statistics from a paper's reference file, or a published one by name
        (``"cifar10-train"``; :mod:`ncsn_pl.metrics.published_stats`), instead of real images.

        Reads the pytorch-fid / TTUR layout (``mu``, ``sigma``: FID only) or score_sde's (``pool_3`` features:
        FID, KID, precision/recall); see :mod:`ncsn_pl.metrics.reference_stats`. FID is then exactly the
        Fréchet distance to the file's ``mu`` and ``sigma``. Replaces the real statistics held; generated images
        are kept. Under DDP call it on every rank (rank 0 holds the FID sums, the features are split over ranks).

        Raises:
            ReferenceStatsError: the file's layout, keys, feature dimension (it must be :attr:`num_features`),
                values or recorded resize are wrong, or KID / precision-recall are on and the file holds only ``mu``
                and ``sigma``. Nothing is changed then.
        """
        stats = read_reference_stats(ref, self.options, self.num_features)
        if self.fid is not None or self.real_feature_metrics:
            install_real_states(self.fid, self.real_feature_metrics, stats.real_stats(), self._device)
        self.real_source = {
            "reference_stats": str(stats.path.resolve()),
            **({"name": stats.name} if stats.name else {}),
            "layout": stats.layout,
            "num_images": stats.num_samples,
            "resize": stats.resize,
            "sha256": file_sha256(stats.path),
        }
        return stats

    def export_real_stats(self, path: str | os.PathLike[str]) -> Path:
        """Write the real statistics held (all ranks) as ``mu``, ``sigma`` (float64) in the pytorch-fid layout, with
        the resize they were computed with, atomically; collective under DDP (rank 0 writes). See
        :func:`ncsn_pl.metrics.export_fid_stats`."""
        return export_real_states(self.fid, self.real_feature_metrics, self.num_features, path, self.resize)
