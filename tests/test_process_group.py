"""Each process destroys its default process group at exit, before the interpreter's finalisation (a gloo group
left to finalisation can abort a rank that finished its work: SIGABRT, "terminate called without an active
exception"; tests/test_sample_quality.py's ddp_spawn test failed that way in about half of its runs)."""

import socket

import torch.distributed as dist

from ncsn_pl.training import process_group


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_group_is_destroyed_by_one_exit_handler_registered_once(monkeypatch):
    handlers = []
    monkeypatch.setattr(process_group.atexit, "register", handlers.append)
    monkeypatch.setattr(process_group.atexit, "unregister", lambda f: handlers.remove(f) if f in handlers else None)
    process_group.destroy_process_group_at_exit()  # no group yet: nothing to register
    assert handlers == []
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        process_group.destroy_process_group_at_exit()
        process_group.destroy_process_group_at_exit()  # every setup of the process calls it
        assert len(handlers) == 1
        handlers[0]()
        assert not dist.is_initialized()
        handlers[0]()  # the group already destroyed (by Lightning or the user): nothing to do
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
