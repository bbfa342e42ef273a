"""Overhead of the annealed Langevin sampler over bare network calls (target: under 2 %).

Three timings of the same network on the same batch, each doing ``L * T`` no-grad forward passes in
``torch.inference_mode()``:

* ``bare``: a plain loop ``for level: for step: score_fn(x, levels)`` (x is not updated);
* ``sampler``: :func:`ncsn_pl.core.samplers.annealed_langevin_dynamics` with one generator (the update, the noise,
  the divergence check);
* ``seeded``: :func:`ncsn_pl.core.samplers.seeded_annealed_langevin`, every sample drawing its start and its noise
  from its own generator (what the ``sample``/``fid`` commands and the FID callback use, so the sample set does
  not depend on the number of processes).

The overhead is ``time / bare - 1``. Runs are interleaved and the median over ``--repeats`` is reported, with
images per second (``batch / time``: one full sampling run of ``L * T`` steps). ``--bf16`` runs the score
function under bf16 autocast and ``--compile`` wraps it in ``torch.compile`` (both for all three timings);
everything runs on ``--device`` (default: CUDA when available, else CPU).

Examples::

    python benchmarks/sampler_overhead.py                           # NCSN v1, CIFAR-10 size, batch 128
    python benchmarks/sampler_overhead.py --config mnist --bf16 --compile
    python benchmarks/sampler_overhead.py --config digits --device cpu   # the quickstart network (8x8, ngf 32)
    python benchmarks/sampler_overhead.py --device cpu --threads 2     # a quiet CPU, fixed thread count
    python benchmarks/sampler_overhead.py --size tiny --json out.json  # smoke test (seconds on a CPU)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from ncsn_pl.core.samplers import annealed_langevin_dynamics, seeded_annealed_langevin
from ncsn_pl.core.seeding import noise_from
from ncsn_pl.core.sigmas import geometric_sigmas
from ncsn_pl.networks import NCSN

CONFIGS = {"digits": (1, 8, 32), "mnist": (1, 28, 64), "cifar10": (3, 32, 128)}  # channels, image size, ngf
SIZES = {
    # ngf override, image size override, batch, num_scales L, n_steps_each T, repeats
    "full": (None, None, 128, 10, 10, 5),
    "tiny": (4, 8, 2, 2, 1, 1),
}


def make_score_fn(net: torch.nn.Module, device: torch.device, bf16: bool, compile: bool) -> Callable:
    """``score_fn(x, levels)``: the network, optionally compiled and under bf16 autocast; returns float32."""
    forward = torch.compile(net) if compile else net

    def score_fn(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        context = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        with context:
            return forward(x, levels).float()

    return score_fn


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    channels, image_size, ngf = CONFIGS[args.config]
    ngf_override, size_override, batch, num_scales, n_steps_each, repeats = SIZES[args.size]
    ngf = args.ngf or ngf_override or ngf
    image_size = size_override or image_size
    batch = args.batch_size or batch
    num_scales = args.num_scales or num_scales
    n_steps_each = args.n_steps_each or n_steps_each
    repeats = args.repeats or repeats

    torch.manual_seed(0)
    net = NCSN(channels, ngf, num_scales).to(device).eval()
    score_fn = make_score_fn(net, device, args.bf16, args.compile)
    sigmas = geometric_sigmas(1.0, 0.01, num_scales).to(device)
    x0 = torch.rand(batch, channels, image_size, image_size, device=device)
    seeds = list(range(batch))
    step_lr = 2e-5

    def bare() -> None:
        for level in range(num_scales):
            levels = torch.full((batch,), level, dtype=torch.long, device=device)
            for _ in range(n_steps_each):
                score_fn(x0, levels)

    def sampler() -> None:
        generator = torch.Generator(device=device).manual_seed(0)
        annealed_langevin_dynamics(
            score_fn, x0, sigmas, n_steps_each=n_steps_each, step_lr=step_lr, noise_fn=noise_from(generator)
        )

    def seeded() -> None:
        seeded_annealed_langevin(score_fn, sigmas, x0.shape[1:], seeds, n_steps_each=n_steps_each, step_lr=step_lr)

    runs = {"bare": bare, "sampler": sampler, "seeded": seeded}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for fn in runs.values():  # warm-up (and compilation)
            fn()
        for _ in range(repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn, device))
    median = {name: statistics.median(values) for name, values in times.items()}
    result: dict[str, Any] = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "config": args.config,
        "size": args.size,
        "ngf": ngf,
        "image_size": image_size,
        "batch": batch,
        "num_scales": num_scales,
        "n_steps_each": n_steps_each,
        "forward_calls": num_scales * n_steps_each,
        "bf16": args.bf16,
        "compile": args.compile,
        "repeats": repeats,
        "seconds": median,
        "images_per_second": {name: batch / t for name, t in median.items()},
        "overhead": {name: median[name] / median["bare"] - 1 for name in ("sampler", "seeded")},
    }
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cifar10")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--ngf", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--num-scales", type=int, default=None)
    parser.add_argument("--n-steps-each", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast around the score function")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    s, ips, over = result["seconds"], result["images_per_second"], result["overhead"]
    print(
        f"{result['device']}: NCSN {args.config} ngf {result['ngf']}, batch {result['batch']}, "
        f"L={result['num_scales']} x T={result['n_steps_each']} = {result['forward_calls']} forward calls, "
        f"bf16={args.bf16}, compile={args.compile}, median of {result['repeats']}"
    )
    for name in ("bare", "sampler", "seeded"):
        extra = f"  overhead {100 * over[name]:+.2f} %" if name in over else ""
        print(f"  {name:8s} {s[name]:9.4f} s  {ips[name]:10.2f} images/s{extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
