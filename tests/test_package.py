"""Package-level guarantees: a Qt-free core, a shipped manifest, ruff-clean sources."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ["napari_cryodrgn.cli", "napari_cryodrgn.io", "napari_cryodrgn.training.api",
        "napari_cryodrgn.model.load", "napari_cryodrgn.simulate",
        "napari_cryodrgn.analysis.volumes", "napari_cryodrgn.demo"]


def test_core_imports_without_qt_or_napari():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in CORE) +
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'vispy', 'pyqtgraph')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_manifest_is_shipped_in_the_package():
    import napari_cryodrgn

    shipped = Path(napari_cryodrgn.__file__).parent / "napari.yaml"
    assert shipped.read_text() == (ROOT / "napari.yaml").read_text()


def test_sources_are_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e .[testing])")
    res = subprocess.run([ruff, "check", "src", "tests", "benchmarks"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
