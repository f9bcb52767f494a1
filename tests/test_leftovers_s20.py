"""Leftovers of the audit: stats outputs by extension, a prompt file's layer, and the
user's name of a GDAL subdataset in error messages."""

from __future__ import annotations

import geopandas as gpd
import pytest
import rasterio
import shapely
from _inference_helpers import RGB

from geoseg.cli import main
from geoseg.errors import DataError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Dataset VRTs in a cache of this test, whose path the messages must not show."""
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "cache"))


def _cli(argv, capsys) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("geoseg ")]
    return rc, lines[-1] if lines else err


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
    with rasterio.open(RGB) as src:
        win = rasterio.windows.Window(300, 300, 96, 80)
        data = src.read((1, 2), window=win).astype("float32")
        prof = {"driver": "GTiff", "width": 96, "height": 80, "dtype": "float32",
                "crs": src.crs if crs else None,
                "transform": src.window_transform(win)}  # fmt: skip
    with rasterio.open(tmp_path / "two.tif", "w", count=2, **prof) as dst:
        dst.write(data)
    from rasterio.shutil import copy

    copy(tmp_path / "two.tif", tmp_path / "two.nc", driver="netCDF")
    return tmp_path / "two.nc"


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
