"""Smoke test of benchmarks/fid_throughput.py at --size tiny with the real offline Inception weights."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fid_throughput.py"
ROW = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+([+-][\d.]+)%\s+([\d.]+)\s+([\d.]+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def fid_throughput():
    return load_script(SCRIPT, "bench_fid_throughput")


def test_tiny_run_prints_images_per_second_and_peak_memory(fid_throughput, tmp_path, capsys):
    out_json = tmp_path / "fid.json"
    threads = torch.get_num_threads()
    result = fid_throughput.main(["--size", "tiny", "--device", "cpu", "--channels", "1", "--json", str(out_json)])
    assert torch.get_num_threads() == threads
    printed = capsys.readouterr().out
    rows = ROW.findall(printed)
    assert len(rows) == 1, printed
    batch, full, bare, overhead, peak, delta = rows[0]
    assert int(batch) == 2
    assert float(full) > 0 and float(bare) > 0 and float(peak) > 0 and float(delta) >= 0
    r = result["rows"][0]
    assert r["update_fake_images_per_s"] == pytest.approx(2 / r["times_s"]["update_fake"][0])
    assert float(overhead) == pytest.approx(100 * r["overhead"], abs=0.01)
    assert "Inception weights" in printed and result["load_s"] > 0
    assert json.loads(out_json.read_text())["rows"][0]["batch"] == 2
