"""Overhead of the annealed Langevin sampler over bare network calls (target: under 2 %).

Three timings of the same network on the same batch, each doing ``L * T`` no-grad forward passes in
``torch.inference_mode()``:

* ``bare``: a plain loop ``for level: for step: score_fn(x, levels)`` (x is not updated);
* ``sampler``: :func:`ncsn_pl.core.samplers.annealed_langevin_dynamics` with one generator (the update, the noise,
  the divergence check);
* ``seeded``: :func:`ncsn_pl.core.samplers.seeded_annealed_langevin`, every sample drawing its start and its noise
  from its own generator (what the ``sample``/``fid`` commands and the FID callback use, so the sample set does
  not depend on the number of processes).

``beyond_network`` measures the same overhead directly, which stays readable on a busy machine where the difference
of two long timings does not: the sampler's own time per step (``--beyond-steps`` steps with a score function that
returns a ready tensor) for ``sampler``, ``seeded`` and ``command`` (seeded, with the progress bar as ``sample``,
``fid`` and the FID callback show it), over the network's time per call. ``rng`` counts, at batch 1 and at the
benchmark's batch, the random-generator kernels per sampler step (a per-row generator launches one per row) and the
tensor operations of one noise draw.

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
    python benchmarks/sampler_overhead.py --config mnist --batch-size 1000 --num-scales 2 --n-steps-each 1 \
        --beyond-only --device cpu --threads 2                  # the share beyond the network at batch 1,000
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
from torch.utils._python_dispatch import TorchDispatchMode

from ncsn_pl.core.samplers import AnnealedLangevin, annealed_langevin_dynamics, seeded_annealed_langevin
from ncsn_pl.core.seeding import PerSampleNoise, noise_from
from ncsn_pl.core.sigmas import geometric_sigmas
from ncsn_pl.networks import NCSN, NCSNv2
from ncsn_pl.training.progress import sampling_progress

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
    if args.network == "ncsnv2":
        net = NCSNv2(channels, ngf).to(device).eval()
        net.set_sigmas(geometric_sigmas(1.0, 0.01, num_scales))
    else:
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
    if args.beyond_only:  # one warm-up and one timed network call; the sampler's share measured on its own
        runs = {"bare": bare}
        repeats = 1
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for fn in runs.values():  # warm-up (and compilation)
            fn()
        for _ in range(repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn, device))
    median = {name: statistics.median(values) for name, values in times.items()}
    with torch.inference_mode():
        beyond = beyond_network(median["bare"] / (num_scales * n_steps_each), x0, args.beyond_steps, device)
        rng = {str(b): rng_calls(b, x0.shape[1:], device) for b in sorted({1, batch})}
    result: dict[str, Any] = {
        "network": args.network,
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
        "overhead": {name: median[name] / median["bare"] - 1 for name in ("sampler", "seeded") if name in median},
        "beyond_network": beyond,
        "rng": rng,
    }
    return result


def beyond_network(network_seconds: float, x0: torch.Tensor, steps: int, device: torch.device) -> dict[str, Any]:
    """The samplers' own seconds per step (a score function that costs nothing) over the network's per call."""
    score = torch.zeros_like(x0)
    sigmas = geometric_sigmas(1.0, 0.01, steps).to(device)
    seeds = list(range(x0.shape[0]))

    def free_score(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        return score

    def sampler() -> None:
        generator = torch.Generator(device=device).manual_seed(0)
        annealed_langevin_dynamics(free_score, x0, sigmas, n_steps_each=1, noise_fn=noise_from(generator))

    def seeded() -> None:
        seeded_annealed_langevin(free_score, sigmas, x0.shape[1:], seeds, n_steps_each=1)

    def command() -> None:
        sampler_ = AnnealedLangevin(1)
        with sampling_progress(steps, sampler_, len(seeds), None, "benchmark", True) as bar:
            seeded_annealed_langevin(free_score, sigmas, x0.shape[1:], seeds, n_steps_each=1, callback=bar)

    per_step = {name: timed(fn, device) / steps for name, fn in
                {"sampler": sampler, "seeded": seeded, "command": command}.items()}  # fmt: skip
    return {
        "steps": steps,
        "network_seconds_per_call": network_seconds,
        "sampler_seconds_per_step": per_step,
        "overhead": {name: t / network_seconds for name, t in per_step.items()},
    }


class _Count(TorchDispatchMode):
    """Counts the operations dispatched inside it, and among them the random-generator ones."""

    RANDOM = ("normal", "uniform", "random", "rand", "bernoulli", "exponential")

    def __init__(self) -> None:
        super().__init__()
        self.ops = self.random = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops += 1
        self.random += any(word in func.__name__ for word in self.RANDOM)
        return func(*args, **(kwargs or {}))


def rng_calls(batch: int, data_shape: tuple[int, ...], device: torch.device) -> dict[str, int]:
    """Random-generator kernels of one seeded sampler step at ``batch``, and the tensor operations of one draw."""
    sigmas = geometric_sigmas(1.0, 0.5, 2).to(device)
    seeds = list(range(batch))
    with _Count() as one:
        seeded_annealed_langevin(lambda x, levels: torch.zeros_like(x), sigmas, data_shape, seeds, n_steps_each=1)
    with _Count() as two:
        seeded_annealed_langevin(lambda x, levels: torch.zeros_like(x), sigmas, data_shape, seeds, n_steps_each=2)
    noise = PerSampleNoise(seeds, device)
    x = torch.zeros(batch, *data_shape, device=device)
    with _Count() as draw:
        noise.randn_like(x)
    return {"generator_calls_per_step": (two.random - one.random) // 2, "ops_per_noise_draw": draw.ops}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cifar10")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--network", choices=["ncsn", "ncsnv2"], default="ncsn", help="NCSN v1 or NCSNv2")
    parser.add_argument("--beyond-steps", type=int, default=20, help="steps of the beyond-network timing")
    parser.add_argument("--beyond-only", action="store_true", help="time the network once and the sampler's share")
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
        f"{result['device']}: {args.network} {args.config} ngf {result['ngf']}, batch {result['batch']}, "
        f"L={result['num_scales']} x T={result['n_steps_each']} = {result['forward_calls']} forward calls, "
        f"bf16={args.bf16}, compile={args.compile}, median of {result['repeats']}"
    )
    for name in s:
        extra = f"  overhead {100 * over[name]:+.2f} %" if name in over else ""
        print(f"  {name:8s} {s[name]:9.4f} s  {ips[name]:10.2f} images/s{extra}")
    beyond = result["beyond_network"]
    print(f"  beyond the network ({beyond['network_seconds_per_call']:.4f} s per call), per step:")
    for name, seconds in beyond["sampler_seconds_per_step"].items():
        print(f"    {name:8s} {seconds:9.5f} s  overhead {100 * beyond['overhead'][name]:+.2f} %")
    for b, counts in result["rng"].items():
        print(f"  batch {b}: {counts['generator_calls_per_step']} generator calls per step, "
              f"{counts['ops_per_noise_draw']} tensor ops per noise draw")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
