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
