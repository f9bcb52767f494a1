"""End-to-end overhead of ``geoseg predict`` on a many-file mosaic (hardening issue).

Run from the repository root, on an otherwise idle machine:

    nice -n 5 .venv/bin/python benchmarks/e2e_many_files.py            # 4096^2, 256 files
    .venv/bin/python benchmarks/e2e_many_files.py --size 1024 --files 4  # smoke run

Input: the real North Carolina Landsat stack (6 bands, float32) mirrored to ``size`` x
``size`` pixels and cut into ``files`` x ``files`` adjacent GeoTIFFs (default 16 x 16 =
256 files of 256 px), with the shipped model ``models/nc_landcover.safetensors``; any
other checkpoint and scene with ``--model M --image SCENE.tif`` (a check on other data).

For each window size (256 and 512 px) it measures, each in its own process:

* ``predict``: ``geoseg.inference.predict`` over the mosaic (defaults otherwise), once in
  a fresh process and again in the same process (warm: a notebook or a service);
* ``cli``: the whole ``geoseg predict`` command as a shell runs it (Python's start and
  the imports counted too: what a user waits for);
* ``backend``: geoseg's own backend running the same windows (same tile size, overlap,
  batch size and threads) from memory, nothing else: the floor for ``predict``.

The ratio predict / backend is the end-to-end overhead (reading many files, blending,
writing the COG); the goal is <= 1.15. The backend's passes are timed warm (after an
untimed first pass), the strict baseline for a fresh predict; ``ratio_fresh_cold`` also
counts the backend's first pass, which in a fresh process is slower for ONNX Runtime
too. Predict and backend processes alternate ``--reps`` times and the medians of the
per-rep ratios are reported (robust to other jobs on a shared machine). Writes JSON to
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_inference  # noqa: E402
from _inference_data import nc_stack  # noqa: E402

GOAL = 1.15


def many_files(
    src_path: Path, folder: Path, size: int, files: int, crs: str | None = None
) -> list[str]:
    """``files`` x ``files`` GeoTIFFs covering ``size`` px, the source mirrored to fill it.

    ``crs``: tag the files with this CRS instead of the source's (an equivalent one, such
    as the EPSG code of the source's custom CRS, to see what GDAL's reading of a custom
    CRS costs on every open).
    """
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src_path) as src:
        data = src.read()
        prof = src.profile
        t = src.transform
    if crs is not None:
        prof["crs"] = crs
    h, w = data.shape[1:]
    rows = []
    for i in range(-(-size // h)):
        row = [data[:, :: (-1 if i % 2 else 1), :: (-1 if j % 2 else 1)]
               for j in range(-(-size // w))]  # fmt: skip
        rows.append(np.concatenate(row, axis=2))
    big = np.concatenate(rows, axis=1)[:, :size, :size]
    step = size // files
    paths = []
    for i in range(files):
        for j in range(files):
            p = folder / f"f_{i:02d}_{j:02d}.tif"
            paths.append(str(p))
            if p.exists():
                continue
            prof.update(
                width=step, height=step,
                transform=Affine(t.a, 0, t.c + j * step * t.a, 0, t.e, t.f + i * step * t.e),
                tiled=True, blockxsize=256, blockysize=256, compress="deflate",
            )  # fmt: skip
            with rasterio.open(p, "w", **prof) as dst:
                dst.write(np.ascontiguousarray(big[:, i * step : (i + 1) * step,
                                                   j * step : (j + 1) * step]))  # fmt: skip
    return paths


def _cli_seconds(ckpt: str, folder: Path, out: str, tile: int) -> float:
    """Seconds of the whole ``geoseg predict`` command as a shell runs it (start, imports)."""
    import subprocess
    import time

    cmd = [str(Path(sys.executable).parent / "geoseg"), "predict", ckpt, str(folder), "-o", out,
           "--tile-size", str(tile), "--overwrite", "--quiet"]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=4096, help="mosaic side (pixels)")
    ap.add_argument("--files", type=int, default=16, help="files per side")
    ap.add_argument("--tiles", default="256,512", help="window sizes to measure")
    ap.add_argument("--json", default="benchmarks/results/e2e_many_files.json")
    ap.add_argument("--reps", type=int, default=3, help="alternating predict/backend pairs")
    ap.add_argument("--workdir", help="keep inputs/outputs here (default: a temp folder)")
    ap.add_argument(
        "--crs",
        help="tag the files with this CRS (EPSG:32119: the NC scene's custom CRS as an EPSG code)",
    )
    ap.add_argument("--model", help="another checkpoint (default: the shipped NC model)")
    ap.add_argument("--image", help="the scene to mirror for --model (default: the NC stack)")
    args = ap.parse_args()
    if args.model is None and not bench_inference.NC_MODEL.exists():
        raise SystemExit(f"needs the shipped model {bench_inference.NC_MODEL} (run make demo)")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="geoseg-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GEOSEG_CACHE_DIR", str(work / "cache"))
    bench_inference.IN_PROCESS = False
    ckpt = args.model or str(bench_inference.NC_MODEL)
    folder = work / ("mosaic" if args.crs is None else f"mosaic-{args.crs.replace(':', '')}")
    scene = Path(args.image) if args.image else nc_stack(work)
    paths = many_files(scene, folder, args.size, args.files, args.crs)
    cfg: dict[str, Any] = {"checkpoint": ckpt, "inputs": paths}
    cores = len(os.sched_getaffinity(0))
    R: dict[str, Any] = {"model": ckpt, "scene": str(scene), "size": args.size,
                         "files": len(paths), "cores": cores, "goal": GOAL,
                         "crs": args.crs or "the scene's own", "tiles": {}}  # fmt: skip
    print(f"{len(paths)} files, {args.size}^2 px, {R['cores']} cores, work dir {work}", flush=True)
    for tile in (int(t) for t in args.tiles.split(",")):
        out = str(work / f"pred{tile}.tif")
        warm = bench_inference.run_child("predict", {**cfg, "output": out, "repeat": 1,
                                                     "kwargs": {"tile_size": tile}})  # fmt: skip
        del warm  # first run exports and caches the ONNX model for this tile size
        # predict and backend alternate, each rep in fresh processes, so that load from
        # other jobs on a shared machine hits both sides; ratios are taken per rep and the
        # median is reported
        reps = []
        for _ in range(args.reps):
            p = bench_inference.run_child("predict", {**cfg, "output": out, "repeat": 2,
                                                      "kwargs": {"tile_size": tile}})  # fmt: skip
            b = bench_inference.run_child("backend", {**cfg, "tile_size": tile,
                                                      "overlap": p["overlap"]})  # fmt: skip
            cli = _cli_seconds(ckpt, folder, out, tile)
            reps.append({"predict_s": p["wall"], "predict_warm_s": p["wall_warm"],
                         "backend_forward_s": b["seconds"],
                         "backend_cold_s": b["cold_seconds"],
                         "ratio_fresh": p["wall"] / b["seconds"],
                         "ratio_fresh_cold": p["wall"] / b["cold_seconds"],
                         "ratio_warm": p["wall_warm"] / b["seconds"],
                         "cli_s": cli, "ratio_cli": cli / b["seconds"],
                         "peak_rss_mib": p["peak_rss_mib"]})  # fmt: skip
            print(f"  {tile:4d} px rep: predict {p['wall']:.1f} s (warm {p['wall_warm']:.1f}, "
                  f"whole `geoseg predict` command {cli:.1f}), backend {b['seconds']:.1f} s",
                  flush=True)  # fmt: skip
        row = {
            "windows": p["windows"], "overlap": p["overlap"], "backend": p["backend"],
            "backend_tiles": b["tiles"], "reps": reps,
            **{k: statistics.median(r[k] for r in reps) for k in reps[0]},
        }  # fmt: skip
        R["tiles"][str(tile)] = row
        print(f"  {tile:4d} px: predict {row['predict_s']:.1f} s "
              f"(warm {row['predict_warm_s']:.1f}),"
              f" backend alone {row['backend_forward_s']:.1f} s over {row['backend_tiles']} "
              f"windows -> {row['ratio_fresh']:.2f} fresh / {row['ratio_warm']:.2f} warm "
              f"({row['ratio_fresh_cold']:.2f} fresh against fresh forward passes; "
              f"{row['ratio_cli']:.2f} the whole command from a shell) "
              f"(medians of {args.reps}; goal <= {GOAL}: "
              f"{'PASS' if row['ratio_warm'] <= GOAL else 'FAIL'} warm, "
              f"{'PASS' if row['ratio_fresh'] <= GOAL else 'FAIL'} fresh)",
              flush=True)  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(R, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
