"""The npe2 manifest: valid, ids under napari-cryodrgn.*, every callable importable."""

import importlib

from npe2 import PluginManifest


def test_manifest_valid_and_importable():
    pm = PluginManifest.from_distribution("napari-cryodrgn")
    pm.validate_imports()
    cmds = pm.contributions.commands
    assert cmds and all(c.id.startswith("napari-cryodrgn.") for c in cmds)
    for c in cmds:
        mod, attr = c.python_name.split(":")
        assert callable(getattr(importlib.import_module(mod), attr))
    widgets = {w.display_name for w in pm.contributions.widgets}
    assert "Train" in widgets
    samples = {s.display_name for s in pm.contributions.sample_data}
    assert {"Simulated particles", "Trained toy model"} <= samples
    assert pm.contributions.readers and pm.contributions.writers
