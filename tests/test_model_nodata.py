"""Inputs that declare no no-data get the model's training no-data rule (``nodata``).

A model trained on chips whose black borders were no-data (``nodata: 0``,
``nodata_mode: all``, the Rio config) must see those borders as no-data at prediction
too: before, a chip without a no-data tag had its black border classified (and the
value check warned that the input looked wrong).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.errors import CheckpointError, ConfigError
from geoseg.inference import predict
from geoseg.models import ModelMetadata, load_model, read_metadata, save_checkpoint
from tests._inference_helpers import tiny_checkpoint

ROOT = Path(__file__).parents[1]


def _with_nodata(base: Path, path: Path, value: float | None, mode: str, **kw: object) -> Path:
    model, meta = load_model(base)
    meta = dataclasses.replace(meta, image_nodata=value, image_nodata_mode=mode, **kw)
    return save_checkpoint(model, meta, path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("nodata_ckpt")
    base = tiny_checkpoint(d / "base.safetensors")
    return {
        "none": base,
        "all": _with_nodata(base, d / "all.safetensors", 0.0, "all"),
        "any": _with_nodata(base, d / "any.safetensors", 0.0, "any"),
        # trained on bright chips: black is 10.7 standard deviations below the mean
        "bright": _with_nodata(base, d / "bright.safetensors", 0.0, "all",
                               mean=[160.0] * 3, std=[15.0] * 3),
    }  # fmt: skip


def _image(path: Path, nodata: float | None = None) -> tuple[Path, np.ndarray, np.ndarray]:
    """An untagged (or tagged) RGB chip: black border, and pixels with one band at 0."""
    rng = np.random.default_rng(3)
    a = rng.integers(20, 250, (3, 96, 112), dtype=np.uint8)
    black = np.zeros((96, 112), bool)
    black[:, :60] = True  # the chip's black border: most of it, as in the Rio chips
    black[60:, 95:] = True
    a[:, black] = 0
    one_zero = np.zeros_like(black)
    one_zero[10:20, 70:90] = True  # a real dark pixel: only the red band is 0
    a[0, one_zero] = 0
    profile = {
        "driver": "GTiff",
        "height": 96,
        "width": 112,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32723",
        "transform": from_origin(680000, 7470000, 0.5, 0.5),
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(a)
    return path, black, one_zero


def _map(ckpt: Path, image: Path, out: Path, **kw: object) -> tuple[np.ndarray, float]:
    predict(ckpt, image, out, progress=False, overwrite=True, **kw)
    with rasterio.open(out) as ds:
        return ds.read(1), ds.nodata


def test_black_border_is_nodata_with_the_models_rule(ckpts, tmp_path: Path) -> None:
    image, black, one_zero = _image(tmp_path / "chip.tif")
    got, nd = _map(ckpts["all"], image, tmp_path / "all.tif")
    np.testing.assert_array_equal(got == nd, black)  # the border, nothing else
    assert np.all(got[one_zero] != nd)  # one band at 0 is data under "all"
    got_any, nd = _map(ckpts["any"], image, tmp_path / "any.tif")
    np.testing.assert_array_equal(got_any == nd, black | one_zero)


def test_none_keeps_every_pixel_as_before(ckpts, tmp_path: Path) -> None:
    image, _, _ = _image(tmp_path / "chip.tif")
    before, nd = _map(ckpts["none"], image, tmp_path / "before.tif")  # a model without one
    assert not np.any(before == nd)
    for value in (None, "none"):
        got, _ = _map(ckpts["all"], image, tmp_path / "off.tif", nodata=value)
        np.testing.assert_array_equal(got, before)


def test_a_files_own_nodata_wins(ckpts, tmp_path: Path) -> None:
    image, _, _ = _image(tmp_path / "tagged.tif", nodata=255)
    got, nd = _map(ckpts["all"], image, tmp_path / "tagged_map.tif")
    assert not np.any(got == nd)  # its zeros are data: the file says 255 is no-data


def test_a_number_and_bad_values(ckpts, tmp_path: Path) -> None:
    image, black, one_zero = _image(tmp_path / "chip.tif")
    got, nd = _map(ckpts["none"], image, tmp_path / "n.tif", nodata=0)
    np.testing.assert_array_equal(got == nd, black | one_zero)  # the model's "any" rule
    for bad in ("zero", True, [0], b"0"):
        with pytest.raises(ConfigError, match="nodata"):
            predict(ckpts["all"], image, tmp_path / "bad.tif", nodata=bad, progress=False)
        assert not (tmp_path / "bad.tif").exists()


def test_reprojected_input_gets_the_rule(ckpts, tmp_path: Path) -> None:
    image, black, _ = _image(tmp_path / "chip.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, nd = _map(ckpts["all"], image, tmp_path / "w.tif", dst_crs="EPSG:4326")
        off, _ = _map(ckpts["all"], image, tmp_path / "w0.tif", dst_crs="EPSG:4326", nodata=None)
    assert (got == nd).sum() > (off == nd).sum() + 0.25 * black.sum()


def test_no_value_warning_for_a_mostly_black_chip(ckpts, tmp_path: Path) -> None:
    image, black, _ = _image(tmp_path / "chip.tif")
    assert black.mean() > 0.5
    for rule, warned in (("auto", False), (None, True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _map(ckpts["bright"], image, tmp_path / "a.tif", nodata=rule)
        assert any("training range" in str(w.message) for w in caught) == warned


def test_metadata_keeps_the_mode(ckpts, tmp_path: Path) -> None:
    assert read_metadata(ckpts["all"]).image_nodata_mode == "all"
    assert read_metadata(ckpts["none"]).image_nodata_mode == "any"
    header = read_metadata(ckpts["all"]).to_dict()
    assert header["image_nodata"] == 0.0 and header["image_nodata_mode"] == "all"
    # a checkpoint written before the key: the training config's setting
    old = dict(header)
    del old["image_nodata_mode"]
    old["config"] = {"data": {"imagery": {"nodata": 0, "nodata_mode": "all"}}}
    assert ModelMetadata.from_dict(json.loads(json.dumps(old))).image_nodata_mode == "all"
    old["config"] = {}
    assert ModelMetadata.from_dict(old).image_nodata_mode == "any"
    with pytest.raises(CheckpointError, match="image_nodata_mode"):
        ModelMetadata.from_dict(dict(header, image_nodata_mode="most"))


def test_training_records_the_configs_mode(ckpts) -> None:
    from geoseg.training import build_metadata, load_experiment

    config = load_experiment(ROOT / "configs" / "spacenet_rio_buildings.yaml")
    meta = read_metadata(ckpts["none"])
    dm = SimpleNamespace(band_names=["red", "green", "blue"], mean=[1.0] * 3, std=[1.0] * 3,
                         classes=meta.classes, tile_size=64, image_nodata=0.0)  # fmt: skip
    built = build_metadata(dm, config, {})
    assert built.image_nodata == 0.0 and built.image_nodata_mode == "all"


def test_cli_option(ckpts, tmp_path: Path) -> None:
    image, black, _ = _image(tmp_path / "chip.tif")
    for value, expect in (("auto", black), ("none", np.zeros_like(black))):
        out = tmp_path / f"cli_{value}.tif"
        run = subprocess.run(
            [sys.executable, "-m", "geoseg", "predict", str(ckpts["all"]), str(image), "-o",
             str(out), "--nodata", value, "--quiet"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        with rasterio.open(out) as ds:
            np.testing.assert_array_equal(ds.read(1) == ds.nodata, expect)
    run = subprocess.run(
        [sys.executable, "-m", "geoseg", "predict", str(ckpts["all"]), str(image), "-o",
         str(tmp_path / "x.tif"), "--nodata", "zero"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode != 0 and "nodata" in run.stderr and "Traceback" not in run.stderr


def test_export_bakes_the_models_band_rule(ckpts, tmp_path: Path) -> None:
    """The exported graph masks a pixel as training did: all bands at 0 for the Rio rule."""
    import onnxruntime as ort
    import torch

    from geoseg.deploy import export_model

    raw = np.random.default_rng(5).uniform(20, 250, (3, 64, 64)).astype(np.float32)
    raw[:, :8, :8] = 0  # black: no-data under both rules
    raw[0, 20:30, 20:30] = 0  # one band at 0: data under "all", no-data under "any"
    model, meta = load_model(ckpts["all"])
    m = np.asarray(meta.mean, np.float32)[:, None, None]
    s = np.asarray(meta.std, np.float32)[:, None, None]
    for name, rule in (("all", (raw == 0).all(0)), ("any", (raw == 0).any(0))):
        path = export_model(ckpts[name], tmp_path / f"{name}.onnx", tile_size=64)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        info = json.loads(sess.get_modelmeta().custom_metadata_map["geoseg"])
        assert info["nodata"] == 0.0 and info["nodata_mode"] == name
        (probs,) = sess.run(None, {"x": raw[None]})
        z = (raw - m) / s
        z[:, rule] = 0
        with torch.inference_mode():
            expect = torch.softmax(model(torch.from_numpy(z[None])), 1).numpy()
        np.testing.assert_allclose(probs, expect, atol=1e-5)
