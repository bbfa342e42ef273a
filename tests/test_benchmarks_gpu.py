"""Smoke test of benchmarks/gpu.py at --size tiny on the CPU, against the official networks when their clones are
in benchmarks/official/ (git-ignored), else with the official rows skipped."""

import json
from pathlib import Path

import torch
from scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_tiny_run_reports_rates_memory_and_ratios(tmp_path, capsys):
    bench = load_script(SCRIPT, "bench_gpu")
    out = tmp_path / "gpu.json"
    result = bench.main(["--size", "tiny", "--device", "cpu", "--configs", "mnist_ncsn", "--no-compile", "--no-fid",
                         "--json", str(out)])  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    row = result["configs"]["mnist_ncsn"]
    assert row["ngf"] == 4 and row["image_size"] == 16 and row["num_scales"] == 10
    sigmas = bench.geometric_sigmas(1.0, 0.01, 10)
    official = bench.official_network(Path(bench.OFFICIAL_DEFAULT), "ncsn", 1, 16, 4, sigmas)
    expected = {"eager", "bf16"} | ({"official"} if official is not None else set())
    for table in ("train_steps_per_second", "sampler_nfe_per_second"):
        assert set(row[table]) == expected
        for rate in row[table].values():
            assert rate["per_second"] > 0 and rate["peak_mib"] > 0
        if official is not None:  # each rate over the official code's, measured in the same process
            ratios = row[table.replace("per_second", "vs_official")]
            assert ratios["eager"] == row[table]["eager"]["per_second"] / row[table]["official"]["per_second"]
    assert result["fid_images_per_second"] is None
    # the noise check, here the CPU against itself with the batch split otherwise: the same bits
    assert result["noise_same_bits"] == {"randn_float32": True, "randn_float64": True, "rand_float32": True}
    printed = capsys.readouterr().out
    assert "train steps/s" in printed and "sampler NFE/s" in printed
    assert "per-sample noise, same bits as on the CPU: randn_float32 True" in printed


def test_the_noise_check_sees_a_difference_in_the_last_bit(monkeypatch):
    bench = load_script(SCRIPT, "bench_gpu")

    class OffByOneBit(bench.PerSampleNoise):  # the whole batch (the "device" side) one ulp off in its first element
        def randn(self, shape, dtype=None):
            out = super().randn(shape, dtype)
            if len(self) == 64:
                out.view(-1)[0] = torch.nextafter(out.view(-1)[0], torch.tensor(9.0, dtype=out.dtype))
            return out

    monkeypatch.setattr(bench, "PerSampleNoise", OffByOneBit)
    same = bench.noise_same_bits(torch.device("cpu"), torch.device("cpu"))
    assert same == {"randn_float32": False, "randn_float64": False, "rand_float32": True}


def test_no_bf16_leaves_out_the_bf16_rows():
    bench = load_script(SCRIPT, "bench_gpu")
    result = bench.main(["--size", "tiny", "--device", "cpu", "--configs", "mnist_ncsn", "--no-compile", "--no-bf16",
                         "--no-fid", "--official", "/nonexistent"])  # fmt: skip
    row = result["configs"]["mnist_ncsn"]
    assert set(row["train_steps_per_second"]) == set(row["sampler_nfe_per_second"]) == {"eager"}
