"""Benchmark inputs made from the real sample data: mirrored multi-file mosaics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]
NC = ROOT / "data" / "nc-landsat7-landcover"
NC_BANDS = ("10", "20", "30", "40", "50", "70")
RGB = ROOT / "data" / "unlabeled-rgb" / "RGB.byte.tif"


def nc_stack(folder: Path) -> Path:
    """Stack the six NC Landsat bands into one float32 GeoTIFF (nodata -99999)."""
    out = folder / "nc_stack.tif"
    if out.exists():
        return out
    arrays, valid = [], None
    for b in NC_BANDS:
        with rasterio.open(NC / f"lsat7_2000_{b}.tif") as src:
            a = src.read(1, out_dtype="float32")
            m = src.read_masks(1) > 0
            prof = src.profile
        arrays.append(a)
        valid = m if valid is None else valid & m
    data = np.stack(arrays)
    data[:, ~valid] = -99999.0
    prof.update(
        count=6,
        dtype="float32",
        nodata=-99999.0,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    with rasterio.open(out, "w", **prof) as dst:
        dst.write(data)
        for i, b in enumerate(NC_BANDS, start=1):
            dst.set_band_description(i, f"B{b[0]}")
    return out


def mirrored_mosaic(src_path: Path, folder: Path, reps: int) -> list[Path]:
    """``reps`` x ``reps`` adjacent files, each the source mirrored so edges match."""
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src_path) as src:
        data = src.read()
        prof = src.profile
        t = src.transform
    h, w = data.shape[1:]
    paths = []
    for i in range(reps):
        for j in range(reps):
            a = data
            if i % 2:
                a = a[:, ::-1, :]
            if j % 2:
                a = a[:, :, ::-1]
            p = folder / f"tile_{i}_{j}.tif"
            if not p.exists():
                prof.update(
                    transform=Affine(t.a, 0, t.c + j * w * t.a, 0, t.e, t.f + i * h * t.e),
                    tiled=True,
                    blockxsize=256,
                    blockysize=256,
                    compress="deflate",
                )
                with rasterio.open(p, "w", **prof) as dst:
                    dst.write(np.ascontiguousarray(a))
            paths.append(p)
    return paths


def whole_mosaic_array(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, Affine]:
    """Merge the mosaic in memory (only for the whole-scene reference)."""
    from rasterio.merge import merge

    with rasterio.open(paths[0]) as s:
        nodata = s.nodata
    arr, t = merge([str(p) for p in paths], nodata=nodata)
    valid = np.all(arr != nodata, axis=0) if nodata is not None else np.ones(arr.shape[1:], bool)
    return arr.astype("float32"), valid, t
