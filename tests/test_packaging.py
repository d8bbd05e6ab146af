"""The plugin installs from napari's plugin manager without extras: everything the package
imports is a base dependency, except napari itself (and its Qt binding, through qtpy), which
the plugin manager's napari provides, and umap-learn, whose absence the code handles."""

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_cryodrgn"
PROVIDED = {"napari", "vispy", "npe2", "app_model", "imageio"}  # napari and its dependencies
OPTIONAL = {"umap"}  # imported inside functions that say how to install it


def _imports() -> set[str]:
    names = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"napari_cryodrgn"}


def _base_requirements() -> set[str]:
    reqs = md.requires("napari-cryodrgn") or []
    return {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in reqs if "extra ==" not in r}


@pytest.mark.parametrize("module", sorted(_imports() - PROVIDED - OPTIONAL))
def test_every_import_is_a_base_dependency(module):
    dists = md.packages_distributions().get(module, [])
    assert dists, f"{module} is imported but no installed distribution provides it"
    base = _base_requirements()
    assert any(d.lower().replace("_", "-") in base for d in dists), \
        f"{module} (from {dists}) is imported by the plugin but not a base dependency"


def test_the_gui_libraries_are_base_dependencies():
    assert {"magicgui", "qtpy", "pyqtgraph", "psygnal", "superqt"} <= _base_requirements()
