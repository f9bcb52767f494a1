from __future__ import annotations

import argparse
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes
from scipy import ndimage

from geoseg.classes import ClassTable
from geoseg.errors import ConfigError, DataError, OutputError
from geoseg.testing import write_raster
from geoseg.vectorize import (
    canonicalize,
    coverage_gaps_overlaps,
    vectorize,
    vectorize_to_file,
)
from geoseg.vectorize.label import sieve_classes

DATA = Path(__file__).parents[1] / "data"
STRATA = DATA / "nc-landsat7-landcover" / "strata.tif"
RIO = sorted((DATA / "spacenet1-rio-buildings" / "derived_masks").glob("*.tif"))
ZURICH = sorted((DATA / "detectree-zurich-trees" / "derived_response_georef").glob("*.tif"))
WATER = DATA / "sen1floods11-spain-water" / "Labels" / "Spain_7370579_LabelHand.tif"
PIX = 28.5 * 28.5


def same(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    assert len(a) == len(b)
    assert (a["class_id"].to_numpy() == b["class_id"].to_numpy()).all()
    assert (a["pixels"].to_numpy() == b["pixels"].to_numpy()).all()
    ga = shapely.normalize(a.geometry.values)
    gb = shapely.normalize(b.geometry.values)
    assert shapely.equals_exact(ga, gb, 0).all()
    pa = a.groupby("class_id")["area_m2"].sum()
    pb = b.groupby("class_id")["area_m2"].sum()
    np.testing.assert_allclose(pa.to_numpy(), pb.to_numpy(), rtol=1e-9, atol=0)


@pytest.fixture(scope="module")
def single4() -> gpd.GeoDataFrame:
    return vectorize(STRATA, chunk_size=4096, workers=1, progress=False)


@pytest.fixture(scope="module")
def single8() -> gpd.GeoDataFrame:
    return vectorize(STRATA, chunk_size=4096, workers=1, progress=False, connectivity=8)


def test_single_pass_is_gdal_polygonize(single4):
    with rasterio.open(STRATA) as src:
        a = src.read(1)
        valid = a != src.nodata
        t = src.transform
    ref = [
        shapely.geometry.shape(g)
        for g, _ in shapes(np.where(valid, a, 0).astype("int32"), mask=valid, transform=t)
    ]
    assert len(ref) == len(single4) == 2439
    ref = canonicalize(np.array(ref, object))
    ours = single4.geometry.values
    # same polygons (the pixel->CRS transform is applied differently: compare with 1e-6 m)
    tree = shapely.STRtree(ref)
    hit = tree.query(shapely.point_on_surface(ours), predicate="within")
    assert len(hit[0]) == len(ours)
    assert shapely.equals_exact(shapely.normalize(ours[hit[0]]), ref[hit[1]], 1e-6).all()
    # areas in m² and counts per class (SOURCE.md: 65099 developed ... 194 sediment)
    px = single4.groupby("class_id")["pixels"].sum().to_dict()
    assert px == {1: 65099, 2: 1433, 3: 23502, 4: 14532, 5: 107643, 6: 4223, 7: 194}
    np.testing.assert_allclose(single4["area_m2"], single4["pixels"] * PIX, rtol=1e-12)
    assert single4.crs.to_epsg() == 3358
    assert shapely.is_valid(ours).all()


@pytest.mark.parametrize("chunk", [37, 150])
def test_chunked_equals_single_pass_4(single4, chunk):
    got = vectorize(STRATA, chunk_size=chunk, workers=1, progress=False)
    same(got, single4)


@pytest.mark.parametrize("chunk", [41])
def test_chunked_equals_single_pass_8(single8, chunk):
    got = vectorize(STRATA, chunk_size=chunk, workers=1, progress=False, connectivity=8)
    same(got, single8)
    assert shapely.is_valid(got.geometry.values).all()
    # one feature per 8-connected region
    with rasterio.open(STRATA) as src:
        a = src.read(1)
    n = sum(ndimage.label(a == c, np.ones((3, 3)))[1] for c in range(1, 8))
    assert len(got) == n == 786


def test_parallel_dask_equals_single_pass(single4):
    got = vectorize(STRATA, chunk_size=128, workers=2, progress=False)
    same(got, single4)


def seam_raster(tmp_path: Path) -> Path:
    """Hand-made features on the seams of 16-pixel chunks."""
    a = np.zeros((40, 40), np.uint8)
    a[:, 15] = 1  # 1-pixel-wide line just left of the vertical seam at column 16
    a[16, :] = 2  # 1-pixel-wide line on the top row of the second chunk row
    a[16, 15] = 2
    a[31, 31] = 3  # diagonal neighbours across the chunk corner at (32, 32)
    a[32, 32] = 3
    a[5, 5] = 3  # diagonal pair inside a chunk
    a[6, 6] = 3
    a[30:34, 2:4] = 255  # no-data straddling a seam
    return write_raster(tmp_path / "seams.tif", a, nodata=255)


def test_seams_hand_checked(tmp_path):
    p = seam_raster(tmp_path)
    for conn in (4, 8):
        ref = vectorize(p, chunk_size=64, workers=1, progress=False, connectivity=conn)
        got = vectorize(p, chunk_size=16, workers=1, progress=False, connectivity=conn)
        same(got, ref)
    g4 = vectorize(p, chunk_size=16, workers=1, progress=False)
    # the vertical line is cut by the horizontal one: 2 pieces of class 1, each 1 px wide
    ones = g4[g4.class_id == 1]
    assert sorted(ones.pixels) == [16, 23]
    assert np.allclose(ones.area_m2, ones.pixels * 100.0)
    # the horizontal line (41 px with the crossing pixel) is one polygon across 3 chunks
    assert g4[g4.class_id == 2].pixels.tolist() == [40]
    # 4-connectivity: diagonal pixels are separate; 8: one MultiPolygon each pair
    assert (g4.class_id == 3).sum() == 4
    g8 = vectorize(p, chunk_size=16, workers=1, progress=False, connectivity=8)
    threes = g8[g8.class_id == 3]
    assert len(threes) == 2 and (threes.geom_type == "MultiPolygon").all()
    assert threes.pixels.tolist() == [2, 2]
    # no polygon covers the no-data block; the background covers everything else
    nodata_box = shapely.box(500020, 3999660, 500040, 3999700)
    assert shapely.area(shapely.intersection(g4.geometry.values, nodata_box)).sum() == 0
    assert g4.area_m2.sum() == pytest.approx((1600 - 8) * 100)


def test_geographic_raster_areas_in_metres():
    from geoseg.analysis import pixel_areas
    from geoseg.io.bands import open_grid

    g = vectorize(RIO[0], workers=1, progress=False, chunk_size=128)
    assert g.crs.to_epsg() == 4326
    grid = open_grid(RIO[0])
    with rasterio.open(RIO[0]) as src:
        a = src.read(1)
    row_area = pixel_areas(grid)
    for c in (0, 1):
        truth = float((row_area[:, None] * (a == c)).sum())
        assert g[g.class_id == c].area_m2.sum() == pytest.approx(truth, rel=1e-6)
    assert 0.2 < row_area.mean() < 0.3  # ~0.5 m pixels, not degrees


def test_zurich_trees_projected():
    g = vectorize(ZURICH[0], workers=1, progress=False, chunk_size=32, classes="1=tree")
    assert set(g.class_id) == {1} and set(g.class_name) == {"tree"}
    assert g.crs.to_epsg() == 2056
    np.testing.assert_allclose(g.area_m2, g.pixels * 0.25)
    with rasterio.open(ZURICH[0]) as src:
        assert g.pixels.sum() == (src.read(1) == 1).sum()


def test_water_labels_nodata_override():
    g = vectorize(WATER, workers=1, progress=False, nodata=-1, chunk_size=200)
    px = g.groupby("class_id").pixels.sum().to_dict()
    assert px == {0: 192010, 1: 70035}  # SOURCE.md; the 99 no-data pixels make no polygon


def test_all_nodata_writes_empty_layer_with_schema(tmp_path):
    p = write_raster(tmp_path / "empty.tif", np.full((20, 20), 255, np.uint8), nodata=255)
    n = vectorize_to_file(p, tmp_path / "e.gpkg", workers=1, progress=False)
    assert n == 0
    back = gpd.read_file(tmp_path / "e.gpkg")
    assert len(back) == 0
    assert {"class_id", "class_name", "pixels", "area_m2", "perimeter_m"} <= set(back.columns)
    assert back.crs.to_epsg() == 32618


def test_min_area_fill_holes_and_sieve(tmp_path):
    a = np.ones((30, 30), np.uint8)
    a[5:8, 5:8] = 2  # 9 px island -> hole of 900 m² in the class-1 region
    a[5, 20] = 3  # 1-px island
    a[20:30, 20:30] = 4  # 100 px
    p = write_raster(tmp_path / "c.tif", a, nodata=0)
    g = vectorize(p, workers=1, progress=False, fill_holes=1000, chunk_size=16)
    assert set(g.class_id) == {1, 4}  # islands filled and gone
    big = g[g.class_id == 1].iloc[0]
    assert big.geometry.interiors.__len__() == 0 and big.area_m2 == pytest.approx(800 * 100)
    g = vectorize(p, workers=1, progress=False, min_area=1000, chunk_size=16)
    assert set(g.class_id) == {1, 4}
    assert len(g[g.class_id == 1].iloc[0].geometry.interiors) == 2  # holes kept
    s = sieve_classes(a.astype(np.int64), a > 0, 10, 4)
    assert (s[5:8, 5:8] == 1).all() and s[5, 20] == 1 and (s[20:, 20:] == 4).all()
    # sieving is chunk-exact
    ref = vectorize(STRATA, workers=1, progress=False, sieve=8, chunk_size=4096)
    got = vectorize(STRATA, workers=1, progress=False, sieve=8, chunk_size=57)
    same(got, ref)
    assert len(ref) < 2439 / 2


def test_coverage_simplify_keeps_a_clean_coverage(single4):
    g = vectorize(STRATA, workers=1, progress=False, simplify=40.0, chunk_size=128)
    geoms = g.geometry.values
    assert shapely.is_valid(geoms).all()
    assert shapely.coverage_is_valid(geoms)
    assert (
        shapely.get_num_coordinates(geoms).sum()
        < 0.7 * shapely.get_num_coordinates(single4.geometry.values).sum()
    )
    gap, overlap = coverage_gaps_overlaps(geoms, single4.geometry.values)
    assert gap < 1e-6 * PIX and overlap < 1e-6 * PIX
    # per-polygon Douglas-Peucker opens gaps and overlaps between neighbours
    dp = shapely.simplify(single4.geometry.values, 40.0)
    gap_dp, overlap_dp = coverage_gaps_overlaps(dp, single4.geometry.values)
    assert gap_dp > 100 * PIX and overlap_dp > 100 * PIX


def test_probabilities_confidence(tmp_path):
    table = ClassTable.from_config({1: "land", 2: "water"})
    a = np.ones((20, 20), np.uint8)
    a[:, 10:] = 2
    p = write_raster(tmp_path / "m.tif", a, nodata=0, classes=table)
    prob = np.zeros((2, 20, 20), np.uint8)
    prob[0, :, :10] = 254
    prob[0, :10, :10] = 127
    prob[1, :, 10:] = 200
    prob[1, 0, 10:] = 255  # no data
    pp = write_raster(tmp_path / "p.tif", prob, nodata=255)
    g = vectorize(p, workers=1, progress=False, probabilities=pp, chunk_size=16)
    assert list(g.class_name) == ["land", "water"]
    assert g.confidence.tolist() == pytest.approx([(254 + 127) / 2 / 254, 200 / 254])


def test_formats_and_atomic_writes(tmp_path, single4):
    from geoseg.io.vector import write_vector

    for ext in ("gpkg", "parquet", "fgb", "geojson", "shp"):
        out = write_vector(single4, tmp_path / f"o.{ext}")
        back = gpd.read_parquet(out) if ext == "parquet" else gpd.read_file(out)
        assert len(back) == len(single4)
        if ext == "geojson":
            assert back.crs.to_epsg() == 4326
            assert -80 < back.total_bounds[0] < -78
        else:
            assert back.crs.equals(single4.crs)
            assert back.area.sum() == pytest.approx(single4.area_m2.sum())
    assert "perim_m" in gpd.read_file(tmp_path / "o.shp").columns
    with pytest.raises(OutputError, match="already exists"):
        write_vector(single4, tmp_path / "o.gpkg")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def run_cli(module, argv):
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers())
    return module.run(parser.parse_args(argv))


def test_cli_vectorize(tmp_path):
    from geoseg.cli import vectorize as cmd

    out = tmp_path / "v.gpkg"
    args = ["--workers", "1", "--quiet", "--chunk-size", "100"]
    args += ["--classes", "5=forest,6=water", "--min-area", "5000"]
    rc = run_cli(cmd, ["vectorize", str(STRATA), "-o", str(out), *args])
    assert rc == 0
    g = gpd.read_file(out)
    assert set(g.class_name) == {"forest", "water"} and (g.area_m2 >= 5000).all()


# -- bad input --------------------------------------------------------------------------
def test_error_float_non_integer(tmp_path):
    p = write_raster(tmp_path / "f.tif", np.full((10, 10), 0.5, np.float32))
    with pytest.raises(DataError, match=r"whole numbers.*Convert"):
        vectorize(p, workers=1, progress=False)


def test_error_no_crs(tmp_path):
    p = write_raster(tmp_path / "n.tif", np.ones((10, 10), np.uint8), crs=None,
                     transform=Affine.identity())  # fmt: skip
    with pytest.raises(DataError, match="no CRS"):
        vectorize(p, workers=1, progress=False)


def test_error_output_folder_and_extension(tmp_path):
    from geoseg.cli import vectorize as cmd

    with pytest.raises(OutputError, match="does not exist"):
        vectorize_to_file(STRATA, tmp_path / "missing" / "o.gpkg", progress=False)
    with pytest.raises(ConfigError, match=r"\.gpkg.*\.parquet.*\.fgb.*\.geojson.*\.shp"):
        vectorize_to_file(STRATA, tmp_path / "o.kml", progress=False)
    with pytest.raises(ConfigError, match=r"unknown vector output extension '\.txt'"):
        run_cli(cmd, ["vectorize", str(STRATA), "-o", str(tmp_path / "o.txt")])
    with pytest.raises(ConfigError, match="connectivity"):
        vectorize(STRATA, connectivity=6)


@pytest.mark.parametrize(
    ("path", "chunk", "kw"),
    [(RIO[0], 29, {}), (ZURICH[0], 17, {}), (WATER, 97, {"nodata": -1})],
    ids=["rio-buildings-4326", "zurich-trees-2056", "spain-water-4326"],
)
def test_chunked_equals_single_pass_other_real_maps(path, chunk, kw):
    for conn in (4, 8):
        ref = vectorize(path, chunk_size=4096, workers=1, progress=False, connectivity=conn, **kw)
        got = vectorize(path, chunk_size=chunk, workers=1, progress=False, connectivity=conn, **kw)
        same(got, ref)
        assert shapely.is_valid(got.geometry.values).all()


def test_seam_merge_many_regions_far_from_origin():
    # 40 regions of two unit squares across a seam at x = 10000: vertex keys reach
    # ~4e9 (int64 needed), merged one by one and in one vectorized batch alike
    from geoseg.vectorize import canonicalize, merge_pixel_polygons
    from geoseg.vectorize.seams import merge_pixel_batch

    seam_xs, seam_ys = np.array([10000]), np.array([], np.int64)
    left = [shapely.box(9999, 3 * g, 10000, 3 * g + 1) for g in range(40)]
    right = [shapely.box(10000, 3 * g, 10001, 3 * g + 1) for g in range(40)]
    geoms = np.array(left + right, object)
    group = np.concatenate([np.arange(40), np.arange(40)])
    batch = merge_pixel_batch(geoms, group, 40, seam_xs, seam_ys)
    assert batch is not None
    expected = canonicalize(np.array([shapely.box(9999, 3 * g, 10001, 3 * g + 1)
                                      for g in range(40)], object))  # fmt: skip
    assert shapely.equals_exact(canonicalize(batch, collinear=False), expected, 0).all()
    multi = merge_pixel_polygons(geoms, seam_xs, seam_ys)  # 40 parts: one MultiPolygon
    assert shapely.equals_exact(canonicalize(np.array([multi], object))[0],
                                shapely.MultiPolygon(list(expected)).normalize(), 0)  # fmt: skip


def test_output_crs_is_the_identified_epsg_code():
    # strata.tif's GeoTIFF keys read back as an 'unnamed' WKT; the polygons must carry
    # EPSG:3358 so that QGIS shows the right CRS rather than an unknown one.
    from geoseg.vectorize import vectorize

    gdf = vectorize(DATA / "nc-landsat7-landcover" / "strata.tif", progress=False)
    assert gdf.crs.to_epsg() == 3358


@pytest.mark.parametrize("path", [WATER, RIO[-1]], ids=["sen1floods11", "rio"])
def test_class_areas_and_polygon_areas_agree_on_a_geographic_map(path):
    """One area model: on an EPSG:4326 map the per-class areas of the statistics equal the
    summed polygon areas (pixel edges are straight in the equal-area projection)."""
    from geoseg.analysis import class_areas

    with rasterio.open(path) as src:
        assert src.crs.is_geographic
        nodata = -1 if path == WATER else None
    stats = class_areas(path, nodata=nodata, progress=False).set_index("class_id")["area_m2"]
    polys = vectorize(path, nodata=nodata, workers=1, progress=False)
    by_class = polys.groupby("class_id")["area_m2"].sum()
    assert sorted(stats.index) == sorted(by_class.index) and len(stats) >= 2
    for cid in stats.index:
        assert by_class[cid] == pytest.approx(stats[cid], rel=1e-3)  # measured: < 1e-9
        assert abs(by_class[cid] / stats[cid] - 1) < 1e-7


def test_ids_above_2_31_merge_across_seams(tmp_path):
    """Seams are merged by integer id, whatever the id: uint32 object ids (instance maps)
    that GDAL cannot polygonize directly go through the label path, chunked == single."""
    rng = np.random.default_rng(5)
    ids = np.zeros((150, 170), np.uint32)
    for k in range(60):
        r, c = rng.integers(0, 140), rng.integers(0, 160)
        h, w = rng.integers(3, 40, 2)
        ids[r : r + h, c : c + w] = np.uint32(3_000_000_000 + k)
    path = write_raster(tmp_path / "ids.tif", ids[None], nodata=0)
    whole = vectorize(path, chunk_size=4096, workers=1, progress=False)
    chunked = vectorize(path, chunk_size=32, workers=1, progress=False)
    same(whole, chunked)
    assert whole["class_id"].min() >= 3_000_000_000
    # one polygon per 4-connected region of equal id
    from scipy import ndimage

    n = 0
    for v in np.unique(ids[ids > 0]):
        n += ndimage.label(ids == v)[1]
    assert len(whole) == n > 40


@pytest.mark.parametrize("option", ["simplify", "regularize"])
def test_a_tolerance_larger_than_the_map_is_refused(option):
    """1e308 m overflowed inside GEOS (a RuntimeWarning) and wrote slivers, exit 0."""
    with pytest.raises(ConfigError, match=rf"{option} 1e\+308 m is more than the whole map "
                       r"\(489 px of 28\.5 m\)"):  # fmt: skip
        vectorize(STRATA, workers=1, progress=False, **{option: 1e308})
    gdf = vectorize(STRATA, workers=1, progress=False, **{option: 57.0})  # two pixels: fine
    assert len(gdf) > 100


def test_worker_processes_are_forked_one_at_a_time():
    """Dask forks its workers from several threads at once; recent filelock (imported with
    torch) makes such a fork fail on Python 3.12+ ("Nanny failed to start", 2 of 5 runs
    with 8 workers). The hooks below widen each fork to 0.2 s: concurrent forks overlap."""
    import os
    import threading
    import time

    from geoseg.vectorize.chunks import local_cluster

    state = {"on": True, "active": 0, "most": 0, "forks": 0}
    lock = threading.Lock()

    def before() -> None:
        if state["on"]:
            with lock:
                state["active"] += 1
                state["forks"] += 1
                state["most"] = max(state["most"], state["active"])
            time.sleep(0.2)

    def after() -> None:
        if state["on"]:
            with lock:
                state["active"] -= 1

    os.register_at_fork(before=before, after_in_parent=after)  # cannot be removed: gated
    try:
        cluster, client = local_cluster(3)
        try:
            assert len(client.scheduler_info()["workers"]) == 3
        finally:
            client.close()
            cluster.close()
    finally:
        state["on"] = False
    assert state["forks"] >= 3 and state["most"] == 1
