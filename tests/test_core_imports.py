"""The layers are folders and nothing imports upward; the core and the networks import no framework code."""

import ast
from pathlib import Path

import ncsn_pl

FRAMEWORKS = {"lightning", "pytorch_lightning", "wandb", "omegaconf", "jsonargparse", "torchmetrics"}
PACKAGE = Path(ncsn_pl.__file__).parent
# lowest first: a module may import its own layer and the layers before it (compat: private names of other
# libraries, below everything)
LAYERS = ["compat", "core", "networks", "data", "metrics", "training", "commands", "tools"]


def imports(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "ncsn_pl" and len(parts) > 1 and parts[1] in LAYERS else None


def test_core_and_networks_import_no_framework():
    pure = sorted((PACKAGE / "core").rglob("*.py")) + sorted((PACKAGE / "networks").rglob("*.py"))
    assert len(pure) >= 10
    offenders = {str(path.relative_to(PACKAGE)): {m.split(".")[0] for m in imports(path)} & FRAMEWORKS for path in pure}
    assert not any(offenders.values()), offenders


def test_every_module_lives_in_a_layer_and_imports_no_layer_above_its_own():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert not loose, f"modules outside the layer folders: {loose}"
    upward = {}
    for layer in LAYERS:
        for path in (PACKAGE / layer).rglob("*.py"):
            above = {m for m in imports(path) if (lay := layer_of(m)) and LAYERS.index(lay) > LAYERS.index(layer)}
            if above:
                upward[str(path.relative_to(PACKAGE))] = above
    assert not upward, upward


def test_the_scans_see_framework_and_upward_imports(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("import lightning.pytorch as pl\nfrom wandb import init\ndef f():\n    import ncsn_pl.tools.x\n")
    assert {m.split(".")[0] for m in imports(sample)} >= {"lightning", "wandb"}
    assert layer_of("ncsn_pl.tools.x") == "tools" and "ncsn_pl.tools.x" in imports(sample)


# the metrics folder top-down: a module may import only the ones before it (FID's pieces first, SampleQuality last)
METRICS_ORDER = ["distributed", "inception_weights", "features", "options", "precision_recall", "sample_distances",
                 "seeded_metrics", "noisy_share", "real_stats", "published_stats", "reference_stats", "real_images",
                 "quality", "__init__"]


def metrics_imports(path: Path) -> set[str]:
    """The ``ncsn_pl.metrics`` modules ``path`` imports, absolute or relative, under ``TYPE_CHECKING`` too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = "ncsn_pl.metrics" + (f".{base}" if base else "")
            modules = [base] if node.module else [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        names |= {m.split(".")[2] for m in modules if m.startswith("ncsn_pl.metrics.")}
    return names


def test_the_metrics_folder_reads_top_down_with_no_circle():
    modules = sorted(p.stem for p in (PACKAGE / "metrics").glob("*.py"))
    assert modules == sorted(METRICS_ORDER), "place every metrics module in METRICS_ORDER"
    later = {}
    for index, name in enumerate(METRICS_ORDER):
        after = metrics_imports(PACKAGE / "metrics" / f"{name}.py") & set(METRICS_ORDER[index:])
        if after:
            later[name] = after
    assert not later, f"modules importing themselves or a module after them: {later}"


def test_the_metrics_scan_sees_relative_and_type_checking_imports(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ncsn_pl.metrics.quality import Q\n"
                      "from . import real_stats\nfrom .features import f\nimport ncsn_pl.metrics.options\n")
    assert metrics_imports(sample) == {"quality", "real_stats", "features", "options"}
