"""Interrupted and failed runs of the commands besides predict and train (issue 11).

Each test failed before its fix: a Ctrl-C that took seconds (minutes on a large COCO
export) to clean up, a change matrix left beside missing polygons, an interrupt while the
commands load that ended in a traceback, and a signal that Python dropped because it
arrived in a garbage-collector callback (the run went on and exited 0).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.classes import ClassTable
from geoseg.cli import main
from geoseg.io.outputs import atomic_outputs
from geoseg.testing import write_raster

STRATA = Path(__file__).resolve().parents[1] / "data" / "nc-landsat7-landcover" / "strata.tif"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- the output layer: cleaning up many temporaries ----------------------------------------
def test_discarding_thousands_of_temporaries_takes_one_listing_per_folder(tmp_path):
    (tmp_path / "keep.png.aux.xml").write_text("the user's")
    n = 3000  # a COCO export of a 3000-tile map into one folder
    start = None
    with pytest.raises(KeyboardInterrupt), atomic_outputs() as batch:
        for i in range(n):
            tmp = batch.path(tmp_path / f"tile_{i}.png")
            tmp.write_bytes(b"png")
            if i % 500 == 0:  # GDAL's sidecars of the temporaries go too
                Path(f"{tmp}.aux.xml").write_text("<PAMDataset/>")
        start = time.perf_counter()
        raise KeyboardInterrupt
    took = time.perf_counter() - start
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png.aux.xml"]
    assert took < 1.5, f"cleaning up {n} temporaries took {took:.1f} s"  # 5.8 s before


# -- change: the matrix and the polygons appear together -----------------------------------
def _maps(folder: Path) -> tuple[Path, Path]:
    with rasterio.open(STRATA) as src:
        strata = src.read(1)[:128, :128]
        crs, transform = src.crs, src.transform
    before = np.where(strata > 0, strata, 0).astype(np.uint8)
    after = before.copy()
    after[32:96, 32:96] = 5
    table = ClassTable.from_config({i: f"class{i}" for i in range(8)})
    b = write_raster(folder / "before.tif", before, crs=crs, transform=transform, classes=table)
    a = write_raster(folder / "after.tif", after, crs=crs, transform=transform, classes=table)
    return b, a


@pytest.mark.parametrize("failure", ["disk full", "interrupt"])
def test_change_writes_the_matrix_and_the_polygons_together(tmp_path, monkeypatch, capsys, failure):
    import geoseg.io.vector

    b, a = _maps(tmp_path)
    argv = ["change", str(b), str(a), "-o", str(tmp_path / "ch.gpkg"), "--quiet"]
    write_layer = geoseg.io.vector.write_layer

    def failing(*args, **kwargs):
        if failure == "interrupt":
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "ch.gpkg"))

    inputs = _snapshot(tmp_path)
    monkeypatch.setattr(geoseg.io.vector, "write_layer", failing)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == (130 if failure == "interrupt" else 1), err
    assert ("interrupted" if failure == "interrupt" else "no space left") in err
    assert _snapshot(tmp_path) == inputs  # no matrix without its polygons (ch.csv before)

    # a previous result, replaced by --overwrite only when both files are written
    monkeypatch.setattr(geoseg.io.vector, "write_layer", write_layer)
    assert main(argv) == 0
    with rasterio.open(a, "r+") as dst:  # a new later map: a new matrix and new polygons
        dst.write(np.full((1, 128, 128), 2, np.uint8))
    previous = _snapshot(tmp_path)
    monkeypatch.setattr(geoseg.io.vector, "write_layer", failing)
    assert main([*argv, "--overwrite"]) == (130 if failure == "interrupt" else 1)
    assert _snapshot(tmp_path) == previous


# -- the command line: interrupts are never lost and always one line -----------------------
def test_an_interrupt_while_the_commands_load_is_one_line(monkeypatch, capsys):
    import geoseg.cli

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(geoseg.cli.importlib, "import_module", interrupted)
    try:
        code = main(["stats", "map.tif", "-o", "s.csv"])
    except KeyboardInterrupt:  # pragma: no cover - before the fix: a traceback
        pytest.fail("Ctrl-C while geoseg loads its commands escaped as a traceback")
    err = capsys.readouterr().err
    assert code == 130
    assert err.strip().splitlines() == [
        "geoseg: interrupted; no partial output was kept (files that existed before are as "
        "they were)"
    ]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_garbage_collector_callback_still_stops_the_run(
    tmp_path, monkeypatch, capsys, signum
):
    import geoseg.cli.stats

    marker = tmp_path / "written"

    class Collected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signum)  # Python raises KeyboardInterrupt here and drops it
            for _ in range(1000):
                pass

    def run(args):
        obj = Collected()
        del obj
        time.sleep(2.0)  # the run goes on (before the fix: to the end, exit status 0)
        marker.write_text("the run went on")
        return 0

    monkeypatch.setattr(geoseg.cli.stats, "run", run)
    # as in a fresh `geoseg` process: Python's own Ctrl-C handler, neither signal blocked
    # (an earlier test of the session may have left another handler or a blocked mask)
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        code = main(["stats", "map.tif", "-o", str(tmp_path / "s.csv")])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, handler)
    err = capsys.readouterr().err
    assert code == 130, err
    assert not marker.exists()
    assert "Exception ignored" not in err
    assert err.strip().splitlines()[-1].startswith("geoseg stats: interrupted;")


# --- a Shapefile's parts move with it, at commit (found by the interruption audit) ---------


def _squares(names):
    import geopandas as gpd
    from shapely.geometry import box

    squares = [box(i, 0, i + 1, 1) for i in range(len(names))]
    return gpd.GeoDataFrame({"name": names}, geometry=squares, crs="EPSG:32618")


def test_a_shapefile_s_parts_are_replaced_with_it_not_before(tmp_path):
    """Until the batch commits, the old .shp keeps its own .dbf (an interruption then
    left an old .shp beside a new .dbf); a .cpg of the old output only goes at commit."""
    import pyogrio

    from geoseg.io.vector import write_layer, write_vector

    final = tmp_path / "v.shp"
    write_vector(_squares(["old"]), final)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"v.dbf", "v.shx", "v.prj", "v.cpg"} <= set(before)
    with atomic_outputs() as batch:
        write_layer(_squares(["new", "new"]), batch.path(final, overwrite=True), final=final)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in before} == before
        assert list(pyogrio.read_dataframe(final)["name"]) == ["old"]
        (tmp_path / next(p.name for p in tmp_path.iterdir() if p.suffix == ".cpg"
                         and p.name != "v.cpg")).unlink()  # fmt: skip
    assert list(pyogrio.read_dataframe(final)["name"]) == ["new", "new"]
    assert not (tmp_path / "v.cpg").exists()  # the new output has none: the old one's went
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.dbf", "v.prj", "v.shp", "v.shx"]


def test_an_evaluation_report_and_its_chart_land_together(tmp_path, monkeypatch):
    """The chart was its own output inside the report's: kept when the report failed."""
    import geoseg.evaluation as evaluation
    from geoseg.errors import OutputError

    classes = ClassTable.from_config(["a", "b"])
    report = {"split": "test", "miou": 0.5, "confusion_matrix": {"counts": [[3, 1], [0, 4]]}}
    json_path, png_path = evaluation.write_report(report, tmp_path / "r.json", classes=classes)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = evaluation.plot_confusion_matrix

    def then_json_becomes_a_folder(counts, classes, path, **kw):
        out = real(counts, classes, path, **kw)
        json_path.unlink()
        json_path.mkdir()  # the report's commit fails: nothing of the run may land
        return out

    monkeypatch.setattr(evaluation, "plot_confusion_matrix", then_json_becomes_a_folder)
    with pytest.raises(OutputError, match="became a folder"):
        evaluation.write_report({**report, "miou": 0.9}, json_path, classes=classes)
    assert png_path.read_bytes() == before[png_path.name]  # the old chart, not the new one
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


# --- a command that writes in stages says what it had finished ----------------------------


@pytest.mark.parametrize("failure", ["interrupt", "error"])
def test_a_command_stopped_after_a_stage_names_what_it_kept(tmp_path, monkeypatch, capsys,
                                                            failure):  # fmt: skip
    """The demo writes its outputs stage by stage: an interruption (or a full disk) after
    the first stage kept that stage's file, and the message said nothing was written."""
    import argparse

    import geoseg.cli as cli
    from geoseg.errors import OutputError
    from geoseg.io.outputs import atomic_path

    def staged(args):
        with atomic_path(tmp_path / "stage1.tif") as tmp:
            tmp.write_bytes(b"first stage")
        if failure == "interrupt":
            raise KeyboardInterrupt
        raise OutputError("no space left on the device while writing 'stage2.gpkg'")

    parser = argparse.ArgumentParser(prog="geoseg")
    parser.set_defaults(command="demo", _run=staged)
    monkeypatch.setattr(cli, "build_parser", lambda command=None: parser)
    code = cli.main([])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == (130 if failure == "interrupt" else 1)
    assert "stage1.tif" in line and "kept" in line, line
    assert (tmp_path / "stage1.tif").read_bytes() == b"first stage"

    def at_once(args):
        raise KeyboardInterrupt

    parser.set_defaults(_run=at_once)  # the next command has finished nothing
    assert cli.main([]) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "stage1.tif" not in line and "no partial output was kept" in line, line
    from geoseg.io.outputs import COMMITTED

    with atomic_path(tmp_path / "library.tif") as tmp:  # outside a command: not recorded
        tmp.write_bytes(b"notebook")
    assert COMMITTED.paths is None and COMMITTED.summary() is None
