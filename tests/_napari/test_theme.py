"""The docks' pyqtgraph plots take napari's theme colours and change with the theme."""

from napari.utils.theme import get_theme

from napari_cryodrgn._napari.train_widget import TrainWidget


def _colours(plot_widget):
    item = plot_widget.getPlotItem()
    return (plot_widget.backgroundBrush().color().name(),
            item.getAxis("left").pen().color().name(),
            item.getAxis("bottom").textPen().color().name())


def _expected(name):
    t = get_theme(name)
    return (t.canvas.as_hex(), t.text.as_hex())


def _hex6(c: str) -> str:
    c = c.lower()
    return "#" + "".join(ch * 2 for ch in c[1:]) if len(c) == 4 else c


def test_plots_follow_the_napari_theme(viewer, qtbot):
    _, explore = viewer.window.add_plugin_dock_widget("napari-cryodrgn", "Explore")
    train = TrainWidget(viewer)
    qtbot.addWidget(train)
    plots = [explore.scatter.plot, train.latent]
    for theme in ("light", "dark", "light"):
        viewer.theme = theme
        bg, fg = map(_hex6, _expected(theme))
        for p in plots:
            assert _colours(p) == (bg, fg, fg), (theme, p)
        for item in (train.loss_plot.view.ci.items):
            assert item.getAxis("left").pen().color().name() == fg
        assert explore.scatter.draft.opts["pen"].color().name() == fg
    assert _hex6(_expected("light")[0]) != _hex6(_expected("dark")[0])
