"""Peak memory of the real-data statistics of FID against the size of the data set.

For each size N a fake CelebA in the real on-disk layout (``<root>/celeba/img_align_celeba/*.jpg`` of 178x218 px,
the five annotation files as wide as the real ones; N images in the train split, 2 in valid and 2 in test) is
written, then a fresh process computes the real
statistics of its train split the way ``fid`` and ``SampleQualityMonitor`` do on a cache miss
(``SampleQuality.load_or_compute_real``, CelebA's ``CenterCrop(140) -> Resize(64)``) and reports:

* ``process peak``: the whole process's peak resident set (``VmHWM``: Python, torch, the extractor, the data);
* ``section peak`` / ``added``: the peak during the statistics only, and what it added to the memory held before.

``--mode stream`` (the default) streams the split through the extractor a batch at a time
(``RealImages.shard``); ``--mode stacked`` first stacks the whole split as float32, as the code did before
(``RealImages.load``), to show what streaming removes. The extractor is the tests' tiny one (``TinyFeatures``, 4
features) or ``--extractor inception`` (the offline TF-FID Inception weights, 2048 features). The JPEGs are a pool
of 64 distinct images hard-linked N times (decoding cost and file count are those of N real files).

Examples::

    python benchmarks/real_stats_memory.py --sizes 1000 4000 16000 64000 162770
    python benchmarks/real_stats_memory.py --mode stacked --sizes 1000 4000 16000 64000
    python benchmarks/real_stats_memory.py --extractor inception --sizes 250 1000 --batch-size 16
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
POOL = 64  # distinct JPEGs, hard-linked to reach N files


def _load(name: str, path: Path) -> Any:
    """A module from a file under a name no other module has (``benchmarks/`` and ``tests/`` are not packages)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def write_celeba(root: Path, n: int, seed: int = 0) -> Path:
    """A fake CelebA with ``n`` train images (and 2 valid, 2 test: torchvision fails on a split of one)."""
    folder = root / "celeba"
    images = folder / "img_align_celeba"
    if (folder / "list_eval_partition.txt").is_file():
        return root
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, 218), np.linspace(0, 1, 178), indexing="ij")
    pool = []
    for i in range(POOL):  # a colour gradient plus noise per image, as tests/fake_datasets.py draws them
        slopes, base = rng.uniform(-1, 1, size=(3, 2)), rng.uniform(0.3, 0.7, size=3)
        pixels = base + 0.3 * (slopes[:, 0] * xx[..., None] + slopes[:, 1] * yy[..., None])
        pixels = np.clip(pixels + rng.normal(0, 0.05, size=pixels.shape), 0, 1)
        path = root / f"pool_{i:03d}.jpg"
        Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path, quality=95)
        pool.append(path)
    total = n + 4
    names = [f"{i:06d}.jpg" for i in range(1, total + 1)]
    for i, name in enumerate(names):
        os.link(pool[i % POOL], images / name)
    splits = [0] * n + [1, 1, 2, 2]
    (folder / "identity_CelebA.txt").write_text("".join(f"{a} {i + 1}\n" for i, a in enumerate(names)))
    # as wide as the real files (40 attributes): torchvision reads them whole, whatever the split
    attributes = [f"attribute_{i:02d}" for i in range(40)]
    row = " ".join(["1", "-1"] * 20)
    (folder / "list_attr_celeba.txt").write_text(
        f"{total}\n{' '.join(attributes)}\n" + "".join(f"{a} {row}\n" for a in names)
    )
    (folder / "list_bbox_celeba.txt").write_text(
        f"{total}\nimage_id x_1 y_1 width height\n" + "".join(f"{a} 95 71 226 313\n" for a in names)
    )
    marks = " ".join(f"{p}_{a}" for p in ("lefteye", "righteye", "nose", "leftmouth", "rightmouth") for a in "xy")
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{total}\n{marks}\n" + "".join(f"{a} 69 109 106 113 77 142 73 152 108 154\n" for a in names)
    )
    (folder / "list_eval_partition.txt").write_text("".join(f"{a} {s}\n" for a, s in zip(names, splits, strict=True)))
    return root


def measure(root: Path, mode: str, extractor: str, batch_size: int, image_size: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import torch
    from torchvision.datasets import CelebA

    from ncsn_pl.data import ImageDataModule
    from ncsn_pl.metrics import QualityOptions, SampleQuality, real_images

    common = _load("ncsn_pl_benchmarks_common", HERE / "common.py")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    CelebA._check_integrity = lambda self: True  # the fake files' md5 sums differ from the real ones
    cache = tempfile.mkdtemp(prefix="real_stats_cache_")  # empty: a cache miss
    if extractor == "tiny":
        tiny = _load("tiny_models", HERE.parent / "tests" / "tiny_models.py")
        options = QualityOptions(feature_extractor=tiny.TinyFeatures(), cache_dir=cache)
    else:
        options = QualityOptions(cache_dir=cache).with_resolved_weights()
    quality = SampleQuality(options)
    dm = ImageDataModule("celeba", root=str(root), image_size=image_size, num_workers=0)
    real = real_images(dm, "train")
    images = (lambda: real.shard(0, 1, batch_size)) if mode == "stream" else (lambda: real.load().split(batch_size))
    start = time.perf_counter()
    try:
        with common.PeakMemory(torch.device("cpu")) as peak:
            quality.load_or_compute_real(images, **real.cache_key())
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # the statistics were only timed
    process_peak = (common._status_kib("VmHWM") or 0) / 1024  # after the section: the process's own high-water
    return {
        "num_images": real.num_images,
        "mode": mode,
        "extractor": extractor,
        "num_features": quality.num_features,
        "batch_size": batch_size,
        "image_size": image_size,
        "section_peak_mib": round(peak.peak_mib, 1),
        "section_added_mib": round(peak.delta_mib, 1),
        "process_peak_mib": round(process_peak, 1),
        "method": peak.method,
        "seconds": round(seconds, 2),
        "images_per_s": round(real.num_images / seconds, 1),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--mode", choices=("stream", "stacked"), default="stream")
    parser.add_argument("--extractor", choices=("tiny", "inception"), default="tiny")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workdir", default=None, help="where the fake data sets go (default: a temp folder)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one data set
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(Path(args.one), args.mode, args.extractor, args.batch_size, args.image_size)))
        return {}

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="real_stats_memory_"))
    print(f"real statistics of fake CelebA (train split, {args.image_size} px), mode={args.mode}, "
          f"extractor={args.extractor}, batch {args.batch_size}; data in {workdir}")
    print(f"{'images':>8} {'process peak MiB':>17} {'section peak MiB':>17} {'added MiB':>10} {'images/s':>9}")
    rows = []
    for n in args.sizes:
        root = write_celeba(workdir / f"celeba_{n}", n)
        command = [sys.executable, __file__, "--one", str(root), "--mode", args.mode, "--extractor", args.extractor,
                   "--batch-size", str(args.batch_size), "--image-size", str(args.image_size)]  # fmt: skip
        # the child measures this checkout's ncsn_pl, whichever copy is installed
        path = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            raise SystemExit(f"the measurement of {n} images failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['num_images']:>8} {row['process_peak_mib']:>17.1f} {row['section_peak_mib']:>17.1f} "
              f"{row['section_added_mib']:>10.1f} {row['images_per_s']:>9.1f}")
    result = {"argv": vars(args), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
