"""Training and evaluation tiles: normalized imagery with class-index masks, and batching."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from geoseg.classes import IGNORE_INDEX
from geoseg.data.datasets import EvalTile, GridDataset, ImageryDataset, inside_mask, query_box
from geoseg.data.labels import (
    LabelReader,
    RasterInstances,
    RasterLabelDataset,
    VectorInstances,
    VectorLabelDataset,
)
from geoseg.instances.encoding import EncodeParams, encode
from geoseg.io.grid import Box, Grid
from geoseg.vectorize.label import label_regions


class SegmentationDataset(GridDataset):
    """Training/evaluation tiles of one split: normalized imagery and class-index masks.

    The torchgeo index holds the split's regions, so torchgeo samplers draw tiles inside
    them. Pixels outside the regions, at imagery no-data, at label no-data or at ignored
    label values get ``IGNORE_INDEX`` in the mask, so a tile straying past its region
    (GridGeoSampler's last row/column) never scores pixels of another split.

    Args:
        imagery: the imagery dataset.
        labels: the label dataset.
        label_reader: maps raw label values to class indices.
        regions: the split's regions (boxes in the grid's CRS); pixels are scored only
            inside them.
        index_boxes: the boxes samplers draw from (default: ``regions``).
        mean: per-band mean used for normalization.
        std: per-band standard deviation.
        transform: optional callable applied to each sample (augmentation).
        instances: instance and panoptic tasks: where object ids come from
            (:func:`geoseg.data.labels.open_instances`); samples then also hold
            ``instances`` (int64 ids 1..n of the tile's objects, 0 = none) and
            ``instance_maps`` (uint8 footprint / boundary / contact targets).
        encode: how ``instance_maps`` are made (:class:`geoseg.instances.EncodeParams`).
    """

    def __init__(
        self,
        imagery: ImageryDataset,
        labels: RasterLabelDataset | VectorLabelDataset,
        label_reader: LabelReader,
        regions: Sequence[Box],
        *,
        index_boxes: Sequence[Box] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        instances: VectorInstances | RasterInstances | None = None,
        encode: EncodeParams | None = None,
    ) -> None:
        self.imagery = imagery
        self.instances = instances
        self.encode = encode or EncodeParams()
        self.labels = labels
        self.label_reader = label_reader
        self.regions = list(regions)
        n = len(imagery.band_names)
        self.mean = np.asarray(mean if mean is not None else [0.0] * n, dtype=np.float64)
        self.std = np.asarray(std if std is not None else [1.0] * n, dtype=np.float64)
        self.transform = transform
        self._init_index(list(index_boxes if index_boxes is not None else regions), imagery.grid)

    def read_raw(
        self, box: Box, *, score: Sequence[Box] | None = None, grid: Grid | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(raw values (C, H, W), image valid (H, W), mask (H, W) int64)`` of ``box``.

        Args:
            box: the area to read.
            score: boxes whose pixels may be scored (default: the split's regions).
            grid: read on this coarsened working grid instead (quick scans).
        """
        g = grid or self.grid
        values, ivalid = self.imagery.read(box, grid=grid)
        lvalues, lvalid = self.labels.read(box, grid=grid)
        mask = self.label_reader.to_indices(lvalues, lvalid)
        mask[~ivalid] = IGNORE_INDEX
        regions = self.regions if score is None else score
        mask[~inside_mask(g, box, regions)] = IGNORE_INDEX
        return values, ivalid, mask

    def __getitem__(self, query: Any) -> dict[str, Any]:
        if isinstance(query, EvalTile):
            box, score = query.box, query.score
        else:
            box, score = query_box(query), None
        values, ivalid, mask = self.read_raw(box, score=score)
        image = (values - self.mean[:, None, None]) / self.std[:, None, None]
        image[:, ~ivalid] = 0.0
        sample = {
            "image": torch.from_numpy(image.astype(np.float32)),
            "mask": torch.from_numpy(mask),
            "bounds": torch.tensor(box, dtype=torch.float64),
        }
        if self.instances is not None:
            ids = tile_objects(self.instances.read_instances(box), mask, self.thing_index)
            sample["instances"] = torch.from_numpy(ids)
        if self.transform is not None:
            sample = self.transform(sample)
        if self.instances is not None:
            ids = sample["instances"].numpy()
            sample["instance_maps"] = torch.from_numpy(encode(ids, self.encode))
        return sample

    @property
    def thing_index(self) -> np.ndarray:
        """Class indices (mask values) of the thing classes."""
        classes = self.label_reader.classes
        return np.asarray([k for k, c in enumerate(classes) if c.thing], dtype=np.int64)


def tile_objects(ids: np.ndarray, mask: np.ndarray, thing_index: np.ndarray) -> np.ndarray:
    """The objects of one tile, numbered 1..n in row-major order (0 = none).

    Only pixels whose class (``mask``) is a thing class keep an object; every
    4-connected part of an id is its own object (an id reused for disconnected parts,
    or an object cut by the tile's edge into pieces, gives one object per part).
    """
    keep = (ids > 0) & np.isin(mask, thing_index)
    labels, _ = label_regions(ids, keep, 4)
    return labels.astype(np.int64)


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch (tensors stacked, other values listed)."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        if isinstance(vals[0], torch.Tensor):
            # numpy's single-threaded copy: torch.stack's thread pool is slow on busy CPUs
            if all(v.device.type == "cpu" and not v.requires_grad for v in vals):
                out[key] = torch.from_numpy(np.stack([v.numpy() for v in vals]))
            else:
                out[key] = torch.stack(vals)
        else:
            out[key] = vals
    return out
