"""Bad input through the Python API, as a notebook passes it by mistake: a string for a
number, a fraction for a whole number, an array or an open dataset for a path, None for a
required path, a string for a flag, names for class ids. Each gets a ConfigError naming
the argument (never a traceback from numpy, rasterio or Dask, a silently changed value, or
a file written), and every spelling of a right value keeps working (geoseg.arguments)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

sys.path.insert(0, str(Path(__file__).parent))
from _inference_helpers import RGB, tiny_checkpoint

from geoseg.analysis import change, class_areas
from geoseg.config import load_yaml
from geoseg.errors import ConfigError
from geoseg.inference import predict
from geoseg.models import load_model, read_metadata
from geoseg.testing import write_raster
from geoseg.vectorize import vectorize, vectorize_to_file


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ck") / "m.safetensors")


@pytest.fixture(scope="module")
def classmap(tmp_path_factory):
    a = np.zeros((1, 64, 64), np.uint8)
    a[0, :32] = 1
    a[0, 32:, :20] = 2
    path = tmp_path_factory.mktemp("cm") / "cm.tif"
    write_raster(path, a, crs="EPSG:32618")
    return path


# -- predict ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile_size": "128"}, r"tile_size: expected a whole number, got str '128'"),
        ({"tile_size": float("nan")}, r"tile_size: expected a whole number, got nan"),
        ({"tile_size": True}, r"tile_size: expected a whole number, got bool True"),
        ({"overlap": 16.5}, r"overlap: expected a whole number, got 16.5"),
        ({"batch_size": "8"}, r"batch_size: expected a whole number, got str '8'"),
        ({"block_size": "512"}, r"block_size: expected a whole number, got str '512'"),
        ({"workers": "2"}, r"workers: expected a whole number, got str '2'"),
        ({"threads_per_worker": 1.5}, r"threads_per_worker: expected a whole number, got 1.5"),
        ({"resolution": "30"}, r"resolution: expected a number \(CRS units\), got str '30'"),
        ({"resolution": (30, 30, 30)}, r"resolution: expected one pixel size or an \(x, y\)"),
        ({"connect_timeout": "5"}, r"connect_timeout: expected a number \(seconds\)"),
        ({"bands": 3}, r"bands: expected a list of 1-based band numbers or band names"),
        ({"bands": "RGB"}, r"bands: expected a list of 1-based band numbers or band names"),
        ({"bands": [1, 2, 2.5]}, r"bands\[2\]: expected a whole number"),
        ({"device": None}, r"device: expected a name \(str\), got None"),
        ({"blend": 3}, r"blend: expected a window name .* or a callable"),
        ({"stats": []}, r"stats: expected a dict to fill with run statistics"),
        ({"probabilities": np.zeros(3)}, r"probabilities: expected a file path .* an array"),
    ],
)
def test_predict_refuses_a_wrong_kind_of_option(ckpt, tmp_path, kwargs, match):
    out = tmp_path / "map.tif"
    with pytest.raises(ConfigError, match=match):
        predict(ckpt, RGB, out, progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("ckpt", RGB, None), r"output is required: give a file path"),
        ((None, RGB, "out"), r"checkpoint is required: give a file path"),
        (("ckpt", None, "out"), r"inputs is required: give a file path"),
        (("ckpt", np.zeros((3, 8, 8), np.uint8), "out"), r"inputs: .* an array is not a file"),
        (("ckpt", [RGB, None], "out"), r"inputs\[1\] is required"),
        (("ckpt", RGB, 5), r"output: expected a file path \(str or pathlib.Path\), got int 5"),
    ],
)
def test_predict_refuses_what_is_not_a_path(ckpt, tmp_path, args, match):
    named = {"ckpt": ckpt, "out": tmp_path / "map.tif"}
    values = [named[a] if isinstance(a, str) and a in named else a for a in args]
    with pytest.raises(ConfigError, match=match):
        predict(*values, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_predict_refuses_an_open_dataset_and_says_to_pass_its_name(ckpt, tmp_path):
    with rasterio.open(RGB) as ds, pytest.raises(ConfigError, match=r"inputs=dataset\.name"):
        predict(ckpt, ds, tmp_path / "map.tif", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_predict_overwrite_given_as_text_keeps_the_existing_file(ckpt, tmp_path):
    out = tmp_path / "map.tif"
    out.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match=r"overwrite: expected True or False, got str 'no'"):
        predict(ckpt, RGB, out, overwrite="no", progress=False)
    assert out.read_bytes() == b"keep me"


def test_predict_same_result_for_every_spelling_of_valid_arguments(ckpt, tmp_path):
    """A generator of inputs (read once), numpy integers and a whole float are values."""
    a = predict(ckpt, [RGB], tmp_path / "a.tif", tile_size=128, block_size=256, progress=False)
    b = predict(ckpt, (p for p in [str(RGB)]), tmp_path / "b.tif", tile_size=np.int64(128),
                block_size=256.0, batch_size=np.int32(8), bands=(b for b in [1, 2, 3]),
                progress=False)  # fmt: skip
    with rasterio.open(a) as sa, rasterio.open(b) as sb:
        assert np.array_equal(sa.read(), sb.read())


# -- vectorize, statistics, change -----------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"simplify": "1"}, r"simplify: expected a number \(metres\), got str '1'"),
        ({"simplify": True}, r"simplify: expected a number \(metres\), got bool True"),
        ({"min_area": None}, r"min_area: expected a number \(metres\), got NoneType None"),
        ({"chunk_size": "256"}, r"chunk_size: expected a whole number \(pixels\), got str"),
        ({"sieve": 2.5}, r"sieve: expected a whole number \(pixels\), got 2.5"),
        ({"workers": 1.5}, r"workers: expected a whole number, got 1.5"),
        ({"band": "1"}, r"band: expected a whole number \(1-based\), got str '1'"),
        ({"nodata": "0"}, r"nodata: expected the raw no-data value as a number"),
        ({"instances": "no"}, r"instances: expected True or False, got str 'no'"),
        ({"classes": {"water": 1}}, r"classes\['water'\]: 'water' is not a class id"),
        ({"classes": ["water"]}, r"classes\[0\]: 'water' is not a class id"),
        ({"classes": [1.5]}, r"classes\[0\]: expected a whole number \(a class id\), got 1.5"),
    ],
)
def test_vectorize_refuses_a_wrong_kind_of_option(classmap, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        vectorize(classmap, progress=False, **{"workers": 1, **kwargs})


def test_vectorize_whole_float_band_and_class_ids_as_before(classmap):
    ref = vectorize(classmap, workers=1, progress=False, classes=[1, 2])
    got = vectorize(classmap, workers=1, progress=False, band=1.0, chunk_size=256.0,
                    classes=(c for c in [np.int64(1), "2"]))  # fmt: skip
    assert ref.equals(got)


def test_vectorize_to_file_refuses_none_path_and_text_overwrite(classmap, tmp_path):
    with pytest.raises(ConfigError, match=r"path is required: give a file path"):
        vectorize_to_file(classmap, None, workers=1, progress=False)
    out = tmp_path / "v.gpkg"
    out.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match=r"overwrite: expected True or False, got str 'no'"):
        vectorize_to_file(classmap, out, overwrite="no", workers=1, progress=False)
    assert out.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.gpkg"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"chunk_size": 256.5}, r"chunk_size: expected a whole number \(pixels\), got 256.5"),
        ({"nodata": "x"}, r"nodata: expected the raw no-data value as a number"),
        ({"zones": np.zeros(3)}, r"zones: expected a file path .* or a GeoDataFrame"),
        ({"classes": {"water": 1}}, r"classes\['water'\]: 'water' is not a class id"),
    ],
)
def test_class_areas_refuses_a_wrong_kind_of_option(classmap, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        class_areas(classmap, progress=False, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"output": 5}, r"output: expected a file path \(str or pathlib.Path\), got int 5"),
        ({"min_area": "5"}, r"min_area: expected a number \(metres\), got str '5'"),
        ({"band": "1"}, r"band: expected a whole number \(1-based\), got str '1'"),
    ],
)
def test_change_refuses_a_wrong_kind_of_option(classmap, tmp_path, kwargs, match):
    kwargs = {"output": tmp_path / "ch.gpkg", **kwargs}
    with pytest.raises(ConfigError, match=match):
        change(classmap, classmap, workers=1, progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


# -- loaders ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("load", "value", "match"),
    [
        (read_metadata, None, r"checkpoint is required: give a file path"),
        (load_model, 5, r"checkpoint: expected a file path \(str or pathlib.Path\), got int 5"),
        (load_yaml, None, r"config file is required: give a file path"),
    ],
)
def test_loaders_refuse_what_is_not_a_path(load, value, match):
    with pytest.raises(ConfigError, match=match):
        load(value)
