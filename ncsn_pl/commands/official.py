"""The released NCSN and NCSNv2 checkpoints in ``sample`` and ``fid``: ``--official_ckpt FILE.pth`` with its config.

Where the files come from (both released on Google Drive, linked from the READMEs):

* NCSN (ermongroup/ncsn, "Checkpoints": ``run.zip``): ``run/logs/<doc>/checkpoint.pth`` (a list
  ``[state_dict, optimizer]``, keys prefixed ``module.``) beside the ``config.yml`` the run saved
  (``configs/anneal.yml`` edited for the data set: MNIST, CIFAR10 or CELEBA). Sampled as
  ``runners/anneal_runner.py`` ``test()`` does: annealed Langevin with T = 100, step_lr = 2e-5, no denoising.
* NCSNv2 (ermongroup/ncsnv2, "Pretrained Checkpoints"): ``exp/logs/<doc>/checkpoint_<step>.pth`` (a list
  ``[state_dict, optimizer, epoch, step, ema_shadow]``) beside its ``config.yml``; the network follows the data set as
  in ``runners/ncsn_runner.py`` ``get_model`` (CIFAR10, CELEBA: NCSNv2; LSUN: NCSNv2Deeper; FFHQ: NCSNv2Deepest), the
  sampler the config's ``sampling`` group (``n_steps_each``, ``step_lr``, ``denoise``), with the EMA weights.

A config is read as plain YAML (``configs/*.yml``) or as the ``config.yml`` the runners dump, whose top level is
tagged ``!!python/object:argparse.Namespace`` (read as a mapping here; nothing is executed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from ncsn_pl.networks.base import check_trained_shape
from ncsn_pl.networks.official import load_official_checkpoint
from ncsn_pl.system.files import read_torch_file

__all__ = [
    "has_ema_weights",
    "load_official_model",
    "load_official_weights",
    "official_command_args",
    "official_data_shape",
    "official_training_settings",
    "read_official_checkpoint",
    "read_official_config",
    "recorded_step",
]

# runners/ncsn_runner.py get_model (v2); v1 has one network, CondRefineNetDilated (our NCSN)
V2_NETWORKS = {"CIFAR10": "NCSNv2", "CELEBA": "NCSNv2", "LSUN": "NCSNv2Deeper", "FFHQ": "NCSNv2Deepest"}
DATASETS = {"MNIST": "mnist", "CIFAR10": "cifar10", "CELEBA": "celeba"}  # ours; LSUN / FFHQ: a folder of images
V1_SAMPLER = {"n_steps_each": 100, "step_lr": 2e-5, "denoise": False}  # ermongroup/ncsn anneal_runner.py test()
CONFIG_NAME = "config.yml"
OFFICIAL_CHECKPOINT = "an official NCSN or NCSNv2 checkpoint (.pth)"


class _NamespaceLoader(yaml.SafeLoader):
    """YAML's safe loader that reads ``!!python/object:argparse.Namespace`` (the runners' dump) as a mapping."""


def _namespace_as_mapping(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if suffix != "argparse.Namespace" or not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(None, None, f"unsupported tag python/object:{suffix}", node.start_mark)
    return loader.construct_mapping(node, deep=True)


_NamespaceLoader.add_multi_constructor("tag:yaml.org,2002:python/object:", _namespace_as_mapping)


def default_config_path(official_ckpt: str | os.PathLike[str]) -> Path:
    """The ``config.yml`` beside a checkpoint (where the runners save it)."""
    return Path(official_ckpt).parent / CONFIG_NAME


def read_official_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An official config as nested dicts, checked for what the model needs.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not YAML, or a setting ncsn-pl cannot reproduce (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"--official_config {str(path)!r} does not exist; give the config.yml saved beside the official checkpoint "
            "(exp/logs/<doc>/config.yml) or the repository's configs/<name>.yml."
        )
    try:
        config = yaml.load(path.read_text(), Loader=_NamespaceLoader)  # a safe loader
    except yaml.YAMLError as err:
        raise ValueError(f"--official_config {str(path)!r} is not a readable YAML file ({err}).") from err
    if not isinstance(config, dict) or not all(isinstance(config.get(k), dict) for k in ("data", "model")):
        raise ValueError(f"--official_config {str(path)!r} has no data and model groups: it is not an NCSN config.")
    data, model = config["data"], config["model"]
    missing = [f"data.{k}" for k in ("dataset", "image_size", "channels") if k not in data]
    missing += [f"model.{k}" for k in ("sigma_begin", "sigma_end", "num_classes", "ngf") if k not in model]
    if missing:
        raise ValueError(f"--official_config {str(path)!r} lacks {', '.join(missing)}.")
    unsupported = {
        "data.logit_transform": (data.get("logit_transform", False), False),
        "data.rescaled": (data.get("rescaled", False), False),
        "model.spec_norm": (model.get("spec_norm", False), False),
        "model.sigma_dist": (model.get("sigma_dist", "geometric"), "geometric"),
        "model.normalization": (model.get("normalization", "InstanceNorm++"), "InstanceNorm++"),
        "model.nonlinearity": (model.get("nonlinearity", "elu"), "elu"),
        "sampling.data_init": ((config.get("sampling") or {}).get("data_init", False), False),
    }
    wrong = {k: v for k, (v, ok) in unsupported.items() if v != ok}
    if wrong:
        raise ValueError(
            f"--official_config {str(path)!r} sets {wrong}; ncsn-pl reproduces the released models, which use "
            f"{ {k: ok for k, (_, ok) in unsupported.items()} }."
        )
    if "sampling" in config and str(data["dataset"]).upper() not in V2_NETWORKS:
        raise ValueError(f"--official_config {str(path)!r}: data.dataset {data['dataset']!r} is none of the NCSNv2 "
                         f"data sets {sorted(V2_NETWORKS)}.")  # fmt: skip
    return config


def _is_v2(config: dict[str, Any]) -> bool:
    """NCSNv2's configs have a ``sampling`` group; NCSN's anneal.yml has none (its runner fixes the sampler)."""
    return "sampling" in config


def official_data_shape(config: dict[str, Any]) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images an official config's network was trained on."""
    data = config["data"]
    return int(data["channels"]), int(data["image_size"]), int(data["image_size"])


def official_command_args(
    official_ckpt: str, official_config: str | None, data_root: str | None
) -> tuple[list[str], dict[str, Any], tuple[int, int, int]]:
    """``--model.*`` options (network, schedule, sampler) of an official config, and the ``--data`` it implies.

    Returns:
        The model options; the DataModule as a config entry (``ImageDataModule`` of the config's data set and
        size; a ``folder`` under ``data_root`` for LSUN and FFHQ); the images' shape ``(C, H, W)``.
    """
    config = read_official_config(official_config or default_config_path(official_ckpt))
    data, model = config["data"], config["model"]
    dataset = str(data["dataset"]).upper()
    channels, ngf = int(data["channels"]), int(model["ngf"])
    if _is_v2(config):
        net = {
            "class_path": f"ncsn_pl.networks.{V2_NETWORKS[dataset]}",
            "init_args": {"channels": channels, "ngf": ngf},
        }
        sampling = config["sampling"]
        sampler = {k: sampling[k] for k in ("n_steps_each", "step_lr")} | {"denoise": bool(sampling.get("denoise"))}
    else:
        init = {"channels": channels, "ngf": ngf, "num_scales": int(model["num_classes"])}
        net, sampler = {"class_path": "ncsn_pl.networks.NCSN", "init_args": init}, V1_SAMPLER
    args = [
        "--model.score_net=" + json.dumps(net),
        f"--model.sigma_max={float(model['sigma_begin'])}",
        f"--model.sigma_min={float(model['sigma_end'])}",
        f"--model.num_scales={int(model['num_classes'])}",
        f"--model.n_steps_each={int(sampler['n_steps_each'])}",
        f"--model.step_lr={float(sampler['step_lr'])}",
        f"--model.denoise={str(bool(sampler['denoise'])).lower()}",
    ]
    init_args = {"dataset": DATASETS.get(dataset, "folder"), "root": data_root or "data",
                 "image_size": int(data["image_size"])}  # fmt: skip
    if init_args["dataset"] == "folder":
        init_args["channels"] = channels
    return args, {"class_path": "ncsn_pl.data.ImageDataModule", "init_args": init_args}, official_data_shape(config)


def official_training_settings(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What an official run trained with, for a run that continues it: ``ScoreModel``'s optimizer and loss settings
    (the config's ``optim`` and ``training.anneal_power``) and ``ImageDataModule``'s training settings (batch size,
    flips, and uniform dequantization: always in NCSN's ``anneal_runner.py``, ``data.uniform_dequantization`` in
    NCSNv2).

    Raises:
        ValueError: a setting ncsn-pl does not train with (another optimizer, AMSGrad, sliced score matching,
            Gaussian dequantization).
    """
    optim, training, data = config.get("optim") or {}, config.get("training") or {}, config["data"]
    unsupported = {
        "optim.optimizer": (optim.get("optimizer", "Adam"), "Adam"),
        "optim.amsgrad": (bool(optim.get("amsgrad", False)), False),
        "training.algo": (training.get("algo", "dsm"), "dsm"),
        "data.gaussian_dequantization": (bool(data.get("gaussian_dequantization", False)), False),
    }
    wrong = {k: v for k, (v, ok) in unsupported.items() if v != ok}
    if wrong:
        raise ValueError(f"The official config sets {wrong}; ncsn-pl trains with "
                         f"{ {k: ok for k, (_, ok) in unsupported.items()} }.")  # fmt: skip
    model = {
        "lr": float(optim.get("lr", 1e-4 if _is_v2(config) else 1e-3)),
        "betas": [float(optim.get("beta1", 0.9)), 0.999],  # get_optimizer: betas=(beta1, 0.999)
        "eps": float(optim.get("eps", 1e-8)),
        "weight_decay": float(optim.get("weight_decay", 0.0)),
        "anneal_power": float(training.get("anneal_power", 2.0)),
    }
    dequantize = bool(data.get("uniform_dequantization", False)) if _is_v2(config) else True
    datamodule = {"batch_size": int(training.get("batch_size", 128)), "random_flip": bool(data.get("random_flip")),
                  "dequantize": dequantize}  # fmt: skip
    return model, datamodule


def read_official_checkpoint(official_ckpt: str) -> tuple[Any, str]:
    """The object an official ``.pth`` holds (read with ``weights_only=True``, its CRC-32s checked) and the sha256 of
    its bytes."""
    return read_torch_file(official_ckpt, what="--official_ckpt", expected=OFFICIAL_CHECKPOINT)


def load_official_weights(model: Any, obj: Any, official_ckpt: str, config_path: Path, *, use_ema: bool = True) -> None:
    """Load a read official checkpoint ``obj`` into ``model.score_net``: its EMA weights when ``use_ema`` and it has
    them, else its raw ones.

    The checkpoint's own schedule (NCSNv2 keeps its ``sigmas``) must be the one its config gave the model.

    Raises:
        ValueError: weights that do not fit the network the config describes (the keys at fault are listed), another
            schedule, or weights that are not finite.
    """
    sigmas = model.sigmas.detach().clone()
    try:
        load_official_checkpoint(model.score_net, obj, use_ema=use_ema)
    except ValueError as err:
        raise ValueError(f"--official_ckpt {official_ckpt}: {err} (config: {config_path})") from err
    loaded = getattr(model.score_net, "sigmas", None)
    if isinstance(loaded, torch.Tensor) and loaded.numel():
        if loaded.shape != sigmas.shape or not torch.allclose(loaded.to(sigmas), sigmas, rtol=1e-4):
            raise ValueError(
                f"--official_ckpt {official_ckpt} was trained with another schedule (sigma {loaded[0].item():.4g} "
                f"-> {loaded[-1].item():.4g}, L = {loaded.numel()}) than {config_path} gives (sigma "
                f"{sigmas[0].item():.4g} -> {sigmas[-1].item():.4g}, L = {sigmas.numel()}); give the config saved "
                "with the checkpoint."
            )
        model.score_net.set_sigmas(sigmas)  # the model's float32 schedule, equal within rounding
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise ValueError(f"The weights in {official_ckpt} are not finite.")


def has_ema_weights(obj: Any) -> bool:
    """Whether an official checkpoint holds EMA weights (NCSNv2's 5th element, the ``EMAHelper`` shadow)."""
    return isinstance(obj, (list, tuple)) and len(obj) >= 5 and isinstance(obj[4], dict) and bool(obj[4])


def recorded_step(obj: Any) -> tuple[int, int] | None:
    """``(epoch, step)`` an NCSNv2 checkpoint records (its 3rd and 4th elements), or None (NCSN records neither)."""
    if isinstance(obj, (list, tuple)) and len(obj) >= 4 and isinstance(obj[2], int) and isinstance(obj[3], int):
        return obj[2], obj[3]
    return None


def load_official_model(model: Any, official_ckpt: str, official_config: str | None = None) -> dict[str, Any]:
    """Load an official checkpoint into ``model.score_net`` (EMA weights when present) and describe it.

    The checkpoint's own schedule (NCSNv2 keeps its ``sigmas``) must be the one its config gave the model, and its
    images' size the model's data shape.

    Raises:
        FileNotFoundError, ValueError: a missing or foreign file, weights that do not fit the network the config
            describes (the keys at fault are listed), another schedule or another image size.
    """
    config_path = Path(official_config) if official_config else default_config_path(official_ckpt)
    check_trained_shape(official_data_shape(read_official_config(config_path)), getattr(model, "data_shape", None),
                        f"--official_ckpt {official_ckpt} (config {config_path})")  # fmt: skip
    obj, sha256 = read_official_checkpoint(official_ckpt)
    load_official_weights(model, obj, official_ckpt, config_path, use_ema=True)
    epoch, step = recorded_step(obj) or (None, None)
    return {
        "checkpoint": str(Path(official_ckpt).resolve()),
        "checkpoint_sha256": sha256,
        "official": "ncsnv2" if "sigmas" in getattr(model.score_net, "state_dict", dict)() else "ncsn",
        "config": str(config_path.resolve()),
        "epoch": epoch,
        "global_step": step,
        "ema": has_ema_weights(obj),
    }
