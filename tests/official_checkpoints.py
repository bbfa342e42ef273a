"""Small checkpoints in the official formats (ermongroup/ncsn, ermongroup/ncsnv2) with their configs, written in the
tests; and a byte flipped inside a tensor's storage of any torch file."""

import argparse
from pathlib import Path

import torch
import yaml
from networks_reference import with_sigmas

from ncsn_pl.networks import NCSN, NCSNv2


def _prefixed(state: dict) -> dict:
    return {f"module.{k}": v.clone() for k, v in state.items()}


def adam_state(net: torch.nn.Module) -> dict:
    """The Adam state after one step, as the runners save it (the network's weights change)."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.rand(2, net.channels, 8, 8), torch.tensor([0, 1])).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    return optimizer.state_dict()


def write_v1(folder: Path, with_optimizer: bool = False) -> tuple[Path, NCSN]:
    """``run/logs/<doc>/checkpoint.pth`` ([state_dict, optimizer], ``module.`` keys) and the anneal.yml it ran."""
    torch.manual_seed(0)
    net = NCSN(channels=1, ngf=4, num_scales=10)
    optimizer = adam_state(net) if with_optimizer else {"state": {}, "param_groups": []}
    folder.mkdir(parents=True)
    torch.save([_prefixed(net.state_dict()), optimizer], folder / "checkpoint.pth")
    config = {
        "training": {"batch_size": 128, "n_iters": 200001, "snapshot_freq": 5000, "algo": "dsm", "anneal_power": 2.0},
        "data": {"dataset": "MNIST", "image_size": 8, "channels": 1, "logit_transform": False, "random_flip": False},
        "model": {"sigma_begin": 1, "sigma_end": 0.01, "num_classes": 10, "batch_norm": False, "ngf": 4},
        "optim": {"weight_decay": 0.0, "optimizer": "Adam", "lr": 0.001, "beta1": 0.9, "amsgrad": False},
    }
    (folder / "anneal.yml").write_text(yaml.safe_dump(config))
    return folder / "checkpoint.pth", net


def write_v2(
    folder: Path, ngf: int = 4, image_size: int = 8, dataset: str = "CELEBA", with_optimizer: bool = False
) -> tuple[Path, dict]:
    """``exp/logs/<doc>/checkpoint_5000.pth`` ([state_dict, optimizer, epoch, step, ema shadow]) and the
    ``config.yml`` the runner dumps (an ``argparse.Namespace``, as ``yaml.dump`` writes it).

    Returns:
        The checkpoint, and the network's state with the EMA weights in place of the raw ones.
    """
    torch.manual_seed(0)
    net = with_sigmas(NCSNv2(channels=3, ngf=ngf), 3.0, 0.01, 6)
    optimizer = adam_state(net) if with_optimizer else {}
    shadow = {n: p.detach() * 0.9 for n, p in net.named_parameters()}  # the EMA weights differ from the raw ones
    folder.mkdir(parents=True)
    torch.save([_prefixed(net.state_dict()), optimizer, 2, 5000, shadow], folder / "checkpoint_5000.pth")

    def namespace(d: dict) -> argparse.Namespace:
        return argparse.Namespace(**{k: namespace(v) if isinstance(v, dict) else v for k, v in d.items()})

    config = {
        "training": {"batch_size": 128, "n_iters": 300001, "anneal_power": 2},
        "sampling": {"batch_size": 100, "data_init": False, "step_lr": 1e-4, "n_steps_each": 2, "denoise": True,
                     "final_only": True},  # fmt: skip
        "data": {"dataset": dataset, "image_size": image_size, "channels": 3, "logit_transform": False,
                 "uniform_dequantization": False, "random_flip": True, "rescaled": False},  # fmt: skip
        "model": {"sigma_begin": 3, "num_classes": 6, "ema": True, "ema_rate": 0.999, "spec_norm": False,
                  "sigma_dist": "geometric", "sigma_end": 0.01, "normalization": "InstanceNorm++",
                  "nonlinearity": "elu", "ngf": ngf},  # fmt: skip
        "optim": {"weight_decay": 0.0, "optimizer": "Adam", "lr": 0.0001, "beta1": 0.9, "amsgrad": False,
                  "eps": 1e-8},  # fmt: skip
    }
    (folder / "config.yml").write_text(yaml.dump(namespace(config), default_flow_style=False))
    state = {**net.state_dict(), **shadow}
    return folder / "checkpoint_5000.pth", state


def flip_tensor_byte(path: Path) -> Path:
    """Flip one byte in the middle of the largest tensor storage of the torch file at ``path`` (in place), as a
    bad disk or copy would; the zip's structure and records stay intact."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        part = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    header = part.header_offset
    start = header + 30 + int.from_bytes(data[header + 26 : header + 28], "little") + int.from_bytes(
        data[header + 28 : header + 30], "little")  # fmt: skip
    data[start + part.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    return path
