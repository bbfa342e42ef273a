"""One sampler setting (model.sampler) for the grids, the FID samples and the sample / fid commands."""

import importlib
import json

import pytest
import torch
import yaml
from cli_runs import CONFIGS, fit_digits, run_dirs, smoke_checkpoint

from ncsn_pl.commands.cli import main
from ncsn_pl.core.samplers import (
    AdaptiveVESDE,
    AnnealedLangevin,
    ConsistentAnnealed,
    EDMStochastic,
    PredictorCorrector,
    ProbabilityFlowODE,
)
from ncsn_pl.core.sigmas import geometric_sigmas, langevin_step_lr
from ncsn_pl.networks import NCSN, NCSNv2
from ncsn_pl.training import ScoreModel

SAMPLERS = [
    AnnealedLangevin(n_steps_each=2, step_lr=1e-5, denoise=True),
    ConsistentAnnealed(n_steps_each=1, step_lr=1e-4),  # in the range its error names for 5 levels 1 -> 0.01
    PredictorCorrector(n_steps_each=1, snr=0.16),
    ProbabilityFlowODE(solver="heun", level_stride=2),
    AdaptiveVESDE(eps_rel=0.1),
    EDMStochastic(num_steps=5),
]


def v2_model(sampler) -> ScoreModel:
    torch.manual_seed(0)
    return ScoreModel(NCSNv2(channels=1, ngf=4), sigma_max=1.0, sigma_min=0.01, num_scales=5, data_shape=(1, 8, 8),
                      sampler=sampler)  # fmt: skip


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: type(s).__name__)
def test_every_sampler_draws_sample_k_the_same_in_any_batch(sampler):
    model = v2_model(sampler).double()
    whole = model.sample(range(4), seed=5)
    split = torch.cat([model.sample([0, 2], seed=5), model.sample([1, 3], seed=5)])[[0, 2, 1, 3]]
    assert whole.shape == (4, 1, 8, 8) and torch.isfinite(whole).all()
    assert torch.equal(whole, split)  # two "ranks" draw the set of one
    assert model.resolve_sampler() is sampler


@pytest.mark.parametrize(
    ("sampler", "message"),
    [(ProbabilityFlowODE(num_steps=6), r"ProbabilityFlowODE.*num_steps.*"),
     (AdaptiveVESDE(eps_rel=0.1), "AdaptiveVESDE evaluates the score at any sigma"),
     (EDMStochastic(num_steps=4), "EDMStochastic evaluates the score at sigmas of its own grid")],  # fmt: skip
    ids=lambda s: type(s).__name__ if not isinstance(s, str) else "",
)
def test_a_sampler_the_network_cannot_run_stops_before_sampling(sampler, message):
    with pytest.raises(ValueError, match=message):
        ScoreModel(NCSN(channels=1, ngf=4, num_scales=5), sigma_max=1.0, sigma_min=0.01, num_scales=5,
                   data_shape=(1, 8, 8), sampler=sampler)  # fmt: skip
    v2 = v2_model(sampler)  # NCSNv2 divides by sigma: any grid
    assert v2.sample(2, seed=0).shape == (2, 1, 8, 8)


def test_model_sampler_from_the_config_draws_the_grid_and_the_commands_samples(tmp_path):
    sampler = '{"class_path": "ncsn_pl.core.samplers.PredictorCorrector", "init_args": {"snr": 0.1}}'
    grid = '[{"class_path": "ncsn_pl.training.SampleGrid", "init_args": {"num_samples": 4, "progress_bar": false}}]'
    cli = fit_digits(tmp_path, "--trainer.max_epochs=1", f"--model.sampler={sampler}", f"--trainer.callbacks={grid}")
    assert cli.model.resolve_sampler() == PredictorCorrector(snr=0.1)
    (run,) = run_dirs(tmp_path)
    assert (run / "samples" / "final.png").is_file()
    main(["sample", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "--num_samples=2",
          f"--out_dir={tmp_path / 'samples'}", "--trainer.enable_progress_bar=false"])  # fmt: skip
    record = json.loads((tmp_path / "samples" / "sample.json").read_text())
    assert record["sampler"]["class_path"].endswith("PredictorCorrector")
    assert record["sampler"]["init_args"]["snr"] == 0.1
    assert record["nfe"] == PredictorCorrector(snr=0.1).nfe(10)


def test_auto_step_sizes_are_computed_for_the_models_schedule():
    v1 = ScoreModel(NCSN(channels=1, ngf=4, num_scales=10), step_lr="auto", n_steps_each=10, data_shape=(1, 8, 8))
    assert v1.hparams.step_lr == pytest.approx(1.907e-5, rel=1e-3)  # Technique 4 for T = 10 on 1 -> 0.01, L = 10
    grid = v1.resolve_sampler(AnnealedLangevin(10, "auto", denoise=True))
    assert grid == AnnealedLangevin(10, v1.hparams.step_lr, denoise=True)
    v2 = ScoreModel(NCSNv2(channels=1, ngf=4), sigma_max=12.37, num_scales=52, data_shape=(1, 8, 8))
    assert v2.resolve_sampler(ConsistentAnnealed()).step_lr == pytest.approx(2.437e-5, rel=1e-3)
    assert v2.resolve_sampler(AnnealedLangevin(5, "auto")).step_lr == pytest.approx(1.603e-5, rel=1e-3)


def test_sample_with_consistent_annealed_sampling_and_its_defaults(tmp_path):
    # NCSN's ten levels: the paper's CIFAR-10 step (1.8e-5) is out of range, the default "auto" is not
    ckpt = smoke_checkpoint(tmp_path / "run")
    main(["sample", f"--ckpt_path={ckpt}", "--sampler=ConsistentAnnealed", "--num_samples=2",
          f"--out_dir={tmp_path / 'samples'}", "--trainer.enable_progress_bar=false"])  # fmt: skip
    record = json.loads((tmp_path / "samples" / "sample.json").read_text())
    eta = 1 - 0.01 ** (2 / 9)  # 1 - gamma^-2
    assert record["sampler"]["init_args"]["step_lr"] == pytest.approx(1e-4 * eta, rel=1e-6)
    assert record["nfe"] == 10


@pytest.mark.parametrize(
    ("config", "numbers"),
    [("quickstart.yaml", [1.907e-5]), ("fashion_cpu30_v1.yaml", [2.975e-5]),
     ("fashion_cpu30_v2.yaml", [2.437e-5, 1.603e-5])],  # fmt: skip
)
def test_the_configs_auto_steps_are_the_numbers_they_carried_before(config, numbers):
    # the hand-computed steps the configs held (2.437e-5 was computed for sigma_max 12.39: 0.03 % apart)
    settings = yaml.safe_load((CONFIGS / config).read_text())
    model = settings["model"]
    sigmas = geometric_sigmas(model["sigma_max"], model["sigma_min"], model["num_scales"])
    samplers = []
    for callback in settings["trainer"]["callbacks"]:
        sampler = callback.get("init_args", {}).get("sampler")
        if sampler:
            module, name = sampler["class_path"].rsplit(".", 1)
            samplers.append(getattr(importlib.import_module(module), name)(**sampler["init_args"]))
    steps = [s.resolve(sigmas).step_lr for s in samplers if s.step_lr == "auto"]
    if model["step_lr"] == "auto":
        steps.append(langevin_step_lr(sigmas, model["n_steps_each"]))
    assert steps == pytest.approx(numbers, rel=5e-4)
