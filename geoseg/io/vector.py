"""Vector I/O: one layer read (:func:`read_vector`); outputs by file extension, atomic.

======================  =============  ==========================================
extension               format         notes
======================  =============  ==========================================
``.gpkg``               GeoPackage     streams (append) chunk by chunk
``.parquet``            GeoParquet     written in one go (pyarrow)
``.fgb``                FlatGeobuf     written in one go (spatial index)
``.geojson``            GeoJSON        RFC 7946: reprojected to EPSG:4326
``.shp``                Shapefile      streams; ``perimeter_m`` is ``perim_m``
======================  =============  ==========================================

A table without geometry (a DataFrame) is written to a GeoPackage only (:func:`write_layer`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio

from geoseg.arguments import check_path
from geoseg.errors import ConfigError, DataError, InputFileError, OutputError
from geoseg.io.outputs import atomic_path, check_output_path


@dataclass(frozen=True)
class VectorFormat:
    """How to write one vector format."""

    name: str
    driver: str
    append: bool  # the driver can append layers chunk by chunk
    epsg4326: bool = False  # the format requires lon/lat WGS84 (RFC 7946)
    writer: Callable[[gpd.GeoDataFrame, Path], None] | None = None


def _write_parquet(gdf: gpd.GeoDataFrame, path: Path) -> None:
    gdf.to_parquet(path, index=False)


#: Output formats by lower-case file extension.
VECTOR_FORMATS: dict[str, VectorFormat] = {
    ".gpkg": VectorFormat("GeoPackage", "GPKG", append=True),
    ".parquet": VectorFormat("GeoParquet", "Parquet", append=False, writer=_write_parquet),
    ".fgb": VectorFormat("FlatGeobuf", "FlatGeobuf", append=False),
    ".geojson": VectorFormat("GeoJSON", "GeoJSON", append=False, epsg4326=True),
    # its .shx/.dbf/.prj/.cpg move with it at commit (geoseg.io.outputs.SHAPEFILE_SIDECARS)
    ".shp": VectorFormat("Shapefile", "ESRI Shapefile", append=True),
}


def vector_format(path: str | Path) -> VectorFormat:
    """The format for ``path``'s extension.

    Raises:
        ConfigError: the extension is not a known vector format (lists the valid ones).
    """
    ext = Path(path).suffix.lower()
    try:
        return VECTOR_FORMATS[ext]
    except KeyError:
        valid = ", ".join(f"{k} ({v.name})" for k, v in VECTOR_FORMATS.items())
        raise ConfigError(
            f"unknown vector output extension {ext or '(none)'!r} for {str(path)!r}; "
            f"valid extensions: {valid}"
        ) from None


def check_vector_path(
    path: str | Path, *, overwrite: bool = False, inputs: Iterable[Any] = (), name: str = "output"
) -> VectorFormat:
    """Validate an output path (known extension, folder exists, not clobbering, not an input)."""
    fmt = vector_format(Path(check_path(path, name)))
    check_output_path(path, overwrite=overwrite, inputs=inputs, name=name)
    return fmt


def read_vector(
    path: str | Path, *, where: str, layer: str | None = None, option: str = "layer"
) -> gpd.GeoDataFrame:
    """Read one layer of a vector file: the only one, or ``layer``.

    A file of several layers (a GeoPackage) without ``layer`` is an error listing them,
    never silently its first layer.

    Args:
        path: the vector file.
        where: how messages name it (``"zones file 'z.gpkg'"``).
        layer: the layer to read (default: the file's only layer).
        option: how messages name the layer option (``"zone_layer / --zone-layer"``).

    Raises:
        InputFileError: the file does not exist or cannot be read.
        DataError: several layers and no ``layer``, or no layer called ``layer``.
    """
    if not Path(path).exists():
        raise InputFileError(f"{where} does not exist")
    try:
        layers = [str(row[0]) for row in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputFileError(f"{where} cannot be read as a vector file: {exc}") from exc
    if layer is not None and layer not in layers:
        raise DataError(f"{where} has no layer {layer!r}; its layers are {layers[:20]}")
    if layer is None and len(layers) > 1:
        raise DataError(
            f"{where} holds {len(layers)} layers {layers[:20]}; say which one to read "
            f"({option} NAME)"
        )
    try:
        return gpd.read_file(path, layer=layer)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputFileError(f"{where} cannot be read as a vector file: {exc}") from exc


def _prepare(gdf: gpd.GeoDataFrame, fmt: VectorFormat) -> gpd.GeoDataFrame:
    if fmt.epsg4326 and gdf.crs is not None and gdf.crs.to_epsg() != 4326:
        gdf = gdf.to_crs(4326)
    return gdf


#: Shapefile field names are at most 10 characters.
SHAPEFILE_FIELDS = {"perimeter_m": "perim_m"}


def _write_one(gdf: pd.DataFrame, path: Path, fmt: VectorFormat, append: bool, layer: str) -> None:
    if not isinstance(gdf, gpd.GeoDataFrame):  # a table without geometry
        if fmt.driver != "GPKG":
            raise ConfigError(
                f"a table without geometry is written as a GeoPackage (.gpkg), not as "
                f"{fmt.name}: the other formats hold features with geometries"
            )
        pyogrio.write_dataframe(gdf, path, driver="GPKG", layer=layer, append=append)
        return
    gdf = _prepare(gdf, fmt)
    if fmt.driver == "ESRI Shapefile":
        gdf = gdf.rename(columns=SHAPEFILE_FIELDS)
    if fmt.writer is not None:
        fmt.writer(gdf, path)
        return
    kwargs: dict[str, Any] = {"driver": fmt.driver}
    if fmt.driver == "GPKG":
        kwargs["layer"] = layer
    if fmt.driver == "GeoJSON":
        kwargs["layer_options"] = {"RFC7946": "YES"}
    types = set(gdf.geom_type.dropna()) if len(gdf) else set()
    geometry_type = "MultiPolygon" if "MultiPolygon" in types else "Polygon"
    if fmt.driver == "ESRI Shapefile" or "MultiPolygon" in types:
        kwargs["promote_to_multi"] = geometry_type == "MultiPolygon"
    kwargs["geometry_type"] = geometry_type
    pyogrio.write_dataframe(gdf, path, append=append, **kwargs)


def write_layer(frame: pd.DataFrame, tmp: str | Path, *, final: str | Path) -> None:
    """Write ``frame`` to ``tmp``, the temporary file of the output ``final``.

    For writers whose outputs appear together (:func:`geoseg.io.outputs.atomic_outputs`
    gives ``tmp``); :func:`write_vector` writes one file. The format is ``final``'s
    extension (:data:`VECTOR_FORMATS`), the layer is named after it; a Shapefile's
    sidecars move with it when the batch commits (:class:`~geoseg.io.outputs.OutputBatch`).

    Args:
        frame: features (a GeoDataFrame), or a DataFrame without geometry: a table,
            written to a GeoPackage only.
        tmp: the file to write.
        final: the output ``tmp`` becomes.

    Raises:
        ConfigError: unknown extension, or a table for another format than GeoPackage.
    """
    fmt, tmp, final = vector_format(final), Path(tmp), Path(final)
    _write_one(frame, tmp, fmt, append=False, layer=final.stem)


def write_vector(gdf: gpd.GeoDataFrame, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write polygons to ``path``, the format picked by its extension.

    GeoJSON is written per RFC 7946 (EPSG:4326). The file appears atomically: written under
    a temporary name and renamed on success, so a failure leaves no half-written output.

    Args:
        gdf: the polygons (CRS set).
        path: output file; ``.gpkg``, ``.parquet``, ``.fgb``, ``.geojson`` or ``.shp``.
        overwrite: replace an existing file.

    Returns:
        The output path.

    Raises:
        ConfigError: unknown extension. OutputError: folder missing or file exists.
    """
    check_vector_path(path, overwrite=overwrite)
    final = Path(path)
    with atomic_path(final, overwrite=overwrite) as tmp:
        write_layer(gdf, tmp, final=final)
    return final


def stream_vector(
    frames: Iterable[gpd.GeoDataFrame],
    path: str | Path,
    *,
    empty: gpd.GeoDataFrame,
    overwrite: bool = False,
) -> int:
    """Write an iterable of GeoDataFrames (same schema) as one layer; returns the row count.

    Appends frame by frame where the format can (GeoPackage, Shapefile), so memory holds one
    frame at a time; other formats gather the frames first. ``empty`` (the schema) is
    written when there are no rows, so an all-no-data input still gives a valid layer.
    """
    fmt = check_vector_path(path, overwrite=overwrite)
    final = Path(path)
    count = 0
    with atomic_path(final, overwrite=overwrite) as tmp:
        if fmt.append:
            started = False
            for f in frames:
                if len(f) == 0:
                    continue
                _write_one(f, tmp, fmt, append=started, layer=final.stem)
                started = True
                count += len(f)
            if not started:
                _write_one(empty, tmp, fmt, append=False, layer=final.stem)
        else:
            parts = [f for f in frames if len(f)]
            gdf = (
                gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=empty.crs)
                if parts
                else empty
            )
            count = len(gdf)
            _write_one(gdf, tmp, fmt, append=False, layer=final.stem)
    if not final.exists():  # pragma: no cover - defensive
        raise OutputError(f"writing {str(final)!r} failed")
    return count
