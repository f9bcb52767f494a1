"""Bad checkpoint headers, training configs and export options of the input audit.

Each case is a clear one-line geoseg error naming the file or key (no traceback, no
allocation sized by the bad number). Checkpoints are the shipped model's tensors with an
edited header, as the audit made them; nothing is trained.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from geoseg.cli import main
from geoseg.config import ExperimentConfig, load_yaml
from geoseg.deploy import export_model
from geoseg.errors import CheckpointError, ConfigError
from geoseg.models import read_metadata

ROOT = Path(__file__).parents[1]
SHIPPED = ROOT / "models" / "nc_landcover.safetensors"
CONFIG = ROOT / "configs" / "nc_landcover.yaml"


@pytest.fixture(scope="module")
def shipped() -> tuple[dict[str, Any], dict[str, Any]]:
    with safe_open(str(SHIPPED), "np") as f:
        header = json.loads(f.metadata()["geoseg"])
    return load_file(str(SHIPPED)), header


def _checkpoint(tmp_path: Path, shipped: Any, raw: str | None = None, **edit: Any) -> Path:
    tensors, header = shipped
    header = copy.deepcopy(header)
    for key, value in edit.items():
        if value is _DROP:
            header.pop(key)
        else:
            header[key] = value
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata={"geoseg": raw or json.dumps(header)})
    return path


_DROP = object()


def _refused(path: Path, *needles: str) -> str:
    with pytest.raises(CheckpointError) as info:
        read_metadata(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for needle in needles:
        assert needle in message, message
    return message


# -- B5: model keyword arguments are bounded before a layer is built -------------------------
@pytest.mark.parametrize("channels", [10**9, -64, 0])
def test_checkpoint_model_kwargs_are_bounded(tmp_path, shipped, channels):
    kw = {"encoder_depth": 3, "decoder_channels": [channels, 32, 16]}
    path = _checkpoint(tmp_path, shipped, model_kwargs=kw)
    _refused(path, "model_kwargs.decoder_channels[0]", str(channels), "1 to 65536")


def test_checkpoint_encoder_depth_must_be_an_integer(tmp_path, shipped):
    path = _checkpoint(tmp_path, shipped, model_kwargs={"encoder_depth": "three"})
    _refused(path, "model_kwargs.encoder_depth", "'three'")


def test_config_model_kwargs_are_bounded():
    with pytest.raises(ConfigError, match=r"model\.kwargs\.decoder_channels\[0\]: 1000000000"):
        ExperimentConfig.from_dict({"model": {"kwargs": {"decoder_channels": [10**9, 32, 16]}}})
    with pytest.raises(ConfigError, match=r"model\.kwargs\.backbone\.depths\[1\]: -1"):
        ExperimentConfig.from_dict({"model": {"kwargs": {"backbone": {"depths": [1, -1]}}}})
    ok = ExperimentConfig.load(CONFIG)  # the shipped configs stay valid
    assert ok.model.kwargs == {"encoder_depth": 3, "decoder_channels": [64, 32, 16]}


# -- C4: value types and float32 range -----------------------------------------------------
@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        ({"mean": [True] * 6}, ["'mean[0]'", "True"]),
        ({"std": [1e300] * 6}, ["float32", "1e+300"]),
        ({"std": [1e-300] * 6}, ["std > 0", "1e-300"]),
        ({"mean": [1e308] * 6}, ["float32", "1e+308"]),
        ({"tile_size": 64.7}, ["'tile_size'", "64.7"]),
        ({"tile_size": "64"}, ["'tile_size'", "'64'"]),
        ({"format_version": -1}, ["'format_version'", "-1"]),
        ({"resolution": "abc"}, ["'resolution'", "'abc'"]),
        ({"resolution": -28.5}, ["'resolution'", "-28.5"]),
        ({"crs": "notacrs"}, ["'crs'", "'notacrs'"]),
        ({"crs": {"a": 1}}, ["'crs'", "{'a': 1}"]),
        ({"image_nodata": "abc"}, ["'image_nodata'", "'abc'"]),
        ({"image_nodata": [0]}, ["'image_nodata'", "[0]"]),
        ({"classes": [{"id": 1.5, "name": "a"}]}, ["'classes'", "1.5"]),
        ({"classes": [{"id": True, "name": "a"}]}, ["'classes'", "True"]),
    ],
)
def test_header_values_must_have_their_type_and_fit_float32(tmp_path, shipped, edit, needles):
    _refused(_checkpoint(tmp_path, shipped, **edit), *needles)


def test_a_good_header_still_reads(tmp_path, shipped):
    meta = read_metadata(_checkpoint(tmp_path, shipped, image_nodata=0, resolution=30))
    assert meta.image_nodata == 0.0 and meta.resolution == 30.0 and meta.crs == "EPSG:32119"


# -- D5/D6/E5: every header error names the file and the key ---------------------------------
@pytest.mark.parametrize(
    ("edit", "key"),
    [
        ({"tile_size": float("inf")}, "'tile_size'"),
        ({"tile_size": None}, "'tile_size'"),
        ({"metrics": [1, 2]}, "'metrics'"),
        ({"outputs": "classes"}, "'outputs'"),
        ({"outputs": ["classes"]}, "'outputs[0]'"),
        ({"outputs": [{"name": "classes", "kind": "class_scores", "channels": 1e999}]}, "outputs"),
        ({"model_kwargs": [1, 2]}, "'model_kwargs'"),
        ({"task_options": [1]}, "'task_options'"),
        ({"arch": _DROP}, "'arch' is missing"),
        ({"mean": _DROP}, "'mean' is missing"),
        ({"format_version": "1"}, "'format_version'"),
    ],
)
def test_header_errors_name_the_key(tmp_path, shipped, edit, key):
    message = _refused(_checkpoint(tmp_path, shipped, **edit), key)
    assert "Upgrade geoseg" not in message


def test_a_header_number_of_thousands_of_digits_is_a_clear_error(tmp_path, shipped):
    raw = json.dumps(shipped[1]).replace('"tile_size": 64', '"tile_size": ' + "9" * 5000)
    _refused(_checkpoint(tmp_path, shipped, raw=raw), "cannot be read", "4300 digits")


def test_a_newer_version_still_says_upgrade(tmp_path, shipped):
    _refused(_checkpoint(tmp_path, shipped, format_version=99), "Upgrade geoseg")


# -- D7 / B6 / C10 / C11: training configs ---------------------------------------------------
def test_a_yaml_number_of_thousands_of_digits_is_a_config_error(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("training:\n  max_epochs: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"big\.yaml.*cannot be read"):
        load_yaml(path)
    with pytest.raises(ConfigError, match=r"override 'training\.max_epochs'"):
        ExperimentConfig.load({}, overrides=["training.max_epochs=" + "9" * 5000])


def test_the_cli_prints_one_line_for_a_huge_yaml_number(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text("training:\n  max_epochs: " + "9" * 5000 + "\n")
    assert main(["train", str(path), "-o", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err
    assert "geoseg train: error:" in err and "Traceback" not in err


def _data_section(**extra: Any) -> dict[str, Any]:
    raw = load_yaml(CONFIG)
    raw["data"].update(extra)
    return raw


def test_train_samples_is_capped():
    with pytest.raises(ConfigError, match=r"data\.train_samples: 1000000000000 .*100000000"):
        ExperimentConfig.from_dict(_data_section(train_samples=10**12))
    with pytest.raises(ConfigError, match=r"data\.train_samples: 0"):
        ExperimentConfig.from_dict(_data_section(train_samples=0))


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([float("nan")] * 7, r"class_weights\[0\]: nan is not a finite number"),
        ([float("inf")] + [1.0] * 6, r"class_weights\[0\]: inf"),
        ([-1.0] + [1.0] * 6, r"class_weights\[0\]: -1.0 is negative"),
        ([0.0] * 7, "every weight is 0"),
        ([True] * 7, r"class_weights\[0\]: True"),
        (["a"] * 7, r"class_weights\[0\]: 'a'"),
    ],
)
def test_class_weights_must_be_finite_non_negative_numbers(weights, match):
    with pytest.raises(ConfigError, match=match):
        ExperimentConfig.from_dict({"training": {"class_weights": weights}})
    ok = ExperimentConfig.from_dict({"training": {"class_weights": [0.0, 1, 2.5]}})
    assert ok.training.class_weights == [0.0, 1, 2.5]


@pytest.mark.parametrize("ident", [1.5, True, 2.0])
def test_class_ids_must_be_integers(ident):
    raw = load_yaml(CONFIG)
    raw["data"]["classes"][0]["id"] = ident
    with pytest.raises(ConfigError, match=rf"data\.classes\[0\]\.id: class id {ident!r}"):
        ExperimentConfig.from_dict(raw)
    raw["data"]["classes"] = {ident: "a", 3: "b"}
    with pytest.raises(ConfigError, match=rf"class id {ident!r} is not a whole number"):
        ExperimentConfig.from_dict(raw)


# -- D2/D3/D4/E8: export -------------------------------------------------------------------
@pytest.mark.parametrize("pct", [float("nan"), float("inf"), -10.0, 50.0])
def test_export_checks_the_overlap_before_anything_else(tmp_path, pct):
    out = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is warned about before the error
        with pytest.raises(ConfigError, match="overlap_percent must be a number from 0 to 50"):
            export_model(SHIPPED, out, format="deepness", overlap_percent=pct)
    assert not out.exists()


def test_export_cli_overlap_nan_is_one_line(tmp_path, capsys):
    args = ["export", str(SHIPPED), "-o", str(tmp_path / "m.onnx"), "--format", "deepness"]
    assert main([*args, "--overlap-percent", "nan"]) != 0
    err = capsys.readouterr().err
    assert "geoseg export: error: overlap_percent" in err and "Traceback" not in err
    assert "Deepness will tile" not in err


@pytest.mark.parametrize(
    "edit", [{"image_nodata": "abc"}, {"image_nodata": [0]}, {"resolution": "abc"}]
)
def test_export_of_a_bad_header_is_a_checkpoint_error(tmp_path, shipped, edit):
    path = _checkpoint(tmp_path, shipped, **edit)
    with pytest.raises(CheckpointError, match=next(iter(edit))):
        export_model(path, tmp_path / "m.onnx", format="deepness")


def test_export_refuses_a_nodata_that_is_not_a_number(tmp_path):
    with pytest.raises(ConfigError, match="nodata: 'abc' is not a number"):
        export_model(SHIPPED, tmp_path / "m.onnx", nodata="abc")  # type: ignore[arg-type]
