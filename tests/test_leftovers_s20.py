"""Leftovers of the audit: stats outputs by extension, a prompt file's layer, and the
user's name of a GDAL subdataset in error messages."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
from _inference_helpers import RGB

from geoseg.errors import DataError
from geoseg.testing import cli_last_line, netcdf_of_two_variables, write_raster


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Dataset VRTs in a cache of this test, whose path the messages must not show."""
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "cache"))


_cli = cli_last_line


# --- stats: the output's format follows its extension ---------------------------------------

CLASSES = "1=water,2=forest,3=Built-up area"


def _classmap(tmp_path):
    """20 x 20 px of 10 m: columns of 5 px of classes 1, 2, 3, 1."""
    ids = np.repeat(np.array([1, 2, 3, 1], np.uint8), 5)[None, :].repeat(20, axis=0)
    return write_raster(tmp_path / "cm.tif", ids, nodata=0)


def _zones(tmp_path):
    """Four districts in lon/lat (the map is in UTM 18N): the first two cover 1.5 columns."""
    x0, y1 = 500000.0, 4000000.0
    boxes = [
        shapely.box(x0, y1 - 200, x0 + 75, y1),  # 5 columns of water, 2 of forest (centres)
        shapely.box(x0 + 75, y1 - 200, x0 + 200, y1),
        shapely.box(x0 + 50, y1 - 100, x0 + 150, y1),  # overlaps both others
        shapely.box(x0 + 900, y1 - 200, x0 + 1000, y1),  # off the map: no statistics
    ]
    zones = gpd.GeoDataFrame(
        {"name": ["north", "south", "centre", "away"]}, geometry=boxes, crs="EPSG:32618"
    ).to_crs("EPSG:4326")
    zones.to_file(tmp_path / "z.gpkg", layer="districts")
    return tmp_path / "z.gpkg", zones


def test_stats_writes_a_geopackage_of_the_zones_with_their_statistics(tmp_path, capsys):
    cm = _classmap(tmp_path)
    path, zones = _zones(tmp_path)
    head = ["stats", cm, "--zones", path, "--zone-field", "name", "--classes", CLASSES]
    with pytest.warns(UserWarning, match="cover no valid pixel"):
        assert _cli([*head, "-o", tmp_path / "s.csv", "--quiet", "--no-plot"], capsys)[0] == 0
        assert _cli([*head, "-o", tmp_path / "s.gpkg", "--quiet"], capsys)[0] == 0
    csv = pd.read_csv(tmp_path / "s.csv")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"  # the chart as before
    assert [x[0] for x in pyogrio.list_layers(tmp_path / "s.gpkg")] == ["s"]
    got = gpd.read_file(tmp_path / "s.gpkg")
    assert got.crs == zones.crs  # the zones' CRS, not the map's
    assert len(got) == 4 and got["zone"].tolist() == ["north", "south", "centre", "away"]
    assert all(a.equals_exact(b, 0) for a, b in zip(got.geometry, zones.geometry, strict=True))
    slug = {"water": "water", "forest": "forest", "Built-up area": "built_up_area"}
    for zone in ["north", "south", "centre"]:
        row = got[got["zone"] == zone].iloc[0]
        rows = csv[csv["zone"] == zone]
        for name, col in slug.items():
            want = rows.loc[rows["class_name"] == name, ["area_ha", "percent"]]
            area = float(want["area_ha"].iloc[0]) if len(want) else 0.0
            share = float(want["percent"].iloc[0]) if len(want) else 0.0
            assert row[f"area_ha_{col}"] == pytest.approx(area, abs=1e-6)
            assert row[f"percent_{col}"] == pytest.approx(share, abs=1e-6)
        assert row["area_ha"] == pytest.approx(rows["area_ha"].sum(), abs=1e-6)
    assert got.loc[0, "area_ha_water"] == pytest.approx(1.0)  # hand-checked: 100 px of 100 m²
    assert got.loc[0, "area_ha_forest"] == pytest.approx(0.4)  # 2 columns of 20 px
    # the zone off the map has no statistics (null), not zero hectares
    assert got.loc[3, ["area_ha", "area_ha_water", "percent_water"]].isna().all()


def test_stats_without_zones_writes_a_geopackage_table(tmp_path, capsys):
    cm = _classmap(tmp_path)
    for name in ("s.csv", "s.gpkg"):
        argv = ["stats", cm, "--classes", CLASSES, "-o", tmp_path / name, "--no-plot"]
        assert _cli([*argv, "--quiet"], capsys)[0] == 0
    table = pyogrio.read_dataframe(tmp_path / "s.gpkg")
    assert "geometry" not in table.columns
    pd.testing.assert_frame_equal(table, pd.read_csv(tmp_path / "s.csv"), check_dtype=False)


@pytest.mark.parametrize("name", ["s.xlsx", "s.shp", "s.geojson"])
def test_stats_refuses_other_extensions_before_any_work(tmp_path, capsys, name):
    cm = _classmap(tmp_path)
    rc, err = _cli(["stats", cm, "-o", tmp_path / name], capsys)
    assert rc == 1
    assert f"{tmp_path / name}" in err and ".csv" in err and ".gpkg" in err
    if name.endswith(".geojson"):  # a GeoJSON holds features: it needs the zones
        assert "--zones" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.tif"]


def test_stats_of_an_instance_map_are_written_as_csv_only(tmp_path, capsys):
    from geoseg.io.bands import INSTANCES_TAG

    cm = _classmap(tmp_path)
    with rasterio.open(cm, "r+") as ds:
        ds.update_tags(**{INSTANCES_TAG: "1"})
    rc, err = _cli(["stats", cm, "-o", tmp_path / "o.gpkg"], capsys)
    assert rc == 1 and "o.gpkg'" in err and "must end in .csv" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.tif"]


# --- label: a prompt file of several layers ---------------------------------------------------


def test_label_needs_prompt_layer_for_a_file_of_several_layers(tmp_path, capsys):
    from geoseg.labelling import label_image

    with rasterio.open(RGB) as src:
        centre = shapely.Point(*src.xy(src.height // 2, src.width // 2))
        crs = src.crs
    prompts = tmp_path / "p.gpkg"
    for layer, field in (("roofs", "kind"), ("trees", "species")):
        gdf = gpd.GeoDataFrame({field: ["x"]}, geometry=[centre], crs=crs)
        gdf.to_file(prompts, layer=layer)
    sam = tmp_path / "sam"  # an empty folder: loading it would fail
    sam.mkdir()
    argv = ["label", RGB, "--prompts", prompts, "--sam", sam, "-o", tmp_path / "l.gpkg"]
    rc, err = _cli(argv, capsys)
    assert rc == 1
    assert f"prompts '{prompts}' holds 2 layers ['roofs', 'trees']" in err
    assert "--prompt-layer" in err
    rc, err = _cli([*argv, "--prompt-layer", "roads"], capsys)
    assert rc == 1
    assert f"prompts '{prompts}' has no layer 'roads'; its layers are ['roofs', 'trees']" in err
    # the layer named is read (its fields), and still before SAM is loaded
    rc, err = _cli([*argv, "--prompt-layer", "trees"], capsys)
    assert rc == 1 and "no class field 'class'; its fields are ['species']" in err
    rc, err = _cli([*argv[:2], "--automatic", *argv[4:], "--prompt-layer", "trees"], capsys)
    assert rc == 1 and "--prompt-layer 'trees' names a layer of the --prompts file" in err

    def never() -> None:
        raise AssertionError("SAM was loaded before the prompts were checked")

    with pytest.raises(DataError, match="holds 2 layers"):
        label_image(RGB, prompts, never)
    with pytest.raises(ValueError, match=r"its fields are \['kind'\]"):
        label_image(RGB, prompts, never, prompt_layer="roofs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.gpkg", "sam"]


# --- a GDAL subdataset is named as the user named it ----------------------------------------


def _netcdf(tmp_path, *, crs=True):
    """A netCDF of two variables (Band1, Band2)."""
    with rasterio.Env() as env:
        if "netCDF" not in env.drivers():
            pytest.skip("GDAL without the netCDF driver")
    return netcdf_of_two_variables(RGB, tmp_path, crs=crs)[0]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("checkpoint bands", "has 1 bands but the checkpoint expects 3"),
        ("band number", "band 4 does not exist in"),
        ("band name", "has no band named 'red'"),
        ("band counts", "mosaic inputs differ in band count"),
        ("no crs", "has no CRS"),
    ],
)
def test_errors_name_a_subdataset_as_the_user_gave_it(tmp_path, monkeypatch, case, message):
    from geoseg.io.mosaic import open_mosaic

    _netcdf(tmp_path, crs=case != "no crs")
    monkeypatch.chdir(tmp_path)
    name = 'NETCDF:"two.nc":Band2' if case == "band name" else "netcdf:two.nc:Band2"
    inputs: list[str] = [name]
    kw: dict = {"model_bands": ["x"]}
    if case == "checkpoint bands":
        kw["model_bands"] = ["r", "g", "b"]
    elif case == "band number":
        kw["bands"] = [4]
    elif case == "band name":
        kw["bands"] = ["red"]
    elif case == "band counts":
        inputs, kw["bands"] = [str(tmp_path / "two.tif"), name], [1]
    with pytest.raises(DataError) as info:
        open_mosaic(inputs, **kw)
    text = str(info.value)
    assert message in text
    assert repr(name) in text
    assert ".vrt" not in text and "cache" not in text


def test_predict_names_the_subdataset_in_its_errors(tmp_path, monkeypatch, capsys):
    from _inference_helpers import tiny_checkpoint

    _netcdf(tmp_path)
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")  # R, G, B
    monkeypatch.chdir(tmp_path)
    rc, err = _cli(["predict", ckpt, "netcdf:two.nc:Band1", "-o", tmp_path / "o.tif"], capsys)
    assert rc == 1
    assert "input 'netcdf:two.nc:Band1' has 1 bands but the checkpoint expects 3" in err
    assert ".vrt" not in err
    assert not (tmp_path / "o.tif").exists()
