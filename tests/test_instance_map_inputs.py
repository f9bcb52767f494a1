"""A class map given where an instance map is taken: refused (tagged) or warned (look-alike)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.analysis import object_stats
from geoseg.analysis.panoptic import fuse_panoptic
from geoseg.classes import ClassTable, write_class_table
from geoseg.errors import DataError, DataWarning
from geoseg.io.bands import INSTANCES_TAG

TABLE = ClassTable.from_config(
    [{"id": 1, "name": "water"}, {"id": 2, "name": "forest"}, {"id": 3, "name": "urban"}]
)


def _raster(path: Path, bands: np.ndarray, *, table: bool, colors: bool = False, tags=None):
    profile = dict(
        driver="GTiff", width=bands.shape[-1], height=bands.shape[-2], count=bands.shape[0],
        dtype="uint8", crs="EPSG:32617", transform=from_origin(600000, 4000000, 10, 10),
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
        if table:
            write_class_table(dst, TABLE)
        elif colors:
            dst.write_colormap(1, {1: (0, 0, 255, 255), 2: (0, 128, 0, 255)})
        if tags:
            dst.update_tags(**tags)
    return path


def _classes() -> np.ndarray:
    a = np.ones((1, 40, 40), np.uint8)
    a[0, :, 20:] = 2
    a[0, 30:, :] = 3
    return a


def test_object_stats_refuses_a_geoseg_class_map(tmp_path):
    path = _raster(tmp_path / "classes.tif", _classes(), table=True)
    with pytest.raises(DataError, match=r"is a class map .*each class would count as one"):
        object_stats(path, progress=False)


def test_object_stats_warns_on_an_untagged_map_with_a_colour_table(tmp_path):
    path = _raster(tmp_path / "coloured.tif", _classes(), table=False, colors=True)
    with pytest.warns(DataWarning, match="colour table like a class map"):
        df = object_stats(path, progress=False)
    assert int(df["objects"].sum()) == 3  # still computed: it may be an instance map


def test_a_tagged_instance_map_passes_without_warning(tmp_path):
    ids = np.zeros((2, 40, 40), np.uint8)
    ids[0, 2:10, 2:10], ids[1, 2:10, 2:10] = 1, 3
    ids[0, 20:30, 5:15], ids[1, 20:30, 5:15] = 2, 3
    path = _raster(tmp_path / "inst.tif", ids, table=True, tags={INSTANCES_TAG: "1"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        df = object_stats(path, progress=False)
    whole = df[df["zone"] == df["zone"].iloc[0]]
    assert whole["objects"].tolist() == [2]
    assert whole["footprint_m2"].tolist() == pytest.approx([(64 + 100) * 100.0])


def test_panoptic_refuses_a_class_map_as_its_instance_map(tmp_path):
    land = _raster(tmp_path / "land.tif", _classes(), table=True)
    other = _raster(tmp_path / "land2.tif", _classes(), table=True)
    with pytest.raises(DataError, match=r"land2\.tif' is a class map"):
        fuse_panoptic(land, other, tmp_path / "p.tif", tmp_path / "pi.tif", thing_class=3)
    assert not (tmp_path / "p.tif").exists() and not (tmp_path / "pi.tif").exists()
