"""The dependencies a cluster installs: tested ranges with upper bounds in setup.cfg, exact pins in CI only."""

from __future__ import annotations

import configparser
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, Requirement]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in config["options"]["install_requires"].splitlines()]
    return {(r := Requirement(line)).name: r for line in lines if line and not line.startswith("#")}


@pytest.mark.parametrize("name", ["torch", "torchvision", "lightning", "jsonargparse", "torchmetrics"])
def test_a_dependency_whose_internals_or_build_matter_has_a_tested_range_with_an_upper_bound(name):
    requirement = _requirements()[name]
    operators = {spec.operator for spec in requirement.specifier}
    assert "==" not in operators, f"{name}: a range, not a pin (a cluster keeps its own CUDA build)"
    assert {">=", "<"} <= operators, f"{name}: {requirement.specifier}"
    assert requirement.specifier.contains(version(name)), f"the tested {name} {version(name)} is outside the range"


def test_ci_installs_the_exact_torch_and_torchvision_that_the_ranges_hold():
    ci = (ROOT / ".ci" / "run").read_text()
    pins = dict(re.findall(r"\b(torch|torchvision)==([\w.]+)", ci))
    assert set(pins) == {"torch", "torchvision"}
    assert ci.index("torch==") < ci.index('pip install -e ".[dev]"')  # before the package, so pip keeps them
    for name, pinned in pins.items():
        assert _requirements()[name].specifier.contains(pinned)
