"""``geoseg demo`` end to end on the real NC scene with the shipped model.

The demo runs once per test session (:func:`cached_demo`); ``test_browser.py`` reuses the
same run to open its HTML map in Chromium.
"""

from __future__ import annotations

import io
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.classes import read_class_table
from geoseg.demo import DEMO_MARK, DEMO_MODEL, DemoResult, format_metrics, run_demo
from geoseg.errors import InputFileError
from geoseg.models import read_metadata

_CACHE: dict[str, object] = {}


def cached_demo() -> tuple[DemoResult, str, float]:
    """Run the demo once per session: (result, printed text, wall seconds).

    Stale files of an earlier demo run (its mark beside them) are planted where the demo
    writes, to prove it replaces its own outputs.
    """
    if "result" not in _CACHE:
        if not DEMO_MODEL.is_file():
            pytest.fail(f"the shipped demo model {DEMO_MODEL} is missing")
        out = Path(tempfile.mkdtemp(prefix="geoseg-demo-"))
        (out / DEMO_MARK).write_text("an earlier demo run")
        (out / "landcover.tif").write_text("stale")
        (out / "map.html").write_text("stale")
        buf = io.StringIO()
        start = time.perf_counter()
        result = run_demo(out, progress=False, stream=buf)
        _CACHE.update(result=result, text=buf.getvalue(), seconds=time.perf_counter() - start)
    return _CACHE["result"], _CACHE["text"], _CACHE["seconds"]  # type: ignore[return-value]


@pytest.fixture(scope="module")
def demo():
    return cached_demo()


def test_demo_writes_every_output_and_they_read_back(demo):
    import pyogrio

    result, _, _seconds = demo
    meta = read_metadata(DEMO_MODEL)

    # class map: a COG on the scene grid, class ids + class table
    with rasterio.open(result.classmap) as src:
        assert src.crs.to_epsg() == 32119
        assert (src.width, src.height) == (489, 443)
        assert src.res == pytest.approx((28.5, 28.5))
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert read_class_table(src) == meta.classes
        cm = src.read(1)
        nodata = src.nodata
    from geoseg.inference import validate_cog

    assert validate_cog(result.classmap) == []
    assert validate_cog(result.probabilities) == []
    head = result.classmap.read_bytes()[:400]
    assert b"LAYOUT=IFDS_BEFORE_DATA" in head  # the COG ghost header
    valid = cm != nodata
    assert set(np.unique(cm[valid])) <= set(meta.classes.ids)
    # pixels valid in all six bands (SOURCE.md: 135092) are exactly the mapped ones
    assert int(valid.sum()) == 135092
    assert len(np.unique(cm[valid])) >= 4  # a real map, not one class

    # probabilities: one band per class, p = v/254, sums to ~1, argmax == class map
    with rasterio.open(result.probabilities) as src:
        assert src.count == len(meta.classes)
        assert list(src.descriptions) == meta.classes.names
        probs = src.read()
    p = probs[:, valid].astype("float64") / 254.0
    assert np.allclose(p.sum(axis=0), 1.0, atol=0.03)
    ids = np.array(meta.classes.ids)[p.argmax(axis=0)]
    assert (ids == cm[valid]).mean() > 0.99

    # polygons: GeoPackage in the scene CRS; area equals the mapped area within 2 %
    gdf = pyogrio.read_dataframe(result.polygons)
    # the scene's CRS is an unnamed LCC that equals EPSG:32119: same coordinates to < 1 cm
    from pyproj import Transformer

    x, y = gdf.geometry.iloc[0].representative_point().coords[0]
    tx, ty = Transformer.from_crs(gdf.crs, "EPSG:32119", always_xy=True).transform(x, y)
    assert (tx, ty) == pytest.approx((x, y), abs=0.01)
    left, bottom, right, top = gdf.total_bounds
    assert left >= 630534.0 - 1 and right <= 644470.5 + 1
    assert bottom >= 215488.5 - 1 and top <= 228114.0 + 1
    assert len(gdf) > 50
    assert gdf.geometry.is_valid.all()
    mapped_m2 = valid.sum() * 28.5**2
    assert gdf.geometry.area.sum() == pytest.approx(mapped_m2, rel=0.02)

    # stats: area per class from the class map, exactly pixel counts x pixel area
    import pandas as pd

    stats = pd.read_csv(result.stats)
    name_col = "class_name" if "class_name" in stats.columns else "class"
    by_name = stats.groupby(name_col)["area_m2"].sum()
    for c in meta.classes:
        expected = float((cm == c.id).sum()) * 28.5**2
        assert by_name.get(c.name, 0.0) == pytest.approx(expected, rel=1e-6, abs=1.0)

    # pictures
    from PIL import Image

    fig = Image.open(result.figure)
    assert fig.width > 2 * fig.height
    assert Image.open(result.chart).height > 100
    html = result.map.read_text()
    assert "Leaflet 1.9.4" in html and "geoseg-legend" in html
    assert '"Mean probability"' in html and '"Area (ha)"' in html  # popup fields
    assert not re.search(r"<(script|link|img)[^>]*(src|href)=[\"']?(https?:)?//", html)
    assert len(result.tiles) == 4


def test_demo_prints_outputs_and_the_checkpoint_scores(demo):
    result, text, _ = demo
    meta = read_metadata(DEMO_MODEL)
    for path in (
        result.classmap,
        result.probabilities,
        result.polygons,
        result.stats,
        result.chart,
        result.figure,
        result.map,
    ):
        assert str(path) in text
    # every stage announced itself
    assert [int(n) for n in re.findall(r"^\[(\d)/6\]", text, re.M)] == [1, 2, 3, 4, 5, 6]
    # the printed test scores are the metadata's, to 4 decimals
    test = meta.metrics["test"]
    assert f"mean IoU          {test['miou']:.4f}" in text
    assert f"overall accuracy  {test['overall_accuracy']:.4f}" in text
    for line in format_metrics(meta.metrics):
        assert line in text


def test_missing_model_says_how_to_train_it(tmp_path, capsys):
    from geoseg.cli import main

    missing = tmp_path / "none.safetensors"
    with pytest.raises(InputFileError, match=r"geoseg train configs/nc_landcover\.yaml"):
        run_demo(tmp_path / "out", model=missing)
    assert main(["demo", "--model", str(missing), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "geoseg train" in err
