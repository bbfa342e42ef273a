"""CPU speed of the NCSN v1 score network: one training step and one sampling step.

Training step (batch 128 by default): the DSM loss with random levels and noise (``ncsn_pl.losses.dsm_loss``,
batch mean), ``zero_grad``, ``backward`` and one Adam step (lr 1e-3), as in the official runner.
Sampling step (batch 64): one annealed-Langevin update ``x + a*s(x, i) + sqrt(2a)*z`` at a fixed level, i.e.
one no-grad forward of the network.

Configurations: MNIST (1x28x28, ngf 64) and CIFAR-10 (3x32x32, ngf 128), L = 10. ``--size tiny`` (ngf 8,
batch 4, one timed iteration) is a smoke test. Reports the median time, images/s and the achieved GFLOP/s,
with FLOPs counted once by ``torch.utils.flop_counter.FlopCounterMode``. ``--channels-last`` converts the network's
weights only, as ``ScoreModel`` does by default; the inputs stay contiguous, as data loaders give them.

Examples::

    python benchmarks/network_speed.py                       # both configs, full size
    python benchmarks/network_speed.py --configs mnist --channels-last --inference-mode
    python benchmarks/network_speed.py --cinpp reference     # time the unfused CIN++ formula instead
    python benchmarks/network_speed.py --size tiny --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ncsn_pl.core.losses import dsm_loss
from ncsn_pl.core.sigmas import geometric_sigmas
from ncsn_pl.networks import NCSN, layers

CONFIGS = {"mnist": (1, 28, 64), "cifar10": (3, 32, 128)}  # channels, image size, ngf
SIZES = {
    # ngf override (None: the config's), train batch, sample batch, warm-up after the first call, timed runs
    "full": (None, 128, 64, 1, 3),
    "tiny": (8, 4, 4, 0, 1),
}


def reference_instance_norm_plus(
    x: torch.Tensor,
    gamma: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """CIN++ written as the official code does (InstanceNorm2d, then the alpha term, then gamma and beta)."""
    means = x.mean(dim=(2, 3))
    m, v = means.mean(dim=1, keepdim=True), means.var(dim=1, keepdim=True)
    h = F.instance_norm(x, eps=eps) + ((means - m) / torch.sqrt(v + eps) * alpha)[..., None, None]
    out = gamma[..., None, None] * h
    return out if beta is None else out + beta[..., None, None]


def _time_step(fn: Callable[[], Any], warmup: int, iters: int) -> dict[str, Any]:
    """Time the first (cold) call, run ``warmup`` more, then time ``iters`` calls."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"first_s": first, "median_s": statistics.median(times), "times_s": times}


def matmul_gflop_per_s(size: int = 2048, iters: int = 3) -> float:
    """The machine's fp32 matmul rate (median of ``iters`` ``size x size`` products): a reference for GFLOP/s."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    timing = _time_step(lambda: a @ b, 1, iters)
    return 2 * size**3 / timing["median_s"] / 1e9


def _count_flops(fn: Callable[[], Any]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def bench_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time one training and one sampling step of ``NCSN`` in configuration ``name``."""
    channels, image_size, ngf = CONFIGS[name]
    ngf_override, train_batch, sample_batch, warmup, iters = SIZES[args.size]
    ngf = ngf_override or ngf
    train_batch = args.train_batch or train_batch
    sample_batch = args.sample_batch or sample_batch
    warmup = args.warmup if args.warmup is not None else warmup
    iters = args.iters or iters
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(1234)
    net = NCSN(channels=channels, ngf=ngf, num_scales=10).to(memory_format=memory_format)
    sigmas = geometric_sigmas(1.0, 0.01, 10)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    compiled = torch.compile(net) if args.compile else net
    x_train = torch.rand(train_batch, channels, image_size, image_size, generator=gen)
    x_sample = torch.rand(sample_batch, channels, image_size, image_size, generator=gen)
    sample_levels = torch.full((sample_batch,), 5, dtype=torch.long)
    step_size = float(2e-5 * (sigmas[5] / sigmas[-1]) ** 2)

    def train_step(model: torch.nn.Module, x: torch.Tensor) -> None:
        # DSM loss with fresh levels and noise, then one Adam step
        optimizer.zero_grad(set_to_none=True)
        loss = dsm_loss(model, x, sigmas).mean()
        loss.backward()
        optimizer.step()

    def sample_step(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        # one annealed Langevin update at level 5
        with torch.inference_mode() if args.inference_mode else torch.no_grad():
            noise = torch.randn_like(x)
            return x + step_size * model(x, sample_levels[: x.shape[0]]) + math.sqrt(2 * step_size) * noise

    result: dict[str, Any] = {"config": name, "ngf": ngf, "params": sum(p.numel() for p in net.parameters())}
    for mode, x, step, training in (("train", x_train, train_step, True), ("sample", x_sample, sample_step, False)):
        net.train(training)
        # FLOPs are linear in the batch: count the eager ops on 2 samples (a compiled graph computes the same)
        flops = _count_flops(lambda step=step, x=x: step(net, x[:2])) * x.shape[0] / 2
        timing = _time_step(lambda step=step, x=x: step(compiled, x), warmup, iters)
        result[mode] = {
            "batch": x.shape[0],
            **timing,
            "images_per_s": x.shape[0] / timing["median_s"],
            "gflop": flops / 1e9,
            "gflop_per_s": flops / 1e9 / timing["median_s"],
        }
        _print_row(result, mode)
    return result


def _print_row(result: dict[str, Any], mode: str) -> None:
    m = result[mode]
    print(
        f"{result['config']:8} {result['ngf']:>4} {mode:6} {m['batch']:>5} {m['first_s']:>8.3f} "
        f"{m['median_s']:>9.3f} {m['images_per_s']:>8.1f} {m['gflop']:>8.1f} {m['gflop_per_s']:>8.1f}",
        flush=True,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="full paper configs or a tiny smoke test")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["mnist", "cifar10"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last network weights")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--inference-mode", action="store_true", help="inference_mode instead of no_grad")
    parser.add_argument("--cinpp", choices=["fused", "reference"], default="fused", help="CIN++ implementation to time")
    parser.add_argument("--train-batch", type=int, default=None)
    parser.add_argument("--sample-batch", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations after the first call")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per step (median reported)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark and print one line per configuration and step; returns the results."""
    args = parse_args(argv)
    threads, original = torch.get_num_threads(), layers.instance_norm_plus
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cinpp == "reference":
        layers.instance_norm_plus = reference_instance_norm_plus
    results: list[dict[str, Any]] = []
    try:
        options = [
            f"threads={torch.get_num_threads()}",
            f"cinpp={args.cinpp}",
            f"channels_last={args.channels_last}",
            f"compile={args.compile}",
            f"inference_mode={args.inference_mode}",
        ]
        matmul_rate = matmul_gflop_per_s(*((256, 1) if args.size == "tiny" else ()))
        print(f"torch {torch.__version__}, " + ", ".join(options) + f"; fp32 matmul {matmul_rate:.1f} GFLOP/s")
        header = f"{'config':8} {'ngf':>4} {'step':6} {'batch':>5} {'first s':>8} {'median s':>9} {'img/s':>8}"
        print(header + f" {'GFLOP':>8} {'GFLOP/s':>8}", flush=True)
        for name in args.configs:
            results.append(bench_config(name, args))
            if args.json:
                with open(args.json, "w") as f:
                    record = {"options": vars(args), "torch": torch.__version__, "matmul_gflop_per_s": matmul_rate}
                    json.dump({**record, "results": results}, f, indent=2)
    finally:
        torch.set_num_threads(threads)
        layers.instance_norm_plus = original
    return results


if __name__ == "__main__":
    main()
