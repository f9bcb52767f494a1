"""The demo's HTML map in a real (headless) Chromium, with no network.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it). The page must draw
from the file alone: Leaflet is inlined, imagery and class map are PNG data URIs, the
polygons are GeoJSON. The test dumps the DOM after the scripts ran and counts what was
drawn, then takes a screenshot (kept in the test's tmp folder; the path is printed).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # no network at all: any attempt to fetch a remote resource fails
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=8000",
]


@pytest.fixture(scope="module")
def demo_map():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium); browser test skipped")
    from test_demo import cached_demo

    result, _, _ = cached_demo()
    return result


def _chromium(*args: str, timeout: int = 90) -> str:
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_map_draws_polygons_overlays_and_legend(demo_map):
    import pyogrio

    dom = _chromium("--dump-dom", demo_map.map.resolve().as_uri())
    n_polygons = len(pyogrio.read_dataframe(demo_map.polygons, read_geometry=False))
    # Leaflet drew one SVG <path> per polygon in the overlay pane
    svg = re.search(r'<div class="leaflet-pane leaflet-overlay-pane".*', dom, re.S)
    assert svg is not None, "no Leaflet overlay pane: the map did not initialise"
    paths = len(re.findall(r'<path class="leaflet-interactive"', dom))
    assert paths == n_polygons
    # imagery and class map image overlays were added and loaded from data URIs
    overlays = re.findall(r'<img[^>]*class="leaflet-image-layer[^"]*"[^>]*>', dom)
    assert len(overlays) == 2
    assert all('src="data:image/png;base64,' in o for o in overlays)
    # the legend lists every class of the model
    from geoseg.models import read_metadata

    names = read_metadata(demo_map.model).classes.names
    legend = re.findall(r'class="geoseg-legend-item"><span[^>]*></span>([^<]+)</div>', dom)
    assert legend == names
    # the layer control offers the three layers
    for layer in ("Imagery", "Class map", "Polygons"):
        assert f"<span> {layer}</span>" in dom


def test_map_screenshot_shows_the_map(demo_map, tmp_path):
    from PIL import Image

    shot = tmp_path / "map_screenshot.png"
    _chromium("--window-size=1200,900", f"--screenshot={shot}", demo_map.map.resolve().as_uri())
    print(f"browser screenshot: {shot}")
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape == (900, 1200, 3)
    # Leaflet's empty background is #dddddd; the drawn map covers a good part of the view
    background = np.all(np.abs(img - 0xDD) <= 2, axis=-1)
    assert background.mean() < 0.85
    # and it is colourful (imagery + class colours), not a blank or an error page
    colours = {tuple(c) for c in img[::7, ::7].reshape(-1, 3)}
    assert len(colours) > 200


#: Appended to a copy of the page: after load, click (as a user would, a DOM mouse event
#: on the SVG path) the polygon in the middle of the layer's drawing order.
_CLICK = """<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var paths = document.querySelectorAll("path.leaflet-interactive");
    var el = paths[Math.floor(paths.length / 2)];
    var r = el.getBoundingClientRect();
    el.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true, view: window,
      clientX: r.left + r.width / 2, clientY: r.top + r.height / 2}));
  }, 1000);
});
</script>"""


def test_clicking_a_polygon_opens_its_popup_with_class_and_area(demo_map, tmp_path):
    import pyogrio

    html = demo_map.map.read_text()
    i = html.rindex("</body>")
    page = tmp_path / "map_click.html"
    page.write_text(html[:i] + _CLICK + html[i:])
    dom = _chromium("--window-size=1200,900", "--dump-dom", page.resolve().as_uri())
    popup = re.search(r'class="leaflet-popup-content"[^>]*>(.*?)</table>', dom, re.S)
    assert popup is not None, "clicking a polygon opened no popup"
    rows = dict(
        (th.strip(), td.strip())
        for th, td in re.findall(r"<th>([^<]*)</th>\s*<td>([^<]*)</td>", popup.group(1))
    )
    assert {"Class", "Area (m²)", "Area (ha)"} <= set(rows)
    area = float(rows["Area (m²)"].replace(",", ""))
    assert float(rows["Area (ha)"].replace(",", "")) == pytest.approx(area / 1e4, abs=1e-3)
    # the popup shows the attributes of a real polygon of the GeoPackage
    gdf = pyogrio.read_dataframe(demo_map.polygons, read_geometry=False)
    same = gdf[(gdf["class_name"] == rows["Class"]) & ((gdf["area_m2"] - area).abs() < 0.1)]
    assert len(same) >= 1
