"""SampleQuality across two CPU processes (gloo, spawned in-process): each image is counted once.

Checks the rank-aware parts of ncsn_pl.metrics: compute() all-reduces (FID sums, KID feature lists even when
the ranks saw different numbers of batches), load_or_compute_real() writes the statistics of all ranks and,
loaded from the cache, gives rank 0 the FID sums and each rank a share of the KID features.
"""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ncsn_pl.metrics import QualityOptions, SampleQuality

N_REAL, N_FAKE, WORLD = 12, 12, 2


class TinyExtractor(nn.Module):
    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Parameter(torch.randn(3 * 4 * 4, 4, generator=g), requires_grad=False)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(x.flatten(1) @ self.proj)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(N_REAL, 3, 4, 4, generator=g), torch.rand(N_FAKE, 3, 4, 4, generator=g) ** 2


def _quality(extractor: nn.Module) -> SampleQuality:
    return SampleQuality(QualityOptions(feature_extractor=extractor, kid=True, kid_subsets=2, kid_subset_size=N_REAL))


def _prepare(q: SampleQuality, images, cache_dir) -> bool:
    return q.load_or_compute_real(
        images, dataset="toy", split="train", image_size=4, num_images=N_REAL, cache_dir=cache_dir
    )


def _worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)  # two processes on a small CPU
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=WORLD)
    try:
        real, fake = _data()
        # statistics computed from each rank's shard; rank 0 sees its fakes in two batches, rank 1 in one
        live = _quality(TinyExtractor())
        loaded_live = _prepare(live, [real[rank::WORLD]], tmp)
        shard = fake[rank::WORLD]
        for batch in shard.split(3 if rank == 0 else len(shard)):
            live.update_fake(batch)
        out_live = live.compute()
        dist.barrier()  # rank 0 has written the cache

        ext = TinyExtractor()
        cached = _quality(ext)
        loaded_cached = _prepare(
            cached, lambda: (_ for _ in ()).throw(AssertionError("no data on a hit")), tmp
        )
        cached.update_fake(fake[rank::WORLD])
        out_cached = cached.compute()
        result = {
            "live": out_live,
            "cached": out_cached,
            "loaded": (loaded_live, loaded_cached),
            "calls": ext.calls,
            "local_real": (
                int(cached.fid.real_features_num_samples),
                sum(len(f) for f in cached.kid.real_features),
            ),
        }
        torch.save(result, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # about 15 s: two fresh interpreters import torch and torchmetrics
def test_two_processes_count_every_image_once(tmp_path):
    real, fake = _data()
    single = _quality(TinyExtractor())
    single.update_real(real)
    single.update_fake(fake)
    expected = single.compute()

    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for r, res in enumerate(results):
        assert res["loaded"] == (False, True)
        assert res["calls"] == 1  # only its fake batch went through the extractor
        for out in (res["live"], res["cached"]):
            assert out["fid"] == pytest.approx(expected["fid"], rel=1e-9)
            assert out["kid"] == pytest.approx(expected["kid"], rel=1e-5)
        # cached: FID sums on rank 0 only, KID features split over the ranks
        assert res["local_real"] == ((N_REAL if r == 0 else 0), N_REAL // WORLD)
    (cache_file,) = tmp_path.glob("toy-*.pt")
    assert torch.load(cache_file, weights_only=True)["num_samples"] == N_REAL
