"""Side-by-side speed and memory of two geoseg revisions on the same workloads.

Each revision is a checkout (``git worktree add --detach /tmp/geoseg-a <commit>``); every
run happens in a fresh subprocess with ``PYTHONPATH`` pointing at one checkout, and the
two revisions alternate (A B A B ...) so that a busy machine slows both alike. Reported:
the median wall time and peak RSS (process and children) of each, and their ratio B / A.

    .venv/bin/python benchmarks/ab_compare.py --a /tmp/geoseg-a --b . --reps 3 \\
        --json benchmarks/results/ab_compare.json

Workloads (the ones ``make bench`` measures, at a size that runs in minutes on 2 cores):

* ``predict``: the shipped NC model over the NC Landsat scene mirrored into a 4 x 4
  mosaic of 16 files (1956 x 1772 px), default options, with probabilities;
* ``vectorize``: the NC 1996 land-cover map mirrored to 4096 x 4096 px, 1024 px chunks,
  2 workers, streamed to a GeoPackage;
* ``stats``: class areas of that map;
* ``train``: ``configs/nc_landcover.yaml`` for 2 epochs of 160 tiles, one thread.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

CHILD = r"""
import sys, time, json, warnings
warnings.simplefilter("ignore")
work, what = sys.argv[1], sys.argv[2]
from pathlib import Path
work = Path(work)
t0 = time.perf_counter()
if what == "predict":
    from geoseg.inference import predict
    tiles = sorted((work / "mosaic").glob("*.tif"))
    predict(sys.argv[3], tiles, work / f"out_{sys.argv[4]}.tif",
            probabilities=work / f"prob_{sys.argv[4]}.tif", overwrite=True, progress=False)
elif what == "vectorize":
    from geoseg.vectorize import vectorize_to_file
    vectorize_to_file(work / "map.tif", work / f"poly_{sys.argv[4]}.gpkg", overwrite=True,
                      chunk_size=1024, workers=2, progress=False)
elif what == "stats":
    from geoseg.analysis import class_areas
    class_areas(work / "map.tif", progress=False)
elif what == "train":
    import shutil, uuid
    from geoseg.training import train
    run = work / f"run_{sys.argv[4]}_{uuid.uuid4().hex[:8]}"  # a new folder every time
    train(sys.argv[3], output_dir=run, overrides=[
        "training.max_epochs=2", "data.train_samples=160", "training.progress_bar=false",
        "training.num_threads=1", "training.early_stopping_patience=null"])
    shutil.rmtree(run, ignore_errors=True)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def _peak_rss_run(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run a child process; its wall time and peak RSS (with its children) in MiB."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0.0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(
                c.memory_info().rss for c in ps.children(recursive=True)
            )
            peak = max(peak, rss / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{args} failed:\n{err.decode()[-2000:]}")
    inner = json.loads(out.decode().strip().splitlines()[-1])["seconds"]
    return {"wall": time.perf_counter() - t0, "inner": inner, "rss_mb": peak}


def _inputs(work: Path) -> None:
    import numpy as np
    import rasterio
    from _inference_data import mirrored_mosaic, nc_stack

    mirrored_mosaic(nc_stack(work), work / "mosaic", 4)
    if not (work / "map.tif").exists():
        with rasterio.open(ROOT / "data" / "nc-landsat7-landcover" / "strata.tif") as src:
            a, prof = src.read(1), src.profile
        reps = -(-4096 // min(a.shape)) + 1
        tiles = [[a[:: (-1 if i % 2 else 1), :: (-1 if j % 2 else 1)] for j in range(reps)]
                 for i in range(reps)]  # fmt: skip
        big = np.block(tiles)[:4096, :4096]
        prof.update(width=4096, height=4096, tiled=True, blockxsize=512, blockysize=512,
                    compress="deflate")  # fmt: skip
        with rasterio.open(work / "map.tif", "w", **prof) as dst:
            dst.write(big, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="checkout of the first (baseline) revision")
    ap.add_argument("--b", default=str(ROOT), help="checkout of the second revision")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=["predict", "vectorize", "stats", "train"])
    ap.add_argument("--json", default=None)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="geoseg-ab-"))
    work.mkdir(parents=True, exist_ok=True)
    _inputs(work)
    sides = {"A": Path(args.a).resolve(), "B": Path(args.b).resolve()}
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for what in args.only:
        results[what] = {"A": [], "B": []}
        for rep in range(args.reps):
            for side in ("A", "B") if rep % 2 == 0 else ("B", "A"):
                checkout = sides[side]
                env = dict(os.environ, PYTHONPATH=str(checkout),
                           GEOSEG_CACHE_DIR=str(work / f"cache_{side}"))  # fmt: skip
                extra = {
                    "predict": [str(checkout / "models" / "nc_landcover.safetensors"), side],
                    "vectorize": ["-", side],
                    "stats": ["-", side],
                    "train": [str(checkout / "configs" / "nc_landcover.yaml"), side],
                }[what]
                if what == "predict" and rep == 0:  # one-time ONNX export, not timed
                    _peak_rss_run([sys.executable, "-c", CHILD, str(work), what, *extra], env)
                r = _peak_rss_run([sys.executable, "-c", CHILD, str(work), what, *extra], env)
                results[what][side].append(r)
                print(f"{what:10s} {side} rep {rep}: {r['wall']:.2f} s, {r['rss_mb']:.0f} MiB",
                      flush=True)  # fmt: skip
    table = {}
    head = ("workload", "A s", "B s", "B/A", "A MiB", "B MiB", "B/A")
    print("\n{:10s} {:>8s} {:>8s} {:>6s} {:>8s} {:>8s} {:>6s}".format(*head))
    for what, r in results.items():
        sa = statistics.median(x["wall"] for x in r["A"])
        sb = statistics.median(x["wall"] for x in r["B"])
        ma = statistics.median(x["rss_mb"] for x in r["A"])
        mb = statistics.median(x["rss_mb"] for x in r["B"])
        table[what] = {"a_seconds": sa, "b_seconds": sb, "time_ratio": sb / sa,
                       "a_rss_mb": ma, "b_rss_mb": mb, "rss_ratio": mb / ma, "runs": r}  # fmt: skip
        print(f"{what:10s} {sa:8.2f} {sb:8.2f} {sb / sa:6.3f} {ma:8.0f} {mb:8.0f} {mb / ma:6.3f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"a": str(sides["A"]), "b": str(sides["B"]), "reps": args.reps, "results": table},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
