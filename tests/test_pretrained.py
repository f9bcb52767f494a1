"""Pretrained encoders from local files and named torchgeo weights, never downloaded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from geoseg.errors import CheckpointError, ConfigError, InputFileError
from geoseg.models.outputs import class_scores
from geoseg.models.registry import build_model
from geoseg.models.weights import band_key, resolve_weights

sys.path.insert(0, str(Path(__file__).parent))

NAME = "ResNet18_Weights.SENTINEL2_ALL_MOCO"
S2 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8a", "B9", "B10", "B11", "B12"]


@pytest.fixture
def torch_cache(tmp_path, monkeypatch):
    """A local torch hub cache holding the file torchgeo caches NAME as: a timm resnet18
    with a 13-band first layer (random values, as the real SSL4EO weights are shaped)."""
    import timm
    import torchgeo.models as tgm

    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    url = tgm.ResNet18_Weights.SENTINEL2_ALL_MOCO.url
    path = hub / "checkpoints" / url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    state = timm.create_model("resnet18", in_chans=13, num_classes=0).state_dict()
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("encoder", ["resnet18", "tu-resnet18"])
def test_torchgeo_weights_load_with_the_first_layer_matched_to_the_bands(torch_cache, encoder):
    path, state = torch_cache
    bands = ["B02", "B03", "B04", "B08", "VV"]  # VV: a Sentinel-1 band the weights lack
    record: list = []
    with pytest.warns(UserWarning, match=r"bands \['VV'\] are not among the bands"):
        model = build_model("unet", in_channels=5, outputs=[class_scores(3)], encoder=encoder,
                            encoder_weights=NAME, band_names=bands, record=record)  # fmt: skip
    enc = model.encoder.state_dict()
    prefix = "model." if encoder.startswith("tu-") else ""
    conv1 = enc[prefix + "conv1.weight"]
    src = state["conv1.weight"]
    for j, i in enumerate([1, 2, 3, 7]):  # B2, B3, B4, B8 in the weights' band order
        assert torch.equal(conv1[:, j], src[:, i])
    assert torch.allclose(conv1[:, 4], src.mean(dim=1))  # VV: the mean kernel
    assert torch.equal(enc[prefix + "layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])
    (rec,) = record
    assert rec.source == NAME and rec.file == str(path) and len(rec.sha256) == 64
    assert rec.bands_from_weights == ["B02", "B03", "B04", "B08"]
    assert rec.bands_initialized == ["VV"] and rec.tensors_loaded >= 60


def test_missing_torchgeo_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(InputFileError) as err:
        resolve_weights(NAME)
    text = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints") in text and "https://" in text
    assert "never downloads" in text and "download_weights" in text
    assert not (tmp_path / "hub").exists()  # nothing was fetched
    with pytest.raises(ConfigError, match="has no member 'SENTINEL9'"):
        resolve_weights("ResNet18_Weights.SENTINEL9")
    with pytest.raises(ConfigError, match="torchgeo has no weights 'ResNet19_Weights'"):
        resolve_weights("ResNet19_Weights.SENTINEL2_ALL_MOCO")
    with pytest.raises(ConfigError, match="never downloads hub weights"):
        resolve_weights("imagenet")


def test_training_starts_from_the_weights_and_the_checkpoint_records_them(torch_cache, tmp_path):
    from _fake_dm import FakeDataModule

    from geoseg.models import read_metadata
    from geoseg.training import train

    dm = FakeDataModule()
    dm.band_names = ["B4", "B8"]
    cfg = {"model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": NAME,
                     "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}},
           "training": {"max_epochs": 1, "progress_bar": False}}  # fmt: skip
    res = train(cfg, output_dir=tmp_path / "run", datamodule=dm)
    meta = read_metadata(res.checkpoint)
    assert meta.pretrained["source"] == NAME
    assert meta.pretrained["bands_from_weights"] == ["B4", "B8"]
    assert meta.pretrained["bands_initialized"] == []
    assert meta.config["model"]["encoder_weights"] == NAME


def test_weights_of_another_architecture_or_band_count_are_refused(tmp_path):
    import timm

    r50 = tmp_path / "resnet50.pth"
    torch.save(timm.create_model("resnet50", num_classes=0).state_dict(), r50)
    with pytest.raises(CheckpointError, match=r"another (architecture|depth)"):
        build_model("unet", in_channels=3, outputs=[class_scores(2)], encoder="resnet18",
                    encoder_weights=r50)  # fmt: skip
    bands13 = tmp_path / "r18_13.pth"
    torch.save(timm.create_model("resnet18", in_chans=13, num_classes=0).state_dict(), bands13)
    with pytest.raises(CheckpointError, match="do not say which bands"):
        build_model("unet", in_channels=4, outputs=[class_scores(2)], encoder="resnet18",
                    encoder_weights=bands13, band_names=["a", "b", "c", "d"])  # fmt: skip
    vit = tmp_path / "vit.pth"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, vit)
    with pytest.raises(CheckpointError, match="another architecture"):
        build_model("unet", in_channels=3, outputs=[class_scores(2)], encoder="resnet18",
                    encoder_weights=vit)  # fmt: skip
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(CheckpointError, match="cannot read weights file"):
        build_model("unet", in_channels=3, outputs=[class_scores(2)], encoder="resnet18",
                    encoder_weights=bad)  # fmt: skip


def test_band_names_compare_loosely():
    assert band_key("B02") == band_key("b2") == "B2"
    assert band_key("B8a") == band_key("B08A") == "B8A"
    assert band_key("red") == "RED"


def test_mask2former_starts_from_a_swin_weights_file(tmp_path):
    """A transformers SwinModel state dict (keys without the backbone's ``swin.`` prefix)
    loads into Mask2Former's Swin backbone; a file for other bands is refused."""
    from safetensors.torch import save_file

    from geoseg.classes import ClassInfo, ClassTable

    names = ("background", "tree", "water")
    classes = ClassTable([ClassInfo(i, n, "#000000") for i, n in enumerate(names)])
    kw = {"num_queries": 8, "backbone": {"embed_dim": 32, "depths": [1, 1, 2, 1]}}

    def m2f(bands: int, **extra):
        return build_model("mask2former", in_channels=bands, outputs=[class_scores(3)],
                           encoder="swin", kwargs=kw, classes=classes, **extra)  # fmt: skip

    torch.manual_seed(1)
    # the SwinModel inside the backbone (the backbone adds per-stage output norms)
    donor = {k: v for k, v in m2f(3).encoder.state_dict().items() if k.startswith("swin.")}
    assert len(donor) > 20
    path = tmp_path / "swin_tiny.safetensors"
    save_file({k[len("swin.") :]: v.contiguous() for k, v in donor.items()}, str(path))
    torch.manual_seed(2)
    record: list = []
    model = m2f(3, encoder_weights=str(path), record=record)
    got = model.encoder.state_dict()
    loaded = [k for k in donor if k in got and torch.equal(got[k], donor[k])]
    assert len(loaded) >= 0.9 * len(donor)  # buffers such as relative indices agree anyway
    first = "swin.embeddings.patch_embeddings.projection.weight"
    assert torch.equal(got[first], donor[first])
    assert record[0].file == str(path) and record[0].tensors_loaded >= 0.9 * len(donor)
    # the rest of the network is not touched: a fresh seed-2 model has the same decoder
    torch.manual_seed(2)
    fresh = m2f(3).state_dict()
    dec = [k for k in fresh if "transformer_module" in k and k.endswith("weight")]
    assert dec and all(torch.equal(model.state_dict()[k], fresh[k]) for k in dec)
    with pytest.raises(CheckpointError, match="do not say which bands"):
        m2f(4, encoder_weights=str(path))
