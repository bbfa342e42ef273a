"""One GPU benchmark: training and sampling speed of ncsn-pl against the official code in the same process.

In one run (under 8 minutes on one GPU at ``--size full``), for NCSN v1 on MNIST (ngf 64, L = 10) and NCSNv2 on
CIFAR-10 (ngf 128, L = 232):

* ``train``: training steps per second at batch 128 (the DSM loss with random levels and noise, backward, Adam) of
  ncsn-pl's network eager, compiled (``model.compile``: ``Module.compile(fullgraph=True)``) and under bf16
  autocast (``bf16-mixed``), and of the official network (ermongroup/ncsn ``CondRefineNetDilated``,
  ermongroup/ncsnv2 ``NCSNv2``) eager, with the official step (``anneal_dsm_score_estimation``'s formula);
* ``sample``: annealed Langevin network evaluations per second at batch 1,000: ncsn-pl's seeded sampler
  (per-sample counter-based noise, as ``sample`` / ``fid`` draw) eager, compiled and bf16, and the official
  ``anneal_Langevin_dynamics`` loop (``torch.randn_like``) with the official network;
* ``fid``: Inception feature throughput of the FID path (``SampleQuality.update_fake``, images/s); the official
  code computes FID with TensorFlow, so there is no PyTorch step to compare with;
* the peak memory of each (``torch.cuda.max_memory_allocated``; the resident set on the CPU);
* ``noise_same_bits``: whether the per-sample noise of ``sample`` / ``fid`` (``PerSampleNoise``) draws the same bits
  on the device as on the CPU (normals and uniforms, float32 and float64, a batch split differently on each).

The official code is read from ``--official`` (``<dir>/ncsn`` and ``<dir>/ncsnv2``, clones of the two
repositories; ``benchmarks/official/`` is git-ignored): ``git clone https://github.com/ermongroup/ncsn
benchmarks/official/ncsn`` and the same for ``ncsnv2``. Without them the official rows are skipped.
``--size tiny`` (ngf 4, 16x16 images, batch 2, a few steps) is a smoke test; with ``--no-compile`` it takes about
a minute on a CPU (inductor compiles NCSN for minutes there, whatever its width). ``--size cpu`` runs the paper's
networks at training batch 16 and sampling batch 100, two timed steps each, for the same ratios on a CPU
(``--no-bf16`` there: a CPU without bf16 arithmetic only adds conversions).

Examples::

    python benchmarks/gpu.py --json gpu.json                      # on a GPU
    python benchmarks/gpu.py --device cpu --size tiny --no-compile     # smoke test
    python benchmarks/gpu.py --device cpu --size cpu --no-bf16 --threads 2 --configs mnist_ncsn  # CPU ratios
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import json
import sys
import time
import types
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ncsn_pl.core.losses import dsm_loss
from ncsn_pl.core.samplers import AnnealedLangevin, RangeWatch, seeded_sample
from ncsn_pl.core.seeding import PerSampleNoise, sample_seeds
from ncsn_pl.core.sigmas import geometric_sigmas
from ncsn_pl.networks import NCSN, NCSNv2

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package: common.py by folder
from common import PeakMemory, environment, resolve_device, time_call  # noqa: E402

# name: (network, channels, image size, ngf, L, sigma_max, sigma_min)
CONFIGS = {
    "mnist_ncsn": ("ncsn", 1, 28, 64, 10, 1.0, 0.01),
    "cifar10_ncsnv2": ("ncsnv2", 3, 32, 128, 232, 50.0, 0.01),
}
# train batch, train steps timed, sample batch, sampler steps timed, FID images, image size, ngf, warm-up calls
SIZES = {
    "full": (128, 20, 1000, 10, 1000, None, None, 3),
    "cpu": (16, 2, 100, 2, 32, None, None, 1),  # the paper's networks at batches a 2-core CPU times in minutes
    "tiny": (2, 2, 2, 2, 2, 16, 4, 1),
}
OFFICIAL_DEFAULT = Path(__file__).resolve().parent / "official"


def load_official(root: Path, repo: str) -> types.ModuleType | None:
    """The ``models`` package of an official repository clone ``root/repo`` under a name of its own, or None."""
    folder = root / repo / "models"
    if not (folder / "__init__.py").is_file():
        return None
    name = f"official_{repo}_models"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def official_network(
    root: Path, kind: str, channels: int, size: int, ngf: int, sigmas: torch.Tensor
) -> torch.nn.Module | None:
    """The official network with the paper's settings, or None without a clone."""
    config = types.SimpleNamespace(
        data=types.SimpleNamespace(channels=channels, image_size=size, logit_transform=False, rescaled=False),
        model=types.SimpleNamespace(ngf=ngf, num_classes=len(sigmas), sigma_begin=float(sigmas[0]),
                                    sigma_end=float(sigmas[-1]), sigma_dist="geometric",
                                    normalization="InstanceNorm++", nonlinearity="elu"),
        device=sigmas.device,
    )  # fmt: skip
    if kind == "ncsn":
        models = load_official(root, "ncsn")
        if models is None:
            return None
        module = importlib.import_module(f"{models.__name__}.cond_refinenet_dilated")
        return module.CondRefineNetDilated(config)
    models = load_official(root, "ncsnv2")
    if models is None:
        return None
    module = importlib.import_module(f"{models.__name__}.ncsnv2")
    return module.NCSNv2(config)


def official_loss(net: torch.nn.Module, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The official training loss (ermongroup/ncsn ``anneal_dsm_score_estimation``, anneal_power 2)."""
    labels = torch.randint(0, len(sigmas), (x.shape[0],), device=x.device)
    used = sigmas[labels].view(x.shape[0], *([1] * len(x.shape[1:])))
    perturbed = x + torch.randn_like(x) * used
    target = -1 / (used**2) * (perturbed - x)
    scores = net(perturbed, labels)
    return (1 / 2.0 * ((scores - target) ** 2).sum(dim=(1, 2, 3)) * used.squeeze() ** 2).mean()


def official_sampling(net: torch.nn.Module, x: torch.Tensor, sigmas: torch.Tensor, steps: int, step_lr: float) -> None:
    """The official ``anneal_Langevin_dynamics`` loop (ermongroup/ncsn), ``steps`` updates at the first level."""
    labels = torch.ones(x.shape[0], device=x.device).long() * 0
    step_size = step_lr * (sigmas[0] / sigmas[-1]) ** 2
    for _ in range(steps):
        noise = torch.randn_like(x) * torch.sqrt(step_size * 2)
        x = x + step_size * net(x, labels) + noise


def timed_rate(fn: Callable[[], Any], count: int, warmup: int, device: torch.device) -> dict[str, float]:
    """``count`` per second of ``fn()`` after ``warmup`` calls (compilation), and its peak memory in MiB."""
    for _ in range(warmup):
        fn()
    with PeakMemory(device) as peak:
        seconds = time_call(fn, device)
    return {"per_second": count / seconds, "seconds": seconds, "peak_mib": peak.peak_mib}


def benchmark_config(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The training and sampling rates of one configuration, ncsn-pl's and the official code's."""
    train_batch, train_steps, sample_batch, sample_steps, _, size_override, ngf_override, warmup = SIZES[args.size]
    kind, channels, size, ngf, num_scales, sigma_max, sigma_min = CONFIGS[name]
    size, ngf = size_override or size, ngf_override or ngf
    torch.manual_seed(0)
    sigmas = geometric_sigmas(sigma_max, sigma_min, num_scales).to(device)
    net = NCSN(channels, ngf, num_scales) if kind == "ncsn" else NCSNv2(channels, ngf)
    net.set_sigmas(sigmas)
    net = net.to(device=device, memory_format=torch.channels_last)
    compiled = copy.deepcopy(net)
    compiled.compile(fullgraph=True)
    official = official_network(Path(args.official), kind, channels, size, ngf, sigmas)
    official = official.to(device) if official is not None else None
    x = torch.rand(train_batch, channels, size, size, device=device)
    row: dict[str, Any] = {"network": kind, "ngf": ngf, "image_size": size, "num_scales": num_scales}

    # training steps
    def train_step(model: torch.nn.Module, bf16: bool = False, loss_fn: Callable | None = None) -> Callable[[], None]:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

        def step() -> None:
            for _ in range(train_steps):
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    loss = loss_fn(model, x, sigmas) if loss_fn else dsm_loss(model, x, sigmas).mean()
                loss.backward()
                optimizer.step()

        return step

    trains = {"eager": train_step(net), "compiled": train_step(compiled), "bf16": train_step(net, bf16=True)}
    skipped = [kind for kind, wanted in (("compiled", args.compile), ("bf16", args.bf16)) if not wanted]
    for kind in skipped:
        del trains[kind]
    if official is not None:
        trains["official"] = train_step(official, loss_fn=official_loss)
    row["train_steps_per_second"] = {k: timed_rate(fn, train_steps, warmup, device) for k, fn in trains.items()}

    # sampling at batch sample_batch: network evaluations per second
    sampler, seeds = AnnealedLangevin(sample_steps, 2e-5), list(range(sample_batch))
    one_level = sigmas[:1]
    unread = RangeWatch((0.0, 1.0), device)  # random weights sample garbage: not worth a warning here

    def ours(model: torch.nn.Module, bf16: bool = False) -> Callable[[], None]:
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

        def draw() -> None:
            with torch.no_grad(), autocast:
                seeded_sample(sampler, model, one_level, (channels, size, size), seeds, range_watch=unread)

        return draw

    samplers = {"eager": ours(net.eval()), "compiled": ours(compiled.eval()), "bf16": ours(net, bf16=True)}
    for kind in skipped:
        del samplers[kind]
    if official is not None:
        official.eval()
        x0 = torch.rand(sample_batch, channels, size, size, device=device)

        def theirs() -> None:
            with torch.no_grad():
                official_sampling(official, x0, sigmas, sample_steps, 2e-5)

        samplers["official"] = theirs
    row["sampler_nfe_per_second"] = {k: timed_rate(fn, sample_steps, warmup, device) for k, fn in samplers.items()}
    for table in ("train_steps_per_second", "sampler_nfe_per_second"):
        rates = row[table]
        if "official" in rates:
            row[table.replace("per_second", "vs_official")] = {
                k: v["per_second"] / rates["official"]["per_second"] for k, v in rates.items() if k != "official"
            }
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fid_images = SIZES[args.size][4]
    result: dict[str, Any] = {"environment": environment(device), "size": args.size, "configs": {}}
    for name in args.configs:
        result["configs"][name] = benchmark_config(name, args, device)
    result["fid_images_per_second"] = fid_throughput(device, fid_images, args.size) if args.fid else None
    result["noise_same_bits"] = noise_same_bits(device, torch.device("cpu"))
    return result


def noise_same_bits(device: torch.device, reference: torch.device, num_samples: int = 64) -> dict[str, bool]:
    """For each kind of draw, whether ``PerSampleNoise`` gives the same bits on ``device`` as on ``reference``: all
    ``num_samples`` rows at once on one, in two uneven batches on the other, three draws in a row (``t`` = 0, 1, 2)."""
    seeds = sample_seeds(12345, range(num_samples))
    split = num_samples // 3
    shape = (3, 32, 32)
    out = {}
    for draw, dtype in (("randn", torch.float32), ("randn", torch.float64), ("rand", torch.float32)):
        whole = PerSampleNoise(seeds, device)
        parts = [PerSampleNoise(seeds[:split], reference), PerSampleNoise(seeds[split:], reference)]
        same = True
        for _ in range(3):
            a = getattr(whole, draw)((num_samples, *shape), dtype=dtype).cpu()
            b = torch.cat([getattr(p, draw)((len(p), *shape), dtype=dtype) for p in parts])
            same &= bool(torch.equal(a, b))
        out[f"{draw}_{str(dtype).removeprefix('torch.')}"] = same
    return out


def fid_throughput(device: torch.device, images: int, size: str) -> dict[str, float] | None:
    """Images per second of ``SampleQuality.update_fake`` (quantise, resize to 299, Inception-v3, update)."""
    from ncsn_pl.metrics import QualityOptions, SampleQuality

    try:
        quality = SampleQuality(QualityOptions(fid=True), device=device)
    except (FileNotFoundError, ValueError, RuntimeError) as err:  # no offline Inception weights here
        print(f"fid: skipped ({err})")
        return None
    batch = 2 if size == "tiny" else 250
    fake = torch.rand(batch, 3, 32, 32, device=device)
    quality.update_fake(fake)  # warm-up
    return timed_rate(lambda: [quality.update_fake(fake) for _ in range(max(1, images // batch))],
                      max(1, images // batch) * batch, 0, device)  # fmt: skip


def report(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [f"{env.get('gpu', env['cpu'])}, torch {env['torch']}, size {result['size']}"]
    for name, row in result["configs"].items():
        lines.append(f"{name} (ngf {row['ngf']}, {row['image_size']} px, L={row['num_scales']}):")
        for table, unit in (("train_steps_per_second", "train steps/s"), ("sampler_nfe_per_second", "sampler NFE/s")):
            ratios = row.get(table.replace("per_second", "vs_official"), {})
            for kind, rate in row[table].items():
                ratio = f"  {ratios[kind]:.2f}x official" if kind in ratios else ""
                lines.append(
                    f"  {unit:14s} {kind:9s} {rate['per_second']:10.3f}  peak {rate['peak_mib']:9.1f} MiB{ratio}"
                )
    same = result.get("noise_same_bits") or {}
    lines.append("per-sample noise, same bits as on the CPU: " + ", ".join(f"{k} {v}" for k, v in same.items()))
    fid = result["fid_images_per_second"]
    if fid is not None:
        lines.append(f"FID features: {fid['per_second']:.1f} images/s, peak {fid['peak_mib']:.1f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS))
    parser.add_argument("--official", default=str(OFFICIAL_DEFAULT), help="folder with clones ncsn/ and ncsnv2/")
    parser.add_argument("--no-fid", dest="fid", action="store_false", help="skip the FID feature throughput")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled rows")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the bf16-mixed rows")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = run(args)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(report(result))
    print(f"({result['wall_seconds']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
