"""Smoke test of benchmarks/elu_speed.py at --size tiny (seconds on a CPU)."""

import json
from pathlib import Path

from scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "elu_speed.py"


def test_tiny_run_times_both_elus_and_restores_the_networks(tmp_path, capsys):
    bench = load_script(SCRIPT, "bench_elu")
    out = tmp_path / "elu.json"
    result = bench.main(["--size", "tiny", "--repeats", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert set(result["ops_ms"]) == {"exp", "expm1", "F.elu", "elu", "F.elu forward+backward", "elu forward+backward"}
    assert set(result["forward_ms"]) == {f"{net} {elu}" for net in ("ncsn_mnist", "ncsnv2_cifar10")
                                         for elu in ("F.elu", "elu")}  # fmt: skip
    assert all(ms > 0 for ms in {**result["ops_ms"], **result["forward_ms"]}.values())
    shares = result["ncsn_step_share_with_F_elu"]
    assert 0 < shares["aten::elu"] < 1 and 0 < shares["aten::mkldnn_convolution"] < 1
    assert bench.layers.elu is bench.ncsn.elu  # the networks' own ELU is back after the swaps
    assert bench.layers.elu.__module__ == "ncsn_pl.networks.layers" and bench.layers.elu.__name__ == "elu"
    assert "NCSN sampling step with F.elu: aten::elu" in capsys.readouterr().out
