"""Panoptic maps: fusing a land-cover map with an object map, and COCO panoptic export.

A geoseg panoptic result is a pair of rasters on one grid: the class map (every pixel a
class) and the instance map (band 1: object id, 0 = none; band 2: the object's class).

* :func:`fuse_panoptic`: a semantic (land-cover) map plus an instance map of things from
  another model -> a consistent panoptic pair: an object's pixels take its class, every
  other pixel keeps its land-cover class. Both maps must be on the same grid (the one
  CRS rule of :mod:`geoseg.io.grid`); a different grid is an error, not a resampling.
* :func:`export_coco_panoptic`: a panoptic pair -> the COCO panoptic format for ML tools:
  one PNG per tile (segment id = R + 256 G + 256² B, 0 = void) and one JSON with
  ``images``, ``annotations`` (``segments_info`` with category, bbox and area) and
  ``categories`` (``isthing``, colour). Tiles keep their georeferencing in the JSON.
* :func:`write_panoptic`: both in one go (``geoseg panoptic``), all or nothing: the
  fused maps and the export appear together, or none of them does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.arguments import check_flag, check_int, check_path
from geoseg.classes import ClassInfo, ClassTable, class_table_for, read_class_table
from geoseg.errors import ConfigError, DataError, OutputError
from geoseg.io.bands import INSTANCES_TAG, check_instance_map, raster_path, refuse_probabilities
from geoseg.io.grid import same_grid_crs
from geoseg.io.handles import open_dataset
from geoseg.io.outputs import OutputBatch, atomic_outputs, check_distinct, check_output_path


def _open_pair(classes: Any, instances: Any) -> tuple[str, str, ClassTable]:
    """Check the two rasters are one grid; the class table covering both."""
    cpath, ipath = raster_path(classes), raster_path(instances)
    refuse_probabilities(cpath)
    check_instance_map(ipath)
    with open_dataset(cpath, what="class map") as c, open_dataset(ipath, what="instance map") as i:
        if c.crs is None or i.crs is None:
            raise DataError(f"{cpath!r} and {ipath!r} both need a CRS for a panoptic map")
        same = (
            c.shape == i.shape
            and c.transform.almost_equals(i.transform)
            and same_grid_crs(i.crs, c.crs, tuple(i.bounds), min(c.res))
        )
        if not same:
            raise DataError(
                f"{ipath!r} ({i.width} x {i.height} px, {i.crs}) is not on the grid of "
                f"{cpath!r} ({c.width} x {c.height} px, {c.crs}); a panoptic map needs both "
                "on one grid: predict or warp them onto the same grid first"
            )
        if i.dtypes[0].startswith("float"):
            raise DataError(f"{ipath!r} must hold integer object ids, not {i.dtypes[0]}")
    table = class_table_for(cpath)
    if table is None:
        raise DataError(f"{cpath!r} has no class table (GEOSEG_CLASSES tag or colour table)")
    return cpath, ipath, table


def _merged_table(land: ClassTable, things: ClassTable | None, thing_ids: list[int]) -> ClassTable:
    """The land-cover classes plus the thing classes of the instance map (marked things)."""
    out: dict[int, ClassInfo] = {
        c.id: ClassInfo(c.id, c.name, c.color, c.id in thing_ids) for c in land
    }
    for c in things or []:
        if c.id in out and out[c.id].name != c.name and c.thing:
            raise DataError(
                f"class id {c.id} is {out[c.id].name!r} in the land-cover map but "
                f"{c.name!r} in the instance map; give the things ids of their own"
            )
        if c.thing or c.id in thing_ids:
            out[c.id] = ClassInfo(c.id, c.name, c.color, True)
    return ClassTable(out.values())


def fuse_panoptic(
    semantic: Any,
    instances: Any,
    output: str | Path,
    instances_output: str | Path,
    *,
    thing_class: int | None = None,
    overwrite: bool = False,
    chunk_size: int = 2048,
) -> tuple[Path, Path]:
    """Fuse a land-cover map with an instance map of things into a panoptic pair.

    Args:
        semantic: the land-cover class map (its class table names the stuff classes).
        instances: an instance map on the same grid (band 1 ids; band 2 the objects'
            classes, as ``geoseg predict --instances`` writes it).
        output: the fused class map (COG-like GeoTIFF with the merged class table).
        instances_output: the instance map of the pair (ids unchanged, band 2 classes).
        thing_class: the class id of every object when the instance map has no class
            band (e.g. a building-only map from another tool).
        overwrite: replace existing outputs.
        chunk_size: rows and columns per chunk.

    Returns:
        ``(class map, instance map)``.

    Raises:
        DataError: the maps are on different grids, or class ids clash.
        ConfigError: no class for the objects.
    """
    with atomic_outputs() as batch:
        out, iout, _ = _fuse(
            batch, semantic, instances, (output, instances_output),
            thing_class=thing_class, overwrite=overwrite, chunk_size=chunk_size,
        )  # fmt: skip
    return out, iout


def _fuse(
    batch: OutputBatch,
    semantic: Any,
    instances: Any,
    outputs: tuple[str | Path, str | Path],
    *,
    thing_class: int | None,
    overwrite: bool,
    chunk_size: int,
) -> tuple[Path, Path, tuple[Path, Path]]:
    """Write the fused pair to temporaries of ``batch``; the targets and the temporaries."""
    chunk_size = check_int(chunk_size, "chunk_size", low=16, unit="pixels")
    overwrite = check_flag(overwrite, "overwrite")
    if thing_class is not None:
        thing_class = check_int(thing_class, "thing_class", unit="a class id")
    for name, path in zip(("output", "instances_output"), outputs, strict=True):
        check_path(path, name)
    cpath, ipath, land = _open_pair(semantic, instances)
    out, iout = (
        check_output_path(outputs[0], overwrite=overwrite, inputs=(cpath, ipath)),
        check_output_path(outputs[1], overwrite=overwrite, inputs=(cpath, ipath)),
    )
    check_distinct({"output": out, "instances_output": iout})
    with rasterio.open(ipath) as src:
        has_cls = src.count >= 2
        things = read_class_table(src)
    if not has_cls and thing_class is None:
        raise ConfigError(
            f"thing_class: {ipath!r} has no class band; give the objects' class id (--thing-class)"
        )
    if thing_class is not None:
        known = {*land.ids, *(things.ids if things else [])}
        if thing_class not in known:
            raise ConfigError(
                f"thing_class: {thing_class!r} is not a class of {cpath!r} or {ipath!r} (class "
                f"ids: {sorted(known)[:50]}); give the id of the objects' class"
            )
    thing_ids = [thing_class] if thing_class is not None else (things.things if things else [])
    table = _merged_table(land, things, thing_ids)
    nodata = table.nodata_value()
    with rasterio.open(cpath) as c:
        profile = c.profile | {"driver": "GTiff", "dtype": table.dtype(), "nodata": nodata,
                               "tiled": True, "blockxsize": 512, "blockysize": 512,
                               "compress": "deflate", "count": 1}  # fmt: skip
    tc = batch.path(out, overwrite=overwrite, inputs=(cpath, ipath))
    ti = batch.path(iout, overwrite=overwrite, inputs=(cpath, ipath))
    with (
        rasterio.open(cpath) as c,
        rasterio.open(ipath) as i,
        rasterio.open(tc, "w", **profile) as dc,
        rasterio.open(ti, "w", **(profile | {"dtype": "uint32", "count": 2, "nodata": 0})) as di,
    ):
        from geoseg.classes import write_class_table

        write_class_table(dc, table)
        di.update_tags(**{INSTANCES_TAG: "1", "GEOSEG_CLASSES": table.to_json()})
        di.set_band_description(1, "instance_id")
        di.set_band_description(2, "class_id")
        for r in range(0, c.height, chunk_size):
            for col in range(0, c.width, chunk_size):
                w = Window(col, r, min(chunk_size, c.width - col), min(chunk_size, c.height - r))
                land_v = c.read(1, window=w, masked=True)
                ids = i.read(1, window=w).astype(np.uint32)
                cls = (i.read(2, window=w).astype(np.int64) if has_cls
                       else np.full(ids.shape, thing_class, np.int64))  # fmt: skip
                fused = np.where(np.ma.getmaskarray(land_v), nodata, land_v.filled(nodata))
                obj = ids > 0
                fused = fused.astype(np.int64)
                fused[obj] = cls[obj]
                dc.write(fused.astype(table.dtype())[None], window=w)
                di.write(np.stack([ids, np.where(obj, cls, 0).astype(np.uint32)]), window=w)
    return out, iout, (tc, ti)


def export_coco_panoptic(
    classes: Any,
    instances: Any,
    output_dir: str | Path,
    *,
    tile_size: int = 1024,
    overwrite: bool = False,
) -> Path:
    """Write a panoptic pair in the COCO panoptic format (PNG per tile + one JSON).

    Segments: each object (thing class, id > 0) of a tile is one segment; each stuff class
    present in a tile is one segment; pixels of a thing class outside every object and
    no-data pixels are void (0). Segment ids are numbered per image from 1.

    Args:
        classes: the class map of the pair.
        instances: the instance map of the pair (band 2 holds the object classes; without
            it an object takes the class map's class at its pixels' majority).
        output_dir: a new folder (``panoptic.json`` and ``panoptic/*.png`` inside).
        tile_size: image side in pixels (COCO images are small; a map is cut into tiles).
        overwrite: replace an existing folder's COCO files (never other files).

    Returns:
        The JSON path.
    """
    tile_size = _check_tile_size(tile_size)
    overwrite = check_flag(overwrite, "overwrite")
    cpath, ipath, _ = _open_pair(classes, instances)
    target = _coco_targets(
        Path(check_path(output_dir, "output_dir")), (cpath, ipath), tile_size, overwrite
    )
    # All or nothing: every file is written under a temporary name and renamed only when
    # all of them are written (a full disk or an interruption leaves no half export).
    with atomic_outputs() as batch:
        _write_coco(batch, (cpath, ipath), target, overwrite=overwrite, source=cpath)
    return target.json_path


@dataclass
class PanopticOutputs:
    """What :func:`write_panoptic` wrote (None: not asked for).

    Attributes:
        classes: the fused class map.
        instances: the fused instance map.
        coco: the COCO export's ``panoptic.json``.
    """

    classes: Path | None = None
    instances: Path | None = None
    coco: Path | None = None


def write_panoptic(
    classes: Any,
    instances: Any,
    *,
    output: str | Path | None = None,
    instances_output: str | Path | None = None,
    coco: str | Path | None = None,
    thing_class: int | None = None,
    tile_size: int = 1024,
    overwrite: bool = False,
    chunk_size: int = 2048,
) -> PanopticOutputs:
    """Fuse a class map with an instance map and/or export the pair as COCO panoptic.

    All or nothing: the fused maps (``output``, ``instances_output``, as by
    :func:`fuse_panoptic`) and the export of the fused pair into ``coco`` (as by
    :func:`export_coco_panoptic`) are written under temporary names and moved into place
    together once every one is complete; a failure or an interruption leaves every
    existing file as it was and none of the run's.

    Args:
        classes: the land-cover class map (or the class map of a panoptic pair).
        instances: the instance map on the same grid.
        output: the fused class map; needs ``instances_output``.
        instances_output: the fused instance map.
        coco: the COCO export folder (new, or an export to replace with ``overwrite``).
        thing_class: the objects' class id when the instance map has no class band.
        tile_size: COCO image side in pixels.
        overwrite: replace existing outputs (files, never folders).
        chunk_size: rows and columns per chunk of the fusion.

    Raises:
        ConfigError: neither ``output`` nor ``coco``, or an option out of bounds.
        OutputError: an output exists (without ``overwrite``), is an input, or is
            another output.
    """
    if output is None and coco is None:
        raise ConfigError("give -o / output (fuse the two maps) and/or --coco DIR (export them)")
    if output is not None and instances_output is None:
        raise ConfigError("--instances-output: the fused instance map's path is needed")
    tile_size = _check_tile_size(tile_size)
    overwrite = check_flag(overwrite, "overwrite")
    for name, path in (("output", output), ("instances_output", instances_output), ("coco", coco)):
        if path is not None:
            check_path(path, name)
    folder = Path(coco) if coco is not None else None
    _check_panoptic_outputs(output, instances_output, folder)
    cpath, ipath, _ = _open_pair(classes, instances)
    target = _coco_targets(folder, (cpath, ipath), tile_size, overwrite) if folder else None
    done = PanopticOutputs()
    with atomic_outputs() as batch:
        pair = (Path(cpath), Path(ipath))
        if output is not None and instances_output is not None:
            done.classes, done.instances, pair = _fuse(
                batch, cpath, ipath, (output, instances_output),
                thing_class=thing_class, overwrite=overwrite, chunk_size=chunk_size,
            )  # fmt: skip
        if target is not None:
            # the export reads the fused pair from its temporaries; inputs stay the user's
            _write_coco(batch, pair, target, overwrite=overwrite, inputs=(cpath, ipath),
                        source=done.classes or cpath)  # fmt: skip
            done.coco = target.json_path
    return done


def _check_tile_size(tile_size: int) -> int:
    return check_int(tile_size, "tile_size", low=16, high=8192, unit="pixels")


def _check_panoptic_outputs(
    output: str | Path | None, instances_output: str | Path | None, folder: Path | None
) -> None:
    """The fused maps and the COCO export's files are different files, before any work."""
    if folder is not None and folder.exists() and not folder.is_dir():
        raise OutputError(f"--coco {str(folder)!r} is a file; give a folder (new or a COCO export)")
    for name, path in (("-o", output), ("--instances-output", instances_output)):
        if folder is not None and path is not None and Path(path).resolve() == folder.resolve():
            raise OutputError(
                f"{name} {str(path)!r} is the --coco folder; give the fused map a file name "
                "of its own"
            )
    coco_json = folder / "panoptic.json" if folder is not None else None
    check_distinct({"-o": output, "--instances-output": instances_output, "--coco": coco_json})


#: ``info.description`` of geoseg's COCO exports (an export geoseg may replace).
COCO_DESCRIPTION = "geoseg panoptic export of"


@dataclass
class _CocoTarget:
    folder: Path
    json_path: Path
    tiles: list[tuple[Window, str]]


def _write_coco(
    batch: OutputBatch,
    pair: tuple[str | Path, str | Path],
    target: _CocoTarget,
    *,
    overwrite: bool,
    source: str | Path,
    inputs: tuple[str, str] | None = None,
) -> None:
    """Write the COCO export of ``pair`` to temporaries of ``batch``.

    ``source`` is the class map the JSON names; ``inputs`` the run's inputs (default
    ``pair``), which no output may be.
    """
    from PIL import Image

    cpath, ipath, table = _open_pair(*pair)
    inputs = inputs or (cpath, ipath)
    tiles_dir = batch.folder(batch.folder(target.folder) / "panoptic")
    thing_ids = set(table.things)
    categories = [{"id": c.id, "name": c.name, "isthing": int(c.id in thing_ids),
                   "color": list(c.rgb)} for c in table]  # fmt: skip
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    with open_dataset(cpath, what="class map") as c, open_dataset(ipath, what="instance map") as i:
        nodata = c.nodata
        for w, name in target.tiles:
            cls = c.read(1, window=w).astype(np.int64)
            ids = i.read(1, window=w).astype(np.int64)
            ocls = i.read(2, window=w).astype(np.int64) if i.count >= 2 else cls
            seg, infos = _tile_segments(cls, ids, ocls, thing_ids, nodata, table.ids)
            rgb = np.stack([seg % 256, (seg // 256) % 256, seg // 65536], -1).astype(np.uint8)
            tmp = batch.path(tiles_dir / name, overwrite=overwrite, inputs=inputs)
            Image.fromarray(rgb).save(tmp, format="PNG")
            image_id = len(images) + 1
            t = rasterio.windows.transform(w, c.transform)
            geo = {"crs": c.crs.to_string(), "transform": list(t)[:6]}
            images.append(
                {"id": image_id, "file_name": name.replace(".png", ".tif"),
                 "width": int(w.width), "height": int(w.height), "geo": geo}
            )  # fmt: skip
            annotations.append({"image_id": image_id, "file_name": name,
                                "segments_info": infos})  # fmt: skip
    data = {"info": {"description": f"{COCO_DESCRIPTION} {source}"},
            "images": images, "annotations": annotations, "categories": categories}  # fmt: skip
    tmp = batch.path(target.json_path, overwrite=overwrite, inputs=inputs)
    tmp.write_text(json.dumps(data, indent=1))
    if overwrite:
        for old in _previous_tiles(target.json_path, {name for _, name in target.tiles}):
            batch.remove(old)  # tiles of the export this one replaces


def _coco_targets(
    folder: Path, inputs: tuple[str, str], tile_size: int, overwrite: bool
) -> _CocoTarget:
    """Check every file of a COCO export of ``inputs`` before any is written."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--coco {str(folder)!r} is a file; give a folder (new or a COCO export)")
    if folder.is_dir():
        check_output_path(folder / "panoptic.json", overwrite=overwrite, inputs=inputs)
    else:  # a new folder: its parent must exist and be writable
        check_output_path(folder, inputs=inputs)
    with rasterio.open(inputs[0]) as c:
        height, width = c.height, c.width
    tiles = [
        (Window(col, r, min(tile_size, width - col), min(tile_size, height - r)),
         f"tile_r{r}_c{col}.png")
        for r in range(0, height, tile_size)
        for col in range(0, width, tile_size)
    ]  # fmt: skip
    if (folder / "panoptic").is_dir():
        for _, name in tiles:
            check_output_path(folder / "panoptic" / name, overwrite=overwrite, inputs=inputs)
    return _CocoTarget(folder, folder / "panoptic.json", tiles)


def _previous_tiles(json_path: Path, keep: set[str]) -> list[Path]:
    """Tiles listed by the geoseg export at ``json_path`` that the new export does not write."""
    try:
        old = json.loads(json_path.read_text())
        if not str(old["info"]["description"]).startswith(COCO_DESCRIPTION):
            return []  # not an export of ours: its files are the user's
        names = [a["file_name"] for a in old["annotations"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [json_path.parent / "panoptic" / n for n in names
            if isinstance(n, str) and n not in keep and _TILE_NAME.fullmatch(n)]  # fmt: skip


_TILE_NAME = re.compile(r"tile_r\d+_c\d+\.png")


def _tile_segments(
    cls: np.ndarray,
    ids: np.ndarray,
    ocls: np.ndarray,
    things: set[int],
    nodata: float | None,
    valid_ids: list[int],
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Segment-id image and ``segments_info`` of one tile."""
    seg = np.zeros(cls.shape, np.int64)
    infos: list[dict[str, Any]] = []
    known = np.isin(cls, valid_ids) & (cls != nodata if nodata is not None else True)

    def add(mask: np.ndarray, category: int) -> None:
        sid = len(infos) + 1
        seg[mask] = sid
        rows, cols = np.nonzero(mask)
        y0, x0 = int(rows.min()), int(cols.min())
        infos.append({"id": sid, "category_id": int(category), "iscrowd": 0,
                      "bbox": [x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1],
                      "area": int(mask.sum())})  # fmt: skip

    for oid in np.unique(ids[ids > 0]).tolist():
        m = ids == oid
        votes = np.bincount(ocls[m]) if (ocls[m] >= 0).all() else np.zeros(1)
        add(m, int(np.argmax(votes)))
    for k in sorted(set(np.unique(cls[known & (ids == 0)]).tolist()) - things):
        add(known & (ids == 0) & (cls == k), k)
    if seg.max() >= 256**3:
        raise DataError("more than 16.7 M segments in one tile; use a smaller tile_size")
    return seg, infos
