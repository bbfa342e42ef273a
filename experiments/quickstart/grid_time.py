"""CPU and wall-clock time of the quickstart's final grid (64 samples of 8x8, NCSN ngf 32, L = 10) with the new
sampler (T = 10, Technique 4, denoised: 101 NFE) and the old one (T = 100, step_lr 2e-5: 1,000 NFE). The cost does
not depend on the weights, so an untrained network times it.

    python experiments/quickstart/grid_time.py [--threads 1] [--only-new]
"""

from __future__ import annotations

import argparse
import time

import torch

from ncsn_pl.core.samplers import AnnealedLangevin
from ncsn_pl.core.sigmas import geometric_sigmas
from ncsn_pl.networks import NCSN


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only-new", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    net = NCSN(channels=1, ngf=32, num_scales=10).eval()
    sigmas = geometric_sigmas(1.0, 0.01, 10)
    samplers = {"new T=10 denoise": AnnealedLangevin(10, 1.907e-5, True), "old T=100": AnnealedLangevin(100, 2e-5)}
    for name, sampler in list(samplers.items())[: 1 if args.only_new else 2]:
        x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        cpu, wall = time.process_time(), time.perf_counter()
        with torch.no_grad():
            sampler.sample(net, x, sigmas)
        print(f"{name}: NFE {sampler.nfe(10)}, CPU {time.process_time() - cpu:.2f} s, "
              f"wall {time.perf_counter() - wall:.2f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
