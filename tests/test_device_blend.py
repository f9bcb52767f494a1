"""Blending on the model's device: the same bits as the host blend (CPU tensors stand in)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import rasterio
import torch
from _inference_helpers import RGB, tiny_checkpoint

from geoseg.inference import predict
from geoseg.inference.blending import weight_window
from geoseg.inference.device import argmax0, blend_block_device, quantize, to_host
from geoseg.inference.graph import blend_block
from geoseg.inference.tiling import PixelWindow

graph = importlib.import_module("geoseg.inference.graph")
predict_module = importlib.import_module("geoseg.inference.predict")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("dev") / "m.safetensors")


def _batches(rng, tile, wins, classes=5):
    out = []
    for _ in wins:
        p = rng.random((classes, tile, tile), dtype=np.float32)
        p /= p.sum(0, keepdims=True)
        valid = rng.random((tile, tile)) > 0.1
        out.append(({"classes": p}, valid))
    return [out]


def test_device_blend_equals_host_blend_bit_for_bit():
    rng = np.random.default_rng(3)
    tile, ov = 64, 16
    weight = weight_window("cosine", tile, ov)
    starts = [0, 48, 96]
    wins = [PixelWindow(r, c, tile, tile) for r in starts for c in starts]
    host = _batches(rng, tile, wins)
    dev = [[({k: torch.from_numpy(v) for k, v in o.items()}, m) for o, m in host[0]]]
    members = [(w, 0, i) for i, w in enumerate(wins)]
    for block in (PixelWindow(0, 0, 160, 160), PixelWindow(40, 30, 70, 90)):
        mh, vh = blend_block(block, host, members, weight, ("classes",))
        md, vd = blend_block_device(block, dev, members, weight, ("classes",))
        assert isinstance(md["classes"], torch.Tensor)
        assert np.array_equal(vh, vd)
        assert np.array_equal(mh["classes"], md["classes"].numpy())  # exact, not close
        assert np.array_equal(argmax0(mh["classes"]), argmax0(md["classes"]))
        assert argmax0(md["classes"]).dtype == np.uint8  # one byte per pixel copied back
        assert np.array_equal(quantize(mh["classes"], 254.0), quantize(md["classes"], 254.0))
        assert np.array_equal(to_host(md)["classes"], mh["classes"])


def test_device_blend_of_skipped_windows_only():
    block = PixelWindow(0, 0, 32, 32)
    valid = np.zeros((64, 64), bool)
    maps, v = blend_block_device(
        block, [[(None, valid)]], [(PixelWindow(0, 0, 64, 64), 0, 0)], np.ones((64, 64)), ("c",)
    )
    assert maps is None and not v.any()


def test_argmax_ties_take_the_first_class_on_both():
    p = np.zeros((3, 2, 2), np.float32)
    p[1:] = 0.5  # classes 1 and 2 tie everywhere
    assert (argmax0(p) == 1).all()
    assert (argmax0(torch.from_numpy(p)) == 1).all()


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read()


def test_prediction_with_outputs_left_as_tensors_is_identical(ckpt, tmp_path, monkeypatch):
    """The whole pipeline with the runner's outputs as tensors (as a GPU runner leaves
    them): class map and probabilities equal to the numpy pipeline's."""
    monkeypatch.setattr(predict_module, "DEFAULT_MIN_TILE", 64)
    kw = {"backend": "torch", "progress": False, "tile_size": 64}
    ref = predict(ckpt, RGB, tmp_path / "a.tif", probabilities=tmp_path / "ap.tif", **kw)
    real = graph.get_runner
    calls = []

    def tensor_runner(spec):
        run = real(spec)

        def wrapped(x):
            calls.append(1)
            return {k: torch.from_numpy(v) for k, v in run(x).items()}

        return wrapped

    monkeypatch.setattr(graph, "get_runner", tensor_runner)
    out = predict(ckpt, RGB, tmp_path / "b.tif", probabilities=tmp_path / "bp.tif", **kw)
    assert calls
    for a, b in zip(ref, out):
        assert np.array_equal(_read(a), _read(b))


def test_outputs_stay_on_the_gpu_only_where_one_process_blends(ckpt):
    spec = predict_module._runner_spec
    layout = (1, ())
    one = ((0, False),)
    on = dict(objects=False, on_device=True)
    assert spec(ckpt, "auto", "fp32", "cuda", 64, one, layout, **on).keep_on_device
    assert spec(ckpt, "torch", "bf16", "cuda:0", 64, one, layout, **on).keep_on_device
    # not on the CPU, not with test-time augmentation, not across processes
    assert not spec(ckpt, "torch", "fp32", "cpu", 64, one, layout, **on).keep_on_device
    tta = ((0, False), (0, True))
    assert not spec(ckpt, "auto", "fp32", "cuda", 64, tta, layout, **on).keep_on_device
    off = dict(objects=False, on_device=False)
    assert not spec(ckpt, "auto", "fp32", "cuda", 64, one, layout, **off).keep_on_device
