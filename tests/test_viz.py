"""Static figures and the offline HTML map, on the real North Carolina sample."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from geoseg.classes import ClassTable, write_class_table
from geoseg.demo import make_nc_mosaic
from geoseg.errors import ConfigError, OutputError
from geoseg.viz import (
    colorize,
    leaflet_assets,
    plot_side_by_side,
    read_display,
    save_web_map,
    stretch_rgb,
    web_map,
)
from geoseg.viz._render import DisplayRaster
from geoseg.viz._webmap import to_web_mercator

DATA = Path(__file__).parents[1] / "data" / "nc-landsat7-landcover"

NC_CLASSES = ClassTable.from_config(
    [
        {"id": 1, "name": "developed", "color": "#e31a1c"},
        {"id": 2, "name": "agriculture", "color": "#ffff99"},
        {"id": 3, "name": "herbaceous", "color": "#b2df8a"},
        {"id": 4, "name": "shrubland", "color": "#fdbf6f"},
        {"id": 5, "name": "forest", "color": "#33a02c"},
        {"id": 6, "name": "water", "color": "#1f78b4"},
        {"id": 7, "name": "sediment", "color": "#cab2d6"},
    ]
)


@pytest.fixture(scope="module")
def nc(tmp_path_factory):
    """The NC scene as a 4-tile mosaic, strata.tif as a class map, and its polygons."""
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape

    root = tmp_path_factory.mktemp("viz")
    tiles = make_nc_mosaic(root / "mosaic")
    with rasterio.open(DATA / "strata.tif") as src:
        raw = src.read(1)
        profile = src.profile
    ids = np.where(raw == -99999, 0, raw).astype("uint8")
    profile.update(dtype="uint8", nodata=0, crs="EPSG:32119")
    classmap = root / "strata_classes.tif"
    with rasterio.open(classmap, "w", **profile) as dst:
        dst.write(ids, 1)
        write_class_table(dst, NC_CLASSES)
    # polygons of the 1996 map with rasterio (not geoseg.vectorize: this tests viz alone)
    recs = [
        (shape(g), int(v))
        for g, v in shapes(ids, mask=ids > 0, transform=profile["transform"], connectivity=4)
    ]
    gdf = gpd.GeoDataFrame(
        {"class_id": [v for _, v in recs]}, geometry=[g for g, _ in recs], crs="EPSG:32119"
    )
    return {"root": root, "tiles": tiles, "classmap": classmap, "ids": ids, "polygons": gdf}


def test_nc_mosaic_tiles_cover_the_scene_with_overlap(nc):
    tiles = nc["tiles"]
    assert len(tiles) == 4
    with rasterio.open(DATA / "lsat7_2000_30.tif") as ref:
        b3 = ref.read(1)
        ref_bounds, ref_transform = ref.bounds, ref.transform
    boxes = []
    for t in tiles:
        with rasterio.open(t) as src:
            assert src.count == 6 and src.crs.to_epsg() == 32119
            assert src.res == pytest.approx((28.5, 28.5))
            assert src.descriptions == ("B1", "B2", "B3", "B4", "B5", "B7")
            boxes.append(src.bounds)
            # band 3 equals the source file pixel for pixel where valid
            col0 = (src.bounds.left - ref_transform.c) / ref_transform.a
            row0 = (src.bounds.top - ref_transform.f) / ref_transform.e
            col0, row0 = round(col0), round(row0)
            data = src.read(3)
            ref_part = b3[row0 : row0 + src.height, col0 : col0 + src.width]
            valid = data != src.nodata
            np.testing.assert_array_equal(data[valid], ref_part[valid])
    assert min(b.left for b in boxes) == pytest.approx(ref_bounds.left)
    assert max(b.right for b in boxes) == pytest.approx(ref_bounds.right)
    assert min(b.bottom for b in boxes) == pytest.approx(ref_bounds.bottom)
    assert max(b.top for b in boxes) == pytest.approx(ref_bounds.top)
    # neighbours overlap by 16 px = 456 m
    assert boxes[0].right - boxes[1].left == pytest.approx(16 * 28.5)
    assert boxes[0].bottom - boxes[2].top == pytest.approx(-16 * 28.5)
    # valid pixels in the merged mosaic == pixels valid in all six bands (SOURCE.md: 135092)
    full = read_display(tiles, bands=[1], max_size=10_000)
    assert full.data.shape == (1, 443, 489)
    assert int(np.isfinite(full.data).sum()) == 135092


def test_stretch_and_colorize_hand_checked():
    data = np.array([[[0.0, 10.0], [5.0, np.nan]]])
    rgba = stretch_rgb(data, rgb=(0,), percentiles=(0, 100))
    assert rgba[..., 0].tolist() == [[0, 255], [128, 0]]
    assert rgba[..., 3].tolist() == [[255, 255], [255, 0]]
    cls = colorize(np.array([[1.0, 6.0], [0.0, np.nan]]), NC_CLASSES)
    assert tuple(cls[0, 0]) == (0xE3, 0x1A, 0x1C, 255)
    assert tuple(cls[0, 1]) == (0x1F, 0x78, 0xB4, 255)
    assert cls[1, 0, 3] == 0 and cls[1, 1, 3] == 0
    with pytest.raises(ConfigError, match="band index"):
        stretch_rgb(data, rgb=(0, 1, 2))


def test_read_display_decimates_and_keeps_georeference(nc):
    d = read_display(nc["classmap"], max_size=100)
    assert max(d.data.shape[1:]) == 100
    assert d.classes == NC_CLASSES
    with rasterio.open(nc["classmap"]) as src:
        assert d.bounds == pytest.approx(tuple(src.bounds))


def test_web_mercator_overlay_bounds_match_the_raster():
    # 10 x 10 px of 100 m in UTM 17N; bounds in degrees must match pyproj's transform
    from rasterio.warp import transform_bounds

    raster = DisplayRaster(
        np.zeros((1, 10, 10)),
        Affine(100, 0, 500000, 0, -100, 4000000),
        rasterio.CRS.from_epsg(32617),
    )
    rgba = np.full((10, 10, 4), 255, dtype="uint8")
    out, bounds = to_web_mercator(rgba, raster)
    w, s, e, n = transform_bounds(32617, 4326, 500000, 3999000, 501000, 4000000)
    assert bounds[0] == pytest.approx([s, w], abs=1e-4)
    assert bounds[1] == pytest.approx([n, e], abs=1e-4)
    assert out.shape[2] == 4 and out[..., 3].mean() > 200


def test_side_by_side_png_has_three_panels(nc, tmp_path):
    out = tmp_path / "sbs.png"
    fig = plot_side_by_side(
        nc["tiles"], nc["classmap"], nc["polygons"], rgb=(3, 2, 1), output=out, dpi=60
    )
    assert len(fig.axes) == 3
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == [f"{c.id} {c.name}" for c in NC_CLASSES]
    # a scale bar label on every panel (489 px * 28.5 m = 13.9 km wide -> a 2 km bar)
    for ax in fig.axes:
        assert "2 km" in [t.get_text() for t in ax.texts]
    img = np.asarray(Image.open(out))
    assert img.shape[1] > 2 * img.shape[0]
    # the forest green of the class map is drawn
    green = np.all(img[..., :3] == (0x33, 0xA0, 0x2C), axis=-1)
    assert green.sum() > 1000


def test_web_map_is_offline_and_complete(nc, tmp_path):
    m = web_map(nc["tiles"], nc["classmap"], nc["polygons"], rgb=(3, 2, 1))
    path = save_web_map(m, tmp_path / "map.html")
    html = path.read_text()
    # no network: no external scripts, styles or images; Leaflet is inlined
    assert not re.search(r"<(script|link|img)[^>]*(src|href)=[\"']?(https?:)?//", html)
    assert "Leaflet 1.9.4" in html
    assert html.count("data:image/png;base64,") >= 2 + 2  # two overlays + layer icons
    for c in NC_CLASSES:
        assert f"</span>{c.name}</div>" in html  # legend entry
    assert '"area_ha"' in html and '"class_name"' in html  # popup fields
    assert "L.control.layers" in html
    # one GeoJSON feature per polygon
    assert html.count('"type": "Feature"') + html.count('"type":"Feature"') == len(nc["polygons"])
    # the notebook view renders the same page inline
    assert "srcdoc" in m._repr_html_()


def test_web_map_refuses_a_cdn_layer(nc, tmp_path):
    import folium

    m = web_map(None, nc["classmap"])
    folium.TileLayer("OpenStreetMap").add_to(m)
    with pytest.raises(OutputError, match="offline"):
        save_web_map(m, tmp_path / "m.html")
    assert not (tmp_path / "m.html").exists()


def test_leaflet_is_vendored_with_licence():
    js, css = leaflet_assets()
    static = Path(__file__).parents[1] / "geoseg" / "viz" / "static"
    assert "BSD 2-Clause" in (static / "LICENSE-leaflet.txt").read_text()
    assert "url(images/" not in css
    assert len(js) > 100_000


def test_web_map_escapes_class_names_from_users_files(nc, tmp_path):
    """A class name is text, never markup (a name with HTML must not run in the page)."""
    evil = '<img src=x onerror="alert(1)">'
    classes = ClassTable.from_config(
        [{"id": c.id, "name": evil if c.id == 1 else c.name, "color": c.color}
         for c in NC_CLASSES]
    )  # fmt: skip
    m = web_map(None, None, nc["polygons"], classes=classes, legend_title="<b>x</b><script>")
    html = save_web_map(m, tmp_path / "map.html").read_text()
    assert evil not in html and "<script>" not in html.split("</b>", 1)[0][-200:]
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html  # shown as text
    assert "&lt;script&gt;" in html
