"""The core contract every task builds on: adapters, named outputs, checkpoints, tasks,
the one CRS rule, backend parity, and paths that never depend on the installation."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _inference_helpers import tiny_checkpoint

from geoseg.classes import ClassTable
from geoseg.config import ExperimentConfig
from geoseg.errors import CheckpointError, ConfigError, InputFileError, ReprojectionWarning
from geoseg.inference import predict
from geoseg.models import (
    build_model,
    get_adapter,
    load_model,
    read_metadata,
    save_checkpoint,
)
from geoseg.models.outputs import CLASS_SCORES, PIXEL_MAP, OutputSpec
from geoseg.tasks import TASKS, task_class, task_info

ROOT = Path(__file__).parents[1]
SHIPPED = ROOT / "models" / "nc_landcover.safetensors"
NC = ROOT / "data" / "nc-landsat7-landcover"


@pytest.fixture(scope="module")
def nc_tiles(tmp_path_factory):
    from geoseg.demo import make_nc_mosaic

    return make_nc_mosaic(tmp_path_factory.mktemp("nc") / "mosaic", data_dir=NC)


# -- checkpoints ---------------------------------------------------------------------------
def test_shipped_version_1_checkpoint_loads_as_semantic_smp():
    header = _header(SHIPPED)
    assert header["format_version"] == 1 and "task" not in header and "outputs" not in header
    model, meta = load_model(SHIPPED)
    assert (meta.task, meta.adapter) == ("semantic", "smp")
    assert [(o.name, o.kind, o.channels, o.activation) for o in meta.outputs] == [
        ("classes", CLASS_SCORES, 7, "softmax")
    ]
    assert meta.size_divisor() == 8  # smp U-Net with encoder_depth 3
    out = model(torch.zeros(1, 6, 64, 64))
    assert out.shape == (1, 7, 64, 64)


def test_version_2_checkpoint_roundtrip_keeps_task_adapter_and_outputs(tmp_path):
    _, meta = load_model(SHIPPED)
    model, _ = load_model(SHIPPED)
    path = save_checkpoint(model, meta, tmp_path / "v2.safetensors")
    header = _header(path)
    assert header["format_version"] == 2
    assert header["task"] == "semantic" and header["adapter"] == "smp"
    assert header["outputs"] == [
        {"name": "classes", "kind": "class_scores", "channels": 7, "activation": "softmax",
         "merge": "blend"}
    ]  # fmt: skip
    again, meta2 = load_model(path)
    assert meta2.outputs == meta.outputs
    x = torch.randn(1, 6, 64, 64)
    with torch.inference_mode():
        assert torch.equal(again(x), model(x))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"tile_size": 10**9}, "tile_size 1000000000"),
        ({"std": [0.0] * 6}, "std > 0"),
        ({"mean": [float("nan")] * 6}, "finite"),
        ({"model_kwargs": {"encoder_depth": 30}}, "divisible by 1073741824"),
        ({"task": "sorcery"}, "unknown task 'sorcery'"),
        ({"adapter": "nope"}, "unknown adapter 'nope'"),
        ({"bands": ["b"] * 5000}, "at most 1024"),
        ({"outputs": [{"name": "classes", "kind": "blob", "channels": 7}]}, "unknown kind"),
    ],
)
def test_absurd_checkpoint_headers_are_refused_before_any_allocation(tmp_path, edit, match):
    header = {**_header(SHIPPED), **edit}
    path = _with_header(tmp_path / "bad.safetensors", header)
    with pytest.raises(CheckpointError, match=match):
        read_metadata(path)


def test_nan_weights_are_refused(tmp_path):
    model, meta = load_model(SHIPPED)
    with torch.no_grad():
        next(iter(model.parameters())).fill_(float("nan"))
    path = save_checkpoint(model, meta, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="non-finite weights"):
        load_model(path)


# -- adapters and named outputs --------------------------------------------------------------
def test_smp_adapter_stacks_and_splits_named_outputs():
    outputs = [
        OutputSpec("classes", CLASS_SCORES, 3, "softmax"),
        OutputSpec("footprint", PIXEL_MAP, 2, "sigmoid"),
    ]
    adapter = get_adapter("smp")
    model = build_model(
        "unet", in_channels=4, outputs=outputs, encoder="resnet18",
        kwargs={"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
    )  # fmt: skip
    x = torch.randn(2, 4, 32, 32)
    raw = model(x)
    assert raw.shape == (2, 5, 32, 32)
    named = adapter.outputs(raw, outputs)
    assert torch.equal(named["classes"], raw[:, :3]) and torch.equal(named["footprint"], raw[:, 3:])
    activated = adapter.export_module(model, outputs)(x)
    assert torch.allclose(activated[0].sum(1), torch.ones(2, 32, 32), atol=1e-5)
    assert torch.equal(activated[1], torch.sigmoid(raw[:, 3:]))


def test_unknown_architecture_and_adapter_name_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown architecture 'unett'.*'unet'"):
        build_model("unett", in_channels=3, outputs=[OutputSpec("classes", CLASS_SCORES, 2)])
    with pytest.raises(ConfigError, match=r"unknown adapter 'hf'.*'smp'.*'transformers'\]"):
        build_model(
            "unet", in_channels=3, outputs=[OutputSpec("classes", CLASS_SCORES, 2)], adapter="hf"
        )


# -- tasks ---------------------------------------------------------------------------------
def test_task_registry_and_config_task_field():
    assert "semantic" in TASKS
    assert task_class("semantic").__name__ == "SemanticSegmentationTask"
    classes = ClassTable.from_config(["a", "b", "c"])
    assert [o.name for o in task_info("semantic").outputs(classes)] == ["classes"]
    exp = ExperimentConfig.from_dict({"model": {"arch": "unet"}})
    assert exp.task == "semantic" and exp.to_dict()["task"] == "semantic"
    with pytest.raises(ConfigError, match=r"unknown task 'instnce'.*'semantic'"):
        task_info("instnce")


def test_train_refuses_an_unknown_task_before_reading_data(tmp_path):
    from geoseg.training import train

    cfg = {"task": "instnce", "data": {"imagery": {"paths": "missing.tif"}, "labels": {"path": "x"},
           "classes": ["a", "b"]}}  # fmt: skip
    with pytest.raises(ConfigError, match="unknown task 'instnce'"):
        train(cfg, output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- inference -------------------------------------------------------------------------------
def test_torch_and_onnx_backends_agree_on_real_data(nc_tiles, tmp_path):
    """The two runners of one checkpoint give the same map of the real NC scene."""
    maps = {}
    for backend in ("onnx", "torch"):
        cls, prob = predict(
            SHIPPED, nc_tiles, tmp_path / f"{backend}.tif",
            probabilities=tmp_path / f"{backend}_p.tif", backend=backend, progress=False,
        )  # fmt: skip
        with rasterio.open(cls) as c, rasterio.open(prob) as p:
            maps[backend] = (c.read(1), p.read().astype(np.int16))
    (ca, pa), (cb, pb) = maps["onnx"], maps["torch"]
    valid = ca != 0
    assert np.array_equal(valid, cb != 0) and valid.sum() > 100_000
    assert (ca[valid] == cb[valid]).mean() >= 0.9999  # measured: 1.0
    assert np.abs(pa - pb).max() <= 1  # probabilities agree to one uint8 step


def test_same_grid_in_another_crs_tag_is_read_directly_in_predict(nc_tiles, tmp_path):
    """The one CRS rule: a tile tagged EPSG:3358 (NAD83(HARN)) on the EPSG:32119 grid is the
    same grid, as in training: no warping, no warning, the same map."""
    retagged = []
    for i, t in enumerate(nc_tiles):
        dst = tmp_path / t.name
        shutil.copy(t, dst)
        if i % 2:
            with rasterio.open(dst, "r+") as ds:
                ds.crs = rasterio.crs.CRS.from_epsg(3358)
        retagged.append(dst)
    with rasterio.open(retagged[1]) as ds:
        assert ds.crs.to_epsg() == 3358
    ref = predict(SHIPPED, nc_tiles, tmp_path / "ref.tif", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReprojectionWarning)
        out = predict(SHIPPED, retagged, tmp_path / "mixed.tif", progress=False)
    with rasterio.open(ref) as a, rasterio.open(out) as b:
        assert b.transform == a.transform and b.shape == a.shape
        assert np.array_equal(a.read(1), b.read(1))


def test_a_model_with_two_outputs_predicts_its_class_output(tmp_path):
    """Runners and blocks carry any number of named outputs; the semantic decoder uses
    ``classes``. The extra output changes nothing in the class map."""
    from geoseg.io.cog import validate_cog

    torch.manual_seed(0)
    base = tiny_checkpoint(tmp_path / "one.safetensors")
    model, meta = load_model(base)
    outputs = [*meta.outputs, OutputSpec("extra", PIXEL_MAP, 1, "sigmoid")]
    two = build_model(meta.arch, in_channels=3, outputs=outputs, encoder=meta.encoder,
                      kwargs=meta.model_kwargs)  # fmt: skip
    state = two.state_dict()
    for k, v in model.state_dict().items():  # same weights; one more head channel
        state[k] = v if state[k].shape == v.shape else torch.cat([v, state[k][v.shape[0] :]])
    two.load_state_dict(state)
    meta.outputs = outputs
    ck = save_checkpoint(two, meta, tmp_path / "two.safetensors")
    rgb = ROOT / "data" / "unlabeled-rgb" / "RGB.byte.tif"
    for backend in ("onnx", "torch"):
        a = predict(base, rgb, tmp_path / f"a_{backend}.tif", backend=backend, progress=False)
        b = predict(ck, rgb, tmp_path / f"b_{backend}.tif", backend=backend, progress=False)
        with rasterio.open(a) as x, rasterio.open(b) as y:
            assert np.array_equal(x.read(), y.read())
        assert validate_cog(b) == []


# -- paths never resolve against the installation ------------------------------------------
def test_config_paths_resolve_from_any_working_directory(tmp_path, monkeypatch):
    from geoseg.training import make_datamodule

    monkeypatch.chdir(tmp_path)  # not the repository
    exp = ExperimentConfig.load(ROOT / "configs" / "sen1floods11_water.yaml")
    assert exp.base_dir == str(ROOT / "configs")
    dm = make_datamodule(exp)
    dm.prepare_scene()
    assert dm.imagery.sources[0].path == (ROOT / exp.data.imagery.paths).resolve()
    # the same data section without a root and without a config file: the working
    # directory only, and the error names where it looked
    raw = exp.to_dict()
    raw["data"]["root"] = None
    with pytest.raises(InputFileError, match=f"looked in '{tmp_path}"):
        make_datamodule(ExperimentConfig.from_dict(raw)).prepare_scene()


def test_demo_outside_a_checkout_says_what_to_pass(tmp_path, monkeypatch):
    from geoseg.demo import run_demo

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputFileError, match=r"does not exist.*--model PATH"):
        run_demo(tmp_path / "out", progress=False)
    with pytest.raises(InputFileError, match=r"lsat7_2000_10.tif.*--data DIR"):
        run_demo(tmp_path / "out", model=SHIPPED, progress=False)


def test_no_module_resolves_paths_against_the_package():
    """The library never looks inside its own installation for data or models."""
    offenders = []
    for path in (ROOT / "geoseg").rglob("*.py"):
        text = path.read_text()
        if "__file__" in text and "parents[" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def _header(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["geoseg"])


def _with_header(path: Path, header: dict) -> Path:
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(SHIPPED)), str(path), metadata={"geoseg": json.dumps(header)})
    return path


def test_torch_free_adapter_facts_match_the_adapters():
    """Headers are checked without torch; the adapter facts used are the adapters' own."""
    from geoseg.models.families import ADAPTER_NAMES, adapter_size_divisor
    from geoseg.models.registry import ADAPTERS

    assert sorted(ADAPTER_NAMES) == sorted(ADAPTERS)
    for name, adapter in ADAPTERS.items():
        for kwargs in ({}, {"encoder_depth": 3}, {"encoder_depth": 4}):
            assert adapter.size_divisor("unet", "resnet18", kwargs) == adapter_size_divisor(
                name, kwargs
            )
    assert adapter_size_divisor("smp", {"encoder_depth": 3}) == 8
