"""The Lightning data module: config -> datasets, spatial splits, statistics, loaders."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import shapely
import torch
from torch.utils.data import DataLoader, Sampler

from geoseg.classes import IGNORE_INDEX, ClassTable
from geoseg.config.data import DataConfig
from geoseg.data.datasets import EvalTile, ImageryDataset, query_box
from geoseg.data.labels import (
    LabelReader,
    RasterInstances,
    RasterLabelDataset,
    VectorInstances,
    VectorLabelDataset,
    open_instances,
    open_labels,
)
from geoseg.data.normalization import band_statistics, iter_chunks
from geoseg.data.samplers import TRAIN_SAMPLERS, grid_tiles
from geoseg.data.splits import (
    SPLITS,
    Coverage,
    compute_coverage,
    make_regions,
    pad_to,
    subtract,
)
from geoseg.data.tiles import SegmentationDataset, collate
from geoseg.data.transforms import Augment
from geoseg.errors import ConfigError, DataError
from geoseg.instances.encoding import EncodeParams
from geoseg.io.files import search_folders
from geoseg.io.grid import Box, Grid, intersect


class _ValidTiles(Sampler[Any]):
    """Wraps a torchgeo random sampler and skips tiles without valid labelled pixels.

    Random tiles over mostly no-data scenes (SpaceNet edge chips) would otherwise feed the
    model batches with nothing to learn from. Validity is looked up in the scene coverage
    (no data is read), and the epoch keeps its length.
    """

    def __init__(
        self, base: Any, coverage: Coverage, *, length: int, min_fraction: float, batched: bool
    ) -> None:
        self.base = base
        self.coverage = coverage
        self.length = length
        self.min_fraction = min_fraction
        self.batched = batched

    def keep(self, query: Any) -> bool:
        box = query_box(query)
        rows, cols = self.coverage.grid.shape(box)
        n = self.coverage.box_count(box)
        return n > 0 and n > self.min_fraction * rows * cols

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Any]:
        produced = tries = 0
        while produced < self.length:
            got_any = False
            for item in self.base:
                tries += 1
                if self.batched:
                    item = [q for q in item if self.keep(q)]
                    ok = bool(item)
                else:
                    ok = self.keep(item)
                if ok:
                    got_any = True
                    yield item
                    produced += 1
                    if produced >= self.length:
                        return
                if tries > 100 * self.length + 1000:
                    break
            if not got_any or tries > 100 * self.length + 1000:
                raise DataError(
                    "data: random training tiles almost never contain valid labelled pixels "
                    f"({produced} of {tries} draws); check data.imagery.nodata, the labels, "
                    "or lower data.min_valid_fraction"
                )


class GeoDataModule(lightning.LightningDataModule):
    """Tiles for training (random, train regions) and evaluation (grid, val/test regions).

    Args:
        config: the ``data`` section (:class:`~geoseg.config.DataConfig`).
        seed: seed of the random training tiles and of augmentation.
        base_dir: the folder of the config file (relative paths that match nothing in
            the working directory are looked up there; a relative ``root`` is relative
            to it). See :func:`geoseg.io.files.search_folders`.
        task: ``semantic``, or ``instance`` / ``panoptic``: samples then also hold the
            tile's objects and their footprint / boundary / contact targets.
        encode: how objects become targets (instance and panoptic tasks).

    Attributes available after :meth:`prepare_scene` (called by :meth:`setup`):
    ``classes``, ``band_names``, ``mean``, ``std``, ``image_nodata``, ``band_nodata``,
    ``crs``, ``resolution``, ``tile_size``, ``regions``, ``coverage``.
    """

    def __init__(
        self,
        config: DataConfig,
        *,
        seed: int = 0,
        base_dir: str | Path | None = None,
        task: str = "semantic",
        encode: EncodeParams | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, DataConfig):
            raise ConfigError(
                f"GeoDataModule needs a DataConfig, got {type(config).__name__}; build one "
                "with geoseg.config.from_mapping(DataConfig, data, 'data')"
            )
        if config.tile_size < 8:
            raise ConfigError(f"data.tile_size: {config.tile_size} px is too small (>= 8)")
        if config.batch_size < 1:
            raise ConfigError(f"data.batch_size: {config.batch_size} must be >= 1")
        if config.train_sampler not in TRAIN_SAMPLERS:
            raise ConfigError(
                f"data.train_sampler: unknown sampler {config.train_sampler!r}; valid names "
                f"are {sorted(TRAIN_SAMPLERS)}"
            )
        self.config = config
        self.seed = seed
        self.search = search_folders(config.root, base_dir)
        self.task = task
        self.encode = encode
        self.instances: VectorInstances | RasterInstances | None = None
        self.classes: ClassTable = config.class_table()
        self.tile_size = config.tile_size
        self._prepared = False
        self.datasets: dict[str, SegmentationDataset] = {}
        self.regions: dict[str, list[Box]] = {}
        self._mean: list[float] | None = None
        self._std: list[float] | None = None

    # -- scene -------------------------------------------------------------------------
    def input_files(self) -> list[Path]:
        """The imagery and label files the scene is read from (outputs may be none)."""
        self.prepare_scene()
        files = [s.path for s in self.imagery.sources]
        if isinstance(self.labels, VectorLabelDataset):
            files += [Path(p) for p in self.labels.label_files]
        else:
            files += [s.path for s in self.labels.sources]
        return files

    def check_unchanged(self) -> None:
        """InputFileError when a raster of the scene changed on disk since it was opened.

        Each read checks its file and some of the files read through it (a VRT's tiles,
        in turn); a run calls this once it has read its data, before it keeps results,
        so a tile of a large VRT replaced during the run is caught too.
        """
        if not self._prepared:
            return
        for reader in (self.imagery, self.labels, self.instances):
            for source in getattr(reader, "sources", ()):
                source.check_unchanged()

    def prepare_scene(self) -> None:
        """Open imagery and labels, check them, scan the scene and compute the splits.

        Idempotent; :meth:`setup` calls it. Raises geoseg errors for missing files,
        non-overlapping inputs, unknown label values and empty training regions.
        """
        if self._prepared:
            return
        cfg = self.config
        self.imagery = ImageryDataset(
            cfg.imagery, bases=self.search, crs=cfg.crs, resolution=cfg.resolution
        )
        grid = self.imagery.grid
        self.grid = grid
        img_box = grid.snap(self.imagery.footprint)
        self.labels: RasterLabelDataset | VectorLabelDataset = open_labels(
            cfg.labels,
            grid,
            self.classes,
            extent=img_box,
            bases=self.search,
            imagery=self.imagery.sources,
        )
        label_box = (
            self.labels.vector_bounds
            if isinstance(self.labels, VectorLabelDataset)
            else self.labels.footprint
        )
        scene = intersect(img_box, label_box)
        if scene is None:
            raise DataError(
                "data: imagery and labels do not overlap: imagery bounds "
                f"{_fmt(img_box)} vs label bounds {_fmt(label_box)} in "
                f"{grid.crs.to_string()}; check that the label files cover the imagery "
                "(and that both carry the right CRS)"
            )
        if isinstance(self.labels, VectorLabelDataset) and self.labels.background is not None:
            scene = img_box
        scene = grid.snap(scene)
        self.label_reader = LabelReader(
            self.classes, cfg.labels.ignore_values, source=_label_source(self.labels)
        )
        if self.task in ("instance", "panoptic"):
            self.instances = open_instances(
                cfg.labels, self.labels, grid, self.classes, bases=self.search
            )
        whole = SegmentationDataset(self.imagery, self.labels, self.label_reader, [scene])
        self._whole = whole

        def read_mask(box: Box, grid: Grid | None) -> tuple[np.ndarray, np.ndarray]:
            _, ivalid, mask = whole.read_raw(box, grid=grid)
            return ivalid, mask

        cov = compute_coverage(read_mask, scene, grid, num_classes=len(self.classes))
        self.coverage = cov
        if cov.label_valid == 0:
            raise DataError(
                "data: imagery and labels have no valid pixel in common (imagery valid "
                f"pixels: {cov.image_valid}); check data.imagery.nodata, "
                "data.labels.nodata/ignore_values and that labels cover the imagery"
            )
        rows, cols = cov.shape
        if rows < cfg.tile_size or cols < cfg.tile_size:
            raise ConfigError(
                f"data.tile_size: {cfg.tile_size} px is larger than the scene "
                f"({rows} x {cols} px); use a smaller tile_size"
            )
        rects = make_regions(cfg.split, cov, tile_size=cfg.tile_size)
        n_train = sum(cov.count(r) for r in rects["train"])
        if n_train == 0:
            raise DataError(
                "data.split: the training region has no valid labelled pixel (all "
                "no-data or ignored); change the split (fractions, boxes, seed, block_size)"
                " or check the no-data settings"
            )
        self.region_rects = rects
        self.regions = {k: [cov.rect_box(r) for r in v] for k, v in rects.items()}
        self._prepared = True

    def _stats(self) -> tuple[list[float], list[float]]:
        if self._mean is None or self._std is None:
            self.prepare_scene()
            ncfg = self.config.normalization
            n = len(self.imagery.band_names)
            for key in ("mean", "std"):
                v = getattr(ncfg, key)
                if v is not None and len(v) != n:
                    raise ConfigError(
                        f"data.normalization.{key}: {len(v)} values for {n} bands "
                        f"{self.imagery.band_names}; give one per band"
                    )
            if ncfg.std is not None and any(s <= 0 for s in ncfg.std):
                raise ConfigError(f"data.normalization.std: values must be > 0, got {ncfg.std}")
            if ncfg.mean is None or ncfg.std is None:
                mean, std = band_statistics(
                    self.imagery.read,
                    self.regions["train"],
                    self.grid,
                    band_names=self.imagery.band_names,
                    max_pixels=ncfg.max_pixels,
                )
            else:
                mean, std = [], []
            self._mean = list(ncfg.mean) if ncfg.mean is not None else mean
            self._std = list(ncfg.std) if ncfg.std is not None else std
        return self._mean, self._std

    # -- public properties ----------------------------------------------------------------
    @property
    def band_names(self) -> list[str]:
        """Names of the image bands, in channel order."""
        self.prepare_scene()
        return list(self.imagery.band_names)

    @property
    def mean(self) -> list[float]:
        """Per-band mean (config or computed on the training split's valid pixels)."""
        return list(self._stats()[0])

    @property
    def std(self) -> list[float]:
        """Per-band standard deviation (config or computed on the training split)."""
        return list(self._stats()[1])

    @property
    def image_nodata(self) -> float | None:
        """The imagery no-data value shared by all bands (None when none or they differ)."""
        self.prepare_scene()
        return self.imagery.nodata

    @property
    def band_nodata(self) -> list[float | None]:
        """The no-data value of each band."""
        self.prepare_scene()
        return self.imagery.band_nodata

    @property
    def crs(self) -> str:
        """The working CRS (the imagery's unless ``data.crs``), as a string."""
        self.prepare_scene()
        crs = self.grid.crs
        return crs.to_string() if crs.to_epsg() is not None else crs.to_wkt()

    @property
    def resolution(self) -> float:
        """Pixel width in CRS units (see :attr:`resolution_xy` for both axes)."""
        self.prepare_scene()
        return float(self.grid.xres)

    @property
    def resolution_xy(self) -> tuple[float, float]:
        """(x, y) pixel size in CRS units, both positive."""
        self.prepare_scene()
        return (float(self.grid.xres), float(self.grid.yres))

    def region_bounds(self, split: str) -> list[Box]:
        """The regions of ``split`` (``"train"``, ``"val"``, ``"test"``) as CRS boxes."""
        self._check_split(split)
        self.prepare_scene()
        return list(self.regions[split])

    # -- datasets -----------------------------------------------------------------------
    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; valid splits are {list(SPLITS)}")

    def dataset(self, split: str) -> SegmentationDataset:
        """The :class:`SegmentationDataset` of ``split`` (built on first use)."""
        self._check_split(split)
        if split in self.datasets:
            return self.datasets[split]
        self.prepare_scene()
        mean, std = self._stats()
        rects = self.region_rects[split]
        if not rects:
            raise DataError(
                f"data.split: the {split} split is empty; raise data.split.{split}_fraction "
                "or give boxes for it"
            )
        cov = self.coverage
        limit = (cov.shape[1], cov.shape[0])
        if split == "train":
            # tiles must fit entirely inside a train region
            fit = [
                r for r in rects if r[2] - r[0] >= self.tile_size and r[3] - r[1] >= self.tile_size
            ]
            if not fit:
                raise DataError(
                    f"data.split: no train region is {self.tile_size} px wide and high; "
                    "use a larger data.split.block_size, a smaller buffer or a smaller tile_size"
                )
            index = [cov.rect_box(r) for r in fit]
            transform = Augment(self.config.augment) if self._augments() else None
        else:
            # GridGeoSampler skips index boxes smaller than a tile: pad them; the mask
            # still scores only pixels inside the split's regions.
            index = [cov.rect_box(pad_to(r, self.tile_size, limit)) for r in rects]
            transform = None
        ds = SegmentationDataset(
            self.imagery,
            self.labels,
            self.label_reader,
            self.regions[split],
            index_boxes=index,
            mean=mean,
            std=std,
            transform=transform,
            instances=self.instances,
            encode=self.encode,
        )
        self.datasets[split] = ds
        return ds

    def _augments(self) -> bool:
        a = self.config.augment
        return a.flips or a.rotate90 or a.photometric

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of a Lightning stage (``fit``, ``validate``, ``test``)."""
        stages = {
            None: ("train", "val", "test"),
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": (),
        }
        if stage not in stages:
            raise ConfigError(f"unknown stage {stage!r}; valid stages are {list(stages)}")
        self.prepare_scene()
        self._stats()
        for split in stages[stage]:
            if split == "test" and stage is None and not self.region_rects["test"]:
                continue
            self.dataset(split)

    # -- loaders ------------------------------------------------------------------------
    def _loader_kwargs(self) -> dict[str, Any]:
        nw = self.config.num_workers
        return {
            "num_workers": nw,
            "collate_fn": collate,
            "persistent_workers": nw > 0,
        }

    def train_dataloader(self) -> DataLoader[Any]:
        """Random tiles inside the train regions (``train_samples`` per epoch)."""
        ds = self.dataset("train")
        cfg = self.config
        spec = TRAIN_SAMPLERS[cfg.train_sampler]
        batched = spec.batched
        if batched:
            length = math.ceil(cfg.train_samples / cfg.batch_size)
            base = spec.build(
                ds,
                size=cfg.tile_size,
                batch_size=cfg.batch_size,
                length=length * cfg.batch_size,
                seed=self.seed,
            )
        else:
            length = cfg.train_samples
            base = spec.build(ds, size=cfg.tile_size, length=length, seed=self.seed)
        sampler = _ValidTiles(
            base,
            self.coverage,
            length=length,
            min_fraction=cfg.min_valid_fraction,
            batched=batched,
        )
        g = torch.Generator().manual_seed(self.seed)
        if batched:
            return DataLoader(ds, batch_sampler=sampler, generator=g, **self._loader_kwargs())
        return DataLoader(
            ds, sampler=sampler, batch_size=cfg.batch_size, generator=g, **self._loader_kwargs()
        )

    def eval_tiles(self, split: str) -> list[EvalTile]:
        """The val/test grid tiles of ``split``, each scoring every pixel once.

        Tiles come from torchgeo's ``GridGeoSampler`` (``GriddedPatchSampler`` in newer
        torchgeo) over the split's regions (stride ``eval_stride``); tiles without valid
        labelled pixels to score are dropped.
        """
        ds = self.dataset(split)
        stride = self.config.eval_stride or self.tile_size
        cov = self.coverage
        region_rects = self.region_rects[split]
        tiles: list[tuple[Any, Box, tuple[int, int, int, int]]] = []
        for q in grid_tiles(ds, size=self.tile_size, stride=stride):
            box = query_box(q)
            tiles.append((q, box, cov.box_rect(box)))
        tree = shapely.STRtree([shapely.box(*t[2]) for t in tiles])
        out: list[EvalTile] = []
        for i, (q, box, rect) in enumerate(tiles):
            inside = [r for r in (_clip(rect, rr) for rr in region_rects) if r is not None]
            if not inside:
                continue
            hits = tree.query(shapely.box(*rect), predicate="intersects")
            earlier = [tiles[int(j)][2] for j in hits if j < i]
            score = subtract(inside, earlier)
            if sum(cov.count(r) for r in score) == 0:
                continue
            out.append(EvalTile(q, box, tuple(cov.rect_box(r) for r in score)))
        return out

    def _eval_loader(self, split: str) -> DataLoader[Any]:
        ds = self.dataset(split)
        tiles = self.eval_tiles(split)
        if not tiles:
            raise DataError(f"data: the {split} region has no tile with valid labelled pixels")
        return DataLoader(
            ds,
            sampler=tiles,
            batch_size=self.config.batch_size,
            shuffle=False,
            **self._loader_kwargs(),
        )

    def val_dataloader(self) -> DataLoader[Any]:
        """Grid tiles over the val regions (no overlap unless ``eval_stride``)."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader[Any]:
        """Grid tiles over the test regions."""
        return self._eval_loader("test")

    # -- per-pixel access -----------------------------------------------------------------
    def split_pixels(
        self, split: str, *, max_pixels: int | None = None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """All valid labelled pixels of a split region, for per-pixel baselines.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            max_pixels: return at most this many pixels, a uniform random subset
                (reproducible with ``seed``); None returns all of them.
            seed: seed of the subset.

        Returns:
            ``(X, y)``: float32 (N, C) raw band values and int64 (N,) class indices.
        """
        self._check_split(split)
        self.prepare_scene()
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        ds = SegmentationDataset(self.imagery, self.labels, self.label_reader, self.regions[split])
        rng = np.random.default_rng(seed)
        expected = sum(self.coverage.count(r) for r in self.region_rects[split])
        keep = 1.0 if not max_pixels or expected <= max_pixels else 1.2 * max_pixels / expected
        for region in self.regions[split]:
            for box in iter_chunks(region, self.grid):
                values, ivalid, mask = ds.read_raw(box)
                ok = ivalid & (mask != IGNORE_INDEX)
                if keep < 1.0:
                    ok &= rng.random(ok.shape) < keep
                xs.append(values[:, ok].T.astype(np.float32))
                ys.append(mask[ok])
        n = len(self.imagery.band_names)
        if not xs:
            return np.zeros((0, n), dtype=np.float32), np.zeros(0, dtype=np.int64)
        X, y = np.concatenate(xs), np.concatenate(ys)
        if max_pixels and len(y) > max_pixels:
            pick = np.sort(rng.choice(len(y), size=max_pixels, replace=False))
            X, y = X[pick], y[pick]
        return X, y

    def class_pixel_counts(self, split: str) -> np.ndarray:
        """Valid labelled pixels per class index in ``split`` (e.g. for class weights)."""
        _, y = self.split_pixels(split)
        return np.bincount(y, minlength=len(self.classes))


def _fmt(box: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in box) + ")"


def _label_source(labels: RasterLabelDataset | VectorLabelDataset) -> str:
    if isinstance(labels, VectorLabelDataset):
        return ", ".join(p.name for p in labels.label_files[:3])
    return ", ".join(str(s.path) for s in labels.sources[:3])


def _clip(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> Any:
    c0, r0, c1, r1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (c0, r0, c1, r1) if c1 > c0 and r1 > r0 else None
