"""The report's inline-SVG charts: ticks, thinning, gaps, escaping, the heatmap raster."""

import base64
import io
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from wavepose_jax import svgplot

SVG = "{http://www.w3.org/2000/svg}"


def test_nice_ticks():
    assert svgplot.nice_ticks(73.1, 198.7) == [75, 100, 125, 150, 175]
    assert svgplot.nice_ticks(0, 13.7, 7) == [0, 2, 4, 6, 8, 10, 12]
    assert svgplot.nice_ticks(0, 0.066) == [0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    assert svgplot.nice_ticks(5, 5) == [5]


def test_chart_is_valid_svg_with_thinned_broken_lines_and_escaped_text():
    chart = svgplot.Chart(x_range=(0, 100), y_range=(-1, 1), x_label="time <s>")
    x = np.linspace(0, 100, 5001)
    y = np.sin(x)
    y[2500:2510] = np.nan  # a gap splits the line in two
    chart.line(x, y)
    chart.hline(0.5, "#c44e52", label="limit & more")
    chart.span(10, 20, "#4c72b0")
    root = ET.fromstring(chart.svg())  # well-formed XML
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 2
    points = sum(len(p.get("points").split()) for p in lines)
    assert points <= 2 * chart.plot_width  # thinned to about one point per pixel column
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "time <s>" in texts and "limit & more" in texts  # escaped in the markup, intact
    assert "<s>" not in chart.svg().replace("&lt;s&gt;", "")


def test_heat_png_is_one_pixel_per_value():
    values = np.array([[0.0, 0.5, 1.0], [1.0, 0.0, 0.25]])
    image = Image.open(io.BytesIO(base64.b64decode(svgplot.heat_png(values))))
    assert image.size == (3, 2)
    pixels = np.asarray(image.convert("RGB"), np.int32)
    assert pixels[0, 0].sum() < pixels[0, 1].sum() < pixels[0, 2].sum()  # brighter = more
