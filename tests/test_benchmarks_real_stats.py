"""Smoke test of benchmarks/real_stats_memory.py: a tiny fake CelebA, the tiny extractor (each size is measured in
a process of its own, about 15 s)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_stats_memory.py"


@pytest.fixture(scope="module")
def real_stats_memory():
    return load_script(SCRIPT, "bench_real_stats_memory")


def test_tiny_run_prints_peak_memory_per_data_set_size(real_stats_memory, tmp_path, capsys):
    out = tmp_path / "memory.json"
    result = real_stats_memory.main(["--sizes", "12", "--batch-size", "4", "--image-size", "16",
                                     "--workdir", str(tmp_path / "data"), "--json", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert [row["num_images"] for row in result["rows"]] == [12]
    for row in result["rows"]:
        assert row["mode"] == "stream" and row["num_features"] == 4 and row["process_peak_mib"] > 0
        assert f"{row['num_images']:>8} {row['process_peak_mib']:>17.1f}" in printed
    assert json.loads(out.read_text())["rows"] == result["rows"]
    celeba = tmp_path / "data" / "celeba_12" / "celeba"
    assert len(list((celeba / "img_align_celeba").iterdir())) == 16  # 12 train + 2 valid + 2 test


@pytest.mark.slow
def test_tiny_run_of_the_stacked_mode(real_stats_memory, tmp_path):
    stacked = real_stats_memory.main(["--sizes", "6", "--mode", "stacked", "--batch-size", "4", "--image-size", "16",
                                      "--workdir", str(tmp_path / "data")])  # fmt: skip
    assert stacked["rows"][0]["mode"] == "stacked" and stacked["rows"][0]["num_images"] == 6
