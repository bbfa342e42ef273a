"""Numbers that say what they are: every FID carries its sample and real-image counts, sampler, NFE and feature
extractor (the callback's log and JSONL, W&B's config, the ``fid`` JSON, ``compare``); improved precision and recall
next to it; the Inception Score through a classifier head (a small stand-in for Inception's, with a head)."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image
from tiny_models import TinyFeatures

from ncsn_pl.commands.cli import main
from ncsn_pl.data import ImageDataModule
from ncsn_pl.metrics import QualityOptions, SampleQuality
from ncsn_pl.networks import NCSN
from ncsn_pl.runs.records import write_run_status
from ncsn_pl.tools.compare import main as compare_main
from ncsn_pl.training import SampleQualityMonitor, ScoreModel
from ncsn_pl.training import sample_quality as monitor_module

CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]


class TinyClassifier(TinyFeatures):
    """TinyFeatures with a 3-way classifier head: a stand-in for Inception's pool3 features and 1008-way logits."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__(seed=1)
        self.register_buffer("head", torch.randn(4, 3, generator=torch.Generator().manual_seed(2)) * 3)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.head


def inception_score(logits: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016, one split)."""
    p = logits.double().softmax(1)
    return math.exp(float((p * (p.log() - p.mean(0).log())).sum(1).mean()))


def test_the_inception_score_comes_from_the_classifier_head():
    images = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    quality = SampleQuality(QualityOptions(fid=False, inception_score=True, is_splits=1,
                                           feature_extractor=TinyClassifier()))  # fmt: skip
    quality.update_fake(images)
    score = quality.compute()["is"]
    head = TinyClassifier()
    features = quality.extract(images)
    assert score == pytest.approx(inception_score(head.logits(features)), rel=1e-5)
    assert score != pytest.approx(inception_score(features), rel=1e-3)  # not the features themselves


def test_the_callback_logs_counts_precision_recall_and_records_what_the_fid_is(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import Logger

    class MetricsLogger(Logger):
        name, version, log_dir = "fake", 0, str(tmp_path / "run")
        metrics: list = []

        def log_hyperparams(self, *args, **kwargs) -> None:
            pass

        def log_metrics(self, metrics, step=None) -> None:
            self.metrics.append(dict(metrics))

    configs = []
    monkeypatch.setattr(monitor_module, "log_config", lambda loggers, config: configs.append(config))
    options = QualityOptions(feature_extractor=TinyClassifier(), precision_recall=True, pr_neighborhood=2,
                             inception_score=True, is_splits=2, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    monitor = SampleQualityMonitor(num_samples=8, batch_size=4, seed=2, num_real=40, quality=options,
                                   progress_bar=False)  # fmt: skip
    torch.manual_seed(0)
    model = ScoreModel(NCSN(channels=1, ngf=4, num_scales=2), sigma_max=1.0, sigma_min=0.5, num_scales=2,
                       n_steps_each=1, step_lr=0.05, data_shape=(1, 8, 8))  # fmt: skip
    logger = MetricsLogger()
    trainer = Trainer(accelerator="cpu", devices=1, limit_val_batches=1, logger=logger, callbacks=[monitor],
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.validate(model, ImageDataModule("digits"))

    logged = {k: v for m in logger.metrics for k, v in m.items()}
    assert {"val/fid", "val/is", "val/is_std", "val/precision", "val/recall"} <= set(logged)
    assert (logged["val/fid_num_samples"], logged["val/fid_num_real"], logged["val/nfe"]) == (8, 40, 2)
    expected = SampleQuality(QualityOptions(feature_extractor=TinyClassifier(), precision_recall=True,
                                            pr_neighborhood=2))  # fmt: skip
    expected.update_real(ImageDataModule("digits").train_data(40))
    expected.update_fake(model.sample(range(8), seed=2))
    values = expected.compute()
    for key in ("fid", "precision", "recall"):
        assert logged[f"val/{key}"] == pytest.approx(values[key], rel=1e-5), key

    (line,) = (tmp_path / "run" / "sample_quality.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert (record["num_samples"], record["num_real"]) == (8, 40)
    assert record["real"]["settings"]["seed"] == 0  # the data settings of the cache key
    assert {k: v for k, v in record["real"].items() if k != "settings"} == {
        "dataset": "digits", "split": "train", "image_size": 8, "num_images": 40, "from_cache": False}  # fmt: skip
    assert record["sampler"]["nfe"] == 2 and record["sampler"]["seed"] == 2
    assert record["feature_extractor"].startswith("test_quality_records.TinyClassifier-")
    assert record["resize"] is None  # a custom extractor: no Inception input resize
    assert {"precision", "recall", "is", "fid"} <= set(record)
    ((config,),) = [list(c.values()) for c in configs]  # W&B: the run's config gets the description
    keys = ("num_samples", "num_real", "real", "sampler", "feature_extractor", "resize")
    assert config == {k: record[k] for k in keys}


def test_the_fid_command_reports_precision_recall_and_the_inception_score_with_a_head(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    main(["fid", "--images", str(folder), "--dataset=digits", "--num_real=30",
          "--quality.feature_extractor=test_quality_records.TinyClassifier", "--quality.inception_score=true",
          "--quality.is_splits=1", "--quality.precision_recall=true", f"--quality.cache_dir={tmp_path / 'cache'}",
          f"--out={tmp_path / 'fid.json'}", *CPU])  # fmt: skip
    record = json.loads((tmp_path / "fid.json").read_text())
    assert (record["num_samples"], record["num_real"], record["num_features"]) == (10, 30, 4)
    assert record["feature_extractor"].startswith("test_quality_records.TinyClassifier-")
    assert 0 <= record["precision"] <= 1 and 0 <= record["recall"] <= 1
    quality = SampleQuality(QualityOptions(feature_extractor=TinyClassifier()))
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(folder / f"{i}.png"))) for i in range(10)])
    logits = TinyClassifier().logits(quality.extract(images[:, None]))
    assert record["is"] == pytest.approx(inception_score(logits), rel=1e-5)


def test_compare_shows_counts_extractor_and_precision_recall_at_the_best_step(tmp_path, capsys):
    for name, counts, fids in (("small", (1000, 50000), [40.0, 30.0]), ("paper", (50000, 50000), [12.0, 11.0])):
        run = tmp_path / name
        run.mkdir()
        write_run_status(run, "finished")
        with open(run / "metrics.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["epoch", "step", "val/fid", "val/fid_num_samples", "val/fid_num_real", "val/nfe",
                             "val/precision", "val/recall"])  # fmt: skip
            for i, fid in enumerate(fids):
                writer.writerow([0, 10 * (i + 1), fid, *counts, 1161, 0.6 + i / 10, 0.4 + i / 10])
        record = {"step": 20, "fid": fids[-1], "num_samples": counts[0], "num_real": counts[1],
                  "sampler": {"nfe": 1161}, "feature_extractor": "inception-v3-compat-pool3-tf1resize-"
                  "0123456789abcdef-round8bit", "precision": 0.7, "recall": 0.5}  # fmt: skip
        (run / "sample_quality.jsonl").write_text(json.dumps({**record, "step": 10}) + "\n" + json.dumps(record))
    comparison = compare_main([str(tmp_path), "--out", str(tmp_path / "out"), "--no-plots"])
    assert [(r.run, r.rank) for r in comparison.rows] == [("paper", 1), ("small", 2)]
    assert comparison.rows[0].quality == {"samples": 50000, "real": 50000, "NFE": 1161, "precision": 0.7,
                                          "recall": 0.5, "features": "inception-v3-compat-pool3-tf1resize"}  # fmt: skip
    assert comparison.rows[1].quality["samples"] == 1000
    printed = capsys.readouterr().out
    assert "samples  real   NFE   features" in printed and "precision  recall" in printed
    table = list(csv.DictReader(open(tmp_path / "out" / "runs.csv")))
    assert [(r["samples"], r["real"], r["precision"]) for r in table] == [("50000", "50000", "0.7"),
                                                                          ("1000", "50000", "0.7")]  # fmt: skip
    assert Path(tmp_path / "out" / "runs.md").read_text().count("inception-v3-compat-pool3-tf1resize") == 2


def test_the_callback_scores_against_a_papers_reference_statistics(tmp_path):
    features = SampleQuality(QualityOptions(feature_extractor=TinyFeatures())).extract(
        ImageDataModule("digits").train_data(25)
    )
    np.savez(tmp_path / "stats.npz", pool_3=features.numpy())  # score_sde layout: 25 feature vectors
    options = QualityOptions(feature_extractor=TinyFeatures())
    monitor = SampleQualityMonitor(num_samples=6, batch_size=6, ref_stats=str(tmp_path / "stats.npz"),
                                   quality=options, progress_bar=False)  # fmt: skip
    torch.manual_seed(0)
    model = ScoreModel(NCSN(channels=1, ngf=4, num_scales=2), sigma_max=1.0, sigma_min=0.5, num_scales=2,
                       n_steps_each=1, step_lr=0.05, data_shape=(1, 8, 8))  # fmt: skip
    trainer = Trainer(accelerator="cpu", devices=1, limit_val_batches=1, logger=False, callbacks=[monitor],
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.validate(model, ImageDataModule("digits"))
    assert monitor.last_results["fid_num_real"] == 25
    assert monitor.quality.real_source["layout"] == "score_sde"
    expected = SampleQuality(QualityOptions(feature_extractor=TinyFeatures()))
    expected.update_real(ImageDataModule("digits").train_data(25))
    expected.update_fake(model.sample(range(6)))
    assert monitor.last_results["fid"] == pytest.approx(expected.compute()["fid"], rel=1e-5)
