"""The end-to-end demo: real Landsat imagery -> class map -> polygons -> areas -> maps.

:func:`run_demo` is what ``geoseg demo`` (and ``make demo``) runs:

1. cut the bundled North Carolina Landsat 7 scene (six single-band files) into a
   multi-file mosaic of four overlapping GeoTIFF tiles;
2. predict it with the shipped model ``models/nc_landcover.safetensors`` through Dask
   (tiled, blended, with a progress bar), writing a class-map COG and a probability
   raster;
3. vectorize the class map into a GeoPackage and compute the area of every class;
4. draw a side-by-side PNG, an area chart and an offline interactive HTML map.

Every stage prints what it is doing; nothing waits silently.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from geoseg.arguments import check_flag, check_int
from geoseg.errors import ConfigError, DataError, InputFileError

#: The model the demo uses by default, trained by geoseg from ``configs/nc_landcover.yaml``:
#: relative to the working directory, as ``make demo`` runs it from a geoseg checkout
#: (the library never looks inside its own installation; pass ``model=`` elsewhere).
DEMO_MODEL = Path("models") / "nc_landcover.safetensors"
#: The North Carolina sample scene of a geoseg checkout (relative to the working
#: directory; pass ``data_dir=`` elsewhere).
NC_DIR = Path("data") / "nc-landsat7-landcover"
#: Landsat 7 ETM+ bands 1, 2, 3, 4, 5, 7 of the scene, one file each (GRASS band names).
NC_BAND_FILES = tuple(f"lsat7_2000_{b}.tif" for b in (10, 20, 30, 40, 50, 70))
NC_BAND_NAMES = ("B1", "B2", "B3", "B4", "B5", "B7")
#: Command that retrains the demo model (also in models/README.md and README.md).
RETRAIN_COMMAND = (
    "geoseg train configs/nc_landcover.yaml -o runs/nc_unet "
    "--set training.progress_bar=false --set training.num_threads=1 "
    "&& cp runs/nc_unet/model.safetensors models/nc_landcover.safetensors"
)
#: Output names, relative to the demo output folder.
OUTPUT_NAMES = {
    "mosaic": "mosaic",
    "classmap": "landcover.tif",
    "probabilities": "landcover_probabilities.tif",
    "polygons": "landcover.gpkg",
    "stats": "class_areas.csv",
    "chart": "class_areas.png",
    "figure": "side_by_side.png",
    "map": "map.html",
}


#: Written into each folder the demo fills: files of the demo's names there are its own,
#: replaced by a rerun; without it such files are the user's and the demo stops.
DEMO_MARK = ".geoseg-demo"


def _tile_name(r: int, c: int) -> str:
    return f"nc_landsat2000_r{r}c{c}.tif"


def _claim_folder(folder: Path, names: Sequence[str]) -> None:
    """Make ``folder`` the demo's (see :data:`DEMO_MARK`); OutputError when it is not."""
    from geoseg.errors import OutputError

    if folder.exists() and not folder.is_dir():
        raise OutputError(
            f"output {str(folder)!r} is a file; the demo writes a folder of outputs: give a "
            "new folder name (--output)"
        )
    if folder.is_dir() and not (folder / DEMO_MARK).exists():
        clash = [n for n in names if (folder / n).exists()]
        if clash:
            raise OutputError(
                f"{str(folder)!r} already holds {clash[:3]}, not written by geoseg demo; the "
                "demo replaces only its own outputs: choose another folder (--output)"
            )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEMO_MARK).write_text("written by geoseg demo: a rerun replaces its outputs here\n")


@dataclass
class DemoResult:
    """Where the demo wrote everything, and what the model scored on its test split.

    Attributes:
        output_dir: the demo output folder.
        tiles: the mosaic tiles the model predicted.
        classmap: class-map Cloud-Optimized GeoTIFF (class ids, colour table).
        probabilities: per-class probability GeoTIFF (uint8, p = v/254).
        polygons: GeoPackage of class polygons (class id, name, area).
        stats: CSV of area per class.
        chart: PNG bar chart of area per class.
        figure: PNG imagery | prediction | polygons.
        map: interactive offline HTML map.
        model: the checkpoint used.
        metrics: the model's test scores, read from its metadata.
        seconds: wall time of each stage.
    """

    output_dir: Path
    tiles: list[Path]
    classmap: Path
    probabilities: Path
    polygons: Path
    stats: Path
    chart: Path
    figure: Path
    map: Path
    model: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def make_nc_mosaic(
    output_dir: str | Path,
    *,
    grid: tuple[int, int] = (2, 2),
    overlap: int = 16,
    nodata: float = -99999.0,
    band_names: Sequence[str] = NC_BAND_NAMES,
    data_dir: str | Path = NC_DIR,
    overwrite: bool = True,
) -> list[Path]:
    """Stack the six NC Landsat band files and cut the stack into overlapping GeoTIFF tiles.

    The scene (489 x 443 px, 28.5 m, EPSG:32119) becomes ``rows x cols`` tiles that
    overlap their neighbours by ``overlap`` pixels: a real multi-file mosaic, as a
    prediction run over a large area would meet. A pixel is no-data in every band when
    any band is no-data there (band 7 is int16 with its own no-data value).

    Args:
        output_dir: folder for the tiles (created).
        grid: (rows, cols) of tiles.
        overlap: pixels shared by neighbouring tiles.
        nodata: no-data value written to the float32 tiles.
        band_names: six band descriptions written to the tiles (e.g. a model's band names).
        data_dir: the folder holding the six ``lsat7_2000_*.tif`` band files (default:
            ``data/nc-landsat7-landcover`` in the working directory).
        overwrite: replace existing tiles.

    Returns:
        The tile paths, row-major.
    """
    import rasterio
    from rasterio.windows import Window

    from geoseg.io.outputs import atomic_path

    out = Path(output_dir)
    names = [_tile_name(r, c) for r in range(grid[0]) for c in range(grid[1])]
    if overwrite:
        _claim_folder(out, names)  # never over tiles of the same names that are the user's
    out.mkdir(parents=True, exist_ok=True)
    arrays, valid, profile = [], None, None
    for name in NC_BAND_FILES:
        path = Path(data_dir) / name
        if not path.is_file():
            raise InputFileError(
                f"sample band file {str(path)!r} is missing (working directory "
                f"{str(Path.cwd())!r}); run from the root of a geoseg checkout, where "
                "data/nc-landsat7-landcover is, or pass data_dir= / --data DIR"
            )
        with rasterio.open(path) as src:
            band = src.read(1, masked=True)
            if profile is None:
                profile = src.profile.copy()
                shape = band.shape
            elif band.shape != shape:
                raise DataError(f"{str(path)!r} is {band.shape}, other bands are {shape}")
        arrays.append(band.filled(0).astype("float32"))
        ok = ~np.ma.getmaskarray(band)
        valid = ok if valid is None else valid & ok
    if profile is None or valid is None:
        raise InputFileError(f"no band files read from {str(data_dir)!r}")
    stack = np.stack(arrays)
    stack[:, ~valid] = nodata
    height, width = stack.shape[1:]
    rows, cols = grid
    row_edges = np.linspace(0, height, rows + 1).round().astype(int)
    col_edges = np.linspace(0, width, cols + 1).round().astype(int)
    half = overlap // 2
    tiles: list[Path] = []
    for r in range(rows):
        for c in range(cols):
            r0 = max(0, row_edges[r] - half)
            r1 = min(height, row_edges[r + 1] + (overlap - half))
            c0 = max(0, col_edges[c] - half)
            c1 = min(width, col_edges[c + 1] + (overlap - half))
            window = Window(c0, r0, c1 - c0, r1 - r0)
            tile_profile = {
                "driver": "GTiff",
                "dtype": "float32",
                "count": len(NC_BAND_FILES),
                "width": int(c1 - c0),
                "height": int(r1 - r0),
                "crs": profile["crs"],
                "transform": rasterio.windows.transform(window, profile["transform"]),
                "nodata": nodata,
                "tiled": True,
                "blockxsize": 128,
                "blockysize": 128,
                "compress": "deflate",
                "predictor": 3,
            }
            path = out / _tile_name(r, c)
            with atomic_path(path, overwrite=overwrite) as tmp:
                with rasterio.open(tmp, "w", **tile_profile) as dst:
                    dst.write(stack[:, r0:r1, c0:c1])
                    for i, band_name in enumerate(band_names, start=1):
                        dst.set_band_description(i, band_name)
            tiles.append(path)
    return tiles


class _Reporter:
    """Prints numbered stage headers and timings, so the user never waits silently."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = total
        self.step = 0
        self.seconds: dict[str, float] = {}

    def run(self, key: str, message: str, fn: Callable[[], Any]) -> Any:
        self.step += 1
        print(f"[{self.step}/{self.total}] {message} ...", file=self.stream, flush=True)
        start = time.perf_counter()
        result = fn()
        self.seconds[key] = time.perf_counter() - start
        print(f"      done in {self.seconds[key]:.1f} s", file=self.stream, flush=True)
        return result


def format_metrics(metrics: dict[str, Any], *, split: str = "test") -> list[str]:
    """Human lines for a checkpoint's recorded scores on one split (4 decimals).

    Args:
        metrics: ``ModelMetadata.metrics``: ``{"val": report, "test": report}`` as written by
            :func:`geoseg.training.train` (or one report).
        split: which report to show.
    """
    report = metrics.get(split, metrics)
    if not isinstance(report, dict) or not report:
        return []

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = [f"  {split} split: {fmt(report.get('pixels'))} labelled pixels held out from training"]
    for key, label in (
        ("overall_accuracy", "overall accuracy"),
        ("miou", "mean IoU"),
        ("mean_f1", "mean F1"),
    ):
        if key in report:
            lines.append(f"  {label:<17s} {fmt(report[key])}")
    iou = report.get("iou")
    if isinstance(iou, dict):
        lines.append("  IoU per class:    " + ", ".join(f"{k} {fmt(v)}" for k, v in iou.items()))
    return lines


def _missing_model_message(path: Path) -> str:
    return (
        f"the demo model {str(path)!r} does not exist (working directory "
        f"{str(Path.cwd())!r}). Run the demo from the root of a geoseg checkout (as "
        "`make demo` does), pass --model PATH to use another geoseg checkpoint, or train "
        f"it (a few minutes on a CPU) from the repository root with:\n    {RETRAIN_COMMAND}"
    )


def _check_options(workers: Any, progress: Any, stream: Any) -> tuple[int | None, bool]:
    """run_demo's options, checked before any output is made (predict checks them late)."""
    if workers is not None:
        workers = check_int(workers, "workers", low=1, high=4096)
    if stream is not None and not callable(getattr(stream, "write", None)):
        raise ConfigError(
            f"stream: expected a text stream with .write (sys.stdout, an open file), got "
            f"{type(stream).__name__}; to log to a file, pass open(path, 'w')"
        )
    return workers, check_flag(progress, "progress")


def run_demo(
    output_dir: str | Path = "demo-output",
    *,
    model: str | Path | None = None,
    data_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
) -> DemoResult:
    """Run the whole demo and return where every output is.

    Re-running replaces the demo's own previous outputs in ``output_dir``.

    Args:
        output_dir: folder for every output (created).
        model: checkpoint to use (default: ``models/nc_landcover.safetensors`` in the
            working directory, the shipped model of a geoseg checkout).
        data_dir: folder of the North Carolina band files (default:
            ``data/nc-landsat7-landcover`` in the working directory).
        workers: Dask threads for prediction and vectorization (default: all cores).
        progress: show progress bars.
        stream: where stage messages go (default: stdout).

    Raises:
        InputFileError: the model file or the sample data is missing (the message says
            how to retrain the model).
    """
    workers, progress = _check_options(workers, progress, stream)
    out = stream or sys.stdout
    model_path = Path(model) if model is not None else DEMO_MODEL
    if not model_path.is_file():
        raise InputFileError(_missing_model_message(model_path))
    print(f"geoseg demo: loading the model {str(model_path)!r} ...", file=out, flush=True)
    from geoseg.models import read_metadata

    meta = read_metadata(model_path)
    folder = Path(output_dir)
    _claim_folder(folder, [v for k, v in OUTPUT_NAMES.items() if k != "mosaic"])
    paths = {k: folder / v for k, v in OUTPUT_NAMES.items()}
    rep = _Reporter(out, total=6)
    print(
        f"geoseg demo: {meta.arch}/{meta.encoder}, {len(meta.bands)} bands {meta.bands}, "
        f"{len(meta.classes)} classes; outputs in {str(folder)!r}",
        file=out,
        flush=True,
    )

    tiles = rep.run(
        "mosaic",
        "Cutting the NC Landsat 7 scene (6 bands, 489x443 px, 28.5 m) into a 4-tile mosaic",
        lambda: make_nc_mosaic(
            paths["mosaic"],
            nodata=_nodata_for(meta),
            band_names=meta.bands if len(meta.bands) == 6 else NC_BAND_NAMES,
            data_dir=NC_DIR if data_dir is None else data_dir,
        ),
    )
    rep.run(
        "predict",
        f"Predicting land cover over {len(tiles)} tiles with Dask (tiled, blended)",
        lambda: _predict(model_path, tiles, paths, workers=workers, progress=progress),
    )
    gdf = rep.run(
        "vectorize",
        "Vectorizing the class map into polygons (GeoPackage)",
        lambda: _vectorize(paths, workers=workers, progress=progress),
    )
    areas = rep.run(
        "stats",
        "Computing the area of every class (CSV and chart)",
        lambda: _stats(paths, progress=progress),
    )
    rep.run(
        "figure",
        "Drawing imagery | prediction | polygons (PNG)",
        lambda: _figure(tiles, paths, gdf, meta),
    )
    rep.run(
        "map",
        "Writing the interactive HTML map (offline Leaflet)",
        lambda: _web_map(tiles, paths, gdf, meta),
    )
    result = DemoResult(
        output_dir=folder,
        tiles=list(tiles),
        classmap=paths["classmap"],
        probabilities=paths["probabilities"],
        polygons=paths["polygons"],
        stats=paths["stats"],
        chart=paths["chart"],
        figure=paths["figure"],
        map=paths["map"],
        model=model_path,
        metrics=dict(meta.metrics),
        seconds=dict(rep.seconds),
    )
    _print_summary(result, meta, areas, len(gdf), out)
    return result


def _nodata_for(meta: Any) -> float:
    nd = meta.image_nodata
    return float(nd) if nd is not None and np.isfinite(nd) else -99999.0


def _rgb_bands(meta: Any) -> Sequence[int]:
    """1-based band numbers for a natural-colour view (B3, B2, B1 for Landsat 7)."""
    names = [str(b).upper() for b in meta.bands]
    picks = []
    for band, colour in (("B3", "RED"), ("B2", "GREEN"), ("B1", "BLUE")):
        hits = [i for i, n in enumerate(names) if n == band or n.startswith(band + "_")]
        hits = hits or [i for i, n in enumerate(names) if colour in n]
        picks.append(hits[0] + 1 if hits else None)
    if all(p is not None for p in picks):
        return [int(p) for p in picks if p is not None]
    return [3, 2, 1] if len(names) >= 3 else [1]


def _predict(
    model_path: Path,
    tiles: list[Path],
    paths: dict[str, Path],
    *,
    workers: int | None,
    progress: bool,
) -> None:
    from geoseg.inference import predict

    kwargs: dict[str, Any] = {"overwrite": True, "progress": progress}
    if workers is not None:
        kwargs["workers"] = workers
    predict(
        model_path,
        [str(t) for t in tiles],
        paths["classmap"],
        probabilities=paths["probabilities"],
        **kwargs,
    )


def _vectorize(paths: dict[str, Path], *, workers: int | None, progress: bool) -> Any:
    from geoseg.io.vector import write_vector
    from geoseg.vectorize import vectorize

    kwargs: dict[str, Any] = {"progress": progress}
    if workers is not None:
        kwargs["workers"] = workers
    gdf = vectorize(paths["classmap"], probabilities=paths["probabilities"], **kwargs)
    write_vector(gdf, paths["polygons"], overwrite=True)
    return gdf


def _stats(paths: dict[str, Path], *, progress: bool) -> Any:
    from geoseg.analysis import class_areas, write_stats

    areas = class_areas(paths["classmap"], progress=progress)
    write_stats(areas, paths["stats"], plot=True, overwrite=True)  # CSV + chart beside it
    return areas


def _figure(tiles: list[Path], paths: dict[str, Path], gdf: Any, meta: Any) -> None:
    from geoseg.viz import plot_side_by_side

    plot_side_by_side(
        tiles,
        paths["classmap"],
        gdf,
        classes=meta.classes,
        rgb=_rgb_bands(meta),
        titles=("Landsat 7, 2000 (B3 B2 B1)", "Predicted land cover", "Polygons"),
        output=paths["figure"],
    )


def _web_map(tiles: list[Path], paths: dict[str, Path], gdf: Any, meta: Any) -> None:
    from geoseg.viz import save_web_map, web_map

    m = web_map(
        tiles,
        paths["classmap"],
        gdf,
        classes=meta.classes,
        rgb=_rgb_bands(meta),
        legend_title="Land cover",
    )
    save_web_map(m, paths["map"], overwrite=True)


def _area_lines(areas: Any) -> list[str]:
    name_col = next((c for c in ("class_name", "class", "name") if c in areas.columns), None)
    if name_col is None or "area_m2" not in areas.columns:
        return [str(areas)]
    totals = areas.groupby(name_col, sort=False)["area_m2"].sum()
    whole = float(totals.sum()) or 1.0
    return [
        f"{name!s:>24s}: {m2 / 1e4:10.1f} ha  ({100 * m2 / whole:4.1f} %)"
        for name, m2 in totals.items()
    ]


def _print_summary(result: DemoResult, meta: Any, areas: Any, n_polygons: int, out: TextIO) -> None:
    def p(text: str = "") -> None:
        print(text, file=out)

    p()
    p(f"geoseg demo finished in {sum(result.seconds.values()):.1f} s. Outputs:")
    rows = [
        (result.tiles[0].parent, f"input mosaic: {len(result.tiles)} overlapping GeoTIFF tiles"),
        (result.classmap, "class map, Cloud-Optimized GeoTIFF (class ids + colour table)"),
        (result.probabilities, "probability of each class, uint8 GeoTIFF (p = value/254)"),
        (result.polygons, f"{n_polygons} land-cover polygons with class and area (GeoPackage)"),
        (result.stats, "area of each class in m² and ha (CSV)"),
        (result.chart, "bar chart of the class areas (PNG)"),
        (result.figure, "imagery | prediction | polygons, with legend and scale bar (PNG)"),
        (result.map, "interactive map, works offline: layers, legend, popups (HTML)"),
    ]
    for path, what in rows:
        p(f"  {path!s:<48s} {what}")
    p()
    p("Predicted area per class:")
    for line in _area_lines(areas):
        p(line)
    p()
    p(f"Model test scores (recorded in the metadata of {str(result.model)!r}):")
    lines = format_metrics(meta.metrics)
    for line in lines or ["  (none recorded in the checkpoint)"]:
        p(line)
    p()
    p(f"Open {str(result.map)!r} in a browser to explore the map.")
