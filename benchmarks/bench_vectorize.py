"""Benchmark geoseg's chunked vectorization against single-pass rasterio + shapely.

On a class map made from the real NC land-cover raster (``strata.tif``, 489 x 443 px,
tiled and mirrored to SIZE x SIZE, written under --workdir, never committed):

1. Exactness: chunked parallel result vs single-pass result (geometries equal after
   normalization, area per class to 1e-9 relative, polygon counts).
2. Speed: geoseg (all cores, no cleaning) vs ``rasterio.features.shapes`` + ``shapely.shape``
   on the whole raster, same output (class id + geometry + area).
3. Memory: peak RSS of geoseg streaming to a GeoPackage at SIZE/2 and SIZE (4x the pixels),
   and the single-pass baseline's peak for contrast. Each run is a subprocess.
4. Coverage quality after simplification: gap and overlap area between neighbours for
   geoseg's coverage simplification and for per-polygon Douglas-Peucker.

Usage::

    python benchmarks/bench_vectorize.py            # 10240 x 10240 (105 Mpx)
    python benchmarks/bench_vectorize.py --quick    # 512 x 512 in one process, < 30 s

Prints a table, a verdict per target and the JSON of all figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STRATA = ROOT / "data" / "nc-landsat7-landcover" / "strata.tif"


# ------------------------------------------------------------------------------------------
def make_map(size: int, out: Path, source: Path = STRATA) -> Path:
    """Tile and mirror a class map to size x size (uint8, nodata 0, the source's CRS).

    The NC strata raster by default. Another map's classes are renumbered from 1 (its
    no-data, if declared, becomes 0), so any label raster keeps its regions.
    """
    import rasterio
    from rasterio.windows import Window

    if out.exists():
        return out
    with rasterio.open(source) as src:
        a = src.read(1)
        valid = a != src.nodata if src.nodata is not None else np.ones(a.shape, bool)
        if source != STRATA:
            a = np.where(valid, a - a[valid].min() + 1, 0)
        if a.max() > 255:
            raise SystemExit(f"{source}: more than 255 classes; give a class map")
        a = np.where(valid, a, 0).astype(np.uint8)
        profile = src.profile
        transform = src.transform
    h, w = a.shape
    block = np.block([[a, a[:, ::-1]], [a[::-1], a[::-1, ::-1]]])  # 2h x 2w, seamless mirror
    profile.update(
        dtype="uint8", nodata=0, width=size, height=size, tiled=True, blockxsize=512,
        blockysize=512, compress="deflate", count=1, transform=transform,
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        step = 1024
        for r0 in range(0, size, step):
            rows = np.arange(r0, min(r0 + step, size)) % (2 * h)
            strip = block[rows]
            cols = np.arange(size) % (2 * w)
            dst.write(strip[:, cols], 1, window=Window(0, r0, size, len(rows)))
    tmp.rename(out)
    return out


def peak_rss_mb() -> dict[str, float]:
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"main_mb": round(me, 1), "largest_child_mb": round(kids, 1)}


# ------------------------------------------------------------------------------------------
# Subprocess modes
# ------------------------------------------------------------------------------------------
def run_baseline(raster: Path, out: Path | None) -> dict:
    """Single pass: rasterio.features.shapes on the whole band + shapely.shape per feature."""
    import geopandas as gpd
    import rasterio
    import shapely
    from rasterio.features import shapes

    t0 = time.perf_counter()
    with rasterio.open(raster) as src:
        a = src.read(1)
        valid = a != src.nodata
        feats = [(shapely.geometry.shape(g), int(v))
                 for g, v in shapes(a, mask=valid, transform=src.transform)]  # fmt: skip
        crs = src.crs
    gdf = gpd.GeoDataFrame(
        {"class_id": [v for _, v in feats]}, geometry=[g for g, _ in feats], crs=crs
    )
    gdf["area_m2"] = gdf.area
    elapsed = time.perf_counter() - t0
    res = {"seconds": elapsed, "n": len(gdf), **summary(gdf), **peak_rss_mb()}
    if out is not None:
        gdf.to_parquet(out)
    return res


def run_geoseg(
    raster: Path, out: Path | None, chunk: int, workers: int, stream: Path | None
) -> dict:
    from geoseg.vectorize import vectorize, vectorize_to_file

    t0 = time.perf_counter()
    if stream is not None:
        n = vectorize_to_file(raster, stream, chunk_size=chunk, workers=workers, progress=False,
                              overwrite=True)  # fmt: skip
        return {"seconds": time.perf_counter() - t0, "n": n, **peak_rss_mb()}
    gdf = vectorize(raster, chunk_size=chunk, workers=workers, progress=False)
    elapsed = time.perf_counter() - t0
    res = {"seconds": elapsed, "n": len(gdf), **summary(gdf), **peak_rss_mb()}
    res["stats"] = gdf.attrs.get("vectorize_stats", {})
    if out is not None:
        gdf[["class_id", "area_m2", "geometry"]].to_parquet(out)
    return res


def summary(gdf) -> dict:
    per = gdf.groupby("class_id")["area_m2"].sum()
    return {"area_per_class": {str(int(k)): float(v) for k, v in per.items()}}


def subprocess_run(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------
def compare(a_path: Path, b_path: Path) -> dict:
    """Exactness of two results: geometry equality after normalization, areas, counts."""
    import geopandas as gpd
    import shapely

    a = gpd.read_parquet(a_path)
    b = gpd.read_parquet(b_path)

    def order(g):
        pts = shapely.get_coordinates(shapely.normalize(g.geometry.values))  # noqa: F841
        key = shapely.normalize(g.geometry.values)
        b_ = shapely.bounds(key)
        return np.lexsort((g.area_m2.to_numpy(), b_[:, 0], b_[:, 1], g.class_id.to_numpy()))

    a = a.iloc[order(a)].reset_index(drop=True)
    b = b.iloc[order(b)].reset_index(drop=True)
    same_n = len(a) == len(b)
    equal = 0
    if same_n:
        ga = shapely.normalize(a.geometry.values)
        gb = shapely.normalize(b.geometry.values)
        equal = int(shapely.equals_exact(ga, gb, 1e-6).sum())
    pa = a.groupby("class_id").area_m2.sum()
    pb = b.groupby("class_id").area_m2.sum()
    rel = float((pa / pb - 1).abs().max()) if pa.index.equals(pb.index) else float("inf")
    return {"n_a": len(a), "n_b": len(b), "geometries_equal": equal, "max_rel_area_diff": rel}


def coverage_quality(raster: Path, crop: int, tol_px: float) -> dict:
    """Gaps and overlaps after simplifying by ``tol_px`` pixels (metres for geoseg, the
    CRS's units for Douglas-Peucker: degrees on a geographic map)."""
    import rasterio
    import shapely
    from rasterio.windows import Window

    from geoseg.io.bands import open_grid
    from geoseg.vectorize import coverage_gaps_overlaps, vectorize

    tol_m = round(tol_px * open_grid(str(raster)).pixel_size_m(), 3)
    with rasterio.open(raster) as src:
        tol_crs = tol_px * abs(src.res[0])
        units = "degree2 (geographic CRS)" if src.crs.is_geographic else "m2"

    small = raster.with_name(f"crop{crop}.tif")
    if not small.exists():
        with rasterio.open(raster) as src:
            profile = src.profile
            win = Window(0, 0, crop, crop)
            profile.update(width=crop, height=crop, transform=src.window_transform(win))
            with rasterio.open(small, "w", **profile) as dst:
                dst.write(src.read(1, window=win), 1)
    raw = vectorize(small, workers=1, progress=False).geometry.values
    t0 = time.perf_counter()
    cov = vectorize(small, workers=1, progress=False, simplify=tol_m).geometry.values
    t_cov = time.perf_counter() - t0
    dp = shapely.simplify(raw, tol_crs)
    g_cov, o_cov = coverage_gaps_overlaps(cov, raw)
    g_dp, o_dp = coverage_gaps_overlaps(dp, raw)
    return {
        "crop_px": crop, "tolerance_m": tol_m, "gap_overlap_units": units,
        "seconds_coverage_simplify": t_cov,
        "coverage_gap_m2": g_cov, "coverage_overlap_m2": o_cov,
        "dp_gap_m2": g_dp, "dp_overlap_m2": o_dp,
        "coverage_all_valid": bool(shapely.is_valid(cov).all()),
        "vertices_raw": int(shapely.get_num_coordinates(raw).sum()),
        "vertices_coverage": int(shapely.get_num_coordinates(cov).sum()),
    }  # fmt: skip


def verdict(ok: bool | None) -> str:
    return "not judged in --quick mode (one process)" if ok is None else ("PASS" if ok else "FAIL")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="512 px map in-process, for tests")
    p.add_argument("--size", type=int, default=None, help="map side in pixels (default 10240)")
    p.add_argument("--chunk", type=int, default=None, help="geoseg chunk size (default 2048)")
    p.add_argument("--workers", type=int, default=None, help="geoseg workers (default: cores)")
    p.add_argument("--workdir", default="/tmp/geoseg-bench", help="where generated maps go")
    p.add_argument(
        "--source", default=str(STRATA), help="class map to mirror (default: NC strata.tif)"
    )
    p.add_argument("--json", default=None, help="also write the JSON here")
    p.add_argument("--_run", default=None, help=argparse.SUPPRESS)
    p.add_argument("--raster", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--stream", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args._run:
        out = Path(args.out) if args.out else None
        if args._run == "baseline":
            res = run_baseline(Path(args.raster), out)
        else:
            stream = Path(args.stream) if args.stream else None
            res = run_geoseg(Path(args.raster), out, args.chunk, args.workers, stream)
        print(json.dumps(res))
        return

    size = args.size or (512 if args.quick else 10240)
    chunk = args.chunk or (128 if args.quick else 2048)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    workers = args.workers or cores
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    source = Path(args.source)
    stem = "nc" if source == STRATA else source.stem
    big = make_map(size, work / f"{stem}_{size}.tif", source)
    half = make_map(size // 2, work / f"{stem}_{size // 2}.tif", source)
    t_make = time.perf_counter() - t0
    R: dict = {"source": str(source), "size_px": size, "mpx": size * size / 1e6,
               "chunk": chunk, "workers": workers, "cores": cores,
               "map_seconds": t_make}  # fmt: skip

    common = ["--chunk", str(chunk), "--workers", str(workers)]
    if args.quick:
        # in-process (no subprocess start-up costs) so that a test can run it in seconds;
        # peak RSS is not meaningful in one process, so memory is reported, not judged
        base = run_baseline(big, work / "baseline.parquet")
        single = run_geoseg(big, work / "single.parquet", size + 1, 1, None)
        chunked = run_geoseg(big, work / "chunked.parquet", chunk, workers, None)
        m_half = run_geoseg(half, None, chunk, workers, work / "half.gpkg")
        m_big = run_geoseg(big, None, chunk, workers, work / "big.gpkg")
        b_half = run_baseline(half, None)
    else:
        # 1 + 2: baseline, geoseg single pass, geoseg chunked parallel, each in a subprocess
        base = subprocess_run(["--_run", "baseline", "--raster", str(big), "--out",
                               str(work / "baseline.parquet")])  # fmt: skip
        single = subprocess_run(["--_run", "geoseg", "--raster", str(big), "--out",
                                 str(work / "single.parquet"), "--chunk", str(size + 1),
                                 "--workers", "1"])  # fmt: skip
        chunked = subprocess_run(["--_run", "geoseg", "--raster", str(big), "--out",
                                  str(work / "chunked.parquet"), *common])  # fmt: skip
        # 3: memory, streaming to GeoPackage, at size/2 and size
        m_half = subprocess_run(["--_run", "geoseg", "--raster", str(half), "--stream",
                                 str(work / "half.gpkg"), *common])  # fmt: skip
        m_big = subprocess_run(["--_run", "geoseg", "--raster", str(big), "--stream",
                                str(work / "big.gpkg"), *common])  # fmt: skip
        b_half = subprocess_run(["--_run", "baseline", "--raster", str(half)])
    R["baseline"], R["single"], R["chunked"] = base, single, chunked
    R["exact_chunked_vs_single"] = compare(work / "chunked.parquet", work / "single.parquet")
    R["exact_chunked_vs_baseline"] = compare(work / "chunked.parquet", work / "baseline.parquet")
    R["speedup_vs_baseline"] = base["seconds"] / chunked["seconds"]

    def total(m: dict) -> float:
        return m["main_mb"] + workers * m["largest_child_mb"] if workers > 1 else m["main_mb"]

    R["memory"] = {
        "stream_half": m_half, "stream_full": m_big, "baseline_half": b_half,
        "baseline_full": {k: base[k] for k in ("main_mb", "largest_child_mb")},
        "total_half_mb": total(m_half), "total_full_mb": total(m_big),
        "ratio_full_over_half": total(m_big) / total(m_half),
        "main_ratio_full_over_half": m_big["main_mb"] / m_half["main_mb"],
        "measured": not args.quick,
    }  # fmt: skip
    # 4: coverage quality
    R["coverage"] = coverage_quality(big, 256 if args.quick else 2048, 2.0)

    ex = R["exact_chunked_vs_single"]
    exact_ok = ex["n_a"] == ex["n_b"] == ex["geometries_equal"] and ex["max_rel_area_diff"] <= 1e-9
    speed_ok = R["speedup_vs_baseline"] >= 1.8
    mem_ok = R["memory"]["ratio_full_over_half"] <= 1.2 if not args.quick else None
    cov = R["coverage"]
    cov_ok = cov["coverage_gap_m2"] < 1e-3 and cov["coverage_overlap_m2"] < 1e-3
    R["verdicts"] = {"exactness": exact_ok, "speed_1.8x": speed_ok, "memory_1.2x": mem_ok,
                     "coverage_zero_gaps": cov_ok}  # fmt: skip

    name = Path(R["source"]).name
    print(f"\nvectorization benchmark: {size}x{size} px ({R['mpx']:.0f} Mpx) from {name}, "
          f"chunk {chunk}, {workers} workers on {cores} cores")  # fmt: skip
    rows = [
        ("baseline rasterio.shapes + shapely (1 pass)", base),
        ("geoseg single pass (1 chunk, 1 worker)", single),
        (f"geoseg chunked ({workers} workers)", chunked),
        (f"geoseg stream -> gpkg, {size // 2} px", m_half),
        (f"geoseg stream -> gpkg, {size} px", m_big),
        (f"baseline {size // 2} px", b_half),
    ]
    print(f"{'run':48s} {'seconds':>9s} {'polygons':>10s} {'main MB':>9s} {'child MB':>9s}")
    for name, r in rows:
        print(f"{name:48s} {r['seconds']:9.1f} {r['n']:10d} {r['main_mb']:9.0f} "
              f"{r['largest_child_mb']:9.0f}")  # fmt: skip
    st = chunked.get("stats", {})
    if st:
        print(f"\nchunked run: {st.get('chunks')} chunks in {st.get('chunks_seconds', 0):.1f} s, "
              f"seam merge of {st.get('border_pieces')} border pieces into "
              f"{st.get('merged_regions')} regions in {st.get('merge_seconds', 0):.2f} s "
              f"(largest merged region: {st.get('largest_merged_vertices')} vertices)")  # fmt: skip
    print(f"\n1. exactness chunked vs single: {ex}")
    print(f"   chunked vs baseline:          {R['exact_chunked_vs_baseline']}")
    print(f"   -> {'PASS' if exact_ok else 'FAIL'}")
    print(f"2. speed: {R['speedup_vs_baseline']:.2f}x the baseline (goal >= 1.8x on 2 cores) "
          f"-> {'PASS' if speed_ok else 'FAIL'}")  # fmt: skip
    mm = R["memory"]
    print(f"3. memory: {mm['total_half_mb']:.0f} MB -> {mm['total_full_mb']:.0f} MB for 4x pixels "
          f"(ratio {mm['ratio_full_over_half']:.2f}, goal <= 1.2; main process alone "
          f"{mm['main_ratio_full_over_half']:.2f}); baseline {b_half['main_mb']:.0f} -> "
          f"{base['main_mb']:.0f} MB -> {verdict(mem_ok)}")  # fmt: skip
    print(f"4. coverage after simplify {cov['tolerance_m']} m on {cov['crop_px']} px: geoseg gap "
          f"{cov['coverage_gap_m2']:.3g} m2 overlap {cov['coverage_overlap_m2']:.3g} m2; "
          f"per-polygon Douglas-Peucker gap {cov['dp_gap_m2']:.3g} m2 overlap "
          f"{cov['dp_overlap_m2']:.3g} m2 -> {'PASS' if cov_ok else 'FAIL'}")  # fmt: skip
    print("(timings on a machine shared with other jobs are noisy; rerun on a quiet machine)")
    print(json.dumps(R, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(R, indent=2, default=float))


if __name__ == "__main__":
    main()
