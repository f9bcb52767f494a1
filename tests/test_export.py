"""``geoseg export``: standalone ONNX models and the QGIS Deepness flavour."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg.cli import main
from geoseg.deploy import export_model, run_like_deepness
from geoseg.errors import ConfigError
from geoseg.inference import predict

sys.path.insert(0, str(Path(__file__).parent))
from _inference_helpers import RGB, tiny_checkpoint

ROOT = Path(__file__).parents[1]
MODEL = ROOT / "models" / "nc_landcover.safetensors"
NC = ROOT / "data" / "nc-landsat7-landcover"


@pytest.fixture(scope="module")
def nc_scene(tmp_path_factory):
    """The NC Landsat scene as one 6-band raster (raw values, no-data -99999)."""
    from geoseg.demo import make_nc_mosaic

    folder = tmp_path_factory.mktemp("nc")
    tiles = make_nc_mosaic(folder / "mosaic", data_dir=NC)
    from rasterio.merge import merge

    arr, _ = merge([str(t) for t in tiles])
    with rasterio.open(tiles[0]) as src:
        nodata = src.nodata
    return tiles, arr, nodata


def _deepness_props(path: Path) -> dict:
    """Metadata as Deepness's ModelBase parses it (json, class_names also via ast)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    out = {k: json.loads(v) for k, v in props.items()}
    try:
        names = json.loads(props["class_names"])
    except json.JSONDecodeError:  # pragma: no cover - Deepness' fallback
        names = ast.literal_eval(props["class_names"])
    keys = sorted(int(k) for k in names)
    assert keys == list(range(len(keys)))  # Deepness refuses non-consecutive ids
    return out


@pytest.mark.parametrize("tile", [None, 256])
def test_deepness_export_agrees_with_geoseg_predict_on_the_nc_scene(nc_scene, tmp_path, tile):
    """The exported model run as Deepness runs it (values / 255, its tiling, overlap and
    core pasting, no blending) against ``geoseg predict``: >= 99.9 % of valid pixels."""
    tiles, arr, nodata = nc_scene
    onnx_path = export_model(MODEL, tmp_path / "nc.onnx", format="deepness", tile_size=tile,
                             nodata=nodata)  # fmt: skip
    ours = predict(MODEL, tiles, tmp_path / "geoseg.tif", progress=False)
    with rasterio.open(ours) as src:
        ref, ref_nodata = src.read(1), src.nodata
    valid = ref != ref_nodata
    ids = np.asarray([c.id for c in __import__("geoseg").load_model(MODEL)[1].classes])
    got = ids[run_like_deepness(onnx_path, arr)]
    agree = float((got == ref)[valid].mean())
    assert agree >= 0.999, agree  # measured 1.0 (640 px, one tile) and 0.99948 (256 px)


def test_deepness_tiling_keeps_the_model_stride_aligned():
    """Deepness tiles every tile - overlap px (integer %): geoseg picks an overlap whose
    stride is a multiple of the U-Net's 32 px, and warns about a misaligned choice."""
    from geoseg.deploy import deepness_overlap_px, deepness_tiling

    for tile, fixed in ((512, False), (256, True), (256, False), (384, True)):
        t, pct = deepness_tiling(tile, 32, None, fixed_tile=fixed)
        assert (t - deepness_overlap_px(t, pct)) % 32 == 0 and 8 <= pct <= 30
        assert t == tile if fixed else tile <= t <= tile + 4 * 32
    assert deepness_tiling(512, 32, None, fixed_tile=False) == (640, 10)  # 64 px overlap
    with pytest.warns(UserWarning, match="not a multiple of the model's 32 px stride"):
        assert deepness_tiling(256, 32, 12, fixed_tile=True) == (256, 12)


def test_deepness_metadata_is_what_deepness_reads(tmp_path):
    import onnx

    from geoseg.models import read_metadata

    path = export_model(MODEL, tmp_path / "m.onnx", format="deepness", tile_size=256)
    meta = read_metadata(MODEL)
    props = _deepness_props(path)
    assert props == {
        "model_type": "Segmentor",
        "class_names": {str(i): c.name for i, c in enumerate(meta.classes)},
        "resolution": 2850.0,  # 28.5 m in cm per pixel
        "tile_size": 256,
        "tiles_overlap": 16,  # 40 of 256 px: the stride 216 is a multiple of the 8 px
        "seg_thresh": 0.0,
        "seg_small_segment": 0,
        "standardization_mean": [0.0] * 6,
        "standardization_std": [1.0] * 6,
    }
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    (inp,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 6, 256, 256]  # one square input, dynamic batch
    (out,) = model.graph.output
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert len(dims) == 4 and dims[-3] == len(meta.classes)  # Deepness: ls[-3] channels
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probs,) = sess.run(None, {"x": np.random.default_rng(0).random((2, 6, 256, 256),
                                                                     np.float32)})  # fmt: skip
    assert probs.shape == (2, len(meta.classes), 256, 256)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)  # softmax


def test_onnx_export_holds_the_normalization_and_matches_torch(tmp_path):
    """Raw values in, softmax out; equal to the checkpoint's model on normalized input;
    no-data pixels fed as 0 after normalization, as geoseg predict does."""
    import onnxruntime as ort

    from geoseg.models import load_model

    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    path = export_model(ckpt, tmp_path / "m.onnx", tile_size=64, nodata=0.0)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    info = json.loads(sess.get_modelmeta().custom_metadata_map["geoseg"])
    assert info["bands"] == ["R", "G", "B"] and info["tile_size"] == 64
    assert info["outputs"] == ["classes"] and info["nodata"] == 0.0
    with rasterio.open(RGB) as src:
        raw = src.read(window=rasterio.windows.Window(300, 300, 64, 64)).astype(np.float32)
    raw[:, :5, :5] = 0  # a no-data corner
    (probs,) = sess.run(None, {"x": raw[None]})
    model, meta = load_model(ckpt)
    z = (raw - np.asarray(meta.mean, np.float32)[:, None, None]) / np.asarray(meta.std, np.float32)[
        :, None, None
    ]
    z[:, (raw == 0).any(0)] = 0  # geoseg: a pixel is no-data when any band is
    with torch.inference_mode():
        expect = torch.softmax(model(torch.from_numpy(z[None])), 1).numpy()
    np.testing.assert_allclose(probs, expect, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_export_refuses_what_it_cannot_represent(tmp_path, capsys):
    from geoseg.classes import ClassTable
    from geoseg.models import ModelMetadata, save_checkpoint
    from geoseg.models.registry import build_model, get_adapter
    from geoseg.tasks import task_outputs

    classes = ClassTable.from_config(
        [{"id": 0, "name": "background"}, {"id": 1, "name": "building", "thing": True}]
    )
    outs = task_outputs("instance", classes, get_adapter("torchvision"))
    model = build_model("maskrcnn", in_channels=3, outputs=outs, classes=classes)
    meta = ModelMetadata(arch="maskrcnn", encoder="resnet18", bands=["R", "G", "B"],
                         mean=[0.0] * 3, std=[1.0] * 3, classes=classes, task="instance",
                         adapter="torchvision", outputs=outs)  # fmt: skip
    mr = save_checkpoint(model, meta, tmp_path / "mr.safetensors")
    with pytest.raises(ConfigError, match="object lists"):
        export_model(mr, tmp_path / "a.onnx", format="deepness")
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    with pytest.raises(ConfigError, match="multiple of 8"):
        export_model(ckpt, tmp_path / "b.onnx", tile_size=100)
    with pytest.raises(ConfigError, match=r"\.onnx"):
        export_model(ckpt, tmp_path / "c.pt")
    with pytest.raises(ConfigError, match="unknown export format"):
        export_model(ckpt, tmp_path / "d.onnx", format="tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "mr.safetensors"]
    # CLI: a clear error, no traceback
    assert main(["export", str(mr), "--format", "deepness", "-o", str(tmp_path / "e.onnx")]) == 1
    err = capsys.readouterr().err
    assert "object lists" in err and "Traceback" not in err


def test_deepness_export_of_a_non_8bit_model_says_what_deepness_does(tmp_path, capsys):
    from geoseg.models import ModelMetadata, read_metadata, save_checkpoint
    from geoseg.models.registry import create_model

    base = read_metadata(tiny_checkpoint(tmp_path / "m.safetensors"))
    model = create_model("unet", in_channels=3, num_classes=4, encoder="resnet18",
                         **base.model_kwargs)  # fmt: skip
    meta = ModelMetadata(**{**base.__dict__, "mean": [3000.0] * 3, "std": [900.0] * 3})
    ckpt = save_checkpoint(model, meta, tmp_path / "reflectance.safetensors")
    with pytest.warns(UserWarning, match="not 8-bit.*multiplies it back"):
        export_model(ckpt, tmp_path / "r.onnx", format="deepness", tile_size=64)
    assert main(["export", str(ckpt), "--format", "deepness", "-o", str(tmp_path / "c.onnx"),
                 "--tile-size", "64"]) == 0  # fmt: skip
    assert (tmp_path / "c.onnx").stat().st_size > 10_000


def test_a_nan_nodata_value_is_masked_in_the_graph(tmp_path):
    """NaN never equals itself: the graph tests it, and the metadata stays valid JSON."""
    import onnxruntime as ort

    out = export_model(MODEL, tmp_path / "m.onnx", tile_size=64, nodata=float("nan"))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert json.loads(sess.get_modelmeta().custom_metadata_map["geoseg"])["nodata"] == "nan"
    x = np.random.default_rng(0).uniform(0, 100, (1, 6, 64, 64)).astype(np.float32)
    x[0, :, 10:20, 10:20] = np.nan  # no-data in every band
    x[0, 2, 40:50, 40:50] = np.nan  # in one band ("any": no-data)
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert np.isfinite(y).all()  # before: NaN spread over the outputs
    zeroed = x.copy()
    zeroed[np.isnan(zeroed)] = 0.0
    ref = export_model(MODEL, tmp_path / "r.onnx", tile_size=64, nodata=0.0)
    rs = ort.InferenceSession(str(ref), providers=["CPUExecutionProvider"])
    # no-data pixels are zeroed after normalization either way: same scores everywhere
    np.testing.assert_allclose(y, rs.run(None, {rs.get_inputs()[0].name: zeroed})[0], atol=1e-5)
