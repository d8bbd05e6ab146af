"""cryoDRGN's training folders in the napari plugin: the reader opens the run and the Explore
dock on it; a click on the scatter shows our decoder's map (equal to ``cryodrgn eval_vol``'s,
see test_their_runs.py) at that latent point; cryoDRGN's analyze.N k-means centres and PC
traversal become map series."""

from __future__ import annotations

import numpy as np
import pytest
from _specs import ANALYZE_THEIRS
from qtpy.QtCore import Qt

from napari_cryodrgn._napari.explore_widget import MAP_LAYER
from napari_cryodrgn.training.checkpoint import load_z

pytestmark = pytest.mark.interop


def test_their_run_opens_and_explores(make_napari_viewer, qtbot, their_runs):
    their_runs.jobs.check(f"train_vae:{ANALYZE_THEIRS}")
    run = their_runs.runs[ANALYZE_THEIRS]
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(run.workdir, plugin="napari-cryodrgn")
    assert layer.name == MAP_LAYER and layer.metadata["epoch"] == run.epochs
    qtbot.waitUntil(lambda: any("Explore" in k for k in viewer.window.dock_widgets),
                    timeout=10_000)
    w = next(d for k, d in viewer.window.dock_widgets.items() if "Explore" in k)
    qtbot.waitUntil(lambda: w.session is not None and w.scatter.plot.viewport().isVisible()
                    and w.idle and len(w.scatter.xy) > 0, timeout=30_000)  # scatter drawn
    s = w.session
    theirs_z = load_z(run.workdir / f"z.{run.epochs}.pkl")[0]
    assert s.workdir == run.workdir and s.zdim == run.zdim
    np.testing.assert_array_equal(s.z, theirs_z)
    qtbot.wait(50)
    pos = w.scatter.widget_pos(*s.embedding("pca")[5])
    before = list(viewer.layers[MAP_LAYER].metadata["z"])
    qtbot.mouseClick(w.scatter.plot.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: w.map_request_done
                    and list(viewer.layers[MAP_LAYER].metadata["z"]) != before, timeout=30_000)
    z, _ = s.latent_at("pca", w.scatter.data_pos(pos))
    np.testing.assert_allclose(viewer.layers[MAP_LAYER].metadata["z"], z, rtol=1e-6)
    np.testing.assert_allclose(w.shown_volume(), s.decode(z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(viewer.layers[MAP_LAYER].scale, [s.apix] * 3, rtol=1e-6)
    w.k.setValue(4)
    w.kmeans_btn.click()
    qtbot.waitUntil(lambda: "kmeans4" in w.series, timeout=60_000)
    assert w.series["kmeans4"].vols.shape[0] == 4
