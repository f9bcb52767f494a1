"""Tests of the shared core: class tables, config helpers, checkpoints, atomic outputs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from geoseg.classes import ClassTable
from geoseg.config import apply_overrides, from_mapping
from geoseg.errors import CheckpointError, ConfigError, OutputError
from geoseg.models import ModelMetadata, create_model, load_model, save_checkpoint


def test_class_table_roundtrip_and_nodata():
    table = ClassTable.from_config(
        [{"id": 1, "name": "developed", "color": "#ff0000"}, {"id": 5, "name": "forest"}]
    )
    assert table.ids == [1, 5]
    assert table.index_of(5) == 1
    assert table.nodata_value() == 0
    assert table.colormap()[1] == (255, 0, 0, 255)
    assert ClassTable.from_json(table.to_json()) == table
    with_zero = ClassTable.from_config({0: "background", 1: "building"})
    assert with_zero.nodata_value() == 255


@dataclass
class _Section:
    epochs: int = 1
    lr: float = 1e-3


def test_from_mapping_names_unknown_key_and_valid_keys():
    with pytest.raises(
        ConfigError, match=r"unknown key 'epoch'.*did you mean 'epochs'.*\['epochs', 'lr'\]"
    ):
        from_mapping(_Section, {"epoch": 3}, "training")
    cfg = from_mapping(_Section, apply_overrides({}, ["lr=1"]), "training")
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_checkpoint_roundtrip_and_corruption(tmp_path):
    model = create_model("unet", in_channels=3, num_classes=2, encoder="resnet18")
    meta = ModelMetadata(
        arch="unet",
        encoder="resnet18",
        bands=["red", "green", "blue"],
        mean=[0.0, 0.0, 0.0],
        std=[1.0, 1.0, 1.0],
        classes=ClassTable.from_config({0: "background", 1: "building"}),
    )
    path = save_checkpoint(model, meta, tmp_path / "m.safetensors")
    loaded, meta2 = load_model(path)
    assert not loaded.training
    assert meta2.bands == ["red", "green", "blue"] and meta2.classes.names == [
        "background",
        "building",
    ]
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        load_model(bad)


def test_hub_weights_refused():
    with pytest.raises(ConfigError, match="never downloads"):
        create_model("unet", in_channels=3, num_classes=2, encoder_weights="imagenet")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    from geoseg.io.outputs import atomic_path

    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    target.write_text("x")
    with pytest.raises(OutputError, match="already exists"), atomic_path(target):
        pass


def test_class_table_survives_geotiff(tmp_path):
    import numpy as np
    import rasterio

    from geoseg.classes import read_class_table
    from geoseg.testing import write_raster

    table = ClassTable.from_config({1: "developed", 5: "forest"})
    path = write_raster(
        tmp_path / "c.tif", np.array([[1, 5], [5, 0]], dtype="uint8"), nodata=0, classes=table
    )
    with rasterio.open(path) as src:
        assert read_class_table(src) == table
        assert src.colormap(1)[5][:3] == table.by_id(5).rgb


def test_atomic_outputs_get_normal_permissions(tmp_path):
    import os
    import stat

    from geoseg.io.outputs import atomic_path

    target = tmp_path / "model.bin"
    with atomic_path(target) as tmp:
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    assert stat.S_IMODE(target.stat().st_mode) & stat.S_IROTH
