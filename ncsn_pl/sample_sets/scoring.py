"""The job of the ``fid`` command: draw what is missing of a sample set, then score the set against real statistics.

Generated images are scored from the sample folder's shards (or a folder of image files) in a fixed order: batch
``g`` of ``range(num_items)`` goes to rank ``g % W``, so an interrupted and rerun evaluation scores exactly the
images, in exactly the batches, of an uninterrupted one and gives the same numbers bit for bit (with the same number
of processes; with another, equal up to float rounding).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ncsn_pl.data.image_decoding import image_tensor
from ncsn_pl.data.image_files import quantize_images, read_image
from ncsn_pl.metrics import NoiseReference, NoisyShare, QualityOptions, RealImages, SampleQuality
from ncsn_pl.sample_sets.drawing import DrawSamples
from ncsn_pl.sample_sets.store import SampleStore, nfe_record, noisy_share_record
from ncsn_pl.system.files import atomic_write_json

__all__ = ["QualityRun", "read_images"]


def read_images(files: list[Path], channels: int) -> Tensor:
    """uint8 images ``(N, channels, H, W)`` from image files, each scaled by its bit depth (16-bit grey too) and
    rounded to 8 bits as ``save_image`` rounds (:func:`~ncsn_pl.data.image_decoding.image_tensor`)."""
    return torch.stack([quantize_images(image_tensor(read_image(path), channels)) for path in files])


class QualityRun(DrawSamples):
    """Predict-loop job: real statistics (reference file, cache or streamed images), this rank's share of the
    missing samples (as shards), then the metrics of the whole set over all ranks, written to ``out`` by rank 0.

    Args:
        model: the model whose samples are drawn, or None (scoring files or a finished sample set).
        store: the sample set (drawn here, or read), or None for image files.
        batches: the batches still to draw.
        files: image files to score instead of a sample set.
        real: the real images, or None with ``ref_stats``.
        ref_stats: a paper's reference statistics file to use as the real statistics.
        export_stats: write the real statistics here in the pytorch-fid layout.
        channels: the images' channels (for files).
        num_items: generated images to score (0: only export the real statistics).
        batch_size: images per scored batch.
        options: the metrics.
        out: the JSON record.
        record: what the command knows already (sources, sampler).
        **draw: ``num_samples``, ``seed``, ``sampler``, ``save_png``, ``claim``, ``noise`` of :class:`DrawSamples`
            (the noisy share is counted while scoring, over all ranks).
    """

    def __init__(
        self,
        model: Any,
        store: SampleStore | None,
        batches: list[list[int]],
        *,
        files: list[Path] | None,
        real: RealImages | None,
        ref_stats: str | None,
        export_stats: str | None,
        channels: int,
        num_items: int,
        batch_size: int,
        options: QualityOptions,
        out: Path,
        record: dict[str, Any],
        **draw: Any,
    ) -> None:
        super().__init__(model, store, batches, batch_size=batch_size, **draw)
        self.files, self.real, self.ref_stats, self.export_stats = files, real, ref_stats, export_stats
        self.channels, self.num_items, self.batch_size = channels, num_items, batch_size
        self.options, self.out, self.record = options, out, record
        self.quality: SampleQuality | None = None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # built in each process (after any spawn), so no metric state is shared between processes
        self.quality = SampleQuality(self.options)

    def on_predict_start(self) -> None:
        super().on_predict_start()
        self.quality.to(self.device)
        if self.ref_stats:
            self.quality.use_reference_stats(self.ref_stats)
        else:
            rank, world, real = self.trainer.global_rank, self.trainer.world_size, self.real
            self.quality.load_or_compute_real(lambda: real.shard(rank, world, self.batch_size), **real.cache_key())

    def _batch(self, indices: list[int]) -> Tensor:
        if self.files is not None:
            return read_images([self.files[k] for k in indices], self.channels)  # uint8: already quantised
        return self.store.read(indices)

    def on_predict_epoch_end(self) -> None:
        self.wait_for_all_shards()
        rank, world = self.trainer.global_rank, self.trainer.world_size
        if self.store is not None and self.num_items:
            missing = set(range(self.num_items)) - self.store.scan()
            if missing:
                raise RuntimeError(
                    f"{len(missing)} samples are missing from {self.store.shard_dir}; rerun the command."
                )
        start = time.perf_counter()
        noisy = NoisyShare(self.noise) if isinstance(self.noise, NoiseReference) else None
        for g, first in enumerate(range(0, self.num_items, self.batch_size)):
            if g % world == rank:
                batch = self._batch(list(range(first, min(first + self.batch_size, self.num_items))))
                self.quality.update_fake(batch)
                if noisy is not None:
                    noisy.update(batch)
        results = self.quality.compute() if self.num_items else {}  # collective: every rank gets the values
        noisy_counts = None
        if noisy is not None and self.num_items:  # collective; on the root device, as NCCL requires
            counts = noisy.counts().to(self.trainer.strategy.root_device)
            noisy_counts = self.trainer.strategy.reduce(counts, reduce_op="sum").cpu()
        if self.export_stats:
            self.quality.export_real_stats(self.export_stats)  # collective; rank 0 writes
        drawn = self.total_drawn()
        if self.trainer.is_global_zero:
            self.record.update(results)
            if self.num_items:
                self.record.update(noisy_share_record(self.noise, noisy_counts))
            if self.store is not None and self.model is not None:
                nfe = nfe_record(self.sampler, self.model.num_scales, self.store, self.num_items)
                self.record["sampler"].update(nfe)
            self.record["real"] = {**(self.quality.real_source or {}), **self.record.get("real", {})}
            self.record["num_real"] = self.record["real"].get("num_images")
            if self.store is not None and self.model is not None:
                self.record["drawn_by_this_run"] = drawn
            self.record.update(
                {
                    "seconds": round(self.seconds, 3),
                    "scoring_seconds": round(time.perf_counter() - start, 3),
                    "world_size": world,
                    "feature_extractor": self.quality.feature_extractor_id,
                    "resize": self.quality.resize,
                    "num_features": self.quality.num_features,
                }
            )
            if self.export_stats:
                self.record["exported_stats"] = str(Path(self.export_stats).resolve())
            if self.store is not None and self.model is not None and not self.complete_before:
                self.store.write_record(complete=True, num_drawn=self.num_samples)
            atomic_write_json(self.record, self.out)
        self.wait_for_all_shards()  # every rank returns once the record is written (the command reads it)
