"""The threads scheduler's worker priorities on an idle and on a busy machine.

Run from the repository root (takes about 3 minutes on 2 cores):

    .venv/bin/python benchmarks/threads_under_load.py

``geoseg.inference.threads.ModelPool`` runs reading and blending at ``nice`` 19 once no
other process uses our cores, and falls back to ``nice`` +10 (rescue) when the model
starves or load appears. This compares it with a pool that always stays at ``nice`` +10
(``QUIET_NICENESS = 10``), over half of the 256-file mosaic of
``benchmarks/e2e_many_files.py`` (2048 x 4096 px, 256 px windows, shipped NC model), in
three situations: an idle machine, one busy loop per core from the start, and busy loops
starting 3 s into the run. Each run is repeated; the medians are printed and written to
``benchmarks/results/threads_under_load.json`` with the pool's final mode.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_inference  # noqa: E402
from _inference_data import nc_stack  # noqa: E402
from e2e_many_files import many_files  # noqa: E402

import geoseg.inference.threads as threads  # noqa: E402
from geoseg.inference import predict  # noqa: E402

POOLS: list[threads.ModelPool] = []


def _record_pools() -> None:
    init = threads.ModelPool.__init__

    def wrapped(self: threads.ModelPool, workers: int) -> None:
        init(self, workers)
        POOLS.append(self)

    threads.ModelPool.__init__ = wrapped  # type: ignore[method-assign]


def _hogs(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run(paths: list[str], out: Path, load: str, delay: float) -> tuple[float, str]:
    """One prediction under ``load`` ('none', 'start', 'later'); (seconds, final mode)."""
    hogs: list[subprocess.Popen[bytes]] = []
    starter = None
    cores = len(os.sched_getaffinity(0))
    if load == "start":
        hogs = _hogs(cores)
        time.sleep(0.5)
    elif load == "later":

        def later() -> None:
            time.sleep(delay)
            hogs.extend(_hogs(cores))

        starter = threading.Thread(target=later)
        starter.start()
    try:
        t = time.perf_counter()
        predict(bench_inference.NC_MODEL, paths, out, tile_size=256, progress=False,
                overwrite=True)  # fmt: skip
        seconds = time.perf_counter() - t
    finally:
        if starter is not None:
            starter.join()
        for h in hogs:
            h.kill()
            h.wait()
    time.sleep(1.0)  # let the load average of the busy loops fade from /proc/stat samples
    return seconds, POOLS[-1].mode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--rows", type=int, default=8, help="file rows of the 16 x 16 mosaic used")
    ap.add_argument("--json", default="benchmarks/results/threads_under_load.json")
    ap.add_argument("--workdir", help="keep inputs here (default: a temp folder)")
    args = ap.parse_args()
    if not bench_inference.NC_MODEL.exists():
        raise SystemExit(f"needs the shipped model {bench_inference.NC_MODEL} (run make demo)")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="geoseg-load-"))
    os.environ.setdefault("GEOSEG_CACHE_DIR", str(work / "cache"))
    paths = many_files(nc_stack(work), work / "mosaic", 4096, 16)[: 16 * args.rows]
    out = work / "pred.tif"
    _record_pools()
    run(paths, out, "none", 0.0)  # exports the ONNX model, warms the process
    results: dict[str, Any] = {"files": len(paths), "cores": len(os.sched_getaffinity(0))}
    for load in ("none", "start", "later"):
        row: dict[str, Any] = {}
        for name, nice in (("always +10", threads.SAFE_NICENESS), ("adaptive", 19)):
            threads.QUIET_NICENESS = nice
            runs = [run(paths, out, load, 3.0) for _ in range(args.reps)]
            row[name] = {"seconds": statistics.median(s for s, _ in runs),
                         "runs": [round(s, 2) for s, _ in runs],
                         "modes": [m for _, m in runs]}  # fmt: skip
            print(f"load {load:5s} {name:10s}: {row[name]['seconds']:6.2f} s "
                  f"(runs {row[name]['runs']}, final modes {row[name]['modes']})",
                  flush=True)  # fmt: skip
        row["ratio"] = row["adaptive"]["seconds"] / row["always +10"]["seconds"]
        print(f"load {load:5s} adaptive / always +10: {row['ratio']:.3f}", flush=True)
        results[load] = row
    threads.QUIET_NICENESS = 19
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
