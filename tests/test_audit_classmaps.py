"""Bad class maps and options from the class-map audit: clear errors, warnings, no hangs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.classes import CLASSES_TAG, ClassInfo, ClassTable, class_table_for
from geoseg.cli import main
from geoseg.errors import ConfigError, DataError
from geoseg.testing import write_raster

STRATA = Path(__file__).parents[1] / "data" / "nc-landsat7-landcover" / "strata.tif"


def _tagged_map(path: Path, tag: str, values: np.ndarray | None = None) -> Path:
    arr = values if values is not None else np.arange(64, dtype=np.uint8).reshape(8, 8) % 3
    write_raster(path, arr)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**{CLASSES_TAG: tag})
    return path


# -- B1: duplicate checks are linear -----------------------------------------------------------
def test_class_table_of_60k_classes_is_fast(tmp_path):
    classes = [{"id": i, "name": f"c{i}"} for i in range(60000)]
    t0 = time.perf_counter()
    table = ClassTable.from_config(classes)
    assert len(table) == 60000
    path = _tagged_map(tmp_path / "m.tif", json.dumps(classes))
    assert len(class_table_for(path)) == 60000
    assert time.perf_counter() - t0 < 5  # was quadratic: minutes
    with pytest.raises(ConfigError, match=r"duplicate class ids \[5\]"):
        ClassTable([ClassInfo(i, f"c{i}", "#000000") for i in [*range(60000), 5]])


# -- D8: class ids bounded ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [10**12, 65536, -1, float("inf")])
def test_class_ids_are_bounded(bad):
    with pytest.raises(ConfigError, match="class id"):
        ClassTable.from_config([{"id": 0, "name": "a"}, {"id": bad, "name": "b"}])


# -- D12 / E6: a broken GEOSEG_CLASSES tag names the file and the tag ---------------------------
@pytest.mark.parametrize(
    "tag", ["{not json", '{"a": "x"}', '[{"id": 1e40, "name": "x"}]', "[" * 100000]
)
def test_bad_classes_tag_names_file_and_tag(tmp_path, tag, capsys):
    path = _tagged_map(tmp_path / "bad.tif", tag)
    with pytest.raises(DataError, match=rf"bad\.tif.*{CLASSES_TAG} tag"):
        class_table_for(path)
    rc = main(["stats", str(path), "-o", str(tmp_path / "s.csv"), "--no-plot", "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0 and "geoseg stats: error:" in err and CLASSES_TAG in err
    assert "Traceback" not in err


def _cli(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _u8_map(path: Path, values=None, nodata=None) -> Path:
    arr = values if values is not None else (np.arange(256).reshape(16, 16) // 64).astype(np.uint8)
    return write_raster(path, arr, nodata=nodata)


# -- B2 / D11: size limit and unreadable VRT sources in the shared opener ------------------------
@pytest.mark.parametrize("cmd", ["stats", "vectorize", "change"])
def test_size_limit_applies_to_class_map_commands(tmp_path, monkeypatch, capsys, cmd):
    path = _u8_map(tmp_path / "m.tif")
    monkeypatch.setenv("GEOSEG_MAX_PIXELS", "100")
    extra = [str(path)] if cmd == "change" else []
    rc, err = _cli([cmd, str(path), *extra, "-o", str(tmp_path / "o.gpkg"), "--quiet"], capsys)
    assert rc != 0 and "16 x 16 px" in err and "GEOSEG_MAX_PIXELS" in err


def test_bad_max_pixels_env_is_a_config_error(tmp_path, monkeypatch):
    from geoseg.io.bands import open_grid

    monkeypatch.setenv("GEOSEG_MAX_PIXELS", "abc")
    with pytest.raises(ConfigError, match="GEOSEG_MAX_PIXELS"):
        open_grid(_u8_map(tmp_path / "m.tif"))


@pytest.mark.parametrize("cmd", ["stats", "vectorize", "change"])
def test_vrt_with_missing_source_names_it(tmp_path, capsys, cmd):
    _u8_map(tmp_path / "src.tif")
    vrt = tmp_path / "m.vrt"
    with rasterio.open(tmp_path / "src.tif") as s:
        gt = ", ".join(str(v) for v in s.transform.to_gdal())
        srs = s.crs.to_wkt().replace('"', "&quot;")
    vrt.write_text(
        f'<VRTDataset rasterXSize="16" rasterYSize="16"><SRS>{srs}</SRS>'
        f"<GeoTransform>{gt}</GeoTransform>"
        '<VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        '<SourceFilename relativeToVRT="1">gone.tif</SourceFilename><SourceBand>1</SourceBand>'
        '<SrcRect xOff="0" yOff="0" xSize="16" ySize="16"/>'
        '<DstRect xOff="0" yOff="0" xSize="16" ySize="16"/></SimpleSource></VRTRasterBand>'
        "</VRTDataset>"
    )
    extra = [str(vrt)] if cmd == "change" else []
    rc, err = _cli([cmd, str(vrt), *extra, "-o", str(tmp_path / "o.gpkg"), "--quiet"], capsys)
    assert rc != 0 and f"geoseg {cmd}: error:" in err and "gone.tif" in err


def test_read_failure_is_an_input_file_error(tmp_path):
    from geoseg.errors import InputFileError
    from geoseg.io.bands import read_failure

    assert "gone.tif" not in read_failure(str(tmp_path / "x.tif"), OSError("Read failed"))
    with pytest.raises(InputFileError):
        raise InputFileError(read_failure("x.tif", OSError("Read failed")))


# -- B3: change refuses a matrix of too many classes ---------------------------------------------
def test_change_refuses_thousands_of_values(tmp_path, capsys):
    ids = np.arange(48 * 48, dtype=np.uint16).reshape(48, 48)
    a = write_raster(tmp_path / "a.tif", ids)
    b = _u8_map(tmp_path / "b.tif", np.zeros((48, 48), np.uint8))
    t0 = time.perf_counter()
    rc, err = _cli(["change", str(a), str(b), "-o", str(tmp_path / "c.gpkg"), "--quiet"], capsys)
    assert rc != 0 and "1024 distinct" in err
    assert time.perf_counter() - t0 < 20


# -- C5: a probability raster is not a class map; float imagery is warned ------------------------
def _probability_raster(path: Path) -> Path:
    table = ClassTable.from_config(["a", "b", "c"])
    arr = np.random.default_rng(0).integers(0, 255, (3, 16, 16)).astype(np.uint8)
    write_raster(path, arr, nodata=255)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**{CLASSES_TAG: table.to_json()})
        dst.scales = [1 / 254] * 3
        for i, n in enumerate(table.names, 1):
            dst.set_band_description(i, n)
    return path


@pytest.mark.parametrize("cmd", ["stats", "vectorize", "change", "panoptic"])
def test_probability_raster_is_refused_as_class_map(tmp_path, capsys, cmd):
    p = _probability_raster(tmp_path / "p.tif")
    other = _u8_map(tmp_path / "o.tif")
    argv = {
        "stats": ["stats", str(p), "-o", str(tmp_path / "s.csv")],
        "vectorize": ["vectorize", str(p), "-o", str(tmp_path / "v.gpkg")],
        "change": ["change", str(other), str(p), "-o", str(tmp_path / "c.gpkg")],
        "panoptic": ["panoptic", str(p), str(other), "-o", str(tmp_path / "f.tif"),
                     "--instances-output", str(tmp_path / "i.tif"), "--thing-class", "1"],
    }[cmd]  # fmt: skip
    rc, err = _cli(argv, capsys)
    assert rc != 0 and "probability raster" in err


@pytest.mark.parametrize("cmd", ["vectorize", "change"])
def test_float_imagery_is_warned(tmp_path, cmd):
    from geoseg.analysis import change
    from geoseg.errors import DataWarning
    from geoseg.vectorize import vectorize

    refl = write_raster(tmp_path / "r.tif", np.arange(256, dtype=np.float32).reshape(16, 16))
    with pytest.warns(DataWarning, match="distinct values"):
        if cmd == "vectorize":
            vectorize(refl, workers=1, progress=False)
        else:
            change(_u8_map(tmp_path / "b.tif"), refl, workers=1, progress=False)


# -- C7 / C8: empty results and dropped zones are warned -----------------------------------------
def test_stats_warns_on_empty_results_and_dropped_zones(tmp_path):
    import geopandas as gpd
    import shapely

    from geoseg.analysis import class_areas
    from geoseg.errors import DataWarning, NoDataWarning

    empty = _u8_map(tmp_path / "e.tif", np.full((16, 16), 9, np.uint8), nodata=9)
    with pytest.warns(NoDataWarning, match="no valid pixel"):
        assert len(class_areas(empty, progress=False)) == 0
    m = _u8_map(tmp_path / "m.tif")
    with pytest.warns(NoDataWarning, match=r"\[99\]"):
        class_areas(m, classes="99", progress=False)
    with pytest.warns(DataWarning, match=r"\[7\] requested but absent"):
        class_areas(m, classes="1,7", progress=False)
    zones = gpd.GeoDataFrame(
        {"name": ["big", "ok"]},
        geometry=[
            shapely.box(-1e300, -1e300, 1e300, 1e300),
            shapely.box(5e5, 3.99985e6, 500100, 4e6),
        ],
        crs="EPSG:32618",
    )
    # never dropped silently: counted (rasterio 1.5 burns these coordinates) or named
    import warnings

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        df = class_areas(m, zones=zones, zone_field="name", progress=False)
    named = any(issubclass(w.category, DataWarning) and "['big']" in str(w.message) for w in rec)
    assert "ok" in set(df.zone) and (named or "big" in set(df.zone))


def test_vectorize_warns_on_all_nodata(tmp_path):
    from geoseg.errors import NoDataWarning
    from geoseg.vectorize import vectorize

    empty = _u8_map(tmp_path / "e.tif", np.full((16, 16), 9, np.uint8), nodata=9)
    with pytest.warns(NoDataWarning, match="no polygon"):
        assert len(vectorize(empty, workers=1, progress=False)) == 0


# -- D13: a missing objects table ----------------------------------------------------------------
def test_vectorize_missing_objects_csv(tmp_path, capsys):
    m = _u8_map(tmp_path / "m.tif")
    argv = ["vectorize", str(m), "-o", str(tmp_path / "v.gpkg"), "--instances",
            "--objects", str(tmp_path / "nope.csv"), "--quiet"]  # fmt: skip
    rc, err = _cli(argv, capsys)
    assert rc != 0 and "objects table" in err and "nope.csv" in err


# -- C6: panoptic --thing-class is checked against the class table -------------------------------
@pytest.mark.parametrize("thing", ["-1", "99"])
def test_panoptic_thing_class_must_be_a_class(tmp_path, capsys, thing):
    table = ClassTable.from_config({0: "bg", 1: "building"})
    land = write_raster(tmp_path / "l.tif", np.zeros((16, 16), np.uint8), classes=table, nodata=255)
    inst = write_raster(tmp_path / "i.tif", np.eye(16, dtype=np.uint16))
    argv = ["panoptic", str(land), str(inst), "-o", str(tmp_path / "f.tif"),
            "--instances-output", str(tmp_path / "io.tif"), "--thing-class", thing]  # fmt: skip
    rc, err = _cli(argv, capsys)
    assert rc != 0 and f"thing_class: {thing}" in err and not (tmp_path / "f.tif").exists()
    rc, err = _cli([*argv[:-1], "1"], capsys)
    assert rc == 0
