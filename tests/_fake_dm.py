"""A tiny in-memory LightningDataModule with the GeoDataModule interface (for tests)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from geoseg.classes import IGNORE_INDEX, ClassTable

CLASSES = ClassTable.from_config(
    [
        {"id": 1, "name": "dark", "color": "#000000"},
        {"id": 2, "name": "mid", "color": "#808080"},
        {"id": 5, "name": "bright", "color": "#ffffff"},
    ]
)


class _Tiles(Dataset):
    def __init__(self, n: int, size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        # class = which tertile of a smooth random field band 0 falls in (balanced
        # classes: a model has to learn the two thresholds); band 1 is noise
        raw = torch.rand(n, 1, size, size, generator=g)
        smooth = torch.nn.functional.avg_pool2d(raw, 5, stride=1, padding=2)
        smooth = (smooth - smooth.mean()) / smooth.std()
        lo, hi = -0.4307, 0.4307  # tertiles of a standard normal
        self.mask = ((smooth[:, 0] > lo).long() + (smooth[:, 0] > hi).long()).long()
        noise = torch.randn(n, 1, size, size, generator=g)
        self.image = torch.cat([smooth, noise], dim=1).float()
        self.mask[:, :2, :] = IGNORE_INDEX  # a strip of no-data
        self.raw = self.image * 10 + 100

    def __len__(self) -> int:
        return len(self.mask)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.image[i], "mask": self.mask[i]}


class FakeDataModule(pl.LightningDataModule):
    classes = CLASSES
    image_nodata = -9999.0
    resolution = 30.0
    crs = "EPSG:32119"

    def __init__(self, n: int = 8, tile_size: int = 32, batch_size: int = 4) -> None:
        super().__init__()
        self.band_names = ["b1", "b2"]
        self.mean = [100.0, 100.0]
        self.std = [10.0, 10.0]
        self.tile_size = tile_size
        self.batch_size = batch_size
        self.sets = {
            "train": _Tiles(n, tile_size, 0),
            "val": _Tiles(max(2, n // 4), tile_size, 1),
            "test": _Tiles(max(2, n // 4), tile_size, 2),
        }

    def setup(self, stage: str | None = None) -> None:
        pass

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.sets[split], batch_size=self.batch_size, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def split_pixels(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self.sets[split]
        x = ds.raw.permute(0, 2, 3, 1).reshape(-1, 2)
        y = ds.mask.reshape(-1)
        keep = y != IGNORE_INDEX
        return x[keep].numpy(), y[keep].numpy()
