"""Benchmark instance prediction and instance vectorization against their references.

Run from the repository root (2 cores: a few minutes; ``--quick`` for the test suite):

    nice -n 5 .venv/bin/python benchmarks/bench_instances.py \\
        --json benchmarks/results/instances.json

Targets (from the instance issue), each measured as a ratio within this one run:

1. instance prediction throughput >= 0.7 x semantic prediction on the same mosaic and
   model size (the instance model adds three map channels to the same network; the
   extra cost is the decode pass);
2. peak RSS (process and children) of instance prediction on a 4x larger mosaic <= 1.15 x
   the smaller one;
3. instance vectorization of a ~100 Mpx instance map (touching 'buildings') chunked on 2
   workers: exactly the single pass (``rasterio.features.shapes`` over the whole band,
   ids in int32), and faster than it.

Every measured run is a fresh subprocess (clean peak RSS); predictions alternate so that a
busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _inference_data import mirrored_mosaic, nc_stack  # noqa: E402


def _checkpoints(work: Path) -> dict[str, Path]:
    """Two random-weight models of the shipped architecture: semantic and instance."""
    import torch

    from geoseg.classes import ClassTable
    from geoseg.models import ModelMetadata, build_model, save_checkpoint
    from geoseg.tasks import instance_outputs, semantic_outputs

    kw = {"encoder_depth": 3, "decoder_channels": [64, 32, 16]}
    bands = ["B1", "B2", "B3", "B4", "B5", "B7"]
    classes = ClassTable.from_config(
        [{"id": 0, "name": "background"}, {"id": 1, "name": "building", "thing": True}]
    )
    out = {}
    for task, outputs in (("semantic", semantic_outputs(classes)),
                          ("instance", instance_outputs(classes))):  # fmt: skip
        torch.manual_seed(0)
        model = build_model("unet", in_channels=6, outputs=outputs, encoder="tu-resnet10t",
                            kwargs=kw)  # fmt: skip
        meta = ModelMetadata(
            arch="unet", encoder="tu-resnet10t", bands=bands, mean=[80.0] * 6, std=[40.0] * 6,
            classes=classes, task=task, outputs=outputs, tile_size=64, model_kwargs=kw,
            task_options={"decode": {}} if task == "instance" else {},
        )  # fmt: skip
        out[task] = save_checkpoint(model, meta, work / f"{task}.safetensors")
    return out


CHILD_PREDICT = r"""
import sys, time, json, warnings, resource
warnings.simplefilter("ignore")
from pathlib import Path
from geoseg.inference import predict
ck, folder, out, inst = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
tiles = sorted(folder.glob("*.tif"))
t0 = time.perf_counter()
predict(ck, tiles, out, instances=out.with_name(out.stem + "_ids.tif") if inst else None,
        overwrite=True, progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def _run(args: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """A child process: its result, wall time and peak RSS (with children) in MiB."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    ps, peak = psutil.Process(proc.pid), 0.0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(True))
            peak = max(peak, rss / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{args[:4]} failed:\n{err.decode()[-3000:]}")
    res = json.loads(out.decode().strip().splitlines()[-1])
    return {**res, "wall": time.perf_counter() - t0, "rss_mb": peak}


def bench_predict(work: Path, reps: int, quick: bool) -> dict:
    """Targets 1 and 2."""
    cks = _checkpoints(work)
    stack = nc_stack(work)
    small = mirrored_mosaic(stack, work / "mosaic_s", 1 if quick else 3)[0].parent
    large = mirrored_mosaic(stack, work / "mosaic_l", 2 if quick else 6)[0].parent
    env = dict(os.environ, GEOSEG_CACHE_DIR=str(work / "cache"))
    for task in ("semantic", "instance"):  # warm the ONNX export cache
        _run([sys.executable, "-c", CHILD_PREDICT, str(cks[task]), str(small),
              str(work / f"warm_{task}.tif"), "1" if task == "instance" else "0"], env)  # fmt: skip
    times: dict[str, list[float]] = {"semantic": [], "instance": []}
    for rep in range(reps):
        for task in ("semantic", "instance") if rep % 2 == 0 else ("instance", "semantic"):
            flag = "1" if task == "instance" else "0"
            r = _run([sys.executable, "-c", CHILD_PREDICT, str(cks[task]), str(large),
                      str(work / f"{task}.tif"), flag], env)  # fmt: skip
            times[task].append(r["seconds"])
            print(f"  predict {task:9s} rep {rep}: {r['seconds']:.2f} s", flush=True)
    ratio = statistics.median(times["semantic"]) / statistics.median(times["instance"])
    rss = {}
    for name, folder in (("1x", small), ("4x", large)):
        r = _run([sys.executable, "-c", CHILD_PREDICT, str(cks["instance"]), str(folder),
                  str(work / f"rss_{name}.tif"), "1"], env)  # fmt: skip
        rss[name] = r["rss_mb"]
    with __import__("rasterio").open(work / "instance.tif") as ds:
        mpx = ds.width * ds.height / 1e6
    return {
        "mosaic_mpx": mpx,
        "semantic_seconds": times["semantic"],
        "instance_seconds": times["instance"],
        "instance_over_semantic_throughput": ratio,
        "peak_rss_mb": rss,
        "rss_4x_over_1x": rss["4x"] / rss["1x"],
    }


def make_instance_map(size: int, out: Path) -> Path:
    """A size x size uint32 instance map of touching 'buildings' (tiled synthetic scenes)."""
    import rasterio
    from rasterio.windows import Window

    from geoseg.testing import touching_rectangles

    if out.exists():
        return out
    tile = 256
    from affine import Affine

    profile = {"driver": "GTiff", "height": size, "width": size, "count": 1, "dtype": "uint32",
               "nodata": 0, "crs": "EPSG:32618", "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate",
               "transform": Affine(0.5, 0, 500000, 0, -0.5, 4000000)}  # fmt: skip
    tmp = out.with_suffix(".tmp.tif")
    next_id = 0
    with rasterio.open(tmp, "w", **profile) as dst:
        for r in range(0, size, tile):
            row = []
            for c in range(0, size, tile):
                _, ids = touching_rectangles(tile, n=60, seed=(r // tile) * 1000 + c // tile)
                ids = np.where(ids > 0, ids + next_id, 0)
                next_id = int(ids.max(initial=next_id))
                row.append(ids)
            dst.write(np.hstack(row)[None, :, :size].astype("uint32"),
                      window=Window(0, r, size, min(tile, size - r)))  # fmt: skip
    tmp.rename(out)
    return out


CHILD_SINGLE = r"""
import sys, time, json, warnings
warnings.simplefilter("ignore")
import numpy as np, rasterio, shapely
from rasterio.features import shapes
t0 = time.perf_counter()
with rasterio.open(sys.argv[1]) as src:
    a = src.read(1).astype("int32")
    feats = [(shapely.geometry.shape(g), int(v)) for g, v in shapes(a, mask=a > 0,
             transform=src.transform)]
geoms = np.array([g for g, _ in feats], object)
ids = np.array([v for _, v in feats])
order = np.argsort(ids, kind="stable")
wkb = shapely.to_wkb(shapely.normalize(geoms[order]))
np.save(sys.argv[2], np.stack([ids[order].astype(object), wkb], 1), allow_pickle=True)
print(json.dumps({"seconds": time.perf_counter() - t0, "n": len(feats)}))
"""

CHILD_CHUNKED = r"""
import sys, time, json, warnings
warnings.simplefilter("ignore")
import numpy as np, shapely
from geoseg.vectorize import vectorize
t0 = time.perf_counter()
gdf = vectorize(sys.argv[1], instances=True, chunk_size=int(sys.argv[3]), workers=2,
                progress=False)
sec = time.perf_counter() - t0
wkb = shapely.to_wkb(shapely.normalize(gdf.geometry.values))
np.save(sys.argv[2], np.stack([gdf["instance_id"].to_numpy().astype(object), wkb], 1),
        allow_pickle=True)
print(json.dumps({"seconds": sec, "n": len(gdf)}))
"""


def bench_vectorize(work: Path, size: int, chunk: int) -> dict:
    """Target 3."""
    path = make_instance_map(size, work / f"instances_{size}.tif")
    single = _run([sys.executable, "-c", CHILD_SINGLE, str(path), str(work / "single.npy")])
    chunked = _run([sys.executable, "-c", CHILD_CHUNKED, str(path), str(work / "chunked.npy"),
                    str(chunk)])  # fmt: skip
    a = np.load(work / "single.npy", allow_pickle=True)
    b = np.load(work / "chunked.npy", allow_pickle=True)
    same_ids = len(a) == len(b) and bool((a[:, 0] == b[:, 0]).all())
    # the chunked result is in pixel-exact canonical form; compare geometry equality
    ga = shapely.from_wkb(a[:, 1].astype(bytes)) if len(a) else np.empty(0)
    gb = shapely.from_wkb(b[:, 1].astype(bytes)) if len(b) else np.empty(0)
    equal = int(shapely.equals(ga, gb).sum()) if same_ids else 0
    return {
        "mpx": size * size / 1e6,
        "objects": len(b),
        "single_pass": single,
        "chunked": chunked,
        "ids_equal": same_ids,
        "geometries_equal": equal,
        "speedup": single["seconds"] / chunked["seconds"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for the test suite")
    ap.add_argument("--json", default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="geoseg-inst-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    global shapely
    import shapely

    print("1-2. instance vs semantic prediction", flush=True)
    pred = bench_predict(work, 1 if args.quick else args.reps, args.quick)
    print("3. instance vectorization", flush=True)
    vec = bench_vectorize(work, 1024 if args.quick else 10240, 256 if args.quick else 2048)
    verdicts = {
        "throughput": pred["instance_over_semantic_throughput"] >= 0.7,
        "memory": pred["rss_4x_over_1x"] <= 1.15,
        "vectorize_exact": vec["ids_equal"] and vec["geometries_equal"] == vec["objects"],
        "vectorize_faster": vec["speedup"] > 1.0,
    }
    print(f"\n{'target':58s} {'measured':>12s} {'goal':>8s}")
    rows = [
        ("1 instance / semantic prediction throughput",
         f"{pred['instance_over_semantic_throughput']:.3f}", ">= 0.7", verdicts["throughput"]),
        (f"2 peak RSS, 4x mosaic / 1x ({pred['peak_rss_mb']['4x']:.0f} / "
         f"{pred['peak_rss_mb']['1x']:.0f} MiB)", f"{pred['rss_4x_over_1x']:.3f}", "<= 1.15",
         verdicts["memory"]),
        (f"3 vectorize {vec['mpx']:.0f} Mpx, {vec['objects']} objects: geometries equal",
         f"{vec['geometries_equal']}", "all", verdicts["vectorize_exact"]),
        ("3 chunked speed-up over the single pass", f"{vec['speedup']:.2f}x", "> 1",
         verdicts["vectorize_faster"]),
    ]  # fmt: skip
    for name, measured, goal, ok in rows:
        print(f"{name:58s} {measured:>12s} {goal:>8s}  {'PASS' if ok else 'FAIL'}")
    result = {"predict": pred, "vectorize": vec, "verdicts": verdicts, "quick": args.quick}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
