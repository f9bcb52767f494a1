from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine

from geoseg.analysis import ALL_ZONES, change, class_areas, pixel_areas, write_stats
from geoseg.errors import DataError, ReprojectionWarning
from geoseg.io.bands import open_grid
from geoseg.testing import write_raster
from geoseg.vectorize import vectorize

DATA = Path(__file__).parents[1] / "data"
NC = DATA / "nc-landsat7-landcover"
STRATA = NC / "strata.tif"
ZONES = NC / "landsat96_polygons.shp"
WATER = DATA / "sen1floods11-spain-water" / "Labels" / "Spain_7370579_LabelHand.tif"
PIX = 28.5 * 28.5
COUNTS = {1: 65099, 2: 1433, 3: 23502, 4: 14532, 5: 107643, 6: 4223, 7: 194}


def run_cli(module, argv):
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers())
    return module.run(parser.parse_args(argv))


def test_class_areas_overall_projected():
    df = class_areas(STRATA, chunk_size=100, progress=False, classes="5=forest,6=water")
    assert list(df.class_name) == ["forest", "water"]
    df = class_areas(STRATA, chunk_size=100, progress=False)
    assert (df.zone == ALL_ZONES).all()
    assert dict(zip(df.class_id, df.pixels)) == COUNTS
    np.testing.assert_allclose(df.area_m2, df.pixels * PIX, rtol=1e-12)
    np.testing.assert_allclose(df.area_ha, df.area_m2 / 1e4)
    assert df.percent.sum() == pytest.approx(100.0)
    # chunking does not change anything
    pd.testing.assert_frame_equal(df, class_areas(STRATA, chunk_size=4096, progress=False))


def test_class_areas_per_zone_and_reprojected_zones(tmp_path):
    df = class_areas(STRATA, zones=ZONES, zone_field="label", chunk_size=128, progress=False)
    zones = gpd.read_file(ZONES)
    assert set(df.zone) == {ALL_ZONES, *zones.label}
    # hand check one zone: pixels whose centre falls inside the 'water' polygons
    with rasterio.open(STRATA) as src:
        a = src.read(1)
        mask = rasterio.features.geometry_mask(
            zones[zones.label == "water"].geometry, a.shape, src.transform, invert=True
        )
    water = df[df.zone == "water"]
    expect = {int(c): int(n) for c, n in zip(*np.unique(a[mask], return_counts=True))}
    assert dict(zip(water.class_id, water.pixels)) == expect
    assert water.percent.sum() == pytest.approx(100.0)
    # zones in another CRS are reprojected (same places, so the same pixels up to edges)
    zones.to_crs(4326).to_file(tmp_path / "z4326.gpkg")
    df2 = class_areas(
        STRATA, zones=tmp_path / "z4326.gpkg", zone_field="label", chunk_size=128, progress=False
    )
    a1 = df.groupby("zone").area_m2.sum()
    a2 = df2.groupby("zone").area_m2.sum()
    np.testing.assert_allclose(a2[a1.index], a1, rtol=0.02)


def test_geographic_per_row_areas():
    grid = open_grid(WATER)
    rows = pixel_areas(grid)
    assert rows[0] < rows[-1]  # northern rows are smaller
    # ~10 m pixels (8.98e-5 degrees) at 38 N: 9.99 m x 7.87 m
    assert rows.mean() == pytest.approx(9.99 * 7.87, rel=0.01)
    df = class_areas(WATER, nodata=-1, progress=False, chunk_size=200)
    assert dict(zip(df.class_id, df.pixels)) == {0: 192010, 1: 70035}
    # the equal-area polygons agree with the per-row ellipsoidal areas
    g = vectorize(WATER, nodata=-1, workers=1, progress=False)
    per_class = g.groupby("class_id").area_m2.sum()
    np.testing.assert_allclose(per_class[df.class_id].to_numpy(), df.area_m2, rtol=1e-5)


def test_write_stats_csv_and_png(tmp_path):
    from geoseg.cli import stats as cmd

    out = tmp_path / "stats.csv"
    rc = run_cli(cmd, ["stats", str(STRATA), "--zones", str(ZONES), "--zone-field", "label",
                       "-o", str(out), "--quiet", "--classes", "1=developed,5=forest"])  # fmt: skip
    assert rc == 0
    back = pd.read_csv(out)
    assert list(back.columns) == ["zone", "class_id", "class_name", "pixels", "area_m2",
                                  "area_ha", "percent"]  # fmt: skip
    assert set(back.class_name) == {"developed", "forest"}
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    df = class_areas(STRATA, progress=False)
    with pytest.raises(OSError, match="exists"):
        write_stats(df, out)


def test_zone_errors(tmp_path):
    with pytest.raises(DataError, match=r"no field 'district'.*\['label', 'id'\]"):
        class_areas(STRATA, zones=ZONES, zone_field="district", progress=False)
    far = gpd.GeoDataFrame({"name": ["x"]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4326)
    with pytest.raises(DataError, match="no zone intersects"):
        class_areas(STRATA, zones=far, zone_field="name", progress=False)


def developed_after(tmp_path: Path, crs: str | None = None) -> tuple[Path, int]:
    """The strata map after 'development': a block of forest and water turns developed."""
    with rasterio.open(STRATA) as src:
        a = src.read(1)
        profile = src.profile
    after = a.copy()
    block = (slice(100, 160), slice(200, 300))
    changed = int(np.isin(a[block], [5, 6]).sum())
    sub = after[block]
    sub[np.isin(sub, [5, 6])] = 1
    if crs is not None:
        profile["crs"] = crs
    p = tmp_path / "after.tif"
    with rasterio.open(p, "w", **profile) as dst:
        dst.write(after, 1)
    return p, changed


def test_change_matrix_and_polygons(tmp_path):
    after, n_changed = developed_after(tmp_path)
    res = change(STRATA, after, output=tmp_path / "change.gpkg", chunk_size=100, workers=1,
                 progress=False)  # fmt: skip
    m = res.matrix
    with rasterio.open(STRATA) as src:
        a = src.read(1)
    block = a[100:160, 200:300]
    assert m.loc["class_5", "class_1"] == pytest.approx((block == 5).sum() * PIX)
    assert m.loc["class_6", "class_1"] == pytest.approx((block == 6).sum() * PIX)
    assert m.loc["class_1", "class_1"] == pytest.approx(COUNTS[1] * PIX)
    assert m.to_numpy().sum() == pytest.approx((sum(COUNTS.values())) * PIX)
    off = m.to_numpy() - np.diag(np.diag(m.to_numpy()))
    assert off.sum() == pytest.approx(n_changed * PIX)
    p = res.polygons
    assert set(zip(p.from_id, p.to_id)) == {(5, 1), (6, 1)}
    assert p.area_m2.sum() == pytest.approx(n_changed * PIX)
    assert set(p.to_name) == {"class_1"}
    back = gpd.read_file(res.polygons_path)
    assert len(back) == len(p) and back.crs.to_epsg() == 3358
    csv = pd.read_csv(res.matrix_path, index_col=0)
    assert csv.loc["class_5", "class_1"] == pytest.approx(m.loc["class_5", "class_1"])


def test_change_same_grid_in_another_crs_tag_is_read_directly(tmp_path):
    """The one CRS rule: strata.tif (EPSG:3358) and a map tagged EPSG:32119 on the same
    pixels are one grid: no warping, no warning, every changed pixel counted exactly."""
    after, n_changed = developed_after(tmp_path, crs="EPSG:32119")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReprojectionWarning)
        res = change(STRATA, after, chunk_size=200, workers=1, progress=False)
    total = res.matrix.to_numpy().sum()
    assert total == pytest.approx(sum(COUNTS.values()) * PIX, rel=1e-9)
    off = total - np.trace(res.matrix.to_numpy())
    assert off == pytest.approx(n_changed * PIX, rel=1e-9)


def test_change_reprojects_another_grid_with_warning(tmp_path):
    """A map on another grid (UTM 17N, 30 m) is warped onto the before grid (nearest)."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    after, _ = developed_after(tmp_path)
    with rasterio.open(after) as src:
        tr, w, h = calculate_default_transform(src.crs, "EPSG:32617", src.width, src.height,
                                               *src.bounds, resolution=30)  # fmt: skip
        dst = np.zeros((h, w), np.uint8)
        reproject(src.read(1), dst, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=tr, dst_crs="EPSG:32617", resampling=Resampling.nearest,
                  src_nodata=src.nodata, dst_nodata=0)  # fmt: skip
    utm = write_raster(tmp_path / "utm.tif", dst, crs="EPSG:32617", transform=tr, nodata=0)
    with pytest.warns(ReprojectionWarning, match="nearest") as rec:
        res = change(STRATA, utm, chunk_size=200, workers=1, progress=False)
    assert {r.filename for r in rec if issubclass(r.category, ReprojectionWarning)} == {__file__}
    total = res.matrix.to_numpy().sum()
    assert total == pytest.approx(sum(COUNTS.values()) * PIX, rel=0.01)
    # two nearest-neighbour resamplings move class edges by up to a pixel
    off = total - np.trace(res.matrix.to_numpy())
    assert 0 < off < 0.15 * total


def test_change_cli(tmp_path):
    from geoseg.cli import change as cmd

    after, _ = developed_after(tmp_path)
    out = tmp_path / "c.fgb"
    assert run_cli(cmd, ["change", str(STRATA), str(after), "-o", str(out), "--quiet",
                         "--workers", "1"]) == 0  # fmt: skip
    assert out.exists() and out.with_suffix(".csv").exists()


def test_change_cannot_align(tmp_path):
    far = write_raster(tmp_path / "far.tif", np.ones((10, 10), np.uint8), crs="EPSG:32618",
                       transform=Affine(10, 0, 500000, 0, -10, 4000000))  # fmt: skip
    with pytest.raises(DataError, match="do not overlap"):
        change(STRATA, far, progress=False)
