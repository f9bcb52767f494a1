"""geoseg.data throughput: whole-scene scan (exact vs coarse), normalization, training tiles.

Run: ``.venv/bin/python benchmarks/bench_data.py`` (synthetic scenes in a temp folder).
Figures depend on the machine and its load; compare the ratios printed in one run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from affine import Affine

from geoseg.config import from_mapping
from geoseg.data import DataConfig, GeoDataModule, splits
from geoseg.testing import write_raster


def scene(folder: Path, h: int, w: int, name: str) -> dict:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx // 7 % 250 + 1, yy // 5 % 250 + 1, (xx + yy) // 11 % 250 + 1]).astype(
        np.uint8
    )
    lab = ((xx // 300 + yy // 300) % 3).astype(np.uint8)
    t = Affine(1.0, 0, 500000.0, 0, -1.0, 4100000.0)
    kw = {"transform": t, "tiled": True, "blockxsize": 512, "blockysize": 512}
    write_raster(folder / f"{name}_img.tif", img, nodata=0, compress="deflate", **kw)
    write_raster(folder / f"{name}_lab.tif", lab, compress="deflate", **kw)
    return {
        "imagery": {"paths": str(folder / f"{name}_img.tif")},
        "labels": {"path": str(folder / f"{name}_lab.tif")},
        "classes": [{"id": i, "name": f"c{i}"} for i in range(3)],
        "tile_size": 128,
        "batch_size": 16,
        "train_samples": 512,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        d = scene(folder, 4096, 4096, "mid")
        t0 = time.perf_counter()
        dm = GeoDataModule(from_mapping(DataConfig, d, "data"))
        dm.prepare_scene()
        t1 = time.perf_counter()
        dm.setup("fit")
        t2 = time.perf_counter()
        n = sum(b["image"].shape[0] for b in dm.train_dataloader())
        t3 = time.perf_counter()
        print(
            f"4096x4096 px: exact scan {t1 - t0:.2f}s ({4096**2 / (t1 - t0) / 1e6:.1f} Mpx/s), "
            f"train stats {t2 - t1:.2f}s, {n} training tiles of 128 px in {t3 - t2:.2f}s "
            f"({n / (t3 - t2):.0f} tiles/s)"
        )
        d = scene(folder, 4000, 17000, "big")
        out = {}
        for mode, side in (("coarse", 16384), ("exact", 10**9)):
            splits.EXACT_SCAN_MAX_SIDE = side
            t0 = time.perf_counter()
            dm = GeoDataModule(from_mapping(DataConfig, d, "data"))
            dm.prepare_scene()
            out[mode] = (time.perf_counter() - t0, dm.coverage.class_counts.tolist())
        for mode, (sec, counts) in out.items():
            print(f"17000x4000 px {mode} scan: {sec:.2f}s ({68e6 / sec / 1e6:.1f} Mpx/s) {counts}")
        print(f"coarse / exact scan time: {out['coarse'][0] / out['exact'][0]:.3f}")


if __name__ == "__main__":
    main()
