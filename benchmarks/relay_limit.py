"""The read relay's limit (pieces read at once <= cores) against no limit, side by side.

    .venv/bin/python benchmarks/relay_limit.py [--sleep-model 0.12] [--runs 5]

Predicts the 12 x 12-file mirrored North Carolina mosaic (31.2 Mpx, 256 px windows in
batches of 16, ``--workers`` threads, as ``inference_breakdown.py`` does) with a stand-in
model that waits ``--sleep-model`` seconds per 16 windows (a GPU's share; ``0``: the
real model on the CPU), alternating the relay's limit between the number of cores and
none in one process, and prints per setting the wall times, when the model was first
called and how long before the end its last call ended. The first round is a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import inference_breakdown as ib  # noqa: E402
from _inference_data import mirrored_mosaic, nc_stack  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sleep-model", type=float, default=0.12)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--reps", type=int, default=12, help="mosaic is reps x reps files")
    ap.add_argument("--workers", type=int, help="Dask threads (default: cores + 1; 17 is an "
                    "H200 machine's 16 cores + 1)")  # fmt: skip
    ap.add_argument("--json")
    args = ap.parse_args()
    ib._instrument(False, args.sleep_model or None)
    from geoseg.inference import predict
    from geoseg.io.relay import RELAY

    cores = RELAY.limit
    work = Path(tempfile.mkdtemp(prefix="geoseg-relay-"))
    paths = mirrored_mosaic(nc_stack(work), work / "mosaic", args.reps)
    workers = args.workers or len(os.sched_getaffinity(0)) + 1
    limits = {f"limit {cores} (cores)": cores, "no limit": 10**9}
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in limits}
    for i in range(args.runs + 1):
        for name, limit in limits.items():
            RELAY.limit = limit
            ib._SPAN.clear()
            t = time.perf_counter()
            predict(ib.MODEL, paths, work / "map.tif", progress=False, overwrite=True,
                    batch_size=16, workers=workers)  # fmt: skip
            wall = time.perf_counter() - t
            if i:
                rows[name].append({"wall": wall, "first_call": ib._SPAN["first"] - t,
                                   "tail": t + wall - ib._SPAN["last"]})  # fmt: skip
    RELAY.limit = cores
    for name, rs in rows.items():
        print(f"{name:18s} " + "  ".join(
            f"{k} {statistics.median(r[k] for r in rs):.2f} s "
            f"[{min(r[k] for r in rs):.2f}-{max(r[k] for r in rs):.2f}]"
            for k in ("wall", "first_call", "tail")))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"sleep_model": args.sleep_model,
                                               "workers": workers, **rows}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
