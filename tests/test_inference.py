"""Tiled mosaic inference: window maths, blending, seams, no-data, mosaics, outputs, errors."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _inference_helpers import RGB, tiny_checkpoint, whole_scene
from rasterio.warp import reproject
from rasterio.windows import Window

from geoseg.classes import read_class_table
from geoseg.cli import main as cli_main
from geoseg.errors import (
    ConfigError,
    DataError,
    InputFileError,
    OutputError,
    SchedulerError,
)
from geoseg.inference import predict, validate_cog, weight_window
from geoseg.inference.tiling import (
    PixelWindow,
    axis_starts,
    overlap_compute_ratio,
    tile_windows,
)
from geoseg.testing import write_raster


@pytest.fixture(scope="module", autouse=True)
def _cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOSEG_CACHE_DIR", str(tmp_path_factory.mktemp("onnx-cache")))
        # small windows (the checkpoint's 64 px) so the tests exercise many seams
        mp.setattr(importlib.import_module("geoseg.inference.predict"), "DEFAULT_MIN_TILE", 64)
        yield


def test_default_tile_size():
    from geoseg.inference.predict import DEFAULT_MIN_TILE, default_tile_size

    assert DEFAULT_MIN_TILE == 64  # patched above; the shipped default is 512
    assert default_tile_size(100, 32) == 128


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def reference(ckpt, tmp_path_factory):
    """Default tiled prediction of RGB.byte.tif (classes + probabilities)."""
    d = tmp_path_factory.mktemp("ref")
    out, prob = predict(ckpt, RGB, d / "classes.tif", probabilities=d / "probs.tif", progress=False)
    return out, prob


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read()


# --- window maths and blend weights (hand-checked) ---------------------------------------


def test_axis_starts_hand_checked():
    assert axis_starts(10, 4, 1) == [0, 3, 6]
    assert axis_starts(11, 4, 1) == [0, 2, 5, 7]
    assert axis_starts(3, 4, 1) == [0]
    assert axis_starts(4, 4, 1) == [0]


@pytest.mark.parametrize("length", [5, 63, 64, 65, 100, 257, 718, 791])
@pytest.mark.parametrize(
    ("tile", "overlap", "align"), [(64, 8, 1), (64, 0, 1), (32, 31, 1), (256, 32, 32), (64, 8, 8)]
)
def test_windows_cover_right_and_bottom_edges(length, tile, overlap, align):
    starts = axis_starts(length, tile, overlap, align=align)
    covered = np.zeros(max(length, tile) + align, dtype=int)
    for s in starts:
        covered[s : s + tile] += 1
    assert covered[:length].min() >= 1  # every pixel incl. the last one
    assert starts[0] == 0
    assert all(s % align == 0 for s in starts)
    if length > tile:
        assert 0 <= starts[-1] + tile - length < align  # ends at the edge (+ alignment)
        gaps = np.diff(starts)
        assert (tile - gaps).min() >= overlap  # at least the requested overlap


def test_tile_windows_2d_and_ratio():
    wins = tile_windows(100, 70, tile_size=32, overlap=4)
    cover = np.zeros((100, 70), int)
    for w in wins:
        cover[w.row : w.row_stop, w.col : w.col_stop] += 1
    assert cover.min() >= 1
    assert overlap_compute_ratio(224 * 8 + 32, 224 * 8 + 32, tile_size=256, overlap=32) <= 1.31


def test_cosine_weights_hand_checked_and_positive():
    w = weight_window("cosine", 4, 2)
    r = np.array([0.5 - 0.5 * np.cos(np.pi / 4), 0.5 - 0.5 * np.cos(3 * np.pi / 4)])
    expect = np.array([r[0], r[1], r[1], r[0]])
    np.testing.assert_allclose(w, np.outer(expect, expect), rtol=1e-6)
    # partition of unity across an overlap of exactly `overlap` pixels
    np.testing.assert_allclose(expect[2:] + expect[:2], [1.0, 1.0])
    for name in ("cosine", "linear", "none"):
        for tile, ov in [(64, 8), (7, 3), (1, 0), (256, 32)]:
            ww = weight_window(name, tile, ov)
            assert ww.shape == (tile, tile) and ww.min() > 0
    np.testing.assert_allclose(weight_window("linear", 4, 2)[0], [0.0625, 0.1875, 0.1875, 0.0625])


def test_margin_window_hand_checked():
    """The default window: tiny weight on the outer quarter of the overlap, a raised
    cosine over its middle half, 1 in the core; strictly positive and symmetric."""
    from geoseg.inference.blending import DEFAULT_BLEND, MARGIN_WEIGHT

    assert DEFAULT_BLEND == "margin"
    w = weight_window("margin", 64, 16)
    row = w[32] / w[32, 32]  # a row through the core: the 1-D ramp
    np.testing.assert_allclose(row[:4], MARGIN_WEIGHT, rtol=1e-5)  # outer quarter (4 px)
    t = (np.arange(8) + 0.5) / 8
    cross = MARGIN_WEIGHT + (1 - MARGIN_WEIGHT) * (0.5 - 0.5 * np.cos(np.pi * t))
    np.testing.assert_allclose(row[4:12], cross, rtol=1e-5)
    np.testing.assert_allclose(row[12:52], 1.0)
    np.testing.assert_allclose(row, row[::-1])
    assert w.min() > 0 and np.allclose(w, w.T)


def test_margin_blend_halves_seams_of_the_trained_model(tmp_path):
    """The shipped model over the NC scene, 256 px windows and the default overlap, against
    one whole-scene window: the default (margin) blend meets <= 0.1 % of pixels and beats
    the plain cosine cross-fade (measured 0.070 % against 0.135 %)."""
    from geoseg.demo import make_nc_mosaic

    root = Path(__file__).parents[1]
    model = root / "models" / "nc_landcover.safetensors"
    tiles = make_nc_mosaic(tmp_path / "mosaic", data_dir=root / "data" / "nc-landsat7-landcover")
    ref = _read(predict(model, tiles, tmp_path / "whole.tif", tile_size=512, progress=False))[0]
    valid = ref != 0
    dis = {}
    for blend in ("margin", "cosine"):
        out = predict(model, tiles, tmp_path / f"{blend}.tif", tile_size=256, blend=blend,
                      progress=False)  # fmt: skip
        dis[blend] = float((_read(out)[0] != ref)[valid].mean())
    assert dis["margin"] <= 0.001 and dis["margin"] < 0.7 * dis["cosine"], dis


def test_blend_names_and_callables_validated():
    with pytest.raises(ConfigError, match="cosine"):
        weight_window("hann", 8, 2)
    with pytest.raises(ConfigError, match="strictly positive"):
        weight_window(lambda t, o: np.zeros((t, t)), 8, 2)
    assert weight_window(lambda t, o: np.full((t, t), 2.0), 8, 2).max() == 2.0


def test_overlap_not_smaller_than_tile(ckpt, tmp_path):
    with pytest.raises(ConfigError, match="smaller than tile_size"):
        predict(ckpt, RGB, tmp_path / "o.tif", tile_size=64, overlap=64, progress=False)
    assert not list(tmp_path.iterdir())


# --- prediction quality, no-data, outputs ----------------------------------------------


def test_seams_match_whole_scene(ckpt, tmp_path):
    # A random-weight U-Net is far less local than a trained one (its answer depends on
    # zero padding ~50 px away), so this checks the ordering and a loose bound; the
    # <= 0.1 % target is measured on a trained model in benchmarks/bench_inference.py.
    ref_ids, valid = whole_scene(ckpt, RGB)
    kw = {"tile_size": 128, "progress": False}
    tiled = predict(ckpt, RGB, tmp_path / "t.tif", overlap=32, **kw)
    dis = (_read(tiled)[0] != ref_ids)[valid].mean()
    plain = predict(ckpt, RGB, tmp_path / "p.tif", overlap=0, blend="none", **kw)
    dis_plain = (_read(plain)[0] != ref_ids)[valid].mean()
    assert dis < 0.15, dis
    assert dis < 0.8 * dis_plain, (dis, dis_plain)


def test_nodata_propagates_to_every_output(reference):
    with rasterio.open(RGB) as src:
        valid = np.all(src.read_masks() > 0, axis=0)
    classes = _read(reference[0])[0]
    probs = _read(reference[1])
    assert 0 < (~valid).sum() < valid.size
    assert np.array_equal(classes == 0, ~valid)  # ids 1,2,5,7 -> no-data value 0
    assert np.all(probs[:, ~valid] == 255)
    assert np.all(probs[:, valid] <= 254)
    assert set(np.unique(classes[valid])) <= {1, 2, 5, 7}
    # probabilities sum to ~1 (rounding of 4 classes: within 4/254)
    s = probs[:, valid].astype(int).sum(0)
    assert np.abs(s - 254).max() <= 2


def test_outputs_are_cogs_with_class_table_and_georeferencing(reference):
    out, prob = reference
    assert validate_cog(out) == []
    assert validate_cog(prob) == []
    with rasterio.open(out) as ds, rasterio.open(RGB) as src:
        assert ds.crs == src.crs and ds.transform.almost_equals(src.transform)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 0
        assert ds.overviews(1) == [2]
        assert ds.is_tiled and ds.block_shapes[0] == (512, 512)
        table = read_class_table(ds)
        assert [c.name for c in table] == ["water", "forest", "urban", "crop"]
        cmap = ds.colormap(1)
        assert cmap[1][:3] == table[0].rgb and cmap[0][3] == 0
    with rasterio.open(prob) as ds:
        assert ds.count == 4 and ds.nodata == 255
        assert ds.descriptions == ("water", "forest", "urban", "crop")
        assert ds.scales == (1 / 254,) * 4
        assert read_class_table(ds) is not None


def test_validate_cog_flags_plain_geotiff(tmp_path):
    p = write_raster(tmp_path / "plain.tif", np.zeros((1, 600, 600), np.uint8))
    assert validate_cog(p)


def test_chunking_invariance(ckpt, reference, tmp_path):
    out, prob = predict(
        ckpt,
        RGB,
        tmp_path / "c.tif",
        probabilities=tmp_path / "p.tif",
        block_size=100,
        batch_size=8,
        progress=False,
    )
    assert np.array_equal(_read(out), _read(reference[0]))
    assert np.array_equal(_read(prob), _read(reference[1]))


def test_mosaic_of_overlapping_tiles_equals_single_file(ckpt, reference, tmp_path):
    with rasterio.open(RGB) as src:
        prof = src.profile
        parts = [(0, 450), (350, src.width)]
        paths = []
        for i, (c0, c1) in enumerate(parts):
            win = Window(c0, 0, c1 - c0, src.height)
            p = tmp_path / f"part{i}.tif"
            prof.update(width=c1 - c0, transform=src.window_transform(win))
            with rasterio.open(p, "w", **prof) as dst:
                dst.write(src.read(window=win))
            paths.append(p)
    (tmp_path / "out").mkdir()
    out = predict(ckpt, paths, tmp_path / "out" / "m.tif", progress=False)
    assert np.array_equal(_read(out), _read(reference[0]))
    # the folder form reads the same two files
    out = predict(ckpt, tmp_path, tmp_path / "out" / "folder.tif", progress=False)
    assert np.array_equal(_read(out), _read(reference[0]))


def _vrt(path, parts, width, height, transform, crs, dtype="Byte", count=3):
    """A hand-written GDAL VRT mosaic of ``parts`` [(file, col_off, width)] side by side."""
    bands = []
    for b in range(1, count + 1):
        sources = "".join(
            f'<SimpleSource><SourceFilename relativeToVRT="0">{f}</SourceFilename>'
            f"<SourceBand>{b}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{height}"/>'
            f'<DstRect xOff="{c0}" yOff="0" xSize="{w}" ySize="{height}"/></SimpleSource>'
            for f, c0, w in parts
        )
        bands.append(
            f'<VRTRasterBand dataType="{dtype}" band="{b}"><NoDataValue>0</NoDataValue>'
            f"{sources}</VRTRasterBand>"
        )
    gt = ", ".join(repr(v) for v in transform.to_gdal())
    path.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
        f"<SRS>{crs.to_wkt()}</SRS><GeoTransform>{gt}</GeoTransform>{''.join(bands)}"
        "</VRTDataset>"
    )
    return path


def test_vrt_input_equals_single_file(ckpt, reference, tmp_path):
    with rasterio.open(RGB) as src:
        prof, crs, transform = src.profile, src.crs, src.transform
        width, height = src.width, src.height
        parts = []
        for i, (c0, c1) in enumerate([(0, 400), (400, src.width)]):
            win = Window(c0, 0, c1 - c0, src.height)
            p = tmp_path / f"part{i}.tif"
            prof.update(width=c1 - c0, transform=src.window_transform(win))
            with rasterio.open(p, "w", **prof) as dst:
                dst.write(src.read(window=win))
            parts.append((str(p), c0, c1 - c0))
    vrt = _vrt(tmp_path / "mosaic.vrt", parts, width, height, transform, crs)
    out = predict(ckpt, vrt, tmp_path / "vrt.tif", progress=False)
    assert np.array_equal(_read(out), _read(reference[0]))
    with rasterio.open(out) as ds:
        assert ds.crs == crs and ds.transform.almost_equals(transform)


def test_mosaic_in_two_crss(ckpt, reference, tmp_path):
    with rasterio.open(RGB) as src:
        left, right = tmp_path / "left.tif", tmp_path / "right.tif"
        prof = src.profile
        win = Window(0, 0, 400, src.height)
        prof.update(width=400, transform=src.window_transform(win))
        with rasterio.open(left, "w", **prof) as dst:
            dst.write(src.read(window=win))
        # right half reprojected to Web Mercator
        rwin = Window(400, 0, src.width - 400, src.height)
        rdata = src.read(window=rwin)
        from rasterio.warp import calculate_default_transform

        rt = src.window_transform(rwin)
        b = rasterio.windows.bounds(rwin, src.transform)
        t2, w2, h2 = calculate_default_transform(src.crs, "EPSG:3857", rwin.width, rwin.height, *b)
        out = np.zeros((3, h2, w2), np.uint8)
        reproject(
            rdata,
            out,
            src_transform=rt,
            src_crs=src.crs,
            dst_transform=t2,
            dst_crs="EPSG:3857",
            src_nodata=0,
            dst_nodata=0,
        )
        write_raster(right, out, crs="EPSG:3857", transform=t2, nodata=0)
    with pytest.warns(Warning, match="reprojected"):
        res = predict(ckpt, [left, right], tmp_path / "m.tif", progress=False)
    with rasterio.open(res) as ds, rasterio.open(reference[0]) as ref:
        assert ds.crs == ref.crs
        assert ds.res == pytest.approx(ref.res)
        # the reprojected half's footprint is a rotated box: its bounds grow a little
        assert abs(ds.width - ref.width) <= 15 and abs(ds.height - ref.height) <= 15
        a = ds.read(1)
        r = ref.read(1)
        dr = round((ds.transform.f - ref.transform.f) / -ref.transform.e)
        dc = round((ref.transform.c - ds.transform.c) / ref.transform.a)
        assert dr >= 0 and dc == 0  # same pixel grid, anchored on the first file
    a = a[dr : dr + r.shape[0], : r.shape[1]]
    # left part: same valid footprint as the single-file prediction, mostly same classes
    assert np.array_equal(a[:, :350] != 0, r[:, :350] != 0)
    assert (a[:, :350] == r[:, :350]).mean() > 0.6
    # right part is covered (reprojected back), valid area close to the original
    va, vr = (a[:, 420:780] != 0).mean(), (r[:, 420:780] != 0).mean()
    assert abs(va - vr) < 0.03


def test_all_nodata_windows_skipped(ckpt, tmp_path):
    arr = np.zeros((3, 200, 200), np.uint8)
    arr[:, 150:, 150:] = 100  # only one corner valid
    p = write_raster(tmp_path / "sparse.tif", arr, nodata=0)
    calls = []
    import geoseg.inference.backends as be

    orig = be.Runner.__call__

    def spy(self, x):
        calls.append(x.shape[0])
        return orig(self, x)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(be.Runner, "__call__", spy)
        out = predict(ckpt, p, tmp_path / "o.tif", progress=False, scheduler="synchronous")
    assert sum(calls) < len(tile_windows(200, 200, tile_size=64, overlap=8))
    c = _read(out)[0]
    assert np.all(c[:150, :150] == 0) and np.all(c[150:, 150:] != 0)


# --- atomic output and bad input ----------------------------------------------------------


def test_existing_output_refused_then_overwritten(ckpt, reference, tmp_path):
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep")
    with pytest.raises(OutputError, match="already exists"):
        predict(ckpt, RGB, out, progress=False)
    assert out.read_bytes() == b"keep"
    predict(ckpt, RGB, out, progress=False, overwrite=True)
    assert np.array_equal(_read(out), _read(reference[0]))


def test_failure_mid_run_leaves_nothing(ckpt, tmp_path):
    import geoseg.inference.graph as graph

    def boom(*a, **k):
        raise RuntimeError("model exploded")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(graph, "finalize_block", boom)
        with pytest.raises(RuntimeError, match="exploded"):
            predict(ckpt, RGB, tmp_path / "o.tif", probabilities=tmp_path / "p.tif", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_onnx_predict_runs_without_torch(ckpt, tmp_path):
    """With its ONNX model cached, predict needs no torch (~2 s of every fresh process)."""
    from geoseg.inference.backends import GPU_DEVICE_NODES

    first = predict(ckpt, RGB, tmp_path / "a.tif", tile_size=64, progress=False)  # exports
    # "auto" must resolve without torch where no GPU driver is installed (as here)
    device = "cpu" if any(os.path.exists(p) for p in GPU_DEVICE_NODES) else "auto"
    code = (
        "import sys; from geoseg.inference import predict; "
        f"predict(sys.argv[1], sys.argv[2], sys.argv[3], tile_size=64, device={device!r}, "
        "progress=False); print('torch' in sys.modules)"
    )
    second = tmp_path / "b.tif"
    run = subprocess.run(
        [sys.executable, "-c", code, str(ckpt), str(RGB), str(second)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-1] == "False"
    assert np.array_equal(_read(first)[0], _read(second)[0])


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are per thread on Linux")
def test_model_runs_on_its_own_thread_ahead_of_readers(ckpt, tmp_path, monkeypatch):
    """Threads scheduler: one model thread; reading threads are less urgent (nice +10)."""
    import threading

    from geoseg.inference import backends, threads
    from geoseg.io.mosaic import Mosaic

    seen: list[tuple[str, str, int]] = []

    def spy(kind, fn):
        def wrapper(*args, **kwargs):
            prio = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            seen.append((kind, threading.current_thread().name, prio))
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(backends.Runner, "_run", spy("model", backends.Runner._run))
    # every file read, also those of the read relay (any reading thread, any batch)
    monkeypatch.setattr(Mosaic, "_read_piece", spy("read", Mosaic._read_piece))
    out = predict(ckpt, RGB, tmp_path / "o.tif", scheduler="threads", progress=False)
    models = [s for s in seen if s[0] == "model"]
    # (reads before the graph, e.g. the value-range check's, run on other threads)
    reads = [s for s in seen if s[0] == "read" and s[1].startswith("geoseg-worker")]
    assert models and reads
    assert {name.split("_")[0] for _, name, _ in models} == {"geoseg-model"}
    assert max(p for *_, p in models) + threads.SAFE_NICENESS <= min(p for *_, p in reads)
    ref = predict(ckpt, RGB, tmp_path / "s.tif", scheduler="synchronous", progress=False)
    assert np.array_equal(_read(out), _read(ref))  # the same bits as the serial scheduler


def test_unwritable_output(ckpt, tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        predict(ckpt, RGB, tmp_path / "missing" / "o.tif", progress=False)


def test_corrupt_and_truncated_inputs_named(ckpt, tmp_path):
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"II*\x00" + os.urandom(2000))
    with pytest.raises(InputFileError, match=r"corrupt\.tif"):
        predict(ckpt, bad, tmp_path / "o.tif", progress=False)
    full = write_raster(
        tmp_path / "full.tif",
        np.random.default_rng(0).integers(1, 255, (3, 300, 300), dtype=np.uint8),
        tiled=True,
        blockxsize=64,
        blockysize=64,
        compress="deflate",
    )
    trunc = tmp_path / "truncated.tif"
    data = full.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=r"truncated\.tif"):
        predict(ckpt, trunc, tmp_path / "o.tif", progress=False)
    assert not (tmp_path / "o.tif").exists()


def test_no_crs_needs_crs_option(ckpt, tmp_path):
    arr = np.full((3, 80, 80), 90, np.uint8)
    p = write_raster(tmp_path / "nocrs.tif", arr, crs=None)
    with pytest.raises(DataError, match="no CRS"):
        predict(ckpt, p, tmp_path / "o.tif", progress=False)
    out = predict(ckpt, p, tmp_path / "o.tif", crs="EPSG:32618", progress=False)
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 32618


def test_band_count_mismatches(ckpt, tmp_path):
    a = write_raster(tmp_path / "a.tif", np.ones((3, 50, 50), np.uint8))
    b = write_raster(
        tmp_path / "b.tif",
        np.ones((4, 50, 50), np.uint8),
        transform=rasterio.Affine(10, 0, 500500, 0, -10, 4000000),
    )
    with pytest.raises(DataError, match="band count"):
        predict(ckpt, [a, b], tmp_path / "o.tif", progress=False)
    with pytest.raises(DataError, match="checkpoint expects 3"):
        predict(ckpt, b, tmp_path / "o.tif", progress=False)
    # selecting bands fixes it
    out = predict(ckpt, b, tmp_path / "o.tif", bands=[3, 2, 1], progress=False)
    assert out.exists()


def test_checkpoint_bands_do_not_match_imagery(tmp_path):
    ck = tiny_checkpoint(tmp_path / "six.safetensors", bands=[f"B{i}" for i in range(6)])
    with pytest.raises(DataError, match=r"RGB.byte.tif.*3 bands.*expects 6"):
        predict(ck, RGB, tmp_path / "o.tif", progress=False)
    assert not (tmp_path / "o.tif").exists()


def test_unreachable_scheduler_fails_with_the_given_timeout(ckpt, tmp_path, monkeypatch):
    import distributed

    seen = {}
    real = distributed.Client

    def client(address, **kw):  # record what predict asks for, then really connect
        seen.update(address=address, **kw)
        return real(address, **kw)

    monkeypatch.setattr(distributed, "Client", client)
    with pytest.raises(SchedulerError, match=r"cannot reach .*tcp://127.0.0.1:9.* within 2 s"):
        predict(
            ckpt,
            RGB,
            tmp_path / "o.tif",
            scheduler="tcp://127.0.0.1:9",
            progress=False,
            connect_timeout=2,
        )
    assert seen["address"] == "tcp://127.0.0.1:9" and seen["timeout"] == "2s"
    assert not (tmp_path / "o.tif").exists()


def test_cli_two_argument_form_and_errors(ckpt, reference, tmp_path, capsys):
    out = tmp_path / "cli.tif"
    assert cli_main(["predict", str(ckpt), str(RGB), "-o", str(out), "--quiet"]) == 0
    assert np.array_equal(_read(out), _read(reference[0]))
    assert "wrote" in capsys.readouterr().out
    rc = cli_main(["predict", str(ckpt), str(RGB), "-o", str(out), "--quiet"])
    assert rc == 1 and "already exists" in capsys.readouterr().err
    rc = cli_main(
        [
            "predict",
            str(ckpt),
            str(RGB),
            "-o",
            str(tmp_path / "x.tif"),
            "--tile-size",
            "64",
            "--overlap",
            "80",
            "--quiet",
        ]
    )
    assert rc == 1 and "overlap" in capsys.readouterr().err


def test_pixelwindow_intersects():
    a = PixelWindow(0, 0, 10, 10)
    assert a.intersects(PixelWindow(9, 9, 5, 5)) and not a.intersects(PixelWindow(10, 0, 5, 5))


def test_tta_makes_the_model_exactly_flip_equivariant(ckpt, tmp_path):
    """Flip TTA averages the model over the group {identity, h-flip, v-flip, rot180} with
    each result mapped back: the TTA output of a flipped input is then the flipped TTA
    output (the bookkeeping of every inverse transform is right), which the plain model
    is not."""
    from geoseg.inference.backends import Runner, RunnerSpec, tta_transforms

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 64, 64)).astype(np.float32)
    flipped = np.ascontiguousarray(x[..., ::-1])

    def runner(tta):
        spec = RunnerSpec(str(ckpt), "torch", "fp32", "cpu", 64, tuple(tta_transforms(tta)))
        return Runner(spec)

    plain, tta = runner(False), runner("flip")
    p, pf = plain(x)["classes"], plain(flipped)["classes"]
    assert np.abs(pf[..., ::-1] - p).max() > 1e-3  # the model itself is not equivariant
    t, tf = tta(x)["classes"], tta(flipped)["classes"]
    np.testing.assert_allclose(tf[..., ::-1], t, atol=2e-6)
    np.testing.assert_allclose(t.sum(1), 1.0, atol=1e-5)  # still probabilities
    # and TTA is the mean of the four mapped-back predictions
    views = [p, pf[..., ::-1], plain(np.ascontiguousarray(np.rot90(x, 2, (2, 3))))["classes"]]
    views[2] = np.rot90(views[2], -2, (2, 3))
    v = np.ascontiguousarray(np.rot90(x, 2, (2, 3))[..., ::-1])
    views.append(np.rot90(plain(v)["classes"][..., ::-1], -2, (2, 3)))
    np.testing.assert_allclose(t, np.mean(views, axis=0), atol=2e-6)


def test_tta_prediction_keeps_the_valid_footprint(ckpt, reference, tmp_path):
    out = predict(ckpt, RGB, tmp_path / "t.tif", tta="flip", progress=False, batch_size=16)
    a, r = _read(out)[0], _read(reference[0])[0]
    assert np.array_equal(a == 0, r == 0)


@pytest.mark.parametrize(
    ("dtype", "nodata"),
    [
        ("float32", -99999.0), ("float32", 0.0), ("float32", float("nan")), ("float32", 1.5),
        ("float32", 1e-40), ("float32", 3e38), ("float32", -1e31), ("uint8", 0),
    ],
)  # fmt: skip
def test_validity_from_values_equals_gdal_mask(tmp_path, dtype, nodata):
    # The read path derives validity from the values instead of asking GDAL's mask band
    # (which decodes every block a second time); it must agree with GDAL exactly, also
    # for values a few float32 steps from nodata (GDAL's tolerant comparison).
    from rasterio.transform import from_origin

    from geoseg.io.validity import valid_from_values as _valid_from_values

    if dtype == "float32":
        nd = np.float32(nodata)
        near = [nd]
        for direction in (np.inf, -np.inf):
            v = nd
            for _ in range(6):
                v = np.nextafter(v, np.float32(direction))
                near.append(v)
        big = [3.4e38, -3.4e38, 1e31, -1e31, 2e38]  # where a + nodata may overflow
        vals = np.array([*near, 1e-12, -1e-12, 0.0, 1e-45, 5.0, np.nan, *big], dtype=np.float32)
    else:
        vals = np.array([0, 1, 2, 255, 0, 7], dtype=np.uint8)
    a = np.stack([vals, vals])[:, None, :]
    path = tmp_path / "v.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=a.shape[2], height=1, count=2, dtype=dtype,
        nodata=nodata, crs="EPSG:32618", transform=from_origin(0, 10, 1, 1),
    ) as dst:  # fmt: skip
        dst.write(a)
    with rasterio.open(path) as ds:
        gdal = np.all(ds.read_masks([1, 2]) > 0, axis=0)
        mine = _valid_from_values(ds, (1, 2), ds.read([1, 2], out_dtype="float32"))
    assert mine is not None
    np.testing.assert_array_equal(mine, gdal)
    assert 0 < gdal.sum() < gdal.size


class _FakeHandle:
    def __init__(self, name):
        self.name, self.closed = name, False

    def close(self):
        self.closed = True


def test_handle_pool_reuses_caps_and_drops_failed_handles():
    from geoseg.io.handles import HandlePool

    pool = HandlePool(max_idle=2)
    with pool.use(("a",), lambda: _FakeHandle("a")) as a1:
        # a second concurrent user of the same file gets its own handle
        with pool.use(("a",), lambda: _FakeHandle("a")) as a2:
            assert a2 is not a1
    with pool.use(("a",), lambda: _FakeHandle("a")) as again:
        assert again in (a1, a2)  # reused, not reopened
    assert pool.opened == 2
    with pool.use(("b",), lambda: _FakeHandle("b")) as b:
        pass
    # three idle handles (a, a, b) with room for two: the least recently used is closed
    assert sum(h.closed for h in (a1, a2, b)) == 1 and not b.closed
    with pytest.raises(RuntimeError), pool.use(("b",), lambda: _FakeHandle("b")) as bad:
        raise RuntimeError("read failed")
    assert bad.closed  # a handle whose read failed is not handed out again
    with pool.use(("b",), lambda: _FakeHandle("b")) as fresh:
        assert fresh is not bad
    pool.clear()
    assert fresh.closed


def test_a_handle_taken_from_the_pool_goes_back_even_beside_another():
    """take + put(new=False) keeps every handle; only a new duplicate is closed."""
    from geoseg.io.handles import HandlePool

    class Handle:
        closed = False

        def close(self):
            self.closed = True

    pool, key = HandlePool(8), ("f.tif", 1, 2, None)
    a, b = Handle(), Handle()
    with pool.use(key, lambda: a), pool.use(key, lambda: b):
        pass  # two threads read the file at once: two idle handles afterwards
    taken = pool.take(key)
    pool.put(key, taken, new=False)
    assert not taken.closed
    assert {id(pool.take(key)), id(pool.take(key))} == {id(a), id(b)}
    assert pool.take(key) is None
    extra = Handle()
    pool.put(key, a)
    pool.put(key, extra)  # a new handle beside one already pooled is closed
    assert extra.closed and not a.closed and pool.opened == 3


def test_mosaic_files_opened_once_not_once_per_thread(ckpt, reference, tmp_path):
    """Worker threads share input handles: each file is opened by the metadata pass and
    reused by the reads (a handle per thread made opening dominate on many cores)."""
    from geoseg.io import handles as mosaic

    with rasterio.open(RGB) as src:
        prof = src.profile
        paths = []
        for i, (r0, r1) in enumerate([(0, 200), (200, 400), (400, src.height)]):
            for j, (c0, c1) in enumerate([(0, 300), (300, 600), (600, src.width)]):
                win = Window(c0, r0, c1 - c0, r1 - r0)
                p = tmp_path / f"t{i}{j}.tif"
                prof.update(width=c1 - c0, height=r1 - r0, transform=src.window_transform(win))
                with rasterio.open(p, "w", **prof) as dst:
                    dst.write(src.read(window=win))
                paths.append(p)
    mosaic.HANDLES.clear()
    before = mosaic.HANDLES.opened
    out = predict(ckpt, paths, tmp_path / "m.tif", progress=False, workers=4, block_size=128)
    assert np.array_equal(_read(out), _read(reference[0]))
    opened = mosaic.HANDLES.opened - before
    # 9 files; at most a few extra handles where two threads read one file at once
    assert 9 <= opened <= 9 + 4 * 2
    # a file rewritten between runs is reopened (its key holds mtime and size)
    os.utime(paths[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    before = mosaic.HANDLES.opened
    predict(ckpt, paths, tmp_path / "m2.tif", progress=False, workers=4, block_size=128)
    reopened = mosaic.HANDLES.opened - before
    assert reopened >= 1, "the rewritten file was served from a stale handle"
    # that file, plus at most one handle per concurrent reader (4 workers; the value-range
    # check's readers, one per core, before them); the others come from the first run
    assert reopened <= 1 + 4 + (os.cpu_count() or 1)
    mosaic.HANDLES.clear()
