"""Hostile or broken input: no file that failed its checksum is unpickled, and each mistake ends in one line that
says what to fix, with exit status 2 and nothing made (no run folder, no version_N, no W&B run)."""

import os
import pickle
import random
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from cli_runs import smoke_checkpoint
from fake_datasets import write_fake_cifar10, write_fake_fashion_mnist, write_images

from ncsn_pl.__main__ import command_line
from ncsn_pl.data import ImageDataModule
from ncsn_pl.data.datasets import DataFileError

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")

CONFIGS = Path(__file__).parents[1] / "configs"
HINT = "(NCSN_DEBUG=1 shows the traceback)"


def fit_args(root: Path, *extra: str) -> list[str]:
    """A smoke fit on the digits whose run folders (and W&B's) would go under ``root``."""
    return ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "cpu_smoke.yaml"),
            f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
            "--trainer.callbacks=[]", "--trainer.limit_val_batches=0.0", *extra]  # fmt: skip


def refused(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    """Run the command line in this process; check that it ended with status 2 and one line (and the debugging
    hint), no traceback; return the line."""
    status = command_line(args)
    err = capsys.readouterr().err
    assert status == 2, err[-3000:]
    assert "Traceback" not in err and err.count("error: ") == 1, err[-3000:]
    line, hint = err[err.index("error: ") :].rstrip("\n").split("\n")  # exactly the message and the hint
    assert hint == HINT
    return line


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "ncsn_pl", *args], env=environment, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


# ---------------------------------------------------------------- data files
def test_a_cifar_batch_with_a_pickled_payload_is_named_and_never_unpickled(tmp_path):
    write_fake_cifar10(tmp_path)  # not the official bytes: their md5s differ, and no md5 check is patched out
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(DataFileError, match=r"data_batch_1 \(md5 differs from the official file; \d+ bytes\)"):
        ImageDataModule("cifar10", root=str(tmp_path)).setup()
    assert not marker.exists()


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garble(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xA5 for b in data[middle : middle + 64]) + data[middle + 64 :]


@pytest.mark.parametrize("damage", [_truncate, _garble])
@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_a_damaged_gz_file_is_named_in_one_line_before_the_run(tmp_path, capsys, dataset, damage):
    data = tmp_path / "data"
    raw = data / ("MNIST" if dataset == "mnist" else "FashionMNIST") / "raw"
    write_fake_fashion_mnist(raw, gz=True)  # MNIST's layout and format are the same
    path = raw / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    line = refused(capsys, fit_args(tmp_path / "runs", f"--data.init_args.dataset={dataset}",
                                    f"--data.init_args.root={data}", "--data.init_args.image_size=8"))  # fmt: skip
    assert line.startswith(f"error: Corrupt or unexpected file(s): {path} (cannot be read: ")
    assert not (tmp_path / "runs").exists()


def test_a_png_that_is_no_image_is_named_in_one_line_before_the_run(tmp_path, capsys):
    write_images(tmp_path / "images", n=4, size=(16, 16))
    (tmp_path / "images" / "notes.png").write_text("a text file with an image's name")
    for image_size in ([], ["--data.init_args.image_size=8"]):  # the shape reads the headers; else the check does
        line = refused(capsys, fit_args(tmp_path / "runs", "--data.init_args.dataset=folder",
                                        f"--data.init_args.root={tmp_path / 'images'}", *image_size))  # fmt: skip
        assert line.startswith(f"error: Cannot use image '{tmp_path / 'images' / 'notes.png'}': not an image PIL")
    assert not (tmp_path / "runs").exists()


def test_a_download_without_network_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)  # every host name fails, as without a network
    line = refused(capsys, fit_args(tmp_path / "runs", "--data.init_args.dataset=mnist",
                                    f"--data.init_args.root={tmp_path / 'data'}", "--data.init_args.download=true"))
    assert line.startswith(f"error: Downloading 'mnist' into '{tmp_path / 'data'}' failed (")
    assert "Name or service not known" in line and "keep data.download=false" in line
    assert not (tmp_path / "runs").exists() and list((tmp_path / "data").iterdir()) == []


def test_the_inception_score_without_its_weights_offline_is_one_line(tmp_path, capsys, monkeypatch):
    from ncsn_pl.metrics import inception_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no weights in the hub cache
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def no_network(url, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    write_images(tmp_path / "images", n=3, size=(8, 8), mode="L")
    line = refused(capsys, ["fid", "--images", str(tmp_path / "images"), "--dataset=digits",
                            "--quality.inception_score=true", "--quality.is_splits=2", f"--out={tmp_path / 'fid.json'}",
                            "--trainer.accelerator=cpu", "--trainer.devices=1"])  # fmt: skip
    assert line.startswith("error: The Inception Score needs the full Inception weights")
    assert str(inception_weights.hub_weights_path()) in line and "network is unreachable" in line
    assert not (tmp_path / "fid.json").exists()


# ---------------------------------------------------------------- --ckpt_path
@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Files given as ``--ckpt_path`` that fit must refuse, by what is wrong with them."""
    root = tmp_path_factory.mktemp("checkpoints")
    trained = smoke_checkpoint(root / "trained")
    checkpoint = torch.load(trained, weights_only=True)
    names = ("random", "payload", "state_dict", "foreign", "data_pkl", "other_network")
    files = {name: root / f"{name}.ckpt" for name in names}
    files["random"].write_bytes(random.Random(0).randbytes(4096))

    class Payload:
        def __reduce__(self):
            return open, (str(root / "payload_ran"), "w")

    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.0", "payload": Payload()}, files["payload"])
    torch.save(checkpoint["state_dict"], files["state_dict"])  # the weights alone
    torch.save({"state_dict": {"layer.weight": torch.zeros(2, 2)}, "pytorch-lightning_version": "2.6.0",
                "hyper_parameters": {"hidden": 4}}, files["foreign"])  # another program's LightningModule
    with zipfile.ZipFile(trained) as source, zipfile.ZipFile(files["data_pkl"], "w") as copy:
        for info in source.infolist():  # data.pkl cut short, its CRC-32 recorded anew: only unpickling finds it
            data = source.read(info)
            copy.writestr(info, data[: len(data) // 2] if info.filename.endswith("data.pkl") else data)
    other = dict(checkpoint, state_dict=dict(checkpoint["state_dict"]))
    key = next(k for k in other["state_dict"] if k.startswith("score_net."))
    other["state_dict"][key] = torch.zeros(3)
    torch.save(other, files["other_network"])
    return files


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("random", "is not a PyTorch checkpoint"),
        ("payload", "holds Python objects other than tensors and plain values, which loading would run as code"),
        ("foreign", "is not a checkpoint of ncsn_pl's ScoreModel: its settings do not fit it"),
        ("data_pkl", "is not a readable PyTorch checkpoint"),
        ("other_network", "do not fit the model built (has other shapes for score_net."),
    ],
)
def test_fit_refuses_a_bad_checkpoint_in_one_line_and_makes_nothing(tmp_path, capsys, bad_checkpoints, name, says):
    line = refused(capsys, fit_args(tmp_path / "runs", f"--ckpt_path={bad_checkpoints[name]}"))
    assert str(bad_checkpoints[name]) in line and says in line
    assert not (tmp_path / "runs").exists()
    assert not (bad_checkpoints["payload"].parent / "payload_ran").exists()


def test_fit_refuses_a_bare_state_dict_before_any_run_folder_or_wandb_run(tmp_path, bad_checkpoints):
    done = run(*fit_args(tmp_path / "runs", f"--ckpt_path={bad_checkpoints['state_dict']}"), WANDB_MODE="offline")
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines()[-2:] == [
        f"error: --ckpt_path '{bad_checkpoints['state_dict']}' is not a Lightning checkpoint (it holds no "
        "'state_dict'); give a .ckpt file written by `python -m ncsn_pl fit` (e.g. <run dir>/checkpoints/last.ckpt).",
        HINT,
    ]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()  # no version_N, no wandb/ folder


# ---------------------------------------------------------------- the command line
def test_a_yaml_error_names_its_file_among_three_with_status_2(tmp_path):
    (tmp_path / "a.yaml").write_text("trainer:\n  max_steps: 3\n")
    (tmp_path / "b.yaml").write_text("model:\n  lr: [1\n")
    done = run("fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(tmp_path / "a.yaml"),
               "--config", str(tmp_path / "b.yaml"), f"--trainer.default_root_dir={tmp_path / 'runs'}")  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert lines[1:] == [HINT] and lines[0].startswith(f"error: --config {tmp_path / 'b.yaml'} is not valid YAML: ")
    assert lines[0].endswith("at line 3, column 1; fix the file.")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("content", "says"),
    [("", "is empty (no settings); write settings in it"), ("- 1\n- 2\n", "holds a list, not settings")],
)
def test_a_config_file_without_settings_is_named(tmp_path, capsys, content, says):
    (tmp_path / "empty.yaml").write_text(content)
    line = refused(capsys, fit_args(tmp_path / "runs", "--config", str(tmp_path / "empty.yaml")))
    assert line.startswith(f"error: --config {tmp_path / 'empty.yaml'} {says}")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("--model.lr=-1", "error: model.lr must be >= 0 (Adam's learning rate), got -1.0."),
        ("--data.init_args.batch_size=-3",
         "error: data.batch_size and data.val_batch_size must be >= 1, got -3, None."),
    ],
)
def test_a_bad_value_names_its_key_before_the_run(tmp_path, capsys, setting, says):
    assert refused(capsys, fit_args(tmp_path / "runs", setting)) == says
    assert not (tmp_path / "runs").exists()


def test_a_folder_root_without_images_says_so_alone(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    line = refused(capsys, fit_args(tmp_path / "runs", "--data.init_args.dataset=folder",
                                    f"--data.init_args.root={tmp_path / 'empty'}"))  # fmt: skip
    assert line.startswith(f"error: No images found under '{tmp_path / 'empty'}' (looked recursively for .png")
    assert "compute_fn" not in line and not (tmp_path / "runs").exists()


def test_an_internal_failure_keeps_status_1_and_its_traceback():
    crash = subprocess.run([sys.executable, "-c", "import sys; import ncsn_pl.__main__ as m; "
                            "m.main = lambda args: 1 / 0; sys.exit(m.command_line([]))"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert crash.returncode == 1 and "ZeroDivisionError" in crash.stderr and "Traceback" in crash.stderr
