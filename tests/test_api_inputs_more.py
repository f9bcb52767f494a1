"""More bad input through the Python API (issue 11): the labelling, analysis, panoptic,
evaluation, training and viz functions, probed as tests/test_api_inputs.py probes predict
and vectorize. Each wrong kind of value is a ConfigError naming the argument (before:
a traceback from pandas, matplotlib, folium or pathlib, or a value silently taken for
another: ``progress="no"`` showed bars, ``titles="abc"`` titled the panels a, b, c, a
negative chunk size wrote an empty fused map). A class that the map's class table does
not hold is an error naming the valid classes; a valid class without pixels is a warning.
A signal after a command's end is one line and exit status 130 (before: -2 or -15)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.classes import ClassTable, write_class_table
from geoseg.errors import ConfigError, DataWarning
from geoseg.io.bands import INSTANCES_TAG
from geoseg.testing import write_raster

ROOT = Path(__file__).resolve().parents[1]
RGB = ROOT / "data" / "unlabeled-rgb" / "RGB.byte.tif"
TABLE = ClassTable.from_config(
    [{"id": 0, "name": "bare"}, {"id": 1, "name": "trees"}, {"id": 2, "name": "water"},
     {"id": 3, "name": "urban"}]
)  # fmt: skip


def _classes() -> np.ndarray:
    a = np.zeros((1, 64, 64), np.uint8)
    a[0, :32] = 1
    a[0, 32:, :20] = 2
    return a  # class 3 (urban) is in the table but has no pixel


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("maps")
    plain = write_raster(folder / "plain.tif", _classes(), crs="EPSG:32618")
    named = write_raster(folder / "named.tif", _classes(), crs="EPSG:32618", classes=TABLE)
    ids = np.zeros((64, 64), np.uint32)
    ids[5:15, 5:15], ids[30:40, 30:50] = 1, 2
    inst = folder / "inst.tif"
    with rasterio.open(named) as src:  # the class map's grid
        profile = src.profile | {"count": 2, "dtype": "uint32", "nodata": 0}
    with rasterio.open(inst, "w", **profile) as dst:
        dst.write(np.stack([ids, (ids > 0).astype(np.uint32)]))
        dst.update_tags(**{INSTANCES_TAG: "1"})
        write_class_table(
            dst, ClassTable.from_config([{"id": 0, "name": "bg"}, {"id": 1, "name": "house"}])
        )
    return {"plain": plain, "named": named, "inst": inst}


# -- classes of the map: vectorize (and the CLI option), class statistics -------------------
@pytest.mark.parametrize("classes", [[99], [1, 99], "1,99", {99: "lake"}])
def test_vectorize_refuses_a_class_the_map_does_not_hold(maps, classes):
    from geoseg.vectorize import vectorize

    match = (r"classes: \[99\] is not a class of .*named\.tif.*; its classes are 0 \(bare\), "
             r"1 \(trees\), 2 \(water\), 3 \(urban\)")  # fmt: skip
    with pytest.raises(ConfigError, match=match):
        vectorize(maps["named"], classes=classes, workers=1, progress=False)


@pytest.mark.parametrize("which", ["plain", "named"])
def test_vectorize_warns_about_a_requested_class_without_pixels(maps, which):
    from geoseg.vectorize import vectorize

    with pytest.warns(DataWarning, match=r"class\(es\) \[3\] requested but absent from the map"):
        gdf = vectorize(maps[which], classes=[1, 3], workers=1, progress=False)
    assert set(gdf["class_id"]) == {1}
    with warnings.catch_warnings():  # classes that have pixels: no warning
        warnings.simplefilter("error")
        gdf = vectorize(maps[which], classes=[1, 2], workers=1, progress=False)
    assert set(gdf["class_id"]) == {1, 2}


def test_cli_vectorize_classes_of_another_map_is_one_line(maps, tmp_path, capsys):
    from geoseg.cli import main

    out = tmp_path / "v.gpkg"
    code = main(["vectorize", str(maps["named"]), "-o", str(out), "--classes", "1,99",
                 "--workers", "1", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "error: classes: [99] is not a class of" in err[0] and "3 (urban)" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("classes", [[], "", {}])
def test_an_empty_class_list_is_refused_not_an_empty_result(maps, classes):
    from geoseg.analysis import class_areas
    from geoseg.vectorize import vectorize

    with pytest.raises(ConfigError, match=r"classes: .* names no class"):
        vectorize(maps["plain"], classes=classes, workers=1, progress=False)
    with pytest.raises(ConfigError, match=r"classes: .* names no class"):
        class_areas(maps["plain"], classes=classes, progress=False)


def test_class_areas_refuses_a_class_the_map_does_not_hold(maps):
    from geoseg.analysis import class_areas

    with pytest.raises(ConfigError, match=r"classes: \[7, 99\] are not classes of .*named"):
        class_areas(maps["named"], classes=[1, 7, 99], progress=False)


# -- progress flags ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["no", 2, None])
def test_progress_must_be_a_flag(maps, value):
    from geoseg.analysis import change, class_areas, object_stats
    from geoseg.vectorize import vectorize

    match = r"progress: expected True or False"
    with pytest.raises(ConfigError, match=match):
        vectorize(maps["plain"], workers=1, progress=value)
    with pytest.raises(ConfigError, match=match):
        class_areas(maps["plain"], progress=value)
    with pytest.raises(ConfigError, match=match):
        object_stats(maps["inst"], progress=value)
    with pytest.raises(ConfigError, match=match):
        change(maps["plain"], maps["plain"], workers=1, progress=value)


# -- write_stats and the chart ---------------------------------------------------------------
@pytest.fixture(scope="module")
def stats(maps):
    from geoseg.analysis import class_areas

    return class_areas(maps["named"], progress=False)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((None, "s.csv"), {}, r"stats: expected the DataFrame of geoseg.analysis.class_areas"),
        (([1, 2], "s.csv"), {}, r"stats: expected the DataFrame"),
        (("empty", "s.csv"), {}, r"stats: the table has no column\(s\) \['zone', 'class_id'\]"),
        (("stats", None), {}, r"path is required: give a file path"),
        (("stats", 5), {}, r"path: expected a file path \(str or pathlib.Path\), got int 5"),
        (("stats", "s.csv"), {"plot": "no"}, r"plot: expected True or False, got str 'no'"),
        (("stats", "s.csv"), {"inputs": 5}, r"inputs: expected the input paths \(a list\)"),
        (("stats", "s.csv"), {"inputs": [np.zeros(2)]}, r"inputs\[0\]: expected a file path"),
    ],
)
def test_write_stats_refuses_a_wrong_kind_of_argument(stats, tmp_path, args, kwargs, match):
    import pandas as pd

    from geoseg.analysis import write_stats

    named = {"stats": stats, "empty": pd.DataFrame(), "s.csv": tmp_path / "s.csv"}
    values = [named.get(a, a) if isinstance(a, str) else a for a in args]
    with pytest.raises(ConfigError, match=match):
        write_stats(*values, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_write_stats_one_input_path_is_an_input_not_its_letters(maps, stats, tmp_path):
    from geoseg.analysis import write_stats
    from geoseg.errors import OutputError

    target = tmp_path / "named.csv"
    target.write_text("the user's input")
    with pytest.raises(OutputError, match="input"):
        write_stats(stats, target, overwrite=True, inputs=str(target))
    assert target.read_text() == "the user's input"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"colors": ["red"]}, r"colors: expected a mapping of class id to colour"),
        ({"colors": {1: "not-a-colour"}}, r"colors\[1\]: 'not-a-colour' is not a colour"),
        ({"unit": ["ha"]}, r"unit must be one of \['ha', 'm2', 'percent'\]"),
    ],
)
def test_plot_class_areas_refuses_a_wrong_kind_of_option(stats, kwargs, match):
    from geoseg.analysis import plot_class_areas

    with pytest.raises(ConfigError, match=match):
        plot_class_areas(stats, **kwargs)


def test_plot_class_areas_refuses_what_is_not_a_statistics_table():
    from geoseg.analysis import plot_class_areas

    with pytest.raises(ConfigError, match=r"stats: expected the DataFrame"):
        plot_class_areas(None)


# -- panoptic --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"chunk_size": -5}, r"chunk_size must be >= 16 \(pixels\), got -5"),
        ({"chunk_size": "512"}, r"chunk_size: expected a whole number \(pixels\), got str"),
        ({"thing_class": 1.5}, r"thing_class: expected a whole number \(a class id\), got 1.5"),
        ({"tile_size": "512", "coco": "coco"}, r"tile_size: expected a whole number"),
        ({"instances_output": 5}, r"instances_output: expected a file path"),
    ],
)
def test_write_panoptic_refuses_a_wrong_kind_of_option(maps, tmp_path, kwargs, match):
    from geoseg.analysis.panoptic import write_panoptic

    kwargs = {"output": tmp_path / "c.tif", "instances_output": tmp_path / "i.tif", **kwargs}
    if "coco" in kwargs:
        kwargs["coco"] = tmp_path / "coco"
    with pytest.raises(ConfigError, match=match):
        write_panoptic(maps["named"], maps["inst"], **kwargs)
    assert list(tmp_path.iterdir()) == []


# -- viz ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_size": "512"}, r"max_size: expected a whole number \(pixels\), got str"),
        ({"max_size": 0}, r"max_size must be >= 1 \(pixels\), got 0"),
        ({"dpi": "120"}, r"dpi: expected a whole number, got str '120'"),
        ({"dpi": True}, r"dpi: expected a whole number, got bool True"),
        ({"rgb": "123"}, r"rgb: expected a list of whole numbers"),
        ({"rgb": ("r", "g", "b")}, r"rgb\[0\]: expected a whole number"),
        ({"titles": "abc"}, r"titles: expected 2 panel titles"),
        ({"image": None}, r"image is required: give a file path"),
        ({"image": np.zeros((3, 8, 8))}, r"image: expected a file path .* an array is not"),
        ({"polygons": 5}, r"polygons: expected a file path .* or a GeoDataFrame, got int 5"),
        ({"output": 5}, r"output: expected a file path .*, got int 5"),
    ],
)
def test_plot_side_by_side_refuses_a_wrong_kind_of_option(maps, kwargs, match):
    from geoseg.viz import plot_side_by_side

    kwargs = {"image": RGB, "classmap": maps["named"], **kwargs}
    with pytest.raises(ConfigError, match=match):
        plot_side_by_side(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"opacity": 1.5}, r"opacity must be 0 to 1, got 1.5"),
        ({"opacity": "0.7"}, r"opacity: expected a number, got str '0.7'"),
        ({"height": -5}, r"height must be > 0 \(pixels\), got -5"),
        ({"height": "tall"}, r"height: expected pixels \(600\) or a CSS length"),
        ({"legend_title": 5}, r"legend_title: expected a string, got 5"),
        ({"max_size": 0}, r"max_size must be >= 1 \(pixels\), got 0"),
    ],
)
def test_web_map_refuses_a_wrong_kind_of_option(maps, kwargs, match):
    from geoseg.viz import web_map

    with pytest.raises(ConfigError, match=match):
        web_map(RGB, maps["named"], **kwargs)


def test_other_viz_functions_refuse_a_wrong_kind_of_argument(maps, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geoseg.viz import (
        add_scale_bar,
        colorize,
        read_display,
        save_web_map,
        stretch_rgb,
        web_map,
    )

    data = np.random.default_rng(0).random((3, 8, 8))
    with pytest.raises(ConfigError, match=r"percentiles: low must be below high"):
        stretch_rgb(data, percentiles=(98, 2))
    with pytest.raises(ConfigError, match=r"percentiles must be 0 to 100, got 200"):
        stretch_rgb(data, percentiles=(2, 200))
    with pytest.raises(ConfigError, match=r"classes is required"):
        colorize(np.zeros((4, 4)), None)
    with pytest.raises(ConfigError, match=r"bands: expected a list of whole numbers"):
        read_display(RGB, bands="1")
    with pytest.raises(ConfigError, match=r"max_size must be >= 1"):
        read_display(RGB, max_size=0)
    with pytest.raises(ConfigError, match=r"path is required"):
        save_web_map(None, None)
    with pytest.raises(ConfigError, match=r"m: expected the map of geoseg.viz.web_map"):
        save_web_map(None, tmp_path / "m.html")
    fig, ax = plt.subplots()
    with pytest.raises(ConfigError, match=r"fraction must be <= 1, got 2"):
        add_scale_bar(ax, "EPSG:32618", fraction=2)
    with pytest.raises(ConfigError, match=r"crs: 'nonsense' is not a CRS"):
        add_scale_bar(ax, "nonsense")
    plt.close(fig)
    assert list(tmp_path.iterdir()) == []
    # every spelling of a right value keeps working, with the same result
    a = read_display(RGB, bands=[1, 2, 3], max_size=64)
    b = read_display(str(RGB), bands=(np.int64(b) for b in (1, 2, 3)), max_size=64.0)
    assert np.array_equal(a.data, b.data, equal_nan=True) and a.transform == b.transform
    html = [web_map(RGB, maps["named"], max_size=m, height=h).get_root().render()
            for m, h in ((64, 500), (np.int32(64), "500px"))]  # fmt: skip
    assert len(html[0]) == len(html[1])


# -- labelling -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sam": None}, r"sam: expected a loaded model .* got NoneType None"),
        ({"images": None}, r"images is required: give a file path"),
        ({"bands": "123"}, r"bands: expected a list of whole numbers"),
        ({"bands": (1, 2, 3.5)}, r"bands\[2\]: expected a whole number, got 3.5"),
        ({"progress": "no"}, r"progress: expected True or False, got str 'no'"),
        ({"class_field": 5}, r"class_field: expected a non-empty name \(str\), got int 5"),
        ({"prompts": np.zeros(3)}, r"prompts: expected a file path .* or a GeoDataFrame"),
        ({"classes": [1, 2]}, r"classes\[0\]: expected a string, got int 1"),
    ],
)
def test_label_image_refuses_a_wrong_kind_of_option_before_loading_sam(tmp_path, kwargs, match):
    from geoseg.labelling import label_image

    loads = []
    kwargs = {"images": RGB, "prompts": tmp_path / "p.gpkg",
              "sam": lambda: loads.append(1), **kwargs}  # fmt: skip
    with pytest.raises(ConfigError, match=match):
        label_image(**kwargs)
    assert loads == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"points_per_side": "16"}, r"points_per_side: expected a whole number, got str"),
        ({"points_per_side": 2.5}, r"points_per_side: expected a whole number, got 2.5"),
        ({"score_threshold": "0.9"}, r"score_threshold: expected a number, got str"),
        ({"iou_threshold": float("nan")}, r"iou_threshold: expected a finite number"),
        ({"iou_threshold": 0}, r"iou_threshold must be > 0, got 0"),
    ],
)
def test_automatic_masks_refuses_a_wrong_kind_of_option(kwargs, match):
    from geoseg.labelling import automatic_masks

    with pytest.raises(ConfigError, match=match):
        automatic_masks(RGB, lambda: None, **kwargs)


def test_write_labels_and_load_sam_refuse_what_is_not_a_path(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from geoseg.labelling import load_sam, write_labels

    gdf = gpd.GeoDataFrame({"class": ["a"]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:32618")
    with pytest.raises(ConfigError, match=r"output is required: give a file path"):
        write_labels(gdf, None)
    with pytest.raises(ConfigError, match=r"overwrite: expected True or False, got str 'no'"):
        write_labels(gdf, tmp_path / "l.gpkg", overwrite="no")
    with pytest.raises(ConfigError, match=r"gdf: expected the GeoDataFrame of label_image"):
        write_labels([1], tmp_path / "l.gpkg")
    with pytest.raises(ConfigError, match=r"sam is required: give a file path"):
        load_sam(None)
    assert list(tmp_path.iterdir()) == []


# -- evaluate, train, overrides ------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"checkpoint": None}, r"checkpoint is required: give a file path"),
        ({"split": ["test"]}, r"split: unknown split \['test'\]"),
        ({"device": None}, r"device: expected a non-empty name \(str\), got NoneType None"),
        ({"output": 5}, r"output: expected a file path .*, got int 5"),
        ({"overwrite": "no"}, r"overwrite: expected True or False, got str 'no'"),
        ({"progress": "no"}, r"progress: expected True or False, got str 'no'"),
        ({"overrides": 5}, r"overrides: expected a list of strings, got int 5"),
    ],
)
def test_evaluate_refuses_a_wrong_kind_of_option(tmp_path, kwargs, match):
    from geoseg.evaluation import evaluate

    kwargs = {"checkpoint": ROOT / "models" / "nc_landcover.safetensors", **kwargs}
    with pytest.raises(ConfigError, match=match):
        evaluate(**kwargs)


def test_train_refuses_a_wrong_kind_of_option(tmp_path):
    from geoseg.training import train

    config = ROOT / "configs" / "nc_landcover.yaml"
    with pytest.raises(ConfigError, match=r"output_dir: expected a file path .*, got int 5"):
        train(config, output_dir=5)
    with pytest.raises(ConfigError, match=r"overwrite: expected True or False, got str 'no'"):
        train(config, output_dir=tmp_path / "run", overwrite="no")
    assert list(tmp_path.iterdir()) == []


def test_one_override_given_as_a_string_is_one_override_not_its_letters():
    from geoseg.config import ExperimentConfig

    config = ROOT / "configs" / "nc_landcover.yaml"
    exp = ExperimentConfig.load(config, overrides="training.max_epochs=2")
    assert exp.training.max_epochs == 2


# -- a signal after the command's end --------------------------------------------------------
_CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in an interactive shell
    import geoseg.cli.stats

    out, phase = sys.argv[1], sys.argv[2]

    class Slow:
        def __del__(self):  # a library's object torn down as Python exits
            time.sleep(5)

    def run(args):
        with open(out + ".part", "w") as f:
            f.write("complete")
        os.replace(out + ".part", out)
        if phase == "threads":  # a library's thread still finishing as Python exits
            threading.Thread(target=time.sleep, args=(5,)).start()
        return 0

    geoseg.cli.stats.run = run
    if phase == "teardown":
        keep = Slow()
    sys.argv = ["geoseg", "stats", "map.tif", "-o", out]
    from geoseg.cli import main
    sys.exit(main())
    """
)


def _signal_after_the_end(tmp_path: Path, phase: str, signum: int) -> tuple[int, str, float]:
    out = tmp_path / "stats.csv"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(out), phase],
                             stderr=subprocess.PIPE, text=True, cwd=tmp_path)  # fmt: skip
    start = time.monotonic()
    while not out.exists() and child.poll() is None and time.monotonic() - start < 60:
        time.sleep(0.02)
    time.sleep(0.5)  # the command has returned; Python is shutting down
    if child.poll() is None:
        child.send_signal(signum)
    err = child.communicate(timeout=60)[1]
    return child.returncode, err, time.monotonic() - start


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_python_shuts_down_is_one_line_and_130(tmp_path, signum):
    code, err, _ = _signal_after_the_end(tmp_path, "threads", signum)
    assert code == 130, err  # before: a KeyboardInterrupt traceback, or -15
    assert err.strip().splitlines() == [
        "geoseg stats: interrupted after it finished; its outputs are complete"
    ]
    assert (tmp_path / "stats.csv").read_text() == "complete"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_finished_command_does_not_wait_for_python_s_teardown(tmp_path, signum):
    """Python restores the default handlers before tearing its modules down: a signal then
    killed the finished run (-2, -15). The program now exits once its exit functions ran."""
    code, err, took = _signal_after_the_end(tmp_path, "teardown", signum)
    assert code == 0, err  # before: -2 / -15
    assert err == "" and took < 5
    assert (tmp_path / "stats.csv").read_text() == "complete"


def test_an_interrupt_in_main_s_last_lines_says_the_outputs_are_complete(
    tmp_path, monkeypatch, capsys
):
    import geoseg.cli
    import geoseg.cli.stats
    from geoseg.cli import main
    from geoseg.io.outputs import atomic_path

    out = tmp_path / "s.csv"

    def run(args):
        with atomic_path(out) as tmp:
            tmp.write_text("complete")
        return 0

    stop = geoseg.cli.COMMITTED.stop

    def interrupted_stop():
        stop()
        raise KeyboardInterrupt

    monkeypatch.setattr(geoseg.cli.stats, "run", run)
    monkeypatch.setattr(geoseg.cli.COMMITTED, "stop", interrupted_stop)
    try:
        code = main(["stats", "map.tif", "-o", str(out)])
    except KeyboardInterrupt:  # pragma: no cover - before the fix
        pytest.fail("an interrupt after the command's end escaped main as a traceback")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130
    assert err == [
        f"geoseg stats: interrupted after it finished; its outputs are complete ({str(out)!r})"
    ]
    assert out.read_text() == "complete"
    assert os.environ.get("PYTEST_CURRENT_TEST")  # still in pytest: main did not exit
