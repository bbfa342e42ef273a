"""``python -m ncsn_pl convert``: official NCSN / NCSNv2 checkpoints (written here in the runners' formats) become
Lightning checkpoints that ``fit --ckpt_path`` continues at their step, with their weights, EMA weights and Adam
state, and that ``sample --ckpt_path`` draws exactly as ``sample --official_ckpt``."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fake_datasets import write_images
from official_checkpoints import write_v1, write_v2

from ncsn_pl.__main__ import main as ncsn_main
from ncsn_pl.commands.cli import main

CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def continue_one_step(tmp_path: Path, ckpt: Path, step: int, channels: int) -> dict:
    """``fit`` of the converted checkpoint's config for one step with lr 0 (Adam then leaves the weights as they are),
    on a folder of 8x8 images; returns the checkpoint it ends with."""
    images = tmp_path / "images"
    write_images(images, n=10, size=(8, 8), mode="RGB" if channels == 3 else "L")
    main(["fit", "--config", str(ckpt.with_suffix(".yaml")), f"--ckpt_path={ckpt}", "--model.lr=0",
          "--data.init_args.dataset=folder", f"--data.init_args.root={images}", f"--data.init_args.channels={channels}",
          "--data.init_args.batch_size=4", f"--trainer.max_steps={step + 1}", "--trainer.limit_val_batches=0",
          f"--trainer.default_root_dir={tmp_path / 'runs'}", *CPU])  # fmt: skip
    return load(tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt")


def test_an_ncsnv2_checkpoint_continues_with_its_weights_ema_and_adam_state(tmp_path):
    official, ema_state = write_v2(tmp_path / "logs", with_optimizer=True)
    states = load(official)
    # a runner whose modules were registered in another order than ours: its state dict and Adam ids follow it
    params = [k for k in states[0] if k.removeprefix("module.") in states[4]]
    reordered = dict(reversed(list(states[0].items())))
    order = [k for k in reordered if k in params]
    adam = {"state": {new: states[1]["state"][params.index(k)] for new, k in enumerate(order)},
            "param_groups": [{**states[1]["param_groups"][0], "params": list(range(len(order)))}]}  # fmt: skip
    torch.save([reordered, adam, *states[2:]], official)
    states = load(official)
    raw = {k.removeprefix("module."): v for k, v in states[0].items()}
    ncsn_main(["convert", "--official_ckpt", str(official), "--out", str(tmp_path / "v2.ckpt")])
    converted = load(tmp_path / "v2.ckpt")

    assert (converted["global_step"], converted["epoch"]) == (5000, 2)
    for name, value in ema_state.items():  # EMAWeightAveraging's layout: the average in state_dict, raw aside
        assert torch.equal(converted["state_dict"][f"score_net.{name}"], value)
        assert torch.equal(converted["current_model_state"][f"score_net.{name}"], raw[name])
    assert int(converted["averaging_state"]["n_averaged"]) == 5000
    shadow = states[4]  # the EMA of the parameters only
    official_ids = {name: i for i, name in enumerate(n for n in raw if n in shadow)}  # the runner's parameter order
    names = [k[len("score_net."):] for k in converted["current_model_state"] if k[len("score_net."):] in shadow]
    assert len(names) == len(official_ids) == len(converted["optimizer_states"][0]["state"])
    for index, name in enumerate(names):  # the Adam moments follow their parameter by name
        moments = converted["optimizer_states"][0]["state"][index]
        assert torch.equal(moments["exp_avg"], states[1]["state"][official_ids[name]]["exp_avg"])
    config = yaml.safe_load((tmp_path / "v2.yaml").read_text())
    assert config["trainer"]["callbacks"] == [{"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging",
                                               "init_args": {"decay": 0.999}}]  # fmt: skip
    assert config["trainer"]["max_steps"] == 300001 and config["model"]["lr"] == 1e-4

    # sampled as the official checkpoint is, bit for bit
    sources = {"official": ["--official_ckpt", str(official)], "converted": [f"--ckpt_path={tmp_path / 'v2.ckpt'}"]}
    for name, source in sources.items():
        main(["sample", *source, "--num_samples=2", f"--out_dir={tmp_path / name}", *CPU])
    samples = [np.load(tmp_path / name / "samples.npz")["samples"] for name in ("official", "converted")]
    np.testing.assert_array_equal(*samples)

    ended = continue_one_step(tmp_path, tmp_path / "v2.ckpt", 5000, channels=3)
    assert (ended["global_step"], ended["epoch"]) == (5001, 2)
    for key, value in converted["current_model_state"].items():  # lr 0: the raw weights stay
        assert torch.equal(ended["current_model_state"][key], value)
    for key, value in converted["state_dict"].items():  # one EMA update from the official average: decay 0.999
        if value.is_floating_point():
            expected = 0.999 * value + 0.001 * converted["current_model_state"][key]
            torch.testing.assert_close(ended["state_dict"][key], expected, rtol=0, atol=1e-7)
    assert int(ended["optimizer_states"][0]["state"][0]["step"]) == 2  # the official Adam's one step, and this one


def test_an_ncsn_checkpoint_continues_at_the_step_given(tmp_path):
    official, net = write_v1(tmp_path / "run" / "logs" / "mnist", with_optimizer=True)
    out = tmp_path / "v1.ckpt"
    ncsn_main(["convert", "--official_ckpt", str(official), "--official_config", str(official.parent / "anneal.yml"),
               "--out", str(out), "--step", "1000"])  # fmt: skip
    converted = load(out)
    assert converted["global_step"] == 1000 and "current_model_state" not in converted
    for name, value in net.state_dict().items():
        assert torch.equal(converted["state_dict"][f"score_net.{name}"], value)
    data = converted["datamodule_hyper_parameters"]
    assert (data["dataset"], data["image_size"], data["dequantize"], data["batch_size"]) == ("mnist", 8, True, 128)
    assert converted["hyper_parameters"]["lr"] == 1e-3 and converted["hyper_parameters"]["num_scales"] == 10

    ended = continue_one_step(tmp_path, out, 1000, channels=1)
    assert ended["global_step"] == 1001
    for key, value in converted["state_dict"].items():
        assert torch.equal(ended["state_dict"][key], value)


def test_what_convert_cannot_continue_is_refused(tmp_path):
    official, _ = write_v2(tmp_path / "logs")
    config = yaml.load((official.parent / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    config.optim.amsgrad = True
    (tmp_path / "amsgrad.yml").write_text(yaml.dump(config))
    with pytest.raises(ValueError, match=r"sets \{'optim.amsgrad': True\}; ncsn-pl trains with"):
        ncsn_main(["convert", "--official_ckpt", str(official), "--official_config", str(tmp_path / "amsgrad.yml"),
                   "--out", str(tmp_path / "x.ckpt")])  # fmt: skip
    with pytest.raises(ValueError, match="should end with .ckpt"):
        ncsn_main(["convert", "--official_ckpt", str(official), "--out", str(tmp_path / "x.pt")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amsgrad.yml", "logs"]  # nothing written
