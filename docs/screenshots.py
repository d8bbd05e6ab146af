"""Regenerate the README screenshots in docs/ from the shipped toy model and sample data.

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/screenshots.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_cryodrgn._napari.explore_widget import MAP_LAYER

    app = QApplication.instance() or QApplication([])

    def wait(cond, timeout=300.0):
        t_end = time.perf_counter() + timeout
        while not cond():
            app.processEvents()
            time.sleep(0.01)
            if time.perf_counter() > t_end:
                raise TimeoutError
        for _ in range(20):
            app.processEvents()

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1700, 1080)
    viewer.open_sample("napari-cryodrgn", "trained_toy_model")
    wait(lambda: any("Explore" in k for k in viewer.window.dock_widgets))
    w = next(d for k, d in viewer.window.dock_widgets.items() if "Explore" in k)
    wait(lambda: w.session is not None)
    s = w.session
    w.colour.setCurrentText("kmeans")
    w.n_frames.setValue(10)
    w.pc_btn.click()
    wait(lambda: "pc1" in w.series and w.idle)
    emb = s.embedding("pca")
    k0 = w.k.value()
    labels, centres = s.kmeans(k0)
    far = int(centres[np.bincount(labels).argmax()])  # the centre of the largest cluster
    w.scatter.set_marker(emb[far])
    w.request_map(s.z[far], "k-means centre")
    wait(lambda: w.map_request_done)
    viewer.layers.selection.active = viewer.layers[MAP_LAYER]
    viewer.camera.angles = (15, 30, 60)
    viewer.reset_view()
    wait(lambda: True)
    viewer.screenshot(str(HERE / "explore.png"), canvas_only=False)
    # the k-means centre maps as a grid of labelled thumbnails; one of them in the map layer
    w.k.setValue(10)
    w.kmeans_btn.click()
    wait(lambda: "kmeans10" in w.series and w.idle)
    w.player.thumbs[7].click()
    wait(lambda: w.map_request_done)
    w.scroll.ensureWidgetVisible(w.player.thumbs[-1])
    wait(lambda: True)
    viewer.screenshot(str(HERE / "series.png"), canvas_only=False)
    w.scroll.ensureWidgetVisible(w.run_edit)
    # select the k-means cluster at the far end of PC1 and show the gallery
    s.select_clusters([int(labels[far])], k=k0)
    w.selection_panel.n_gallery.setValue(6)
    w.selection_panel.show_gallery()
    wait(lambda: w.selection_panel.gallery_ready)
    viewer.screenshot(str(HERE / "select.png"), canvas_only=False)
    s.clear()
    # the views: k-means legend, select by value on a |z| histogram, the learning curve
    w.selection_section.collapse(animate=False)
    w.series_section.collapse(animate=False)
    w.threshold_section.expand(animate=False)
    w.convergence_section.expand(animate=False)
    w.threshold.value.setCurrentText("|z|")
    wait(lambda: w.idle and w.threshold.hist.xData is not None and len(w.threshold.hist.xData) > 2)
    lo, hi = np.percentile(np.linalg.norm(s.z, axis=1), [80, 100])
    w.threshold.set_range(float(lo), float(hi))
    w.threshold.apply()
    wait(lambda: w.idle)
    w.scroll.ensureWidgetVisible(w.convergence_section)
    wait(lambda: True)
    viewer.screenshot(str(HERE / "views.png"), canvas_only=False)
    s.clear()
    viewer.window.remove_dock_widget(w)
    for layer in list(viewer.layers):  # shown first (a hidden 4D volume crashes on removal)
        layer.visible = True
        viewer.layers.remove(layer)
    # the Train dock during a short run on the simulated sample
    viewer.open_sample("napari-cryodrgn", "simulated_particles")
    _, t = viewer.window.add_plugin_dock_widget("napari-cryodrgn", "Train")
    viewer.layers.selection.active = viewer.layers["simulated particles"]
    out = Path(tempfile.mkdtemp()) / "run"
    t.set_inputs(outdir=out)
    t.form.preset.value = "tiny, for a quick look (64 x 2)"
    t.form["num_epochs"].value = 3
    viewer.dims.ndisplay = 2
    t.start_btn.click()
    wait(lambda: (out / "weights.2.pkl").exists(), timeout=600)
    wait(lambda: len(t.loss_plot.x) > 5)
    viewer.screenshot(str(HERE / "train.png"), canvas_only=False)
    wait(lambda: not t.running, timeout=600)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
