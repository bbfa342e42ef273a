"""The CLI launched as a cluster launches it: ``torchrun --nproc_per_node=2`` or two processes with SLURM's variables
(gloo on the CPU), with a DDP strategy that refuses, as NCCL does, a tensor handed to a collective off the root device.

On the CPU every tensor is on the CPU, so "off the root device" is told by how a tensor was made: one a factory
(``torch.tensor``, ``zeros``, ``from_numpy``, ...) made without a ``device`` lives on the CPU on every machine, so on
a GPU run NCCL would refuse it; ``.to(device)`` moves it (and clears the mark).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from torch.overrides import TorchFunctionMode

from ncsn_pl.system.files import atomic_write_text

ROOT = Path(__file__).parents[1]
TESTS = Path(__file__).parent
STRATEGY = '--trainer.strategy={"class_path": "cluster_runs.RootDeviceOnlyDDP"}'
TWO_CPUS = ["--trainer.accelerator=cpu", "--trainer.devices=2", STRATEGY]

_FACTORIES = {torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.empty, torch.full, torch.arange,
              torch.randn, torch.rand, torch.randint, torch.linspace}  # fmt: skip
_COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce", "reduce_scatter",
                "reduce_scatter_tensor", "gather", "scatter", "all_to_all", "send", "recv")  # fmt: skip


class _MarkHostTensors(TorchFunctionMode):
    """Mark tensors made on the host without a device; ``.to(device)`` clears the mark."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if isinstance(result, torch.Tensor):
            if (func in _FACTORIES and kwargs.get("device") is None) or func is torch.from_numpy:
                result._host_made = True
            elif func is torch.Tensor.to and (kwargs.get("device") is not None or _names_device(args[1:])):
                result._host_made = False
        return result


def _names_device(args: tuple[Any, ...]) -> bool:
    return any(isinstance(a, (torch.device, str)) or (isinstance(a, torch.Tensor)) for a in args[:1])


class RootDeviceOnlyDDP(DDPStrategy):
    """DDP that refuses, in every collective, a tensor not on the root device (NCCL's rule, checked on the CPU)."""

    def setup_environment(self) -> None:
        super().setup_environment()
        _MarkHostTensors().__enter__()  # for the life of this process
        for name in _COLLECTIVES:
            original = getattr(dist, name)
            setattr(dist, name, self._checked(name, original))

    def _checked(self, name: str, collective: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            for tensor in _tensors(args, kwargs):
                if tensor.device != self.root_device or getattr(tensor, "_host_made", False):
                    raise RuntimeError(
                        f"torch.distributed.{name} was handed a tensor made on the host (shape {tuple(tensor.shape)}), "
                        f"not on the root device {self.root_device}: NCCL refuses it."
                    )
            return collective(*args, **kwargs)

        return call


def _tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    found = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


def environment(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONPATH": path,
            "PYTHONUNBUFFERED": "1", **extra}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 -m ncsn_pl ARGS`` (one node, gloo on the CPU)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
               f"--master_port={free_port()}", "-m", "ncsn_pl", *args]  # fmt: skip
    return subprocess.run(command, env=environment(**env), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def slurm_tasks(args: list[str], **env: str) -> list[subprocess.Popen]:
    """Two tasks of one SLURM job step, as ``srun --ntasks=2`` starts them (Lightning's ``SLURMEnvironment``)."""
    port = str(free_port())
    common = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
              "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "ncsn", "SLURM_NODELIST": "127.0.0.1",
              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, **env}  # fmt: skip
    return [
        subprocess.Popen([sys.executable, "-m", "ncsn_pl", *args], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True,
                         env=environment(SLURM_PROCID=str(r), SLURM_LOCALID=str(r), **common))  # fmt: skip
        for r in range(2)
    ]


def wait_all(processes: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str]]:
    """Each process's exit status and output (all are killed if one is still running at the deadline)."""
    results = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=timeout)
            results.append((process.returncode, output))
    finally:
        for process in processes:
            process.kill()
    return results


class PoisonBatch(Callback):
    """Fill one rank's batch with NaN at one step (a corrupt file read by one process)."""

    def __init__(self, rank: int = 1, step: int = 1) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            (batch[0] if isinstance(batch, (list, tuple)) else batch).fill_(float("nan"))


class SigtermAt(Callback):
    """Send this process a SIGTERM after ``step`` optimizer steps, as a scheduler preempting the job does."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:  # noqa: ANN001, ANN002
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class SigtermOnce(Callback):
    """Send this process a SIGTERM after ``step`` optimizer steps the first time only (``marker`` records that it
    happened), as a scheduler preempts a job once: the requeued job's same command then runs to its end."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer, *args) -> None:  # noqa: ANN001, ANN002
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(f"{os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGTERM)


class AwaitSigtermOnce(Callback):
    """After ``step`` optimizer steps, the first time only (``marker`` records it): write this process's id to
    ``marker`` and wait, up to a minute, for a SIGTERM from outside, as a job runs until the scheduler stops it."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer, *args) -> None:  # noqa: ANN001, ANN002
        if trainer.global_step != self.step or self.marker.exists():
            return
        atomic_write_text(f"{os.getpid()}\n", self.marker)
        deadline = time.monotonic() + 60
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)
