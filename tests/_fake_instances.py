"""An in-memory data module of touching rectangles (instance learnability check)."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from geoseg.classes import ClassTable
from geoseg.instances import EncodeParams, encode
from geoseg.testing import touching_rectangles

CLASSES = ClassTable.from_config(
    [{"id": 0, "name": "background"}, {"id": 1, "name": "building", "thing": True}]
)


class _Scenes(Dataset):
    def __init__(self, n: int, seed: int, size: int, augment: bool) -> None:
        self.items = []
        for i in range(n):
            image, ids = touching_rectangles(size, seed=seed * 10_000 + i)
            self.items.append((image, ids))
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, ids = self.items[i]
        if self.augment:
            k = int(self.rng.integers(4))
            image, ids = np.rot90(image, k, (1, 2)), np.rot90(ids, k)
            if self.rng.random() < 0.5:
                image, ids = image[..., ::-1], ids[..., ::-1]
        image, ids = np.ascontiguousarray(image), np.ascontiguousarray(ids)
        return {
            "image": torch.from_numpy((image - 0.5) / 0.3),
            "mask": torch.from_numpy((ids > 0).astype(np.int64)),
            "instances": torch.from_numpy(ids),
            "instance_maps": torch.from_numpy(encode(ids, EncodeParams(1, 2))),
        }


class RectanglesDataModule(pl.LightningDataModule):
    classes = CLASSES
    image_nodata = None
    resolution = 0.5
    crs = "EPSG:32618"

    def __init__(self, n_train: int = 64, n_eval: int = 12, size: int = 64) -> None:
        super().__init__()
        self.band_names = ["r", "g", "b"]
        self.mean = [0.5, 0.5, 0.5]
        self.std = [0.3, 0.3, 0.3]
        self.tile_size = size
        self.sets = {
            "train": _Scenes(n_train, 1, size, True),
            "val": _Scenes(n_eval, 2, size, False),
            "test": _Scenes(n_eval, 3, size, False),
        }

    def setup(self, stage: str | None = None) -> None:
        pass

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["train"], batch_size=8, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["val"], batch_size=8)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["test"], batch_size=8)
