"""Smoke test of benchmarks/sampler_overhead.py at --size tiny (seconds on a CPU)."""

import json
from pathlib import Path

from scripts import load_script

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    return load_script(BENCHMARKS / f"{name}.py", f"bench_{name}")


def test_sampler_overhead_tiny_reports_times_rates_and_overheads(tmp_path, capsys):
    bench = _load("sampler_overhead")
    out = tmp_path / "result.json"
    result = bench.main(["--size", "tiny", "--device", "cpu", "--bf16", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["forward_calls"] == result["num_scales"] * result["n_steps_each"] == 2
    assert result["bf16"] is True and result["compile"] is False
    for name in ("bare", "sampler", "seeded"):
        assert result["seconds"][name] > 0
        assert result["images_per_second"][name] == result["batch"] / result["seconds"][name]
    for name in ("sampler", "seeded"):
        assert result["overhead"][name] == result["seconds"][name] / result["seconds"]["bare"] - 1
    beyond = result["beyond_network"]
    for name in ("sampler", "seeded", "command"):  # the sampler's own time per step over the network's per call
        seconds = beyond["sampler_seconds_per_step"][name]
        assert seconds > 0 and beyond["overhead"][name] == seconds / beyond["network_seconds_per_call"]
    # no per-row generator: no generator kernel at all, and a noise draw costs the same at batch 1 and 2
    assert result["rng"]["1"]["generator_calls_per_step"] == result["rng"]["2"]["generator_calls_per_step"] == 0
    assert result["rng"]["1"]["ops_per_noise_draw"] == result["rng"]["2"]["ops_per_noise_draw"] > 0
    printed = capsys.readouterr().out
    assert "images/s" in printed and "overhead" in printed and "2 forward calls" in printed
    assert "beyond the network" in printed and "generator calls per step" in printed
