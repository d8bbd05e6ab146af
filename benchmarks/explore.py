"""Explorer responsiveness in a real napari window (run under Xvfb or on a desktop).

Measures, with real Qt mouse clicks on the latent scatter of the Explore dock:

- click-to-layer latency at D=64: mouse click -> latent point -> map decoded in the worker ->
  napari Image layer updated and the event loop idle again (the canvas redrawn), with the
  decode alone for reference;
- scatter update (new points and colours) and repaint, and a pan/zoom repaint, at 100k and 1M
  particles (display subset of 20k points; maths on all points);
- nearest-point picking (one click's lookup) on 1M points.

A D=64 run is needed: ``--run`` (default: the accuracy benchmark's run in benchmarks/work,
else a 1-epoch run trained here on 600 simulated particles with 256 x 3 networks). The 1M
case copies that run's weights next to synthetic latents (6 blobs, zdim 8).

    xvfb-run -a .venv/bin/python benchmarks/explore.py [--run RUN] [--repeats 15]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, machine_info, read_json, result_path, save_json  # noqa: E402

DEFAULT_RUN = WORK / "accuracy" / "sim_n10000_D64_snr0.1_junk0.1_seed0" / \
    "ours_z8_q256x3_p256x3_b16_s0_lr0.001"


def tiny_run(folder: Path) -> Path:
    """A 1-epoch D=64 run with the benchmark networks (for timing, not for science)."""
    from napari_cryodrgn.simulate.dataset import SimConfig, write_dataset
    from napari_cryodrgn.training.api import make_trainer

    run = folder / "run"
    if (run / "weights.1.pkl").exists():
        return run
    d = write_dataset(folder / "data", SimConfig(n=600, D=64, apix=3.0, snr=0.1, seed=0))
    t = make_trainer(d["particles"], d["poses"], run, 8, ctf=d["ctf"], num_epochs=1,
                     qdim=256, qlayers=3, pdim=256, players=3)
    for _ in t.run():
        pass
    return run


def million_run(src: Path, folder: Path, n: int) -> Path:
    """``src``'s config and last weights beside ``n`` synthetic latents (epoch 1)."""
    import pickle

    from napari_cryodrgn.io.runfolder import RunFolder

    out = folder / f"run_{n}"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.yaml", out / "config.yaml")
    w, _ = RunFolder.open(src).weights()
    shutil.copy(w, out / "weights.1.pkl")
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2, size=(6, 8))
    z = (centres[rng.integers(0, 6, n)] + rng.normal(size=(n, 8))).astype(np.float32)
    with open(out / "z.1.pkl", "wb") as f:  # cryoDRGN's layout: z_mu then z_logvar
        pickle.dump(z, f, protocol=4)
        pickle.dump(np.zeros_like(z), f, protocol=4)
    return out


def _gl_renderer() -> str:
    """The OpenGL renderer drawing the canvas (e.g. llvmpipe: Mesa's software rasteriser)."""
    try:
        from vispy.gloo import gl

        return gl.glGetParameter(gl.GL_RENDERER).split("(")[0].strip()
    except Exception:  # noqa: BLE001 - informative only
        return "OpenGL"


def stats(ts, scale=1e3) -> dict:
    a = np.asarray(ts) * scale
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "max_ms": float(a.max()), "n": len(a)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=None)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--out", default="explore")
    a = p.parse_args(argv)

    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from napari_cryodrgn._napari.explore_widget import MAP_LAYER

    tmp = Path(tempfile.mkdtemp(prefix="bench_explore_"))
    run = a.run or (DEFAULT_RUN if (DEFAULT_RUN / "config.yaml").exists() else tiny_run(tmp))
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1000)
    _, w = viewer.window.add_plugin_dock_widget("napari-cryodrgn", "Explore")
    app = QApplication.instance()

    def settle(cond, timeout=60.0):
        t_end = time.perf_counter() + timeout
        while not cond():
            app.processEvents()
            if time.perf_counter() > t_end:
                raise TimeoutError("explorer did not finish")
        app.processEvents()

    settle(lambda: w.scatter.plot.viewport().isVisible())
    s = w.open_run(run)
    settle(lambda: w.idle and w._drawn is not None)  # the view is drawn in a worker
    emb = s.embedding("pca")
    rng = np.random.default_rng(1)
    # decode alone (warm), then click-to-layer through real mouse clicks
    s.decode(s.z[0])
    decode_ts = []
    for i in rng.integers(0, s.n, a.repeats):
        t0 = time.perf_counter()
        s.decode(s.z[i])
        decode_ts.append(time.perf_counter() - t0)
    vp = w.scatter.plot.viewport()
    shown_at = []
    show = w._put  # the map put into the layer (GUI thread)

    def timed_show(*args, **kw):
        show(*args, **kw)
        shown_at.append(time.perf_counter())

    w._put = timed_show
    layer_ts, frame_ts = [], []
    for k, i in enumerate(rng.integers(0, s.n, a.repeats + 1)):
        pos = w.scatter.widget_pos(*emb[i])
        t0 = time.perf_counter()
        QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos)
        settle(lambda: w.map_request_done and MAP_LAYER in viewer.layers)
        if k:  # the first creates the layer and switches to 3D
            layer_ts.append(shown_at[-1] - t0)
            frame_ts.append(time.perf_counter() - t0)
    gl = _gl_renderer()
    # playing a series: one step of the player -> the next map drawn in the one map layer
    s.pc_traversal(1, n=10)
    settle(lambda: w.idle and "pc1" in w.series)
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    from vispy.gloo import gl as _gl

    def frame_drawn():
        canvas.update()
        settle(lambda: w.map_request_done)
        canvas.native.repaint()
        _gl.glFinish()  # the driver rasterises here, not when the calls are queued

    step_ts = []
    for k in range(1, 2 * 10):
        t0 = time.perf_counter()
        w.player.slider.setValue(k % 10)
        frame_drawn()
        step_ts.append(time.perf_counter() - t0)
    turn_ts = []  # one turn of the camera: what dragging the 3D view costs per frame
    for k in range(10):
        t0 = time.perf_counter()
        viewer.camera.angles = (0.0, 10.0 * k, 90.0)
        frame_drawn()
        turn_ts.append(time.perf_counter() - t0)
    drawn = [ly.name for ly in viewer.layers if ly.visible]
    mode = w.show_as.currentData()
    rows = [{"what": f"decode one map, D={s.D}", **stats(decode_ts)},
            {"what": f"click -> map in the layer ({mode}), D={s.D}", **stats(layer_ts)},
            {"what": f"click -> 3D frame drawn ({gl}, {mode}), D={s.D}", **stats(frame_ts)},
            {"what": f"series step -> frame drawn ({gl}, {mode}), D={s.D}, {len(drawn)} "
                     "layer shown", **stats(step_ts)},
            {"what": f"camera turn -> frame drawn ({gl}, {mode}), D={s.D}", **stats(turn_ts)}]

    for n in a.sizes:
        big = million_run(run, tmp, n)
        t0 = time.perf_counter()
        sb = w.open_run(big)
        settle(lambda: w.idle and w._drawn is not None)
        open_s = time.perf_counter() - t0
        xy = sb.embedding("pca")
        upd = []
        for name in ("density", "z0", "kmeans", "density"):
            vals = sb.colouring(name)
            t0 = time.perf_counter()
            w.scatter.set_points(xy, vals, name == "kmeans", ("PC1", "PC2"))
            w.scatter.plot.viewport().repaint()
            upd.append(time.perf_counter() - t0)
        pan = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            w.scatter.vb.scaleBy((0.9, 0.9))
            w.scatter.vb.translateBy((0.05, 0.0))
            app.processEvents()  # pyqtgraph applies the new range on the next event pass
            w.scatter.plot.viewport().repaint()
            pan.append(time.perf_counter() - t0)
        picker = sb.picker("pca")
        q = rng.normal(size=(200, 2)).astype(np.float32)
        t0 = time.perf_counter()
        for xy_q in q:
            picker.nearest(xy_q)
        pick_us = (time.perf_counter() - t0) / len(q) * 1e6
        rows += [
            {"what": f"open run + first scatter, {n} particles", "median_ms": open_s * 1e3},
            {"what": f"scatter recolour + repaint, {n}", **stats(upd[1:])},
            {"what": f"pan/zoom repaint, {n}", **stats(pan)},
            {"what": f"nearest-point pick, {n}", "median_ms": pick_us / 1e3},
        ]
        shutil.rmtree(big, ignore_errors=True)
    tp = read_json(result_path("throughput"), {}) or {}
    out = {"machine": machine_info(), "run": str(run), "D": int(s.D), "rows": rows,
           "canvas_px": list(viewer.window._qt_viewer.canvas.size),
           "targets": {"click_to_layer_ms": 300, "decode_ms": 150},
           "cryodrgn_reference": "decode of one map by cryoDRGN: see throughput.json "
                                 "(eval_vol in process)",
           "throughput_json_present": bool(tp)}
    save_json(a.out, out, rows, ["what", "median_ms", "p90_ms", "max_ms", "n"],
              "explorer responsiveness")
    viewer.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
