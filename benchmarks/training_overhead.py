"""Overhead of the Lightning fit loop over a bare PyTorch loop (target: under 3 %).

Both loops train the same NCSN v1 network (same initial weights) on the same in-memory images, with the same
DataLoader (batch size, shuffling), the same per-sample DSM loss (``ncsn_pl.losses.dsm_loss``, batch mean) and
Adam (lr 1e-3):

* ``lightning``: ``Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, ...).fit`` of our
  ``ScoreModel`` (its seeded per-step noise, finiteness check and ``self.log`` included: that is the framework);
* ``bare``: ``for x in loader: zero_grad; dsm_loss(net, x, sigmas).mean().backward(); step``.

Each repeat runs ``warmup + steps`` steps of each loop; the timed window is the last ``steps`` steps (the device is
synchronised at both ends), so ``Trainer`` construction and ``fit`` start-up are excluded from the throughput and
reported on their own. The order of the two loops alternates between repeats; the overhead is the median over
repeats of ``t_lightning / t_bare - 1`` within a repeat, and images/s are ``batch * steps / median time``. Peak
memory is measured per loop (see ``benchmarks/common.py``); the smallest value over repeats is reported, so one-off
costs of a first call (lazy initialisation, compilation) do not count.

Options that change speed apply to both loops: ``--channels-last`` (network and batches), ``--bf16`` (autocast
to bfloat16: ``precision="bf16-mixed"`` for Lightning, ``torch.autocast`` for the bare loop), ``--compile``
(``torch.compile`` of the network). ``--size tiny`` is a smoke test (seconds on a CPU).

Examples::

    python benchmarks/training_overhead.py                                 # MNIST size, CUDA if available
    python benchmarks/training_overhead.py --config digits --device cpu    # the quickstart network on a CPU
    python benchmarks/training_overhead.py --config cifar10 --device cuda --bf16 --channels-last --compile
    python benchmarks/training_overhead.py --size tiny --json out.json        # digits shape, ngf 8, batch 4
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from ncsn_pl.core.losses import dsm_loss
from ncsn_pl.core.sigmas import geometric_sigmas
from ncsn_pl.networks import NCSN
from ncsn_pl.training import ScoreModel

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package: common.py by folder
from common import PeakMemory, environment, median, resolve_device, synchronize  # noqa: E402

CONFIGS = {"digits": (1, 8, 32), "mnist": (1, 28, 64), "cifar10": (3, 32, 128)}  # channels, image size, ngf
SIZES = {
    # ngf override (None: the config's), batch, timed steps, warm-up steps, repeats
    "full": (None, 128, 30, 5, 5),
    "tiny": (8, 4, 3, 1, 2),
}
SIGMA_MAX, SIGMA_MIN, NUM_SCALES, LR = 1.0, 0.01, 10, 1e-3


class InMemoryImages(pl.LightningDataModule):
    """Uniform random images held in one tensor; one epoch is exactly ``num_batches`` batches.

    Args:
        shape: the shape of one image ``(C, H, W)``.
        batch_size: the batch size.
        num_batches: batches per epoch.
        channels_last: convert each batch to ``channels_last`` after it reaches the device.
        seed: seeds the images and the shuffling (every epoch of every loader shuffles the same way).
    """

    def __init__(self, shape: Sequence[int], batch_size: int, num_batches: int, channels_last: bool = False,
                 seed: int = 0) -> None:
        super().__init__()
        self.images = torch.rand(batch_size * num_batches, *shape, generator=torch.Generator().manual_seed(seed))
        self.batch_size = batch_size
        self.channels_last = channels_last
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.images, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(self.seed))

    def on_after_batch_transfer(self, batch: torch.Tensor, dataloader_idx: int) -> torch.Tensor:
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch


class _WindowTimer(pl.Callback):
    """Wall-clock times of the fit: its start-up and the window of batches ``first .. last``."""

    def __init__(self, first: int, last: int, device: torch.device) -> None:
        self.first, self.last, self.device = first, last, device
        self.first_batch = self.start = self.end = float("nan")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == 0:
            self.first_batch = time.perf_counter()
        if batch_idx == self.first:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx == self.last:
            synchronize(self.device)
            self.end = time.perf_counter()


def run_lightning(model: ScoreModel, data: InMemoryImages, device: torch.device, warmup: int, steps: int,
                  bf16: bool) -> tuple[float, float]:
    """One ``Trainer.fit`` of ``warmup + steps`` steps; returns (time of the last ``steps`` steps, start-up time)."""
    timer = _WindowTimer(warmup, warmup + steps - 1, device)
    trainer = pl.Trainer(
        accelerator=device.type,
        devices=[device.index or 0] if device.type == "cuda" else 1,
        max_steps=warmup + steps,
        max_epochs=1,
        precision="bf16-mixed" if bf16 else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    called = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer.fit(model, datamodule=data)
    if trainer.global_step != warmup + steps:
        raise RuntimeError(f"Lightning ran {trainer.global_step} steps instead of {warmup + steps}.")
    return timer.end - timer.start, timer.first_batch - called


def run_bare(net: torch.nn.Module, data: InMemoryImages, sigmas: torch.Tensor, device: torch.device, warmup: int,
             steps: int, bf16: bool) -> float:
    """The same training in a plain loop; returns the time of the last ``steps`` steps."""
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    last = warmup + steps - 1
    start = end = float("nan")
    net.train()
    for i, batch in enumerate(data.train_dataloader()):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        x = data.on_after_batch_transfer(batch.to(device), 0)
        # DSM loss at random levels, then one Adam step
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = dsm_loss(net, x, sigmas).mean()
        loss.backward()
        optimizer.step()
        if i == last:
            synchronize(device)
            end = time.perf_counter()
            break
    return end - start


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Build the network, the data and both loops; time them alternately."""
    device = resolve_device(args.device)
    channels, image_size, ngf = CONFIGS[args.config]
    ngf_override, batch, steps, warmup, repeats = SIZES[args.size]
    ngf = ngf_override or ngf
    batch = args.batch or batch
    steps = args.steps or steps
    warmup = args.warmup if args.warmup is not None else warmup
    repeats = args.repeats or repeats
    if steps < 1 or warmup < 0 or repeats < 1 or batch < 1:
        raise SystemExit("--steps, --repeats and --batch must be >= 1 and --warmup >= 0.")
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

    torch.manual_seed(0)
    net_lightning = NCSN(channels=channels, ngf=ngf, num_scales=NUM_SCALES)
    net_bare = copy.deepcopy(net_lightning)
    nets = []
    for net in (net_lightning, net_bare):
        net = net.to(device=device, memory_format=memory_format)
        nets.append(torch.compile(net) if args.compile else net)
    net_lightning, net_bare = nets
    model = ScoreModel(net_lightning, sigma_max=SIGMA_MAX, sigma_min=SIGMA_MIN, num_scales=NUM_SCALES, lr=LR,
                       data_shape=(channels, image_size, image_size), channels_last=args.channels_last)
    sigmas = geometric_sigmas(SIGMA_MAX, SIGMA_MIN, NUM_SCALES).to(device)
    data = InMemoryImages((channels, image_size, image_size), batch, warmup + steps, args.channels_last)

    times: dict[str, list[float]] = {"lightning": [], "bare": []}
    memory: dict[str, list[PeakMemory]] = {"lightning": [], "bare": []}
    startup: list[float] = []
    for repeat in range(repeats):
        order = ("lightning", "bare") if repeat % 2 == 0 else ("bare", "lightning")
        for loop in order:
            with PeakMemory(device) as peak:
                if loop == "lightning":
                    elapsed, start_up = run_lightning(model, data, device, warmup, steps, args.bf16)
                    startup.append(start_up)
                else:
                    elapsed = run_bare(net_bare, data, sigmas, device, warmup, steps, args.bf16)
            times[loop].append(elapsed)
            memory[loop].append(peak)

    ratios = [t_l / t_b for t_l, t_b in zip(times["lightning"], times["bare"], strict=True)]
    loops = {}
    for loop in ("bare", "lightning"):
        t = median(times[loop])
        steady = min(memory[loop], key=lambda p: p.peak_mib)
        loops[loop] = {
            "times_s": times[loop],
            "median_s": t,
            "seconds_per_step": t / steps,
            "images_per_s": batch * steps / t,
            "peak_mib": steady.peak_mib,
            "delta_mib": min(p.delta_mib for p in memory[loop]),
            "memory_method": steady.method,
        }
    return {
        "environment": environment(device),
        "lightning_version": pl.__version__,
        "config": args.config,
        "shape": [channels, image_size, image_size],
        "ngf": ngf,
        "params": sum(p.numel() for p in net_bare.parameters()),
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
        "repeats": repeats,
        "options": {"channels_last": args.channels_last, "bf16": args.bf16, "compile": args.compile},
        "loops": loops,
        "ratios": ratios,
        "overhead": median(ratios) - 1,
        "fit_startup_s": median(startup),
    }


def report(result: dict[str, Any]) -> str:
    """The printed summary (one line per loop; the smoke test parses it)."""
    env, opts = result["environment"], result["options"]
    c, h, w = result["shape"]
    lines = [
        f"training overhead: torch {env['torch']}, lightning {result['lightning_version']}, device {env['device']}"
        + (f" ({env['gpu']})" if "gpu" in env else f" ({env['threads']} threads)"),
        f"config {result['config']} ({c}x{h}x{w}, NCSN ngf {result['ngf']}, {result['params']:,} parameters), "
        f"batch {result['batch']}, {result['steps']} timed steps after {result['warmup']} warm-up, "
        f"{result['repeats']} repeats, channels_last={opts['channels_last']} bf16={opts['bf16']} "
        f"compile={opts['compile']}",
        f"{'loop':10} {'images/s':>10} {'s/step':>10} {'peak MiB':>10} {'+MiB':>8}",
    ]
    for name in ("bare", "lightning"):
        r = result["loops"][name]
        lines.append(f"{name:10} {r['images_per_s']:>10.2f} {r['seconds_per_step']:>10.5f} {r['peak_mib']:>10.1f} "
                     f"{r['delta_mib']:>8.1f}")
    ratio = 1 + result["overhead"]
    lines.append(f"overhead: {100 * result['overhead']:+.2f}% (median of {result['repeats']} paired repeats; "
                 f"lightning/bare time {ratio:.4f}; target < 3%)")
    lines.append(f"lightning fit start-up: {result['fit_startup_s']:.3f} s (fit() call to the first batch; "
                 f"not in the throughput)")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="full or a tiny smoke test")
    parser.add_argument("--config", choices=sorted(CONFIGS), default=None,
                        help="image shape and NCSN width: digits 1x8x8 ngf 32, mnist 1x28x28 ngf 64, "
                        "cifar10 3x32x32 ngf 128 (default: mnist; tiny: digits)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last network and batches")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (Lightning: precision='bf16-mixed')")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 128; tiny: 4)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per loop and repeat")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=None, help="repeats (the loop order alternates)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.config is None:
        args.config = "digits" if args.size == "tiny" else "mnist"
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the summary and return the results."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    if args.threads:
        torch.set_num_threads(args.threads)
    lightning_log.setLevel(logging.WARNING)
    try:
        result = benchmark(args)
    finally:
        torch.set_num_threads(threads)
        lightning_log.setLevel(level)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": vars(args), **result}, indent=2))
    return result


if __name__ == "__main__":
    main()
