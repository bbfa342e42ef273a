"""The networks' CPU ELU (``ncsn_pl.networks.layers.elu``, from ``exp``) against ``F.elu`` (from ``expm1``).

Prints, in one process: the time of ``torch.exp`` and ``torch.expm1`` on one activation tensor (100 x 64 x 28 x 28,
channels_last), of ``F.elu`` and the networks' ``elu`` (forward, and forward + backward), the share of ``aten::elu``
and of the convolutions in ``torch.profiler``'s table of one NCSN sampling step with ``F.elu``, and the no-grad
forward of NCSN (MNIST, ngf 64, batch 100) and NCSNv2 (CIFAR-10, ngf 128, batch 50) with each ELU (the networks'
module globals swapped). Median of ``--repeats`` calls after one untimed call. ``--size tiny`` (ngf 4, batch 2, a
small tensor) is a smoke test of seconds.

Example::

    python benchmarks/elu_speed.py --threads 2 --json benchmarks/results/elu_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from ncsn_pl.core.sigmas import geometric_sigmas
from ncsn_pl.networks import NCSN, NCSNv2, layers, ncsn


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


@contextmanager
def networks_elu(fn: Callable[[torch.Tensor], torch.Tensor]):
    """The networks call ``fn`` as their ELU inside the block."""
    saved = layers.elu, ncsn.elu
    layers.elu = ncsn.elu = fn
    try:
        yield
    finally:
        layers.elu, ncsn.elu = saved


# activation tensor; NCSN ngf and batch; NCSNv2 ngf and batch
SIZES = {"full": ((100, 64, 28, 28), 64, 100, 128, 50), "tiny": ((2, 4, 8, 8), 4, 2, 4, 2)}


def run(repeats: int, size: str = "full") -> dict[str, Any]:
    shape, ngf_v1, batch_v1, ngf_v2, batch_v2 = SIZES[size]
    torch.manual_seed(0)
    x = torch.randn(*shape).to(memory_format=torch.channels_last)
    xr, grad = x.clone().requires_grad_(), torch.randn_like(x)
    ops = {
        "exp": lambda: torch.exp(x),
        "expm1": lambda: torch.expm1(x),
        "F.elu": lambda: F.elu(x),
        "elu": lambda: layers.elu(x),
        "F.elu forward+backward": lambda: F.elu(xr).backward(grad),
        "elu forward+backward": lambda: layers.elu(xr).backward(grad),
    }
    result: dict[str, Any] = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    result["threads"] = torch.get_num_threads()
    result["ops_ms"] = {name: median_ms(fn, repeats) for name, fn in ops.items()}

    v1 = NCSN(1, ngf_v1, 10).eval().to(memory_format=torch.channels_last)
    v2 = NCSNv2(3, ngf_v2)
    v2.set_sigmas(geometric_sigmas(50.0, 0.01, 232))
    v2 = v2.eval().to(memory_format=torch.channels_last)
    nets = {"ncsn_mnist": (v1, (batch_v1, 1, 28, 28)), "ncsnv2_cifar10": (v2, (batch_v2, 3, 32, 32))}
    result["forward_ms"] = {}
    with torch.no_grad():
        inputs = {name: (torch.rand(*shape), torch.zeros(shape[0], dtype=torch.long))
                  for name, (_, shape) in nets.items()}  # fmt: skip
        with networks_elu(F.elu), profile(activities=[ProfilerActivity.CPU]) as prof:
            v1(*inputs["ncsn_mnist"])
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        share = {e.key: e.self_cpu_time_total / total for e in prof.key_averages()}
        result["ncsn_step_share_with_F_elu"] = {k: share.get(k, 0.0) for k in ("aten::elu", "aten::mkldnn_convolution")}
        for name, (net, _) in nets.items():
            for label, fn in (("F.elu", F.elu), ("elu", layers.elu)):
                with networks_elu(fn):
                    result["forward_ms"][f"{name} {label}"] = median_ms(lambda n=net, i=inputs[name]: n(*i), repeats)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="the paper's networks or a smoke test")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.repeats, args.size)
    result["size"] = args.size
    print(f"CPU capability {result['cpu_capability']}, {result['threads']} threads, median of {args.repeats}")
    for name, ms in {**result["ops_ms"], **result["forward_ms"]}.items():
        print(f"  {name:32s} {ms:10.1f} ms")
    for op, share in result["ncsn_step_share_with_F_elu"].items():
        print(f"  NCSN sampling step with F.elu: {op} {100 * share:.1f} % of the CPU time")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
