"""What a resumable sample set is: a rerun with any setting that changes the samples is refused, naming it, and the
checkpoint is named by the bytes its weights were loaded from."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from cli_runs import smoke_checkpoint

from ncsn_pl.commands import checkpoints as checkpoints_file
from ncsn_pl.commands.cli import main
from ncsn_pl.system import files
from ncsn_pl.training import ScoreModel

CONFIGS = Path(__file__).parents[1] / "configs"
CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return smoke_checkpoint(tmp_path_factory.mktemp("fit"))


@pytest.fixture(scope="module")
def sample_set(checkpoint, tmp_path_factory) -> Path:
    """A folder holding 2 of the samples of a set (a preempted run)."""
    out = tmp_path_factory.mktemp("set") / "samples"
    main(sample_args(checkpoint, out, num_samples=2))
    return out


def sample_args(checkpoint: Path, out: Path, *extra: str, num_samples: int = 4) -> list[str]:
    return ["sample", "--ckpt_path", str(checkpoint), f"--num_samples={num_samples}", "--batch_size=2",
            f"--out_dir={out}", "--save_png=false", *CPU, *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("--model.init_range=[-1.0, 1.0]", r"init_range \[0\.0, 1\.0\] there, \[-1\.0, 1\.0\] here"),
        ("--trainer.precision=bf16-mixed", r"precision '32-true' there, 'bf16-mixed' here"),
        ("--model.channels_last=false", r"channels_last True there, False here"),
    ],
)
def test_a_rerun_with_another_setting_is_refused_naming_it(checkpoint, sample_set, tmp_path, option, named):
    out = tmp_path / "samples"
    shutil.copytree(sample_set, out)
    net = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]["score_net"]
    extra = [option, f"--model.score_net={json.dumps(net)}"] if option.startswith("--model") else [option]
    with pytest.raises(ValueError, match=rf"--out_dir {out} holds another sample set \({named}\)"):
        main(sample_args(checkpoint, out, *extra))
    shards = sorted(p.name for p in (sample_set / "shards").iterdir())
    assert sorted(p.name for p in (out / "shards").iterdir()) == shards  # nothing written or deleted


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("device_type", "cuda", r"device_type 'cuda' there, 'cpu' here"),  # as a GPU run leaves it
        ("data_shape", [1, 16, 16], r"data_shape \[1, 16, 16\] there, \[1, 8, 8\] here"),  # an older run's shape
    ],
)
def test_a_rerun_on_another_kind_of_device_or_shape_is_refused_naming_it(checkpoint, sample_set, tmp_path, key, value,
                                                                         named):  # fmt: skip
    out = tmp_path / "samples"
    shutil.copytree(sample_set, out)
    record = json.loads((out / "sample.json").read_text())
    assert record["device_type"] == "cpu" and record["data_shape"] == [1, 8, 8]
    (out / "sample.json").write_text(json.dumps({**record, key: value}))
    with pytest.raises(ValueError, match=rf"holds another sample set \({named}\)"):
        main(sample_args(checkpoint, out))


def test_the_same_settings_continue_the_set(checkpoint, sample_set, tmp_path):
    out = tmp_path / "samples"
    shutil.copytree(sample_set, out)
    main(sample_args(checkpoint, out))
    record = json.loads((out / "sample.json").read_text())
    assert record["complete"] and record["drawn_by_this_run"] == 2
    assert record["init_range"] == [0.0, 1.0] and record["precision"] == "32-true"
    assert record["data_shape"] == [1, 8, 8] and record["device_type"] == "cpu"


def test_the_checkpoint_is_named_by_the_bytes_its_weights_came_from(checkpoint, tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    shutil.copy(checkpoint, path)
    loaded_bytes = path.read_bytes()
    real_load = torch.load

    def load_then_replace(*args, **kwargs):  # another run writes last.ckpt while this one loads it
        obj = real_load(*args, **kwargs)
        state = real_load(checkpoint, map_location="cpu", weights_only=True)
        state["global_step"] = 99
        torch.save(state, path)
        return obj

    model = ScoreModel(**_model_settings(checkpoint))
    monkeypatch.setattr(files.torch, "load", load_then_replace)
    loaded = checkpoints_file.load_sampling_model(model, "sample", str(path))
    assert loaded["global_step"] == 2
    assert loaded["checkpoint_sha256"] == hashlib.sha256(loaded_bytes).hexdigest()
    assert hashlib.sha256(path.read_bytes()).hexdigest() != loaded["checkpoint_sha256"]


def _model_settings(checkpoint: Path) -> dict:
    from ncsn_pl.networks import NCSN

    hparams = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    net = NCSN(**{k: v for k, v in hparams["score_net"]["init_args"].items()})
    keep = ("sigma_max", "sigma_min", "num_scales", "data_shape")
    return {"score_net": net, **{k: hparams[k] for k in keep}}
