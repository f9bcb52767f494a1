"""Files read *through* an input (a VRT's tiles, the netCDF of a variable) changed mid-run.

The input's own file was checked on every read already; these are the files behind it: a
tile of a VRT mosaic replaced by a sync tool, or the netCDF file of ``NETCDF:"x.nc":var``
rewritten while a run reads it. Each such run must stop with a message naming the file,
not give a map that mixes the old and the new data.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _inference_helpers import RGB, tiny_checkpoint
from rasterio.shutil import copy as gdal_copy

from geoseg.errors import InputFileError, OutputError
from geoseg.io.files import dataset_file
from geoseg.io.grid import PixelWindow
from geoseg.io.outputs import check_output_path, input_files
from geoseg.testing import netcdf_of_two_variables


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "cache"))


def _tile_and_vrt(tmp_path: Path) -> tuple[Path, Path]:
    """A 200 x 200 px tile of the RGB scene and a VRT that reads it."""
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    tile = tiles / "a.tif"
    with rasterio.open(RGB) as src:
        win = rasterio.windows.Window(100, 100, 200, 200)
        prof = src.profile | {"width": 200, "height": 200,
                              "transform": src.window_transform(win)}  # fmt: skip
        data = src.read(window=win)
    with rasterio.open(tile, "w", **prof) as dst:
        dst.write(data)
    vrt = tmp_path / "mosaic.vrt"
    gdal_copy(tile, vrt, driver="VRT")
    return tile, vrt


def _replace(path: Path, *, later: int = 10**9) -> None:
    """An atomic mv of a new version of ``path`` (same size, other pixels, time + ``later`` ns).

    ``later=0``: ``cp -p``/``rsync -t`` then ``mv``, the modification time kept.
    """
    new = path.with_name("incoming.tif")
    shutil.copy(path, new)
    with rasterio.open(new, "r+") as d:
        d.write(np.full((d.count, d.height, d.width), 7, d.dtypes[0]))
    st = os.stat(path)
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns + later))
    assert os.stat(new).st_size == st.st_size  # an uncompressed tile of the same grid
    os.replace(new, path)


def test_dataset_names_read_their_local_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("x.nc", "x.h5", "x.zip", "x.gpkg"):
        (tmp_path / name).write_bytes(b"0")
    assert dataset_file('NETCDF:"x.nc":Band1') == Path("x.nc")
    assert dataset_file("netcdf:x.nc:Band1") == Path("x.nc")
    assert dataset_file(f'HDF5:"{tmp_path}/x.h5"://grp/var') == tmp_path / "x.h5"
    assert dataset_file("GPKG:x.gpkg:layer") == Path("x.gpkg")
    assert dataset_file("/vsizip/x.zip/inner/a.tif") == Path("x.zip")
    assert dataset_file(f"/vsizip/{{{tmp_path}/x.zip}}/a.tif") == tmp_path / "x.zip"
    assert dataset_file("/vsicurl/https://example.com/a.tif") is None
    assert dataset_file('NETCDF:"missing.nc":v') is None
    assert dataset_file("plain.tif") is None


def test_a_netcdf_file_is_an_input_of_its_variable(tmp_path, monkeypatch):
    """Writing over the netCDF a variable is read from is writing over the input."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.nc").write_bytes(b"0")
    assert Path("x.nc") in input_files('NETCDF:"x.nc":Band1')
    with pytest.raises(OutputError, match="is the input"):
        check_output_path("x.nc", overwrite=True, inputs=['NETCDF:"x.nc":Band1'])


def test_a_vrt_tile_replaced_during_the_run_stops_the_reads(tmp_path):
    from geoseg.io.mosaic import open_mosaic

    tile, vrt = _tile_and_vrt(tmp_path)
    mosaic = open_mosaic([vrt], model_bands=["R", "G", "B"])
    assert [d[0] for d in mosaic.sources[0].depends] == [str(tile)]
    before = mosaic.read(PixelWindow(0, 0, 64, 64))
    assert before is not None
    _replace(tile)
    with pytest.raises(InputFileError, match=r"a\.tif'.*read by input .*mosaic\.vrt.*changed"):
        mosaic.read(PixelWindow(0, 0, 64, 64))
    with pytest.raises(InputFileError, match="changed on disk during the run"):
        mosaic.check_unchanged()


def test_a_large_vrt_is_checked_once_more_at_the_end(tmp_path, monkeypatch):
    """Past CHECKED_PER_READ tiles the reads go on; the end of the run catches it."""
    import geoseg.io.mosaic as mosaic_module

    monkeypatch.setattr(mosaic_module, "CHECKED_PER_READ", 0)
    tile, vrt = _tile_and_vrt(tmp_path)
    mosaic = mosaic_module.open_mosaic([vrt], model_bands=["R", "G", "B"])
    mosaic.check_unchanged()  # nothing changed yet
    _replace(tile)
    mosaic.read(PixelWindow(0, 0, 64, 64))  # not checked per read any more
    with pytest.raises(InputFileError, match=r"a\.tif'.*changed on disk"):
        mosaic.check_unchanged()


def test_the_netcdf_of_a_variable_rewritten_during_the_run_stops_it(tmp_path, monkeypatch):
    from geoseg.io.mosaic import open_mosaic

    with rasterio.Env() as env:
        if "netCDF" not in env.drivers():
            pytest.skip("GDAL without the netCDF driver")
    nc, _ = netcdf_of_two_variables(RGB, tmp_path)
    monkeypatch.chdir(tmp_path)
    mosaic = open_mosaic(["netcdf:two.nc:Band2"], model_bands=["x"])
    mosaic.read(PixelWindow(0, 0, 32, 32))
    st = os.stat(nc)
    os.utime(nc, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten in place
    with pytest.raises(InputFileError, match=r"two\.nc'.*netcdf:two\.nc:Band2.*changed"):
        mosaic.read(PixelWindow(0, 0, 32, 32))


def test_predict_keeps_no_map_when_a_vrt_tile_changed_during_it(tmp_path, monkeypatch):
    import importlib

    import geoseg.io.mosaic as mosaic_module
    from geoseg.inference import predict

    predict_module = importlib.import_module("geoseg.inference.predict")  # not the function

    monkeypatch.setattr(mosaic_module, "CHECKED_PER_READ", 0)  # only the end check
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    tile, vrt = _tile_and_vrt(tmp_path)
    real = predict_module.execute_graph

    def then_replaced(*args, **kwargs):
        out = real(*args, **kwargs)
        _replace(tile)  # after the last window was read, before the map is kept
        return out

    monkeypatch.setattr(predict_module, "execute_graph", then_replaced)
    out = tmp_path / "out" / "map.tif"
    out.parent.mkdir()
    with pytest.raises(InputFileError, match=r"a\.tif'.*changed on disk"):
        predict(ckpt, vrt, out, tile_size=64, progress=False)
    assert list(out.parent.iterdir()) == []  # no map, no temporary left


# --- the checkpoint: the model cached for later runs of a process --------------------------


def _predicted(ckpt, tmp_path, name, **kw):
    from geoseg.inference import predict

    out = predict(ckpt, RGB, tmp_path / name, tile_size=64, backend="torch", progress=False, **kw)
    with rasterio.open(out) as ds:
        return ds.read(1)


def test_a_checkpoint_rewritten_at_the_same_path_is_loaded_again(tmp_path, monkeypatch):
    """A notebook retrains into the same file: the next predict uses the new weights."""
    from geoseg.inference import backends

    monkeypatch.setattr(backends, "_RUNNERS", {})
    monkeypatch.setattr(backends, "_TORCH_MODELS", {})
    ckpt = tmp_path / "m.safetensors"
    tiny_checkpoint(ckpt, seed=0)
    first = _predicted(ckpt, tmp_path, "a.tif")
    ckpt.unlink()
    tiny_checkpoint(ckpt, seed=1)
    again = _predicted(ckpt, tmp_path, "b.tif")
    fresh = _predicted(tiny_checkpoint(tmp_path / "m1.safetensors", seed=1), tmp_path, "c.tif")
    assert not np.array_equal(first, again)
    np.testing.assert_array_equal(again, fresh)
    assert len(backends._RUNNERS) == 2  # the runner of the old version was dropped
    assert len(backends._TORCH_MODELS) == 2


def test_runners_of_several_tile_sizes_share_one_model_and_are_bounded(tmp_path, monkeypatch):
    import geoseg.models
    from geoseg.inference import backends

    monkeypatch.setattr(backends, "_RUNNERS", {})
    monkeypatch.setattr(backends, "_TORCH_MODELS", {})
    loads = []
    real = geoseg.models.load_model

    def counted(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(geoseg.models, "load_model", counted)
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    from geoseg.inference import predict

    for i, tile in enumerate((64, 96, 128, 160, 192, 224)):
        predict(ckpt, RGB, tmp_path / f"o{i}.tif", tile_size=tile, backend="torch",
                progress=False)  # fmt: skip
    assert len(loads) == 1  # the weights are loaded (and held) once
    assert sorted(s.tile_size for s in backends._RUNNERS) == [128, 160, 192, 224]
    assert len(backends._TORCH_MODELS) == 1


def test_a_class_map_vrt_tile_replaced_during_a_run_stops_its_reads(tmp_path):
    """stats, change and vectorize read class maps through BandSource: same rule."""
    from geoseg.io.bands import BandSource

    tile, vrt = _tile_and_vrt(tmp_path)
    source = BandSource(str(vrt), 1)
    ids, _ = source.read(rasterio.windows.Window(0, 0, 32, 32))
    assert ids.shape == (32, 32)
    _replace(tile)
    with pytest.raises(InputFileError, match=r"a\.tif'.*read by input .*mosaic\.vrt.*changed"):
        source.read(rasterio.windows.Window(0, 0, 32, 32))


def _replace_keeping_time(path: Path) -> None:
    _replace(path, later=0)


def _rewrite_setting_time_back(path: Path) -> None:
    """Written in place, then its time set back (``touch -r``): same size and time."""
    st = os.stat(path)
    with rasterio.open(path, "r+") as d:
        d.write(np.full((d.count, d.height, d.width), 9, d.dtypes[0]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("change", [_replace_keeping_time, _rewrite_setting_time_back])
def test_a_change_keeping_size_and_time_is_still_seen(tmp_path, change):
    """Size and time alone missed these; the inode and status-change time do not."""
    from geoseg.io.mosaic import open_mosaic

    tile, vrt = _tile_and_vrt(tmp_path)
    direct = open_mosaic([tile], model_bands=["R", "G", "B"])
    through = open_mosaic([vrt], model_bands=["R", "G", "B"])
    assert direct.read(PixelWindow(0, 0, 64, 64)) is not None
    assert through.read(PixelWindow(0, 0, 64, 64)) is not None
    change(tile)
    with pytest.raises(InputFileError, match=r"a\.tif'.*changed on disk during the run"):
        direct.read(PixelWindow(0, 0, 64, 64))
    with pytest.raises(InputFileError, match=r"a\.tif'.*read by input .*mosaic\.vrt.*changed"):
        through.read(PixelWindow(0, 0, 64, 64))
