"""SampleQuality across two CPU processes (gloo, spawned in-process): each image is counted once.

Checks the rank-aware parts of ncsn_pl.metrics: compute() all-reduces (FID sums, KID feature lists even when
the ranks saw different numbers of batches), load_or_compute_real() writes the statistics of all ranks and,
loaded from the cache, gives rank 0 the FID sums and each rank a share of the KID features. Precision/recall
gathers the features of all ranks before its k-NN, from live images, the cache or a reference file.
"""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ncsn_pl.metrics import QualityOptions, RealStats, SampleQuality

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

        # KID of random subsets: drawn from its own seeded generator, so the ranks agree whatever their global state
        torch.manual_seed(rank)
        subsets = SampleQuality(QualityOptions(feature_extractor=TinyExtractor(), fid=False, kid=True, kid_subsets=3,
                                               kid_subset_size=4))  # fmt: skip
        subsets.update_real(real[rank::WORLD])
        subsets.update_fake(fake[rank::WORLD])
        result = {
            "subset_kid": subsets.compute()["kid"],
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
    assert results[0]["subset_kid"] == results[1]["subset_kid"]
    (cache_file,) = tmp_path.glob("toy-*.pt")
    assert torch.load(cache_file, weights_only=True)["num_samples"] == N_REAL


def _pr_quality(extractor: nn.Module) -> SampleQuality:
    return SampleQuality(QualityOptions(feature_extractor=extractor, precision_recall=True))


def _pr_worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=WORLD)
    try:
        real, fake = _data()
        shard = fake[rank::WORLD]
        # live: each rank its shard of the real images; rank 0 its fakes in three batches, rank 1 in one
        live = _pr_quality(TinyExtractor())
        loaded_live = _prepare(live, [real[rank::WORLD]], tmp)
        for batch in shard.split(2 if rank == 0 else len(shard)):
            live.update_fake(batch)
        out_live = live.compute()
        dist.barrier()  # rank 0 has written the cache

        cached = _pr_quality(TinyExtractor())
        loaded_cached = _prepare(cached, lambda: (_ for _ in ()).throw(AssertionError("no data on a hit")), tmp)
        cached.update_fake(shard)
        out_cached = cached.compute()

        reference = _pr_quality(TinyExtractor())
        reference.use_reference_stats(f"{tmp}/pool_3.npz")
        reference.update_fake(shard)
        out_reference = reference.compute()
        reference.export_real_stats(f"{tmp}/exported.npz")  # collective; rank 0 writes
        result = {
            "outs": (out_live, out_cached, out_reference),
            "loaded": (loaded_live, loaded_cached),
            "local_real": tuple(len(q.precision_recall.real_features[0]) for q in (cached, reference)),
        }
        torch.save(result, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # about 15 s: two fresh interpreters import torch and torchmetrics
def test_two_processes_give_the_precision_and_recall_of_one(tmp_path):
    real, fake = _data()
    single = _pr_quality(TinyExtractor())
    single.update_real(real)
    single.update_fake(fake)
    expected = single.compute()
    assert 0 < expected["precision"] < 1 or 0 < expected["recall"] < 1  # not a trivial case
    np.savez(tmp_path / "pool_3.npz", pool_3=single.extract(real).numpy())

    mp.spawn(_pr_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for res in results:
        assert res["loaded"] == (False, True)
        for out in res["outs"]:
            assert (out["precision"], out["recall"]) == (expected["precision"], expected["recall"])
            assert out["fid"] == pytest.approx(expected["fid"], rel=1e-9)
        assert res["local_real"] == (N_REAL // WORLD, N_REAL // WORLD)  # the real features split over the ranks
    fid = single.fid
    mu, sigma = RealStats(fid.real_features_sum, fid.real_features_cov_sum, N_REAL).mean_and_covariance()
    with np.load(tmp_path / "exported.npz") as data:  # the real statistics of all ranks
        np.testing.assert_allclose(data["mu"], mu.numpy(), rtol=1e-12)
        np.testing.assert_allclose(data["sigma"], sigma.numpy(), rtol=1e-9, atol=1e-12)


TORCHRUN_SCRIPT = """
import sys

import torch
import torch.distributed as dist
from tiny_models import TinyFeatures

from ncsn_pl.metrics import QualityOptions, SampleQuality

dist.init_process_group("gloo")  # RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT from torchrun
rank, world = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(1)
torch.manual_seed(100 + rank)  # the ranks' global generators differ, as after rank-keyed training noise
g = torch.Generator().manual_seed(1)
real, fake = torch.rand(16, 1, 8, 8, generator=g), torch.rand(16, 1, 8, 8, generator=g) ** 2
quality = SampleQuality(QualityOptions(feature_extractor=TinyFeatures(), fid=False, kid=True, kid_subsets=3,
                                       kid_subset_size=4, inception_score=True, is_splits=3))
quality.update_real(real[rank::world])
quality.update_fake(fake[rank::world])
torch.save(quality.compute(), f"{sys.argv[1]}/rank{rank}.pt")
dist.destroy_process_group()
"""


@pytest.mark.slow  # about a minute: torchrun starts two interpreters that import torch and torchmetrics
def test_kid_and_is_agree_on_every_rank_under_torchrun(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "kid_ranks.py"
    script.write_text(TORCHRUN_SCRIPT)
    tests = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               str(tmp_path)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert first == second and set(first) == {"kid", "kid_std", "is", "is_std"}
