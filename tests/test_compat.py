"""The private names of other libraries that ncsn-pl uses: all listed in ncsn_pl.compat, all still there.

The scan reads every module of the package (but compat itself) and finds the private names (``_x``) it takes from
other libraries: an import of one, an attribute of an object the package does not define (``parser._actions``),
and a method or attribute of a third-party base class used or overridden on ``self`` (``_save_topk_checkpoint``).
Hooks (overridden or called on ``self``) may live in their subclass when compat lists them; every other use goes
through compat's functions.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

import ncsn_pl
from ncsn_pl.compat import PRIVATE_NAMES

PACKAGE = Path(ncsn_pl.__file__).parent


def _private(name: object) -> bool:
    return isinstance(name, str) and name.startswith("_") and not name.startswith("__")


_DEFINED: dict[type, set[str]] = {}


def defined_by(cls: type) -> set[str]:
    """The private names a class defines: its attributes and what its methods assign to ``self``."""
    if cls not in _DEFINED:
        names = {name for name in vars(cls) if _private(name)}
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError, SyntaxError):
            tree = ast.Module(body=[], type_ignores=[])
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
                if isinstance(node.value, ast.Name) and node.value.id == "self":
                    names.add(node.attr)
        _DEFINED[cls] = names
    return _DEFINED[cls]


def inherited(cls: type | None, name: str, package: str) -> type | None:
    """The first base of ``cls`` from another library that defines ``name``."""
    bases = [k for k in cls.__mro__[1:] if not k.__module__.startswith((package, "builtins"))] if cls else []
    return next((k for k in bases if name in defined_by(k)), None)


def _nodes(tree: ast.AST, module: object):
    """Every node with the class (the live object) it lies in, ``None`` outside classes."""

    def walk(node, cls):
        for child in ast.iter_child_nodes(node):
            yield child, cls
            inner = cls
            if isinstance(child, ast.ClassDef):
                found = getattr(cls or module, child.name, None)
                inner = found if inspect.isclass(found) else None
            yield from walk(child, inner)

    yield from walk(tree, None)


def _on_self(node: ast.Attribute) -> bool:
    value = node.value
    return (isinstance(value, ast.Name) and value.id == "self") or (
        isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super"
    )


def scan(paths: list[Path], root: Path, package: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(hooks, foreign)``: the private names used on ``self`` that a third-party base defines, and every other
    private name of another library, each with where it is used."""
    own: set[str] = set()
    uses: list[tuple[str, type | None, str]] = []
    hooks: dict[str, set[str]] = defaultdict(set)
    foreign: dict[str, set[str]] = defaultdict(set)
    for path in paths:
        module = importlib.import_module(".".join((package, *path.relative_to(root).with_suffix("").parts)))
        for node, cls in _nodes(ast.parse(path.read_text()), module):
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and not node.module.startswith(package):
                for alias in node.names:
                    if _private(alias.name):
                        foreign[alias.name].add(where)
                if any(_private(part) for part in node.module.split(".")):
                    foreign[node.module].add(where)
            defined = None
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined = node.name
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined = node.id
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _on_self(node):
                defined = node.attr
            if _private(defined):
                if inherited(cls, defined, package) is not None:
                    hooks[defined].add(where)
                else:
                    own.add(defined)
                continue
            used = node.attr if isinstance(node, ast.Attribute) else None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) > 1:
                if node.func.id in ("getattr", "hasattr", "setattr") and isinstance(node.args[1], ast.Constant):
                    used = node.args[1].value
            if _private(used):
                uses.append((used, cls if isinstance(node, ast.Attribute) and _on_self(node) else None, where))
    for name, cls, where in uses:
        if inherited(cls, name, package) is not None:
            hooks[name].add(where)
        elif name not in own:
            foreign[name].add(where)
    return hooks, foreign


def _package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "compat" not in p.parts and p.name != "__main__.py")


def _owner(entry) -> object:
    module, _, qualname = entry.owner.partition(":")
    owner = importlib.import_module(module)
    for part in qualname.split(".") if qualname else []:
        owner = getattr(owner, part)
    return owner


@pytest.mark.parametrize("entry", PRIVATE_NAMES, ids=lambda e: f"{e.owner}.{e.name}")
def test_every_private_name_listed_in_compat_still_exists_in_the_installed_library(entry):
    owner = _owner(entry)
    found = hasattr(owner, entry.name)
    found = found or (inspect.isclass(owner) and any(entry.name in defined_by(k) for k in owner.__mro__))
    found = found or (inspect.ismodule(owner) and entry.name in inspect.getsource(owner))
    assert found, (
        f"{entry.owner} has no {entry.name} any more (used to: {entry.why}): this version of the library is not "
        "the tested one; see ncsn_pl/compat/__init__.py"
    )


def test_no_module_outside_compat_uses_a_private_name_of_another_library_that_compat_does_not_list():
    hooks, foreign = scan(_package_modules(), PACKAGE, "ncsn_pl")
    listed_hooks = {entry.name for entry in PRIVATE_NAMES if entry.kind == "hook"}
    unlisted = {name: sorted(where) for name, where in hooks.items() if name not in listed_hooks}
    assert not unlisted, f"private hooks of other libraries not listed in ncsn_pl.compat: {unlisted}"
    assert not foreign, f"private names of other libraries used outside ncsn_pl.compat (use its functions): {foreign}"


def test_compat_lists_only_names_in_use():
    hooks, _ = scan(_package_modules(), PACKAGE, "ncsn_pl")
    compat_source = (PACKAGE / "compat" / "__init__.py").read_text()
    for entry in PRIVATE_NAMES:
        if entry.kind == "hook":
            assert entry.name in hooks, f"{entry.name} is listed as a hook but no subclass uses it"
        else:
            assert compat_source.count(entry.name) >= 2, f"{entry.name} is listed but no function of compat uses it"
    # at most ten: the rest go through public API (a new one replaces one of these or finds a public way)
    assert len(PRIVATE_NAMES) <= 10, sorted(entry.name for entry in PRIVATE_NAMES)


def test_the_scan_finds_imports_foreign_attributes_and_hooks_and_ignores_the_package_s_own(tmp_path, monkeypatch):
    package = tmp_path / "probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "m.py").write_text(textwrap.dedent("""
        from argparse import ArgumentParser, _SubParsersAction
        from lightning.pytorch.callbacks import ModelCheckpoint

        class Keep(ModelCheckpoint):
            def _save_topk_checkpoint(self, trainer, candidates):
                self._own_counter = 1
                return super()._save_last_checkpoint(trainer, candidates)

        def groups(parser: ArgumentParser):
            return parser._action_groups, getattr(parser, "_defaults"), Keep()._own_counter
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        hooks, foreign = scan([package / "m.py"], package, "probe_pkg")
    finally:
        sys.modules.pop("probe_pkg.m", None)
        sys.modules.pop("probe_pkg", None)
    assert set(hooks) == {"_save_topk_checkpoint", "_save_last_checkpoint"}
    assert set(foreign) == {"_SubParsersAction", "_action_groups", "_defaults"}
