import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _fake_dm import CLASSES, FakeDataModule

from geoseg.cli import main
from geoseg.errors import CheckpointError, ConfigError, InputFileError
from geoseg.evaluation import evaluate
from geoseg.models import ModelMetadata, create_model, save_checkpoint

KW = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("unet", in_channels=2, num_classes=3, encoder="tu-resnet10t", **KW)
    meta = ModelMetadata(
        arch="unet",
        encoder="tu-resnet10t",
        bands=["b1", "b2"],
        mean=[100.0, 100.0],
        std=[10.0, 10.0],
        classes=CLASSES,
        tile_size=32,
        model_kwargs=KW,
    )
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    return save_checkpoint(model, meta, path)


def test_report_and_png_written(checkpoint, tmp_path):
    out = tmp_path / "report.json"
    rep = evaluate(checkpoint, datamodule=FakeDataModule(), output=out, progress=False)
    saved = json.loads(out.read_text())
    assert saved["split"] == "test"
    assert saved["confusion_matrix"]["labels"] == ["dark", "mid", "bright"]
    counts = saved["confusion_matrix"]["counts"]
    dm = FakeDataModule()
    valid = int((dm.sets["test"].mask != -100).sum())
    assert sum(map(sum, counts)) == valid == rep["pixels"]
    # per-class support matches the reference masks
    for i, name in enumerate(CLASSES.names):
        assert saved["support"][name] == int((dm.sets["test"].mask == i).sum())
    png = tmp_path / "report_confusion.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_val_split_and_unknown_split(checkpoint):
    rep = evaluate(checkpoint, split="val", datamodule=FakeDataModule(), progress=False)
    assert rep["split"] == "val"
    with pytest.raises(ConfigError, match="valid splits"):
        evaluate(checkpoint, split="holdout", datamodule=FakeDataModule())


def test_missing_checkpoint(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        evaluate(tmp_path / "nope.safetensors")


def test_corrupt_checkpoint(checkpoint, tmp_path):
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        evaluate(bad)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        evaluate(truncated)


def test_checkpoint_from_future_version(tmp_path):
    from safetensors.torch import save_file

    header = {"format": "geoseg-checkpoint", "format_version": 99, "geoseg_version": "9.0"}
    path = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"geoseg": json.dumps(header)})
    with pytest.raises(CheckpointError, match=r"version 99.*Upgrade geoseg"):
        evaluate(path)


def test_checkpoint_without_config_needs_one(checkpoint):
    with pytest.raises(CheckpointError, match="--config"):
        evaluate(checkpoint)


def test_data_with_other_classes_is_refused(checkpoint):
    from geoseg.classes import ClassTable

    dm = FakeDataModule()
    dm.classes = ClassTable.from_config(["a", "b", "c"])
    with pytest.raises(ConfigError, match="classes"):
        evaluate(checkpoint, datamodule=dm)


def test_cli_reports_clear_error(tmp_path, capsys):
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x00" * 64)
    assert main(["evaluate", str(bad), "-o", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err
    assert "geoseg evaluate: error:" in err and "corrupt.safetensors" in err
    assert not (tmp_path / "r.json").exists()
