"""Imagery a prediction must read right or refuse clearly (cases of a bad-input audit):
bottom-up rows, no or GCP-only georeferencing, band names in another order, sizes that
would exhaust memory, values on another scale, an unknown device."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from _inference_helpers import RGB, tiny_checkpoint
from affine import Affine
from rasterio.control import GroundControlPoint

from geoseg.errors import ConfigError, DataError, DataWarning
from geoseg.inference import predict


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ck") / "m.safetensors")


def _crop(n: int = 160) -> tuple[np.ndarray, dict]:
    with rasterio.open(RGB) as src:
        data = src.read(window=rasterio.windows.Window(300, 300, n, n))
        prof = src.profile | {"width": n, "height": n, "driver": "GTiff"}
        prof["transform"] = src.window_transform(rasterio.windows.Window(300, 300, n, n))
    return data, prof


def _write(path, data, prof, descriptions=None):
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    return path


def _classes(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_a_bottom_up_raster_maps_like_its_north_up_twin(ckpt, tmp_path):
    data, prof = _crop()
    t = prof["transform"]
    up = _write(tmp_path / "up.tif", data, prof)
    flipped = Affine(t.a, 0, t.c, 0, -t.e, t.f + t.e * data.shape[1])  # rows bottom-up
    down = _write(tmp_path / "down.tif", data[:, ::-1], prof | {"transform": flipped})
    a = _classes(predict(ckpt, up, tmp_path / "a.tif", progress=False))
    b = _classes(predict(ckpt, down, tmp_path / "b.tif", progress=False))
    assert (a != 0).mean() > 0.9  # a real map, not all no-data
    assert np.array_equal(a, b)


def test_no_geotransform_or_gcps_only_is_a_clear_error(ckpt, tmp_path):
    data, prof = _crop(64)
    bare = {k: v for k, v in prof.items() if k != "transform"}
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        none = _write(tmp_path / "none.tif", data, bare)
    with pytest.raises(DataError, match="no georeferencing"):
        predict(ckpt, none, tmp_path / "a.tif", progress=False)
    gcps = [GroundControlPoint(r, c, 500000.0 + c, 4000000.0 - r) for r, c in
            [(0, 0), (0, 63), (63, 0), (63, 63)]]  # fmt: skip
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        path = _write(tmp_path / "gcp.tif", data, bare)
    with rasterio.open(path, "r+") as dst:
        dst.gcps = (gcps, rasterio.crs.CRS.from_epsg(32618))
    with pytest.raises(DataError, match="ground control points only"):
        predict(ckpt, path, tmp_path / "b.tif", progress=False, crs="EPSG:32618")


def test_band_names_in_another_order_are_read_by_name(ckpt, tmp_path):
    data, prof = _crop()
    rgb = _write(tmp_path / "rgb.tif", data, prof, ["R", "G", "B"])
    bgr = _write(tmp_path / "bgr.tif", data[::-1], prof, ["B", "G", "R"])
    a = _classes(predict(ckpt, rgb, tmp_path / "a.tif", progress=False))
    b = _classes(predict(ckpt, bgr, tmp_path / "b.tif", progress=False))
    assert np.array_equal(a, b)


def test_sizes_that_would_exhaust_memory_are_refused_before_reading(ckpt, tmp_path, monkeypatch):
    data, prof = _crop(64)
    tile = _write(tmp_path / "t.tif", data, prof)
    t = prof["transform"]
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename '
        f'relativeToVRT="1">t.tif</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource>'
        "</VRTRasterBand>"
        for b in (1, 2, 3)
    )
    vrt = tmp_path / "huge.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="2000000000" rasterYSize="2000000000"><SRS>EPSG:32618</SRS>'
        f"<GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>{bands}</VRTDataset>"
    )
    with pytest.raises(DataError, match=r"huge.vrt' is 2000000000 x 2000000000 px"):
        predict(ckpt, vrt, tmp_path / "a.tif", progress=False)
    with pytest.raises(DataError, match="output grid would be"):
        predict(ckpt, tile, tmp_path / "b.tif", progress=False, resolution=1e-300)
    monkeypatch.setenv("GEOSEG_MAX_PIXELS", "abc")
    with pytest.raises(ConfigError, match="GEOSEG_MAX_PIXELS='abc'"):
        predict(ckpt, tile, tmp_path / "c.tif", progress=False)


def test_values_on_another_scale_are_warned_about(ckpt, tmp_path):
    data, prof = _crop()
    scaled = _write(tmp_path / "r01.tif", (data / 255.0).astype("float32"),
                    prof | {"dtype": "float32", "nodata": None})  # fmt: skip
    with pytest.warns(DataWarning, match="far outside the model's training range"):
        predict(ckpt, scaled, tmp_path / "a.tif", progress=False)


def test_evaluate_names_an_unknown_device(ckpt):
    from geoseg.evaluation import evaluate

    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        evaluate(ckpt, device="tpu")


def test_a_vrt_with_a_missing_source_names_it(ckpt, tmp_path):
    from geoseg.errors import InputFileError

    _, prof = _crop(64)
    t = prof["transform"]
    vrt = tmp_path / "m.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>EPSG:32618</SRS><GeoTransform>'
        f"{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>"
        + "".join(
            f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename '
            f'relativeToVRT="1">gone.tif</SourceFilename><SourceBand>{b}</SourceBand>'
            "</SimpleSource></VRTRasterBand>"
            for b in (1, 2, 3)
        )
        + "</VRTDataset>"
    )
    with pytest.raises(InputFileError, match=r"gone\.tif"):
        predict(ckpt, vrt, tmp_path / "a.tif", progress=False)
