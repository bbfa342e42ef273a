"""Smoke tests of benchmarks/training_overhead.py at --size tiny, and of the shared peak-memory helper."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scripts import load_script

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
LOOP_LINE = re.compile(r"^(bare|lightning)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", re.MULTILINE)
OVERHEAD_LINE = re.compile(r"^overhead: ([+-]\d+\.\d+)% \(median of (\d+) paired repeats; lightning/bare time "
                           r"(\d+\.\d+)", re.MULTILINE)


def _load(name: str):
    return load_script(BENCHMARKS / f"{name}.py", f"bench_{name}")


@pytest.fixture(scope="module")
def training_overhead():
    return _load("training_overhead")


def _parse(printed: str) -> tuple[dict[str, list[float]], float, int, float]:
    loops = {m[1]: [float(v) for v in m.groups()[1:]] for m in LOOP_LINE.finditer(printed)}
    overhead = OVERHEAD_LINE.search(printed)
    assert set(loops) == {"bare", "lightning"} and overhead is not None, printed
    return loops, float(overhead[1]), int(overhead[2]), float(overhead[3])


def test_tiny_run_prints_throughput_overhead_and_memory(training_overhead, tmp_path, capsys):
    out_json = tmp_path / "overhead.json"
    threads = torch.get_num_threads()
    result = training_overhead.main(["--size", "tiny", "--device", "cpu", "--threads", "1", "--json", str(out_json)])
    assert torch.get_num_threads() == threads
    loops, overhead_pct, repeats, ratio = _parse(capsys.readouterr().out)
    for name, (images_per_s, seconds_per_step, peak_mib, delta_mib) in loops.items():
        assert images_per_s > 0 and seconds_per_step > 0 and peak_mib > 0 and delta_mib >= 0
        r = result["loops"][name]
        # images/s is batch * steps / median time; the printed figures are the returned ones
        assert r["images_per_s"] == pytest.approx(result["batch"] * result["steps"] / r["median_s"])
        assert images_per_s == pytest.approx(r["images_per_s"], abs=0.01)
        assert len(r["times_s"]) == result["repeats"] == repeats == 2
    assert result["config"] == "digits" and result["ngf"] == 8 and result["batch"] == 4
    # the overhead is the median of the paired per-repeat ratios
    assert ratio == pytest.approx(1 + overhead_pct / 100, abs=1e-3)
    expected = [t_l / t_b for t_l, t_b in zip(result["loops"]["lightning"]["times_s"],
                                               result["loops"]["bare"]["times_s"], strict=True)]
    assert result["ratios"] == pytest.approx(expected)
    assert result["fit_startup_s"] > 0
    saved = json.loads(out_json.read_text())
    assert saved["loops"]["bare"]["images_per_s"] == pytest.approx(result["loops"]["bare"]["images_per_s"])


def test_speed_options_run_in_both_loops(training_overhead, capsys):
    result = training_overhead.main(["--size", "tiny", "--device", "cpu", "--threads", "1", "--bf16",
                                     "--channels-last", "--repeats", "1", "--steps", "1", "--warmup", "0"])
    loops, _, repeats, _ = _parse(capsys.readouterr().out)
    assert repeats == 1 and all(v[0] > 0 for v in loops.values())
    assert result["options"] == {"channels_last": True, "bf16": True, "compile": False}


def test_missing_cuda_is_reported(training_overhead):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(SystemExit, match="CUDA is not available"):
        training_overhead.main(["--size", "tiny", "--device", "cuda"])


def test_lightning_and_bare_loops_train_the_same_way(training_overhead):
    """Both loops start from the same weights and take real optimizer steps on the same batches."""
    data = training_overhead.InMemoryImages((1, 8, 8), batch_size=4, num_batches=2)
    torch.manual_seed(0)
    net = training_overhead.NCSN(channels=1, ngf=8, num_scales=10)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    model = training_overhead.ScoreModel(net, data_shape=(1, 8, 8))
    elapsed, startup = training_overhead.run_lightning(model, data, torch.device("cpu"), 0, 2, bf16=False)
    assert elapsed > 0 and startup > 0
    moved = [k for k, v in net.state_dict().items() if not torch.equal(v, start[k])]
    assert moved, "the Lightning loop did not update the network"
    bare = training_overhead.NCSN(channels=1, ngf=8, num_scales=10)
    bare.load_state_dict(start)
    sigmas = training_overhead.geometric_sigmas(1.0, 0.01, 10)
    assert training_overhead.run_bare(bare, data, sigmas, torch.device("cpu"), 0, 2, bf16=False) > 0
    assert any(not torch.equal(v, start[k]) for k, v in bare.state_dict().items())


def test_peak_memory_sees_a_large_cpu_allocation():
    # in a fresh process: memory that earlier tests freed but the process kept resident would absorb the allocation
    code = (
        "import json, sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from scripts import load_script\n"
        f"common = load_script(__import__('pathlib').Path({str(BENCHMARKS / 'common.py')!r}), 'bench_common')\n"
        "with common.PeakMemory(torch.device('cpu')) as peak:\n"
        "    block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched\n"
        "    del block\n"
        "print(json.dumps({'method': peak.method, 'delta': peak.delta_mib, 'peak': peak.peak_mib}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    peak = json.loads(done.stdout.strip().splitlines()[-1])
    assert peak["method"] in ("VmHWM", "ru_maxrss")
    if peak["method"] == "VmHWM":  # resettable: the section's own peak
        assert 60 <= peak["delta"] < 200
    assert peak["peak"] > peak["delta"]


@pytest.mark.slow
def test_compile_option(training_overhead, capsys):
    training_overhead.main(["--size", "tiny", "--device", "cpu", "--compile", "--repeats", "1"])
    loops, _, _, _ = _parse(capsys.readouterr().out)
    assert all(v[0] > 0 for v in loops.values())
