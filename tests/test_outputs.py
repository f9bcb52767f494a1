"""The output layer (geoseg.io.outputs) across commands: what counts as an input and as an
output (Shapefile sidecars, files a VRT reads, a report's chart), distinct outputs, and
reads that stop when a file changes under them. Each case found by a data-safety audit."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _inference_helpers import RGB, tiny_checkpoint

from geoseg.cli import main
from geoseg.errors import ConfigError, InputFileError, OutputError

ROOT = Path(__file__).parents[1]
NC = ROOT / "data" / "nc-landsat7-landcover"
STRATA = NC / "strata.tif"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ck") / "m.safetensors")


def _hashes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_file_a_vrt_reads_is_an_input(ckpt, tmp_path, capsys):
    tile = tmp_path / "tiles" / "a.tif"
    tile.parent.mkdir()
    shutil.copy(RGB, tile)
    with rasterio.open(tile) as src:
        w, h, t = src.width, src.height, src.transform
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">tiles/a.tif</SourceFilename>'
        f"<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
        for b in (1, 2, 3)
    )
    vrt = tmp_path / "m.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><GeoTransform>'
        f"{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>{bands}</VRTDataset>"
    )
    before = _hashes(tmp_path)
    code = main(["predict", str(ckpt), str(vrt), "-o", str(tile), "--overwrite", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "is the input" in err and "m.vrt" in err
    assert _hashes(tmp_path) == before


def _zones(tmp_path: Path) -> Path:
    for part in NC.glob("landsat96_polygons.*"):
        shutil.copy(part, tmp_path / part.name)
    return tmp_path / "landsat96_polygons.shp"


def test_shapefile_sidecars_are_inputs_and_outputs(tmp_path, capsys):
    zones = _zones(tmp_path)
    cmap = tmp_path / "map.tif"
    shutil.copy(STRATA, cmap)
    (tmp_path / "v.dbf").write_text("mine")
    before = _hashes(tmp_path)
    # a .shp output writes v.dbf: an existing one needs --overwrite
    assert main(["vectorize", str(cmap), "-o", str(tmp_path / "v.shp"), "--quiet"]) == 1
    assert "'v.dbf'" in capsys.readouterr().err.replace(str(tmp_path) + "/", "")
    # the attribute table of the zones is an input, whatever its extension
    dbf = zones.with_suffix(".dbf")
    code = main(["stats", str(cmap), "--zones", str(zones), "-o", str(dbf), "--overwrite",
                 "--quiet", "--no-plot"])  # fmt: skip
    assert code == 1 and "is the input" in capsys.readouterr().err
    # an input named like a sidecar of the output
    shutil.copy(STRATA, tmp_path / "w.dbf")
    before["w.dbf"] = (tmp_path / "w.dbf").read_bytes()
    code = main(["vectorize", str(tmp_path / "w.dbf"), "-o", str(tmp_path / "w.shp"),
                 "--overwrite", "--quiet"])  # fmt: skip
    assert code == 1 and "is the input" in capsys.readouterr().err
    assert _hashes(tmp_path) == before
    # and written, the Shapefile comes with its sidecars, leaving no temporary behind
    assert main(["vectorize", str(cmap), "-o", str(tmp_path / "v.shp"), "--overwrite",
                 "--quiet"]) == 0  # fmt: skip
    assert {p.suffix for p in tmp_path.glob("v.*")} >= {".shp", ".shx", ".dbf", ".prj"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_stats_chart_is_an_output_like_the_csv(tmp_path, capsys):
    cmap = tmp_path / "map.png"  # a GeoTIFF under a .png name: the chart's own name
    shutil.copy(STRATA, cmap)
    before = _hashes(tmp_path)
    assert main(["stats", str(cmap), "-o", str(tmp_path / "map.csv"), "--overwrite",
                 "--quiet"]) == 1  # fmt: skip
    assert "is the input" in capsys.readouterr().err
    assert main(["stats", str(cmap), "-o", str(tmp_path / "out.png"), "--overwrite",
                 "--quiet"]) == 1  # fmt: skip
    # its format would be the chart's: refused by its extension (the CSV's, a GIS layer's)
    assert "out.png': unknown extension '.png'" in capsys.readouterr().err
    assert _hashes(tmp_path) == before


def test_evaluate_never_replaces_its_inputs_or_an_unnamed_file(ckpt, tmp_path):
    from geoseg.evaluation import evaluate

    cfg = tmp_path / "exp.yaml"
    cfg.write_text("task: semantic\n")
    with pytest.raises(OutputError, match="is the input"):
        evaluate(ckpt, config=cfg, output=cfg, overwrite=True)
    (tmp_path / "rep.json").write_text("mine")
    with pytest.raises(OutputError, match="already exists"):
        evaluate(ckpt, config=cfg, output=tmp_path / "rep.json")
    (tmp_path / "r2_confusion.png").write_text("mine")  # the report's chart
    with pytest.raises(OutputError, match=r"r2_confusion\.png"):
        evaluate(ckpt, config=cfg, output=tmp_path / "r2.json")
    assert cfg.read_text() == "task: semantic\n"
    assert (tmp_path / "rep.json").read_text() == "mine"


def test_label_output_is_never_the_prompts(tmp_path, capsys):
    import geopandas as gpd
    import shapely

    prompts = tmp_path / "prompts.gpkg"
    with rasterio.open(RGB) as src:
        x, y = src.xy(100, 100)
        crs = src.crs
    gpd.GeoDataFrame({"class": [1]}, geometry=[shapely.Point(x, y)], crs=crs).to_file(prompts)
    before = prompts.read_bytes()
    code = main(["label", str(RGB), "--prompts", str(prompts), "--sam", str(tmp_path / "nosam"),
                 "-o", str(prompts), "--overwrite"])  # fmt: skip
    assert code == 1 and "is the input" in capsys.readouterr().err
    assert prompts.read_bytes() == before


def test_a_run_folder_with_an_interrupted_run_or_the_input_config(tmp_path):
    from geoseg.training import train

    run = tmp_path / "run"
    (run / "logs" / "checkpoints").mkdir(parents=True)
    (run / "logs" / "checkpoints" / "best-epoch=2.ckpt").write_bytes(b"weights")
    with pytest.raises(OutputError, match=r"already holds a run \(logs/checkpoints/best"):
        train(ROOT / "configs" / "nc_landcover.yaml", output_dir=run)
    assert (run / "logs" / "checkpoints" / "best-epoch=2.ckpt").read_bytes() == b"weights"
    cfg = tmp_path / "other" / "config.yaml"
    cfg.parent.mkdir()
    shutil.copy(ROOT / "configs" / "nc_landcover.yaml", cfg)
    with pytest.raises(OutputError, match="is the input"):
        train(cfg, output_dir=cfg.parent, overwrite=True)  # the run writes config.yaml
    from geoseg.training import check_run_folder

    check_run_folder(tmp_path / "new", False, cfg)  # a new run folder: nothing to check


def test_a_damaged_digest_or_a_cache_that_is_a_file(ckpt, tmp_path):
    from geoseg.inference.backends import export_onnx

    first = export_onnx(ckpt, 64, cache_dir=tmp_path / "c")
    digest = first.with_suffix(".sha256")
    good = digest.read_bytes()
    digest.write_bytes(b"\xff\xfe\x00garbage")  # not text at all
    with pytest.warns(UserWarning, match="damaged or incomplete"):
        again = export_onnx(ckpt, 64, cache_dir=tmp_path / "c")
    assert again == first and digest.read_bytes() == good
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        export_onnx(ckpt, 64, cache_dir=tmp_path / "f")


def test_a_class_map_replaced_during_a_run_stops_its_reads(tmp_path):
    from rasterio.windows import Window

    from geoseg.io.bands import BandSource

    cmap = tmp_path / "map.tif"
    shutil.copy(STRATA, cmap)
    source = BandSource(str(cmap))
    vals, _ = source.read(Window(0, 0, 8, 8))
    new = tmp_path / "new.tif"
    shutil.copy(STRATA, new)
    with rasterio.open(new, "r+") as d:
        d.write(np.full((d.height, d.width), 1, d.dtypes[0]), 1)
    os.utime(new, ns=(0, 10**9))  # another version, as a sync tool's atomic mv brings
    os.replace(new, cmap)
    with pytest.raises(InputFileError, match="changed on disk during the run"):
        source.read(Window(0, 0, 8, 8))
    assert vals.size == 64


def test_a_completed_run_removes_the_resume_folder_of_its_outputs(ckpt, tmp_path):
    from geoseg.inference import predict
    from geoseg.inference.resume import PREFIX, ResumeStore

    out = tmp_path / "m.tif"
    kept = ResumeStore.open(tmp_path, "interrupted", [out]).folder  # as --resume left it
    other = ResumeStore.open(tmp_path, "another", [tmp_path / "other.tif"]).folder
    predict(ckpt, RGB, out, progress=False)
    assert not kept.exists() and other.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(PREFIX)] == [other.name]


def test_the_demo_replaces_only_its_own_outputs(tmp_path, capsys):
    model = str(ROOT / "models" / "nc_landcover.safetensors")
    (tmp_path / "file").write_text("x")
    assert main(["demo", "-o", str(tmp_path / "file"), "--model", model]) == 1
    assert "is a file" in capsys.readouterr().err
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "landcover.tif").write_text("my own map")
    assert main(["demo", "-o", str(proj), "--model", model]) == 1
    assert "not written by geoseg demo" in capsys.readouterr().err
    assert (proj / "landcover.tif").read_text() == "my own map"


def test_a_file_system_error_is_one_clear_line(monkeypatch, capsys, tmp_path):
    import errno

    import geoseg.cli.stats as stats_cli

    def full_disk(args):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/run/best.ckpt")
        except OSError as exc:
            raise RuntimeError("a library's own wrapper") from exc

    monkeypatch.setattr(stats_cli, "run", full_disk)
    assert main(["stats", str(STRATA), "-o", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert "error: No space left on device ('/data/run/best.ckpt')" in err

    def bug(args):
        raise RuntimeError("a bug in geoseg")  # not the machine's: the traceback stays

    monkeypatch.setattr(stats_cli, "run", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["stats", str(STRATA), "-o", str(tmp_path / "x.csv")])


def test_an_interrupted_training_says_so(monkeypatch, capsys, tmp_path):
    import geoseg.cli.train as train_cli

    def lightning_interrupt(args):  # what Lightning does on Ctrl-C / SIGTERM
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemExit(1) from None

    monkeypatch.setattr(train_cli, "run", lightning_interrupt)
    assert main(["train", str(tmp_path / "c.yaml")]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_an_output_that_names_a_new_folder_is_refused(ckpt, tmp_path, capsys):
    code = main(["predict", str(ckpt), str(RGB), "-o", f"{tmp_path}/newdir/", "--quiet"])
    assert code == 1 and "names a folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
