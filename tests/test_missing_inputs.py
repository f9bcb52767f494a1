"""Every command given a missing, non-raster or folder input: one clear line, exit 1.

``geoseg stats`` and ``geoseg panoptic`` printed rasterio's traceback for a missing class
map or instance map before (they opened it without the checked opener).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.cli import main

ROOT = Path(__file__).parents[1]
S = str(ROOT / "data" / "nc-landsat7-landcover" / "strata.tif")
M = str(ROOT / "models" / "nc_landcover.safetensors")

COMMANDS = [
    "stats BAD -o o.csv",
    f"stats {S} --zones BAD -o o.csv",
    "vectorize BAD -o o.gpkg",
    f"change BAD {S} -o o.gpkg",
    f"change {S} BAD -o o.gpkg",
    f"panoptic BAD {S} -o o.tif --instances-output oi.tif",
    f"panoptic {S} BAD -o o.tif --instances-output oi.tif",
    f"predict BAD {S} -o o.tif",
    f"predict {M} BAD -o o.tif",
    "export BAD -o o.onnx",
    "evaluate BAD",
    "train BAD -o run",
    f"vectorize {S} -o o.gpkg --objects BAD",
    f"evaluate {M} --config BAD",
]


@pytest.mark.parametrize("bad", ["missing.tif", "notes.txt", "a_folder"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_input_file_is_one_clear_line(command, bad, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a raster, model or config\n")
    (tmp_path / "a_folder").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(command.replace("BAD", bad).split())
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err and "error:" in err
    assert bad in err  # names the file
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output left
