"""Smoke test of benchmarks/network_speed.py at --size tiny (the full run is a manual benchmark)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scripts import load_script

from ncsn_pl.networks import layers

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "network_speed.py"


@pytest.fixture(scope="module")
def network_speed():
    return load_script(SCRIPT, "bench_network_speed")


def test_tiny_run_reports_times_throughput_and_flops(network_speed, tmp_path, capsys):
    out_json = tmp_path / "speed.json"
    threads = torch.get_num_threads()
    results = network_speed.main(["--size", "tiny", "--threads", "1", "--json", str(out_json)])
    assert torch.get_num_threads() == threads
    assert [r["config"] for r in results] == ["mnist", "cifar10"]
    for r in results:
        assert r["ngf"] == 8
        for mode, batch in (("train", 4), ("sample", 4)):
            m = r[mode]
            assert m["batch"] == batch and len(m["times_s"]) == 1
            assert m["median_s"] > 0 and m["images_per_s"] == pytest.approx(batch / m["median_s"])
            assert m["gflop"] > 0 and m["gflop_per_s"] == pytest.approx(m["gflop"] / m["median_s"])
        # backward costs about twice the forward: a training step has roughly 3x the FLOPs of a sample step
        assert 2.5 < r["train"]["gflop"] / r["sample"]["gflop"] < 3.5
    record = json.loads(out_json.read_text())
    assert record["results"][0]["config"] == "mnist" and record["matmul_gflop_per_s"] > 0
    printed = capsys.readouterr().out
    assert "GFLOP/s" in printed and "cifar10" in printed and "threads=1" in printed
    assert f"fp32 matmul {record['matmul_gflop_per_s']:.1f} GFLOP/s" in printed


def test_reference_cin_plus_option_runs_and_restores_the_fused_layer(network_speed):
    fused = layers.instance_norm_plus
    results = network_speed.main(["--size", "tiny", "--configs", "mnist", "--cinpp", "reference", "--channels-last"])
    assert results[0]["sample"]["median_s"] > 0
    assert layers.instance_norm_plus is fused
