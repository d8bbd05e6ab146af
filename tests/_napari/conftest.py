"""GUI test fixtures: a real napari viewer on screen (Xvfb + Mesa in CI), notifications and
test artefacts (screenshots, measurements) under ``test-artifacts/``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ARTIFACTS = Path(os.environ.get("NAPARI_CRYODRGN_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "test-artifacts"))


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def viewer(make_napari_viewer):
    """A shown viewer (screenshots of the canvas need a real window)."""
    return make_napari_viewer(show=True)


@pytest.fixture
def notes():
    """Notifications shown during the test: a list of (severity, message)."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def grab(event):
        n = event.value if hasattr(event, "value") else event
        seen.append((str(n.severity), str(n.message)))

    notification_manager.notification_ready.connect(grab)
    yield seen
    notification_manager.notification_ready.disconnect(grab)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory, monkeypatch):
    """Sample data goes to a per-session cache, not the user's home."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _thread_pools_restored():
    """A dock limits the process's thread pools to leave the GUI a core; the limit is undone
    after each test, so later tests (and the science tier) use every core again."""
    import torch

    from napari_cryodrgn._napari import jobs

    before = torch.get_num_threads()
    yield
    if jobs._limits is not None:
        jobs._limits.restore_original_limits()
        jobs._limits = None
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_run(train_tiny):
    """A 2-epoch zdim-2 run on the tiny dataset (checkpoints weights.1/2, z.1/2)."""
    return train_tiny("tiny_run")
