"""GPU check for geoseg inference: device=cuda vs device=cpu on a real mosaic.

Self-contained (needs only the repository), runs in well under 3 minutes:

    .venv/bin/python benchmarks/gpu_check.py [--reps 4] [--json out.json]

Builds a mirrored multi-file mosaic of the North Carolina Landsat stack, predicts it with
``models/nc_landcover.safetensors`` (or a seeded random U-Net when absent) on CUDA (fp32
and bf16) and on the CPU (default backend), and reports pixel agreement of the class
maps and throughput in Mpx/s. Exit status 1 when fp32 CUDA and CPU agree on < 99.9 %
of valid pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _inference_data import RGB, mirrored_mosaic, nc_stack  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json")
    ap.add_argument(
        "--no-distributed",
        dest="distributed",
        action="store_false",
        help="skip the dask.distributed LocalCluster run on the GPU",
    )
    args = ap.parse_args()
    import rasterio
    import torch

    from geoseg.inference import predict

    if not torch.cuda.is_available():
        print("no CUDA device visible; nothing to check")
        return 2
    work = Path(tempfile.mkdtemp(prefix="geoseg-gpu-"))
    model = HERE.parent / "models" / "nc_landcover.safetensors"
    if model.exists():
        ckpt, base = model, nc_stack(work)
    else:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from _inference_helpers import tiny_checkpoint

        ckpt, base = tiny_checkpoint(work / "random.safetensors"), RGB
    paths = mirrored_mosaic(base, work / "mosaic", args.reps)
    runs: dict[str, dict[str, Any]] = {
        "cuda_fp32": {"device": "cuda", "precision": "fp32"},
        "cuda_bf16": {"device": "cuda", "precision": "bf16"},
        "cpu": {"device": "cpu"},
    }
    res: dict[str, dict] = {"gpu": {"name": torch.cuda.get_device_name(0)}}
    maps = {}
    cluster = None
    if args.distributed:
        # One GPU worker process (one model on the GPU), several threads for reading
        # and blending: the layout --scheduler tcp://... gets on a GPU node.
        from distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=1, threads_per_worker=4, processes=True, dashboard_address=None
        )
        # first run: the worker process initializes CUDA and loads the model
        runs["cuda_distributed_warmup"] = {
            "device": "cuda",
            "precision": "fp32",
            "scheduler": cluster.scheduler_address,
        }
        runs["cuda_distributed"] = {
            "device": "cuda",
            "precision": "fp32",
            "scheduler": cluster.scheduler_address,
        }
    for name, kw in [("warmup", runs["cuda_fp32"]), *runs.items()]:
        stats: dict = {}
        t = time.perf_counter()
        out = predict(
            ckpt,
            paths,
            work / f"{name}.tif",
            batch_size=args.batch_size,
            progress=False,
            overwrite=True,
            stats=stats,
            **kw,
        )
        wall = time.perf_counter() - t
        with rasterio.open(out) as ds:
            maps[name] = ds.read(1)
            nodata = ds.nodata
        mpx = stats["width"] * stats["height"] / 1e6
        res[name] = {
            "seconds": wall,
            "mpx_per_s": mpx / wall,
            "backend": stats["backend"],
            "windows": stats["windows"],
            "mpx": mpx,
        }
        print(
            f"{name:<10} {wall:7.2f} s  {mpx / wall:7.2f} Mpx/s  ({stats['backend']}, "
            f"{stats['windows']} windows, {mpx:.1f} Mpx)",
            flush=True,
        )
    valid = maps["cpu"] != nodata
    for name in ("cuda_fp32", "cuda_bf16"):
        agree = float((maps[name] == maps["cpu"])[valid].mean())
        same_nodata = bool(np.array_equal(maps[name] == nodata, ~valid))
        res[name]["agreement_with_cpu"] = agree
        res[name]["same_nodata"] = same_nodata
        print(
            f"{name} vs cpu: {100 * agree:.4f} % of valid pixels agree; no-data identical: "
            f"{same_nodata}"
        )
    ok = res["cuda_fp32"]["agreement_with_cpu"] >= 0.999 and res["cuda_fp32"]["same_nodata"]
    if cluster is not None:
        same = bool(np.array_equal(maps["cuda_distributed"], maps["cuda_fp32"]))
        res["cuda_distributed"]["identical_to_threads"] = same
        print(f"cuda distributed (LocalCluster, 1 GPU worker) == cuda threads: {same}")
        cluster.close()
    print("VERDICT:", "PASS" if ok else "FAIL", "(fp32 CUDA vs CPU >= 99.9 % agreement)")
    res["model_alone"] = _model_alone(ckpt, args.batch_size)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0 if ok else 1


def _model_alone(ckpt: Path, batch_size: int, batches: int = 8) -> dict:
    """Throughput of geoseg's CUDA runner alone (tensors in host memory, softmax and
    copy back included): the ceiling the end-to-end figures above are compared with."""
    import torch

    from geoseg.inference.backends import RunnerSpec, get_runner
    from geoseg.models import read_metadata

    meta = read_metadata(ckpt)
    tile = 512
    out = {}
    for precision in ("fp32", "bf16"):
        run = get_runner(
            RunnerSpec(
                checkpoint=str(ckpt),
                backend="torch",
                precision=precision,
                device="cuda",
                tile_size=tile,
            )
        )
        x = np.random.default_rng(0).standard_normal(
            (batch_size, len(meta.bands), tile, tile), dtype=np.float32
        )
        run(x)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(batches):
            run(x)
        dt = time.perf_counter() - t
        mpx = batches * batch_size * tile * tile / 1e6
        out[precision] = {"seconds": dt, "mpx_per_s": mpx / dt}
        print(f"model alone, cuda {precision}: {mpx / dt:8.1f} Mpx/s (batch {batch_size})")
    return out


if __name__ == "__main__":
    sys.exit(main())
