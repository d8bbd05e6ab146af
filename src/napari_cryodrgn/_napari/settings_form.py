"""The Train dock's settings form, made from the declaration in ``training/settings.py``.

One magicgui widget per setting whose face is ``gui`` (the form) or ``advanced`` (a collapsible
section below it): FileEdit for files and folders, SpinBox / FloatSpinBox for numbers, ComboBox
for choices, CheckBox for switches. A setting that may be unset (beta: 1/zdim, enc_mask: D/2,
...) is a number with an "auto" check box. The network-size preset is a convenience that sets
the encoder's and decoder's width and layers.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    SpinBox,
)
from qtpy.QtWidgets import QVBoxLayout, QWidget
from superqt import QCollapsible

from ..training.settings import (
    NETWORK_PRESETS,
    TrainSettings,
    gui_defaults,
    network,
    preset_of,
    specs,
)
from .widgets import show_path_end

CUSTOM = "custom (the advanced settings)"
INT_MAX = 2**31 - 1
NETWORK_KEYS = ("qdim", "qlayers", "pdim", "players")


class OptionalNumber(Container):
    """A number that may be unset: an "auto" check box beside a spin box; ``value`` is None
    while the box is ticked."""

    def __init__(self, inner, auto_text: str, value=None, **kwargs):
        self.auto = CheckBox(text=auto_text, value=value is None)
        self.inner = inner
        super().__init__(widgets=[self.auto, inner], layout="horizontal", labels=False,
                         **kwargs)
        self.margins = (0, 0, 0, 0)
        if value is not None:
            inner.value = value
        self.auto.changed.connect(self._sync)
        self._sync()

    def _sync(self, *_):
        self.inner.enabled = not self.auto.value

    @property
    def value(self):
        return None if self.auto.value else self.inner.value

    @value.setter
    def value(self, v) -> None:
        if v is not None:
            self.inner.value = v
        self.auto.value = v is None


def make_widget(name: str, spec, value):
    """The magicgui widget of one declared setting, holding ``value``."""
    g = spec.gui
    common = {"name": name, "label": spec.label or name, "tooltip": _tooltip(spec)}
    k = spec.kind
    if k in ("file", "dir", "outdir"):
        w = FileEdit(mode="r" if k == "file" else "d", filter=g.get("filter"), nullable=True,
                     value=value, **common)
        if g.get("placeholder"):
            w.line_edit.native.setPlaceholderText(g["placeholder"])
        show_path_end(w.line_edit.native)  # a long path shows its file name
        return w
    if k == "bool":
        return CheckBox(value=bool(value), **common)
    if k == "str":
        choices = g.get("choices") or spec.choices
        if choices:
            return ComboBox(choices=list(choices), value=value, **common)
        return LineEdit(value=value or "", **common)
    lo = g.get("min", spec.min if spec.min is not None else spec.above)
    if k == "int":
        inner = SpinBox(min=int(lo if lo is not None else -INT_MAX), max=int(g.get("max", INT_MAX)))
    else:
        inner = FloatSpinBox(min=float(lo if lo is not None else -1e9),
                             max=float(g.get("max", 1e9)), step=g.get("step", 0.1))
        inner.native.setDecimals(int(g.get("decimals", 4)))
    if spec.auto is not None:
        return OptionalNumber(inner, g.get("auto_text", f"auto ({spec.auto})"), value, **common)
    inner.value = value
    inner.name, inner.label, inner.tooltip = common["name"], common["label"], common["tooltip"]
    return inner


def _tooltip(spec) -> str:
    flag = f" [{spec.flag}]" if spec.flag and not spec.positional else ""
    return f"{spec.help[:1].upper()}{spec.help[1:]}{flag}"


class SettingsForm:
    """The form: ``widgets[name]`` per GUI-visible setting (``form[name].value``), ``preset``
    (the network-size combo), ``advanced`` (the collapsible section) and ``native`` (the
    QWidget to put in a layout). :meth:`settings` reads a :class:`TrainSettings`."""

    def __init__(self, defaults: TrainSettings | None = None):
        self.defaults = defaults or gui_defaults()
        self.widgets = {}
        self.main = Container(labels=True)
        self.more = Container(labels=True)
        for name, spec in specs("gui", "advanced").items():
            w = make_widget(name, spec, getattr(self.defaults, name))
            self.widgets[name] = w
            (self.main if spec.face == "gui" else self.more).append(w)
        self.preset = ComboBox(name="preset", label="Network", choices=[*NETWORK_PRESETS, CUSTOM],
                               value=preset_of(self.defaults) or CUSTOM,
                               tooltip="Sets the encoder's and decoder's width and layers "
                               "(Advanced settings)")
        self.main.insert(self.main.index(self.widgets["device"]), self.preset)
        self.preset.changed.connect(self._on_preset)
        for key in NETWORK_KEYS:
            self.widgets[key].changed.connect(self._on_network)
        self.advanced = QCollapsible("Advanced settings")
        self.advanced.addWidget(self.more.native)
        self.native = QWidget()
        lay = QVBoxLayout(self.native)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.main.native)
        lay.addWidget(self.advanced)

    def __getitem__(self, name: str):
        return self.widgets[name]

    def settings(self) -> TrainSettings:
        """The form's values over the declared defaults (unchecked: see
        :meth:`TrainSettings.checked`); empty path fields are None."""
        vals = {}
        for name, w in self.widgets.items():
            v = w.value
            if isinstance(v, Path):
                v = str(v)
            vals[name] = v
        return replace(self.defaults, **vals)

    def set(self, **values) -> None:
        """Set widgets by setting name (paths as str or Path; None empties a path field)."""
        for name, v in values.items():
            self.widgets[name].value = v

    def _on_preset(self, name: str) -> None:
        if name in NETWORK_PRESETS:
            for key, v in network(name).items():
                self.widgets[key].value = v

    def _on_network(self, *_) -> None:
        name = preset_of(self.settings()) or CUSTOM
        if self.preset.value != name:
            with self.preset.changed.blocked():
                self.preset.value = name
