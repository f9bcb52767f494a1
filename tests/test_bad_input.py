"""Bad input gets a clear error naming the file, key or value (never a deep traceback), and
a probably-wrong result gets a warning: configs, options, rasters, class maps and zones."""

from __future__ import annotations

import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import Polygon, box

sys.path.insert(0, str(Path(__file__).parent))
from _inference_helpers import RGB, tiny_checkpoint

from geoseg.cli import main
from geoseg.config import ExperimentConfig, load_yaml
from geoseg.errors import ConfigError, DataError, DataWarning, NoDataWarning
from geoseg.inference import predict
from geoseg.testing import write_raster

ROOT = Path(__file__).parents[1]
STRATA = ROOT / "data" / "nc-landsat7-landcover" / "strata.tif"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ck") / "m.safetensors")


# -- configs ---------------------------------------------------------------------------------
def test_yaml_alias_bomb_is_bounded(tmp_path):
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for k in range(1, 9):  # 10^9 values once expanded
        prev = chr(ord("a") + k - 1)
        name = chr(ord("a") + k)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    lines.append("output_dir: *i")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines))
    with pytest.raises(ConfigError, match="expands to more than"):
        load_yaml(bomb)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8 text"),
        (b"- just\n- a list\n", "mapping at the top level"),
    ],
)
def test_empty_binary_or_list_config(tmp_path, content, match):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        load_yaml(path)


@pytest.mark.parametrize(
    ("training", "match"),
    [
        ({"lr": -0.1}, "training.lr"),
        ({"lr": float("nan")}, "training.lr"),
        ({"max_epochs": 0}, "training.max_epochs"),
        ({"early_stopping_patience": -2}, "early_stopping_patience"),
        ({"num_threads": 0}, "num_threads"),
    ],
)
def test_bad_training_numbers_name_the_key(training, match):
    with pytest.raises(ConfigError, match=match):
        ExperimentConfig.from_dict({"training": training})


def test_duplicate_class_names_are_refused():
    with pytest.raises(ConfigError, match=r"duplicate class names \['water'\]"):
        ExperimentConfig.from_dict(
            {"data": {"imagery": {"paths": "x.tif"}, "labels": {"path": "y.tif"},
                      "classes": [{"id": 1, "name": "water"}, {"id": 2, "name": "water"}]}}
        ).data.class_table()  # fmt: skip


# -- prediction options and inputs -----------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"resolution": 0}, "resolution must be a pixel size > 0"),
        ({"resolution": -30.0}, "resolution must be a pixel size > 0"),
        ({"block_size": 0}, "block_size must be 16 to 65536"),
        ({"block_size": 1}, "block_size must be 16 to 65536"),
        ({"workers": -1}, "workers must be 1 to 4096"),
        ({"tile_size": 100_000}, "larger than any sensible model window"),
        ({"batch_size": 0}, "batch_size must be 1 to 4096"),
    ],
)
def test_bad_predict_options(ckpt, tmp_path, option, match):
    with pytest.raises(ConfigError, match=match):
        predict(ckpt, RGB, tmp_path / "o.tif", progress=False, **option)
    assert not list(tmp_path.iterdir())


def test_cli_reports_bad_options_without_a_traceback(ckpt, tmp_path, capsys):
    code = main(["predict", str(ckpt), str(RGB), "-o", str(tmp_path / "o.tif"),
                 "--resolution", "0", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "resolution must be a pixel size > 0" in err
    assert "Traceback" not in err


def test_an_absurd_output_grid_is_refused_before_any_work(ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSEG_MAX_PIXELS", "100000")
    with pytest.raises(DataError, match=r"is 791 x 718 px \(0.57 Mpx"):  # the file, then the grid
        predict(ckpt, RGB, tmp_path / "o.tif", progress=False)


def test_an_all_no_data_input_warns(ckpt, tmp_path):
    empty = write_raster(tmp_path / "empty.tif", np.zeros((3, 300, 300), np.uint8), nodata=0)
    with pytest.warns(NoDataWarning, match="no valid pixel"):
        out = predict(ckpt, empty, tmp_path / "o.tif", progress=False)
    with rasterio.open(out) as ds:
        assert (ds.read(1) == ds.nodata).all()


def test_values_far_from_the_training_statistics_warn(ckpt, tmp_path):
    with rasterio.open(RGB) as src:
        prof, data = src.profile, src.read().astype("uint16")
    scaled = tmp_path / "x40.tif"
    with rasterio.open(scaled, "w", **(prof | {"dtype": "uint16"})) as dst:
        dst.write(data * 40)  # e.g. reflectance x 10000 given to a model trained on 0-255
    with pytest.warns(DataWarning, match="far outside the model's training range"):
        predict(ckpt, scaled, tmp_path / "o.tif", progress=False)


def test_files_thousands_of_km_apart_warn(ckpt, tmp_path):
    a = write_raster(tmp_path / "a.tif", np.full((3, 64, 64), 90, np.uint8), nodata=0)
    from affine import Affine

    far = Affine(10.0, 0.0, 500000.0 + 40_000.0, 0.0, -10.0, 4000000.0 - 30_000.0)
    b = write_raster(tmp_path / "b.tif", np.full((3, 64, 64), 90, np.uint8), nodata=0,
                     transform=far)  # fmt: skip
    with pytest.warns(DataWarning, match=r"cover 0\.\d+ % of the output grid"):
        predict(ckpt, [a, b], tmp_path / "o.tif", progress=False, block_size=4096)


# -- class maps ------------------------------------------------------------------------------
def test_a_reflectance_stack_is_not_a_class_map(tmp_path, capsys):
    refl = np.random.default_rng(0).integers(0, 3000, (6, 50, 50)).astype("int16")
    stack = write_raster(tmp_path / "refl.tif", refl)
    for cmd in (["stats", str(stack), "-o", str(tmp_path / "s.csv")],
                ["change", str(STRATA), str(stack), "-o", str(tmp_path / "c.gpkg")]):  # fmt: skip
        assert main([*cmd, "--quiet"]) == 1
        err = capsys.readouterr().err
        assert "6 bands of int16 and no class table: it looks like imagery" in err
    # a band chosen explicitly is read as class ids
    assert main(["stats", str(stack), "-o", str(tmp_path / "s.csv"), "--band", "1",
                 "--quiet", "--no-plot"]) == 0  # fmt: skip


def test_a_map_of_thousands_of_values_warns_and_skips_the_chart(tmp_path):
    from geoseg.analysis import class_areas, write_stats

    ids = np.arange(100 * 80, dtype="uint16").reshape(100, 80)
    path = write_raster(tmp_path / "many.tif", ids)
    with pytest.warns(DataWarning, match="8000 distinct values"):
        stats = class_areas(path, progress=False)
    with pytest.warns(DataWarning, match="too many for a bar chart"):
        csv, png = write_stats(stats, tmp_path / "s.csv")
    assert csv.exists() and png is None


# -- zones -----------------------------------------------------------------------------------
def _zones(tmp_path: Path, gdf: gpd.GeoDataFrame) -> Path:
    path = tmp_path / "zones.gpkg"
    gdf.to_file(path)
    return path


def test_zones_problems_are_named(tmp_path):
    from geoseg.analysis import class_areas

    with rasterio.open(STRATA) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    empty = _zones(tmp_path, gpd.GeoDataFrame({"name": []}, geometry=[], crs=crs))
    with pytest.raises(DataError, match="holds no zone"):
        class_areas(STRATA, zones=empty, progress=False)
    mid = (left + right) / 2
    bow = Polygon([(left, bottom), (mid, top), (mid, bottom), (left, top)])  # self-crossing
    gdf = gpd.GeoDataFrame(
        {"name": ["west", "west", "bow", "none"]},
        geometry=[box(left, bottom, mid, top), box(mid, bottom, right, top), bow, None],
        crs=crs,
    )
    path = _zones(tmp_path, gdf)
    with pytest.warns(DataWarning) as rec:
        stats = class_areas(STRATA, zones=path, zone_field="name", progress=False)
    text = " ".join(str(r.message) for r in rec)
    assert "without geometry are left out" in text
    assert "invalid zone polygon(s)" in text and "repaired" in text
    assert "['west'] appear on several polygons" in text
    assert set(stats["zone"]) == {"(all)", "west", "bow"}
