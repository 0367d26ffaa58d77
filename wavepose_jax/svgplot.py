"""Small inline-SVG charts for the HTML report: lines, shaded spans, thresholds, labels.

A `Chart` maps data coordinates onto a plot area with ticked axes and collects SVG elements;
`Chart.svg()` returns the markup. Lines are thinned to at most about one point per pixel
column and coordinates are written with one decimal, so a chart of a long clip stays a few
kilobytes. Every text is XML-escaped here; numbers are formatted, never inserted raw.

    chart = Chart(x_range=(0, 12), y_range=(80, 180), x_label="time (s)", y_label="knee (°)")
    chart.span(1.0, 2.5, "#4c72b0")
    chart.line(t, knee)
    chart.hline(110, "#c44e52", label="depth limit 110°")
    markup = chart.svg()
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence

import numpy as np

FONT = "system-ui, sans-serif"
# Anchors of the magma colour map (dark -> light) for `heat_png`.
_MAGMA = np.array([[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109],
                   [252, 253, 191]], np.float64)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values within [lo, hi]: the step of 1, 2, 2.5 or 5 x 10^k
    nearest (in ratio) to (hi - lo) / count."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 2.5, 5, 10)), key=lambda v: abs(math.log(v / raw)))
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:.10g}" if abs(value) >= 1e-9 else "0"


def heat_png(values: np.ndarray) -> str:
    """A [rows, columns] array in [0, max] as a base64 PNG, one pixel per value (magma)."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    v = np.asarray(values, np.float64)
    top = float(np.nanmax(v)) if v.size and np.isfinite(v).any() else 1.0
    u = np.clip(np.nan_to_num(v / (top or 1.0)), 0.0, 1.0) * (len(_MAGMA) - 1)
    rgb = np.stack([np.interp(u, np.arange(len(_MAGMA)), _MAGMA[:, c]) for c in range(3)], -1)
    buf = io.BytesIO()
    Image.fromarray(rgb.round().astype(np.uint8), "RGB").save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class Chart:
    """One chart: a plot area with x and y axes in data coordinates."""

    def __init__(self, *, x_range: tuple[float, float], y_range: tuple[float, float],
                 width: int = 900, height: int = 240, x_label: str = "", y_label: str = "",
                 margin: tuple[int, int, int, int] = (64, 150, 26, 38),
                 y_ticks: Sequence[float] | None = None,
                 y_tick_labels: Sequence[str] | None = None, title: str = ""):
        """x_range, y_range: the data shown; margin: (left, right, top, bottom) pixels around
        the plot area; y_ticks / y_tick_labels: explicit ticks (default: `nice_ticks`)."""
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = margin
        self.x0, self.x1 = float(x_range[0]), float(x_range[1])
        self.y0, self.y1 = float(y_range[0]), float(y_range[1])
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1.0
        if self.y1 <= self.y0:
            self.y0, self.y1 = self.y0 - 0.5, self.y0 + 0.5
        self.title = title
        self.x_label, self.y_label = x_label, y_label
        self.y_ticks = list(y_ticks) if y_ticks is not None else nice_ticks(self.y0, self.y1)
        self.y_tick_labels = (list(y_tick_labels) if y_tick_labels is not None
                              else [_label(v) for v in self.y_ticks])
        self.back: list[str] = []   # drawn under the axes' grid
        self.front: list[str] = []  # drawn over it

    # -- coordinates -------------------------------------------------------------------------

    @property
    def plot_width(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> float:
        return self.height - self.top - self.bottom

    def px(self, x) -> np.ndarray:
        """x data -> pixels."""
        return self.left + (np.asarray(x, np.float64) - self.x0) / (self.x1 - self.x0) * \
            self.plot_width

    def py(self, y) -> np.ndarray:
        """y data -> pixels (up is up)."""
        return self.top + (self.y1 - np.asarray(y, np.float64)) / (self.y1 - self.y0) * \
            self.plot_height

    # -- elements ----------------------------------------------------------------------------

    def span(self, x_start: float, x_end: float, color: str, opacity: float = 0.15) -> None:
        """A shaded vertical band over the whole plot height."""
        a, b = float(self.px(x_start)), float(self.px(x_end))
        self.back.append(f'<rect x="{a:.1f}" y="{self.top}" width="{max(b - a, 0):.1f}" '
                         f'height="{self.plot_height:.1f}" fill="{color}" '
                         f'fill-opacity="{opacity:g}"/>')

    def line(self, x, y, color: str = "#222", width: float = 1.4, opacity: float = 1.0) -> None:
        """A polyline; NaN values break it; thinned to about one point per pixel column."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        step = max(1, int(len(x) / max(self.plot_width, 1)))
        x, y = x[::step], y[::step]
        ok = np.isfinite(x) & np.isfinite(y)
        xs, ys = self.px(x), self.py(y)
        for run in np.split(np.arange(len(x)), np.flatnonzero(np.diff(ok.astype(int))) + 1):
            if run.size > 1 and ok[run[0]]:
                points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs[run], ys[run]))
                self.front.append(f'<polyline points="{points}" fill="none" stroke="{color}" '
                                  f'stroke-width="{width:g}" stroke-opacity="{opacity:g}" '
                                  f'stroke-linejoin="round"/>')

    def points(self, x, y, color: str = "#222", radius: float = 3.0) -> None:
        """Dots at (x, y)."""
        for a, b in zip(self.px(x), self.py(y)):
            if np.isfinite(a) and np.isfinite(b):
                self.front.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{radius:g}" '
                                  f'fill="{color}"/>')

    def hline(self, y: float, color: str, label: str = "", dash: str = "5 3") -> None:
        """A horizontal line across the plot, labelled at its right end."""
        b = float(self.py(y))
        self.front.append(f'<line x1="{self.left}" y1="{b:.1f}" x2="{self.left + self.plot_width:.1f}" '
                          f'y2="{b:.1f}" stroke="{color}" stroke-width="1" '
                          f'stroke-dasharray="{dash}"/>')
        if label:
            self.text(self.x1, y, label, color=color, anchor="start", dx=4, dy=4)

    def vline(self, x: float, color: str, dash: str = "4 3") -> None:
        """A vertical line over the plot height."""
        a = float(self.px(x))
        self.front.append(f'<line x1="{a:.1f}" y1="{self.top}" x2="{a:.1f}" '
                          f'y2="{self.top + self.plot_height:.1f}" stroke="{color}" '
                          f'stroke-width="1" stroke-dasharray="{dash}"/>')

    def text(self, x: float, y: float, text: str, *, color: str = "#222", size: int = 12,
             anchor: str = "middle", dx: float = 0, dy: float = 0, weight: str = "normal") -> None:
        """A text at data coordinates (escaped)."""
        self.front.append(
            f'<text x="{float(self.px(x)) + dx:.1f}" y="{float(self.py(y)) + dy:.1f}" '
            f'font-size="{size}" fill="{color}" text-anchor="{anchor}" '
            f'font-weight="{weight}">{html.escape(text)}</text>')

    def image(self, png_b64: str) -> None:
        """A raster (base64 PNG) stretched over the whole plot area, pixels kept sharp."""
        self.back.append(f'<image x="{self.left}" y="{self.top}" width="{self.plot_width:.1f}" '
                         f'height="{self.plot_height:.1f}" preserveAspectRatio="none" '
                         f'style="image-rendering:pixelated" '
                         f'href="data:image/png;base64,{png_b64}"/>')

    def legend(self, items: Sequence[tuple[str, str]], opacity: float = 0.35) -> None:
        """Colour swatches with labels in a row above the plot area's right end."""
        x = self.left + self.plot_width
        for label, color in reversed(items):
            width = 7 * len(label) + 22
            x -= width
            self.front.append(f'<rect x="{x:.1f}" y="4" width="12" height="10" fill="{color}" '
                              f'fill-opacity="{opacity:g}"/><text x="{x + 16:.1f}" y="13" '
                              f'font-size="11" fill="#444">{html.escape(label)}</text>')

    # -- output ------------------------------------------------------------------------------

    def _axes(self) -> list[str]:
        w, h, left, top = self.plot_width, self.plot_height, self.left, self.top
        out = [f'<rect x="{left}" y="{top}" width="{w:.1f}" height="{h:.1f}" fill="none" '
               f'stroke="#888" stroke-width="1"/>']
        for value, label in zip(self.y_ticks, self.y_tick_labels):
            if not self.y0 - 1e-9 <= value <= self.y1 + 1e-9:
                continue
            b = float(self.py(value))
            out.append(f'<line x1="{left}" y1="{b:.1f}" x2="{left + w:.1f}" y2="{b:.1f}" '
                       f'stroke="#e6e6e6" stroke-width="1"/>'
                       f'<text x="{left - 5}" y="{b + 4:.1f}" font-size="11" fill="#444" '
                       f'text-anchor="end">{html.escape(label)}</text>')
        for value in nice_ticks(self.x0, self.x1, max(2, int(w / 90))):
            a = float(self.px(value))
            out.append(f'<line x1="{a:.1f}" y1="{top + h:.1f}" x2="{a:.1f}" y2="{top + h + 4:.1f}" '
                       f'stroke="#888" stroke-width="1"/>'
                       f'<text x="{a:.1f}" y="{top + h + 16:.1f}" font-size="11" fill="#444" '
                       f'text-anchor="middle">{_label(value)}</text>')
        if self.x_label:
            out.append(f'<text x="{left + w / 2:.1f}" y="{self.height - 4}" font-size="12" '
                       f'fill="#222" text-anchor="middle">{html.escape(self.x_label)}</text>')
        if self.y_label:
            out.append(f'<text transform="translate(14 {top + h / 2:.1f}) rotate(-90)" '
                       f'font-size="12" fill="#222" text-anchor="middle">'
                       f'{html.escape(self.y_label)}</text>')
        if self.title:
            out.append(f'<text x="{left}" y="13" font-size="12" font-weight="600" fill="#222">'
                       f'{html.escape(self.title)}</text>')
        return out

    def svg(self) -> str:
        """The chart as an inline <svg> element (scales down with the page width)."""
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width} '
                f'{self.height}" width="{self.width}" height="{self.height}" '
                f'style="max-width:100%;height:auto" font-family="{FONT}" role="img">'
                + "".join(self.back + self._axes() + self.front) + "</svg>")
