"""Cases of the bad-input audit left for later (B4, C9, C12, E2, E7): each refused with one
clear line, or reported as it is, and no output left behind."""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from _inference_helpers import RGB, tiny_checkpoint

from geoseg.errors import ConfigError, DataError, DataWarning
from geoseg.inference import memory, predict
from geoseg.models import read_metadata
from geoseg.testing import cli_last_line, netcdf_of_two_variables, write_raster


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ck") / "m.safetensors")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Exported models and memory probes in a cache of this module, not the user's."""
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


_cli = cli_last_line


def _crop(tmp_path, n: int = 160, name: str = "in.tif"):
    with rasterio.open(RGB) as src:  # 791 x 718 px
        at = 300 if n <= 400 else 100
        win = rasterio.windows.Window(at, at, n, n)
        data = src.read(window=win)
        prof = src.profile | {"width": n, "height": n, "driver": "GTiff"}
        prof["transform"] = src.window_transform(win)
    with rasterio.open(tmp_path / name, "w", **prof) as dst:
        dst.write(data)
    return tmp_path / name


# --- B4: memory grows with the square of the tile size -----------------------------------


def test_the_estimate_grows_with_the_square_of_the_tile_and_with_batches(ckpt):
    meta = read_metadata(ckpt)
    one = memory.window_bytes(ckpt, meta, 512)
    assert one is not None and one > 0
    assert memory.window_bytes(ckpt, meta, 1024) == pytest.approx(4 * one, rel=1e-3)
    single = memory.estimate_memory(ckpt, meta, 1024)
    batch = memory.estimate_memory(ckpt, meta, 1024, batch=8)
    assert single is not None and batch is not None and batch > single
    assert single == pytest.approx(memory.RUNTIME_BYTES + 4 * one, rel=1e-3)
    # a default run (8 windows of 512 px) is not checked; a heavier one fitting is
    assert memory.check_tile_memory(ckpt, meta, 512, batch=8, available=0) is None
    assert memory.check_tile_memory(ckpt, meta, 1024) == single
    with pytest.raises(MemoryError, match=r"1024\^2 px windows in batches of 8 in 2 worker"):
        memory.check_tile_memory(ckpt, meta, 1024, batch=8, models=2, available=single)


@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_tile_size_beyond_the_memory_available_is_refused(
    ckpt, tmp_path, monkeypatch, capsys, command
):
    meta = read_metadata(ckpt)
    room = memory.estimate_memory(ckpt, meta, 1024)
    assert room is not None
    monkeypatch.setattr(memory, "available_memory", lambda: room + 1)
    image = _crop(tmp_path)
    out = tmp_path / ("o.tif" if command == "predict" else "o.onnx")
    head = ["predict", ckpt, image] if command == "predict" else ["export", ckpt]
    rc, err = _cli([*head, "-o", out, "--tile-size", 2048], capsys)
    assert rc == 1
    assert f"geoseg {command}: error: tile_size 2048 px needs about" in err
    assert f"but {room / 1e9:.1f} GB is available" in err
    assert "--tile-size (at most 1024 px fits now)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]
    # the size it names does fit
    assert _cli([*head, "-o", out, "--tile-size", 1024], capsys)[0] == 0
    assert out.exists()


# --- C12: silent acceptances ----------------------------------------------------------------


@pytest.mark.parametrize("command", ["predict", "export"])
def test_tile_size_zero_is_an_error(ckpt, tmp_path, capsys, command):
    image = _crop(tmp_path)
    out = tmp_path / ("o.tif" if command == "predict" else "o.onnx")
    head = ["predict", ckpt, image] if command == "predict" else ["export", ckpt]
    rc, err = _cli([*head, "-o", out, "--tile-size", 0], capsys)
    assert rc == 1
    assert f"geoseg {command}: error: tile_size" in err and " 0" in err
    assert not out.exists()


@pytest.mark.parametrize("option", ["-o", "--probabilities"])
def test_predict_refuses_an_extension_of_another_format(ckpt, tmp_path, capsys, option):
    image = _crop(tmp_path)
    argv = ["predict", ckpt, image, "-o", tmp_path / "c.tif", "--quiet"]
    if option == "-o":
        argv[4] = tmp_path / "c.png"
    else:
        argv += ["--probabilities", tmp_path / "p.png"]
    rc, err = _cli(argv, capsys)
    assert rc == 1
    assert ".png'" in err and "must end in .tif or .tiff" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_predict_refuses_a_repeated_band(ckpt, tmp_path, capsys):
    image = _crop(tmp_path)
    out = tmp_path / "o.tif"
    rc, err = _cli(["predict", ckpt, image, "-o", out, "--bands", "1,1,1"], capsys)
    assert rc == 1
    assert "bands 1,1,1: band(s) 1 selected more than once" in err
    assert not out.exists()


def _classmap(tmp_path):
    ids = np.repeat(np.array([1, 2, 3, 1], np.uint8), 5)[None, :].repeat(20, axis=0)
    return write_raster(tmp_path / "cm.tif", ids, nodata=0)  # 20 x 20 px of 10 m


def _zones(names, values=None) -> gpd.GeoDataFrame:
    x0, y1 = 500000.0, 4000000.0
    boxes = [shapely.box(x0 + 50 * i, y1 - 200, x0 + 50 * (i + 1), y1) for i in range(len(names))]
    cols = {"name": names} | ({"num": values} if values is not None else {})
    return gpd.GeoDataFrame(cols, geometry=boxes, crs="EPSG:32618")


def test_stats_zone_field_without_zones_is_an_error(tmp_path, capsys):
    cm = _classmap(tmp_path)
    rc, err = _cli(["stats", cm, "-o", tmp_path / "s.csv", "--zone-field", "name"], capsys)
    assert rc == 1
    assert "--zone-field 'name' is given without zones" in err and "--zones" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.tif"]


def test_a_zones_file_of_several_layers_needs_zone_layer(tmp_path, capsys):
    cm = _classmap(tmp_path)
    gpkg = tmp_path / "z.gpkg"
    _zones(["a", "b"]).to_file(gpkg, layer="districts")
    _zones(["p", "q", "r"]).to_file(gpkg, layer="parcels")
    out = tmp_path / "s.csv"
    argv = ["stats", cm, "-o", out, "--zones", gpkg, "--zone-field", "name", "--no-plot"]
    rc, err = _cli(argv, capsys)
    assert rc == 1
    assert "holds 2 layers ['districts', 'parcels']" in err and "--zone-layer" in err
    assert not out.exists()
    rc, err = _cli([*argv, "--zone-layer", "roads"], capsys)
    assert rc == 1 and "no layer 'roads'; its layers are ['districts', 'parcels']" in err
    assert _cli([*argv, "--zone-layer", "parcels", "--quiet"], capsys)[0] == 0
    assert set(pd.read_csv(out)["zone"]) == {"(all)", "p", "q", "r"}


# --- C9: zones without a name ---------------------------------------------------------------


def test_zones_without_a_name_are_reported_one_by_one(tmp_path):
    from geoseg.analysis import class_areas

    cm = _classmap(tmp_path)
    zones = _zones([None, "east", None, " "], values=[1.5, np.nan, np.nan, 2.0])
    with pytest.warns(DataWarning, match=r"3 zone\(s\) have no 'name' .*features \[0, 2, 3\]"):
        stats = class_areas(cm, zones=zones, zone_field="name", progress=False)
    names = ["(no name, feature 0)", "east", "(no name, feature 2)", "(no name, feature 3)"]
    assert list(dict.fromkeys(stats["zone"]))[1:] == names
    assert stats["percent"].notna().all()
    for zone in names:  # each zone is one 50 m column of one class
        assert stats.loc[stats["zone"] == zone, "percent"].tolist() == [100.0]
    gpkg = tmp_path / "z.gpkg"
    zones.to_file(gpkg)  # nulls and NaN as a file stores them
    with pytest.warns(DataWarning, match=r"2 zone\(s\) have no 'num'"):
        by_num = class_areas(cm, zones=gpkg, zone_field="num", progress=False)
    assert {"1.5", "2.0", "(no num, feature 1)", "(no num, feature 2)"} < set(by_num["zone"])
    assert by_num["percent"].notna().all()


# --- E2: containers and GDAL dataset names --------------------------------------------------


def _netcdf(tmp_path):
    """A netCDF of two variables (Band1, Band2) and the GeoTIFF of its second one."""
    with rasterio.Env() as env:
        if "netCDF" not in env.drivers():
            pytest.skip("GDAL without the netCDF driver")
    return netcdf_of_two_variables(RGB, tmp_path)


def test_a_netcdf_of_several_variables_lists_them(ckpt, tmp_path, capsys):
    nc, _ = _netcdf(tmp_path)
    rc, err = _cli(["predict", ckpt, nc, "-o", tmp_path / "o.tif"], capsys)
    assert rc == 1
    assert f"input '{nc}' holds no raster bands but 2 subdataset(s)" in err
    # GDAL >= 3.11 quotes the file name in subdataset names (netcdf:"/x/two.nc":Band1)
    for band in ("Band1", "Band2"):
        assert f"netcdf:{nc}:{band}" in err or f'netcdf:"{nc}":{band}' in err
    assert "GDAL name" in err
    assert not (tmp_path / "o.tif").exists()


def test_a_gdal_subdataset_name_is_an_input(tmp_path, monkeypatch):
    _, band2 = _netcdf(tmp_path)
    one = tiny_checkpoint(tmp_path / "one.safetensors", bands=("x",))
    monkeypatch.chdir(tmp_path)
    a = predict(one, "netcdf:two.nc:Band2", tmp_path / "a.tif", progress=False)
    b = predict(one, band2, tmp_path / "b.tif", progress=False)
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        assert ra.transform.almost_equals(rb.transform) and ra.crs == rb.crs
        assert np.array_equal(ra.read(1), rb.read(1)) and (ra.read(1) != 0).all()
    with pytest.raises(DataError, match="no raster bands but 2 subdataset"):
        predict(one, "two.nc", tmp_path / "c.tif", progress=False)
    from geoseg.errors import InputFileError

    with pytest.raises(InputFileError, match="GDAL cannot open it as a dataset name"):
        predict(one, "netcdf:two.nc:Band9", tmp_path / "c.tif", progress=False)


# --- E7: label checks its inputs before loading SAM -----------------------------------------


def test_label_checks_prompts_before_loading_sam(tmp_path, capsys):
    from geoseg.labelling import label_image

    with rasterio.open(RGB) as src:
        centre = shapely.Point(*src.xy(src.height // 2, src.width // 2))
        crs = src.crs
    prompts = gpd.GeoDataFrame({"kind": ["roof"]}, geometry=[centre], crs=crs)
    prompts.to_file(tmp_path / "p.gpkg")

    def never() -> None:
        raise AssertionError("SAM was loaded before the prompts were checked")

    with pytest.raises(ConfigError, match="no class field 'class'"):
        label_image(RGB, tmp_path / "p.gpkg", never)
    empty_sam = tmp_path / "sam"  # an empty folder: loading it would fail
    empty_sam.mkdir()
    out = tmp_path / "l.gpkg"
    argv = ["label", RGB, "--prompts", tmp_path / "p.gpkg", "--sam", empty_sam, "-o", out]
    rc, err = _cli(argv, capsys)
    assert rc == 1 and "no class field 'class'; its fields are ['kind']" in err
    rc, err = _cli([*argv[:3], tmp_path / "none.gpkg", *argv[4:]], capsys)
    assert rc == 1 and "none.gpkg' does not exist" in err
    rc, err = _cli([*argv, "--bands", "1,2,9"], capsys)
    assert rc == 1 and "band 9 does not exist" in err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc, err = _cli(
            ["label", RGB, "--automatic", "--points-per-side", 0, "--sam", empty_sam, "-o", out],
            capsys,
        )
    assert rc == 1 and "points_per_side must be 1 to 64, got 0" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.gpkg", "sam"]
