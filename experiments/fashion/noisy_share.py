"""Share of a sample set that is noisier than every real image: the samples whose total variation (mean absolute
difference of neighbouring pixels, values clamped to [0, 1]) exceeds the largest of the first 1,000 test images.
A sampler that leaves part of its samples unconverged shows here before it shows in FID or class entropy. The
measure is ncsn_pl.metrics.noisy_share's, which the `sample` and `fid` commands report as `noisy_share`.

    python experiments/fashion/noisy_share.py experiments/fashion/samplers/points/*_samples
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ncsn_pl.metrics.noisy_share import NoiseReference, NoisyShare, total_variation

try:  # run as a script (experiments/fashion on sys.path)
    from classifier import split_data
    from coverage import load_samples
except ImportError:  # pragma: no cover - loaded through importlib from another folder
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from classifier import split_data
    from coverage import load_samples


__all__ = ["main", "total_variation"]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("samples", nargs="+", help="sample folders (or .npz / .pt files) of the fid or sample command")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--num-real", type=int, default=1000)
    parser.add_argument("--root", default="data")
    args = parser.parse_args(argv)
    real = split_data(args.root, args.image_size, "val")[0][: args.num_real]
    reference = NoiseReference(float(total_variation(real).max()), "val", real.shape[0], tuple(real.shape[1:]))
    shares = {}
    for where in args.samples:
        counter = NoisyShare(reference)
        counter.update(load_samples(where))
        shares[where] = NoisyShare.share(counter.counts())
        print(f"{shares[where]:6.1%}  {where}")
    return shares


if __name__ == "__main__":
    main()
