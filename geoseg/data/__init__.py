"""Data layer: torchgeo datasets, spatial splits, normalization and the Lightning module.

Typical use::

    from geoseg.config import from_mapping, load_yaml
    from geoseg.data import DataConfig, GeoDataModule

    cfg = from_mapping(DataConfig, load_yaml("configs/nc.yaml")["data"], "data")
    dm = GeoDataModule(cfg, seed=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))  # {"image", "mask", "bounds"}
"""

from geoseg.config.data import (
    AugmentConfig,
    DataConfig,
    ImageryConfig,
    LabelConfig,
    NormalizationConfig,
    SplitConfig,
)
from geoseg.data.datamodule import GeoDataModule
from geoseg.data.datasets import ImageryDataset
from geoseg.data.labels import RasterLabelDataset, VectorLabelDataset
from geoseg.data.samplers import TRAIN_SAMPLERS
from geoseg.data.tiles import SegmentationDataset, collate
from geoseg.data.transforms import Augment

__all__ = [
    "TRAIN_SAMPLERS",
    "Augment",
    "AugmentConfig",
    "DataConfig",
    "GeoDataModule",
    "ImageryConfig",
    "ImageryDataset",
    "LabelConfig",
    "NormalizationConfig",
    "RasterLabelDataset",
    "SegmentationDataset",
    "SplitConfig",
    "VectorLabelDataset",
    "collate",
]
