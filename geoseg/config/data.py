"""Typed configuration of the data layer: the ``data:`` section of a geoseg YAML file.

Every key of the YAML section is a field of :class:`DataConfig` (nested sections are the
other dataclasses of this module), so a typo'd key anywhere raises
:class:`~geoseg.errors.ConfigError` naming the key and the valid keys::

    from geoseg.config import from_mapping
    cfg = from_mapping(DataConfig, yaml_dict["data"], "data")

Units: sizes called ``*_size``, ``buffer`` and ``stride`` are in **pixels** of the imagery
grid; bounding boxes (``val_boxes``, ``test_boxes``) are in **CRS units** of the imagery grid.

Examples (the three bundled samples)::

    data:                       # one file per band, class raster in a twin CRS
      imagery:
        paths: [data/nc-landsat7-landcover/lsat7_2000_10.tif, ..._20.tif, ..., ..._70.tif]
        stack: bands
        band_names: [B1, B2, B3, B4, B5, B7]
      labels: {path: data/nc-landsat7-landcover/strata.tif}
      classes: [{id: 1, name: developed, color: "#e31a1c"}, ...]
      split: {method: blocks, block_size: 128, val_fraction: 0.2, test_fraction: 0.2}

    data:                       # one multi-band file, -1 = no label
      imagery: {paths: data/sen1floods11-spain-water/S2/Spain_7370579_S2Hand.tif}
      labels:
        path: data/sen1floods11-spain-water/Labels/Spain_7370579_LabelHand.tif
        ignore_values: [-1]
      classes: [{id: 0, name: land}, {id: 1, name: water}]

    data:                       # a mosaic of chips, building polygons burnt on the fly
      imagery: {paths: data/spacenet1-rio-buildings/3band, nodata: 0, nodata_mode: all}
      labels:
        path: data/spacenet1-rio-buildings/vectorData/geoJson
        background: 0           # pixels outside polygons are class 0 (else ignored)
      classes: [{id: 0, name: background}, {id: 1, name: building}]

Relative paths: a relative path (or glob) is looked up, in order, against ``data.root``
when given, the current working directory, and the folder of the YAML file the config
was read from; the first folder where it matches wins. A relative ``data.root`` is
relative to that YAML file's folder. geoseg never looks inside its own installation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from geoseg.classes import ClassTable
from geoseg.config.base import check_class_ids, check_rules

#: Most random training tiles per epoch (``data.train_samples``): more would run for
#: days per epoch, which is never what a config means.
MAX_TRAIN_SAMPLES = 100_000_000
#: Most DataLoader worker processes (``data.num_workers``).
MAX_LOADER_WORKERS = 256
#: Largest evaluation grid stride in pixels (``data.eval_stride``).
MAX_EVAL_STRIDE = 65536


@dataclass
class ImageryConfig:
    """Where the imagery is and how its files combine into one multi-band scene.

    Attributes:
        paths: a file, a folder (all ``*.tif``/``*.tiff`` inside), a glob, or a list of
            these.
        stack: ``"mosaic"``: every file holds all bands and the files tile the scene
            (one file is the simplest mosaic); ``"bands"``: each file holds one band (or
            a few) and they are stacked in the order given, e.g. the six Landsat files of
            the North Carolina sample. Files may differ in dtype and no-data value.
        bands: 1-based band numbers to read from every file (``"mosaic"`` only); None
            reads all bands.
        band_names: one name per output band; None gives ``B1, B2, ...`` (or the band
            descriptions stored in the files when every band has one).
        nodata: no-data value of the imagery, overriding the files' tags (e.g. ``0`` for
            SpaceNet chips, whose black collar has no tag). None uses each file's tag.
        nodata_mode: ``"any"``: a pixel is no-data when any band is no-data (default);
            ``"all"``: only when every band is (RGB chips where a dark pixel may be 0 in
            one band).
        resampling: rasterio resampling name used only when a file must be reprojected
            onto the imagery grid (``"bilinear"``, ``"nearest"``, ``"cubic"``, ...).
    """

    paths: list[str] | str
    stack: Literal["mosaic", "bands"] = "mosaic"
    bands: list[int] | None = None
    band_names: list[str] | None = None
    nodata: float | None = None
    nodata_mode: Literal["any", "all"] = "any"
    resampling: str = "bilinear"


@dataclass
class LabelConfig:
    """Where the labels are: a class raster, or vector polygons rasterized on the fly.

    Attributes:
        path: raster (``.tif``) or vector (``.geojson``, ``.gpkg``, ``.shp``, ...) file,
            folder, glob, or a list of these. Several raster files form a mosaic; several
            vector files are concatenated.
        nodata: label value meaning "no label", overriding the raster's nodata tag.
        ignore_values: label values excluded from loss and metrics (e.g. ``[-1]`` for
            Sen1Floods11 "no data"). They become ``IGNORE_INDEX`` in masks.
        class_field: vector labels: the attribute holding each feature's class id (or
            class name, matched to data.classes case-insensitively). None
            burns ``burn_value`` for every feature.
        burn_value: vector labels: the class id burnt for every feature when
            ``class_field`` is None. None: the one class that is not ``background``.
        background: vector labels: class id of pixels that no polygon covers. None marks
            them ignored (sparse training polygons); set it (e.g. ``0``) for dense
            labels such as building footprints.
        all_touched: vector labels: burn every pixel a polygon touches, not only pixels
            whose centre it covers (rasterio ``all_touched``).
        layer: vector labels: the layer of a multi-layer file (GeoPackage).
        instances: instance and panoptic tasks with raster labels: the instance-id
            raster(s) (an integer per object, 0 = none) on the grid of ``path``, whose
            class raster gives each object's class. With vector labels every feature is
            one object and this stays None.
    """

    path: list[str] | str
    nodata: float | None = None
    ignore_values: list[float] = field(default_factory=list)
    class_field: str | None = None
    burn_value: int | None = None
    background: int | None = None
    all_touched: bool = False
    layer: str | None = None
    instances: list[str] | str | None = None


@dataclass
class NormalizationConfig:
    """Per-band normalization ``(x - mean) / std``.

    Attributes:
        mean: one value per band; None computes it from the training split's valid
            pixels.
        std: one value per band; None computes it (as ``mean``).
        max_pixels: at most this many training pixels are read to compute the
            statistics (regions are subsampled on a regular pixel lattice beyond it).
    """

    mean: list[float] | None = None
    std: list[float] | None = None
    max_pixels: int = 20_000_000


@dataclass
class SplitConfig:
    """Spatial train/val/test split: whole regions, never random pixels.

    Attributes:
        method: ``"blocks"``: the scene is cut into square blocks of ``block_size``
            pixels; whole blocks are assigned (seeded, in proportion to their valid
            labelled pixels) to val and test, the rest to train. ``"strips"``: three
            contiguous strips along ``axis`` (train | val | test). ``"boxes"``: val and
            test are the explicit ``val_boxes``/``test_boxes``; train is the rest.
        val_fraction: share of valid labelled pixels for validation (blocks, strips).
        test_fraction: share for test (blocks, strips).
        block_size: block side in pixels (blocks); None is 4 x ``tile_size``, less on
            scenes too small for 3 x 3 such blocks (never below ``tile_size``).
        axis: strips: ``"x"`` (west-east), ``"y"`` (north-south) or ``"auto"`` (the
            longer side of the scene).
        buffer: pixels removed from the train region around val and test regions, so
            train pixels are at least this far from any val/test pixel.
        val_boxes: boxes ``[minx, miny, maxx, maxy]`` in CRS units (boxes).
        test_boxes: boxes ``[minx, miny, maxx, maxy]`` in CRS units (boxes).
        seed: seed of the block assignment.
    """

    method: Literal["blocks", "strips", "boxes"] = "blocks"
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    block_size: int | None = None
    axis: Literal["auto", "x", "y"] = "auto"
    buffer: int = 0
    val_boxes: list[list[float]] | None = None
    test_boxes: list[list[float]] | None = None
    seed: int = 0


@dataclass
class AugmentConfig:
    """Training-only augmentation, applied to image and mask together.

    Attributes:
        flips: random horizontal and vertical flips.
        rotate90: random rotations by multiples of 90 degrees (exact, no resampling).
        photometric: random per-band brightness/contrast jitter of the image.
        brightness: largest brightness shift, in normalized (standard-deviation) units.
        contrast: largest relative contrast change (0.1 = +-10 %).
    """

    flips: bool = True
    rotate90: bool = True
    photometric: bool = False
    brightness: float = 0.1
    contrast: float = 0.1


@dataclass
class DataConfig:
    """The ``data:`` section: imagery, labels, classes, tiling, splits and loaders.

    Attributes:
        imagery: see :class:`ImageryConfig`.
        labels: see :class:`LabelConfig`.
        classes: the class table: a list of ``{id, name, color}`` (see
            :meth:`geoseg.classes.ClassTable.from_config`).
        normalization: see :class:`NormalizationConfig`.
        split: see :class:`SplitConfig`.
        augment: see :class:`AugmentConfig`.
        tile_size: tile side in pixels.
        batch_size: tiles per batch.
        train_samples: random training tiles per epoch (1 to 100000000).
        train_sampler: ``"random"`` (torchgeo RandomGeoSampler) or ``"random_batch"``
            (RandomBatchGeoSampler: each batch from one region).
        eval_stride: stride in pixels of the val/test grid tiles; None = ``tile_size``
            (no overlap).
        min_valid_fraction: tiles whose share of valid labelled pixels is not above this
            are skipped (all-no-data tiles are always skipped).
        num_workers: DataLoader worker processes (0 = load in the main process).
        crs: CRS of the working grid; None = the first imagery file's CRS.
        resolution: pixel size of the working grid in CRS units; None = the first
            imagery file's.
        root: folder that relative paths are resolved against first (see module doc).
    """

    imagery: ImageryConfig
    labels: LabelConfig
    classes: Any
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tile_size: int = 64
    batch_size: int = 8
    train_samples: int = 400
    train_sampler: str = "random"
    eval_stride: int | None = None
    min_valid_fraction: float = 0.0
    num_workers: int = 0
    crs: str | None = None
    resolution: float | None = None
    root: str | None = None

    def __post_init__(self) -> None:
        """Sizes and class ids are checked here, before they size a run."""
        nw, st, f = self.num_workers, self.eval_stride, self.min_valid_fraction
        check_rules("data", self, {
            "train_samples": (
                not isinstance(self.train_samples, int)
                or 1 <= self.train_samples <= MAX_TRAIN_SAMPLES,
                f"an integer from 1 to {MAX_TRAIN_SAMPLES} (random tiles per epoch)",
            ),
            # clear errors, not torch's traceback, a silent default or an indirect error
            "num_workers": (
                not isinstance(nw, int) or 0 <= nw <= MAX_LOADER_WORKERS,
                f"an integer from 0 (load in the main process) to {MAX_LOADER_WORKERS} "
                "(DataLoader worker processes)",
            ),
            "eval_stride": (
                not isinstance(st, int) or 1 <= st <= MAX_EVAL_STRIDE,
                f"an integer from 1 to {MAX_EVAL_STRIDE} pixels, or left out (null) for the "
                "tile size",
            ),
            "min_valid_fraction": (
                not isinstance(f, float) or (math.isfinite(f) and 0.0 <= f < 1.0),
                "a share from 0 to below 1 (tiles with no more valid labelled pixels than "
                "this are skipped)",
            ),
        })  # fmt: skip
        check_class_ids(self.classes, "data.classes")

    def class_table(self) -> ClassTable:
        """The :class:`~geoseg.classes.ClassTable` described by ``classes``."""
        return ClassTable.from_config(self.classes, "data.classes")
