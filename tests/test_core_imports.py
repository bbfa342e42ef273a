"""The pure core (sigmas, losses, samplers, distributions, networks) imports no framework code."""

import ast
from pathlib import Path

import ncsn_pl

FRAMEWORKS = {"lightning", "pytorch_lightning", "wandb", "omegaconf", "jsonargparse", "torchmetrics"}
PACKAGE = Path(ncsn_pl.__file__).parent
CORE = [PACKAGE / f"{name}.py" for name in ("sigmas", "losses", "samplers", "distributions")]
CORE += sorted((PACKAGE / "networks").glob("*.py"))


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_modules_import_no_framework():
    assert len(CORE) >= 4
    offenders = {path.name: imported_roots(path) & FRAMEWORKS for path in CORE}
    assert not any(offenders.values()), offenders


def test_the_scan_sees_framework_imports(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("import lightning.pytorch as pl\nfrom wandb import init\n")
    assert imported_roots(sample) >= {"lightning", "wandb"}
