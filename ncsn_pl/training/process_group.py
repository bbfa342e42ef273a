"""Destroy the default process group while the interpreter is still whole, at the process's exit.

Lightning leaves the group to the end of the process. Gloo's worker threads may then still hold finished work
with tensors, whose release during the interpreter's finalisation aborts the process ("terminate called without
an active exception", SIGABRT): a rank that did all its work exits with a failure, and ``ddp_spawn``, torchrun or
the scheduler report the run as failed (pytorch/pytorch#190489). An ``atexit`` handler runs before finalisation.
"""

from __future__ import annotations

import atexit

import torch.distributed as dist

__all__ = ["destroy_process_group_at_exit"]


def destroy_process_group_at_exit() -> None:
    """When a default process group exists: destroy it at exit (if it still exists then), by one handler however
    often this is called."""
    if dist.is_available() and dist.is_initialized():
        atexit.unregister(_destroy)
        atexit.register(_destroy)


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
