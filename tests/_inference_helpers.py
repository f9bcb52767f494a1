"""Shared fixtures helpers for the inference tests (tiny models, whole-scene reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch

from geoseg.classes import ClassTable
from geoseg.models import ModelMetadata, create_model, load_model, save_checkpoint

DATA = Path(__file__).parents[1] / "data"
RGB = DATA / "unlabeled-rgb" / "RGB.byte.tif"


def tiny_checkpoint(path: Path, *, bands=("R", "G", "B"), seed: int = 0, tile: int = 64) -> Path:
    torch.manual_seed(seed)
    kw = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}
    model = create_model("unet", in_channels=len(bands), num_classes=4, encoder="resnet18", **kw)
    meta = ModelMetadata(
        arch="unet",
        encoder="resnet18",
        bands=list(bands),
        mean=[80.0] * len(bands),
        std=[40.0] * len(bands),
        classes=ClassTable.from_config(
            [
                {"id": 1, "name": "water"},
                {"id": 2, "name": "forest"},
                {"id": 5, "name": "urban"},
                {"id": 7, "name": "crop"},
            ]
        ),
        tile_size=tile,
        model_kwargs=kw,
    )
    return save_checkpoint(model, meta, path)


def whole_scene(checkpoint: Path, image: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reference: the model on the whole scene in one window -> (class ids, valid)."""
    model, meta = load_model(checkpoint)
    with rasterio.open(image) as src:
        data = src.read(out_dtype="float32")
        valid = np.all(src.read_masks() > 0, axis=0)
    mean = np.asarray(meta.mean, np.float32)[:, None, None]
    std = np.asarray(meta.std, np.float32)[:, None, None]
    x = (data - mean) / std
    x[:, ~valid] = 0
    h, w = valid.shape
    f = 8
    ph, pw = -h % f, -w % f
    x = np.pad(x, ((0, 0), (0, ph), (0, pw)))
    with torch.inference_mode():
        p = torch.softmax(model(torch.from_numpy(x)[None]), 1)[0, :, :h, :w].numpy()
    ids = np.asarray(meta.classes.ids)[p.argmax(0)]
    return ids, valid
