"""The layers are folders and nothing imports upward or in a circle; the core and the networks import no framework
code; the README's "What is where" draws the folders as they are."""

import ast
from pathlib import Path

import ncsn_pl

FRAMEWORKS = {"lightning", "pytorch_lightning", "wandb", "omegaconf", "jsonargparse", "torchmetrics"}
PACKAGE = Path(ncsn_pl.__file__).parent
# lowest first: a module may import its own layer and the layers before it (compat: private names of other
# libraries, below everything; system: files, locks and errors, no mathematics; runs: the run records; sample_sets:
# the sample sets of the sample and fid commands)
LAYERS = ["compat", "system", "core", "networks", "data", "metrics", "runs", "training", "sample_sets", "commands",
          "tools"]
README = PACKAGE.parent / "README.md"


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
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.rglob("*.py")))
    assert folders == sorted(LAYERS), f"place every folder of ncsn_pl in LAYERS: {folders}"
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



def import_graph(package: Path) -> dict[str, set[str]]:
    """Each module of ``package`` (named ``ncsn_pl.…``) and the modules of it that it imports (``from a import b``
    names module ``a.b`` when there is one, else ``a``; imports inside functions count)."""
    def name(path: Path) -> str:
        parts = ("ncsn_pl", *path.relative_to(package).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name(path): path for path in package.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}
        graph[module] = {target for target in targets if target in modules and target != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: each group of modules that import one another, directly or not."""
    reach = {}
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            if (module := todo.pop()) not in seen:
                seen.add(module)
                todo.extend(graph[module])
        reach[start] = seen
    groups = {frozenset(m for m in graph if m in reach[s] and s in reach[m]) for s in graph if s in reach[s]}
    return sorted(sorted(group) for group in groups)


def test_no_module_imports_itself_through_others():
    graph = import_graph(PACKAGE)
    assert len(graph) > 80 and "ncsn_pl.sample_sets.drawing" in graph["ncsn_pl.commands.sample"]
    assert not circles(graph), f"import circles: {circles(graph)}"


def test_the_circle_scan_sees_a_circle_through_a_function_level_import(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "__init__.py").write_text("")
    (tmp_path / "a" / "x.py").write_text("from ncsn_pl.a.y import f\n")
    (tmp_path / "a" / "y.py").write_text("def f():\n    from ncsn_pl.a import x\n")
    (tmp_path / "a" / "z.py").write_text("import ncsn_pl.a.x\n")
    graph = import_graph(tmp_path)
    assert graph["ncsn_pl.a.y"] == {"ncsn_pl.a.x"} and graph["ncsn_pl.a.z"] == {"ncsn_pl.a.x"}
    assert circles(graph) == [["ncsn_pl.a.x", "ncsn_pl.a.y"]]


def what_is_where() -> tuple[list[str], dict[str, list[str]]]:
    """The folders of ``ncsn_pl/`` the README's "What is where" draws, in order (lines indented by two spaces), and
    the modules it lists under each (``name.py`` and ``name/`` lines indented by four)."""
    block = README.read_text().split("## What is where", 1)[1].split("```", 2)[1]
    folders, listed = [], {}
    for line in block.split("ncsn_pl/\n", 1)[1].splitlines():
        if not line.startswith(" "):
            break  # past ncsn_pl/
        indent, entry = len(line) - len(line.lstrip()), line.split()[0]
        if indent == 2:
            folders.append(entry.rstrip("/"))
            listed[folders[-1]] = []
        elif indent == 4 and entry.endswith((".py", "/")):
            listed[folders[-1]].append(entry.rstrip("/").removesuffix(".py"))
    return folders, listed


def test_the_readme_draws_the_layers_in_order_and_every_module_of_a_folder_it_lists():
    folders, listed = what_is_where()
    assert folders == LAYERS, "README's What is where: one line per layer folder, lowest first"
    assert all(listed[folder] for folder in ("system", "core", "runs", "sample_sets"))
    for folder, modules in listed.items():
        if modules:  # a folder drawn module by module: each of its modules, and no other
            there = [p.stem if p.is_file() else p.name for p in (PACKAGE / folder).iterdir()
                     if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()]
            assert sorted(modules) == sorted(there), f"README's What is where, {folder}/"

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
