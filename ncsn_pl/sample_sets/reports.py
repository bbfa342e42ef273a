"""What ``sample`` and ``fid`` report beside the samples: the noisy share (samples noisier than every real image)
and the network evaluations per sample, as record entries and in words."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ncsn_pl.core.samplers import Sampler
from ncsn_pl.metrics.noisy_share import NoiseReference, NoisyShare, noise_reference
from ncsn_pl.sample_sets.store import SampleStore

__all__ = ["describe_nfe", "describe_noisy_share", "nfe_record", "noise_reference_for", "noisy_share_record"]


def noise_reference_for(datamodule: Any, image_shape: tuple[int, ...] | None) -> NoiseReference | str:
    """The real images the noisy share compares samples of ``image_shape`` with (the first 1,000 held-out images
    of ``datamodule``: :func:`~ncsn_pl.metrics.noisy_share.noise_reference`), or why there are none."""
    if datamodule is None:
        return "no real images"
    try:
        reference = noise_reference(datamodule)
    except (OSError, RuntimeError, ValueError) as err:
        return f"the real images cannot be read ({err})"
    if reference is None:
        return "the data are not images"
    mismatch = reference.mismatch(image_shape) if image_shape is not None else None
    return reference if mismatch is None else mismatch


def noisy_share_record(reference: NoiseReference | str, counts: Tensor | None) -> dict[str, Any]:
    """``noisy_share`` (the share of samples noisier than every real image of ``reference``, from the counts
    ``[noisy, total]``) and what it compared with, for ``sample.json`` / ``fid.json``; None and the reason when
    there was nothing to compare with."""
    if isinstance(reference, str) or counts is None:
        return {"noisy_share": None, "noisy_share_real": {"unavailable": reference}}
    return {"noisy_share": NoisyShare.share(counts), "noisy_share_real": reference.describe()}


def nfe_record(sampler: Sampler, num_scales: int, store: SampleStore, num_samples: int) -> dict[str, Any]:
    """The network evaluations per sample of a finished sample set: ``nfe`` (and, where it differs per sample,
    the mean as ``nfe`` and the largest as ``nfe_max``, counted while drawing and kept in the shards)."""
    fixed = sampler.nfe(num_scales)
    if fixed is not None:
        return {"nfe": fixed}
    counts = store.read_nfe(range(num_samples))
    if counts is None or counts.numel() == 0:
        return {"nfe": None}
    return {"nfe": round(counts.double().mean().item(), 2), "nfe_max": int(counts.max())}


def describe_nfe(record: dict[str, Any]) -> str:
    """``nfe`` of a record in words: the number, or the mean and the largest where it differs per sample."""
    if record.get("nfe_max") is None:
        return str(record.get("nfe"))
    return f"{record['nfe']} per sample on average, at most {record['nfe_max']}"


def describe_noisy_share(record: dict[str, Any]) -> str:
    """``noisy_share`` of a record in words, with what it compared with."""
    real = record.get("noisy_share_real") or {}
    if record.get("noisy_share") is None:
        return f"noisy share not measured ({real.get('unavailable', 'no real images')})"
    return (
        f"{record['noisy_share']:.1%} of the samples noisier than every one of the first {real['num_images']} "
        f"{real['split']} images"
    )
