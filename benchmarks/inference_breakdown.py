"""Where the time of one ``geoseg predict`` goes: read, model, blend, write, finish.

Diagnostic for the end-to-end overhead figures (CPU or GPU):

    .venv/bin/python benchmarks/inference_breakdown.py [--device cuda] [--reps 12]

Predicts a mirrored multi-file mosaic of the North Carolina Landsat stack with the shipped
model several times in one process (the first run is a warm-up) and prints, per run, the
wall time and the seconds summed over all threads spent in each stage: reading windows,
waiting for the model lock, the model itself, blending blocks, the main thread's block
writes and the final COG conversion. A ``null`` model run (the model replaced by a
zero-cost stand-in) gives the pipeline's own ceiling in Mpx/s; ``--sleep-model S`` stands
in for a GPU without one (the model thread waits S seconds per 16 windows, holding no
core and not the GIL). Each run also reports when the model was first called and how long
before the end its last call finished (the pipeline's start-up and tail).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _inference_data import mirrored_mosaic, nc_stack  # noqa: E402

MODEL = HERE.parent / "models" / "nc_landcover.safetensors"
_T: dict[str, float] = {}
_LOCK = threading.Lock()


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.perf_counter() - t
            with _LOCK:
                _T[name] = _T.get(name, 0.0) + dt

    return wrapper


#: When the model was first called ("first") and its last call ended ("last"), this run.
_SPAN: dict[str, float] = {}


def _span(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` noting its first start and last end in :data:`_SPAN`."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _SPAN.setdefault("first", time.perf_counter())
        try:
            return fn(*args, **kwargs)
        finally:
            _SPAN["last"] = time.perf_counter()

    return wrapper


def _instrument(null_model: bool, sleep_model: float | None = None, n_classes: int = 7) -> None:
    import geoseg.inference.backends as be
    import geoseg.inference.graph as graph
    import geoseg.io.cog as writer
    import geoseg.io.mosaic as mosaic

    mosaic.Mosaic.read = _timed("read", mosaic.Mosaic.read)  # type: ignore[method-assign]
    # batches read through the relay: their time includes reading others' pieces
    mosaic.Mosaic.read_many = _timed("read", mosaic.Mosaic.read_many)  # type: ignore[method-assign]
    graph.finalize_block = _timed("blend", graph.finalize_block)
    writer.BlockWriter.write = _timed("write", writer.BlockWriter.write)  # type: ignore[method-assign]
    writer.BlockWriter.finish = _timed("finish", writer.BlockWriter.finish)  # type: ignore[method-assign]
    init = be.Runner.__init__

    def runner_init(self: Any, spec: Any) -> None:
        init(self, spec)
        self._fn = _span(_timed("model", self._fn))

    be.Runner.__init__ = runner_init  # type: ignore[method-assign]
    be.Runner.__call__ = _timed("model+lock", be.Runner.__call__)  # type: ignore[method-assign]
    if null_model or sleep_model is not None:

        def fake(spec: Any) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
            @_span
            def run(x: np.ndarray) -> dict[str, np.ndarray]:
                if sleep_model:  # a GPU's share: the thread waits, the GIL is free
                    time.sleep(sleep_model * x.shape[0] / 16)
                p = np.empty((x.shape[0], n_classes, *x.shape[2:]), np.float32)
                p[:] = x[:, :1] * 0.01
                return {"classes": p}  # the runner's named outputs

            return run

        graph.get_runner = fake


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=6, help="mosaic is reps x reps files")
    ap.add_argument("--runs", type=int, default=2, help="timed runs after the warm-up")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--null-model", action="store_true")
    ap.add_argument(
        "--sleep-model",
        type=float,
        metavar="SECONDS",
        help="a stand-in model that waits SECONDS per 16 windows (the GIL released), as "
        "a thread waiting for a GPU does",
    )
    ap.add_argument("--workers", type=int, help="reading/blending threads (default: cores + 1)")
    ap.add_argument("--model", default=str(MODEL), help="checkpoint (default: the NC model)")
    ap.add_argument(
        "--inputs",
        nargs="+",
        help="the mosaic's files (default: the NC stack mirrored to reps x reps files)",
    )
    ap.add_argument("--json")
    args = ap.parse_args()
    from geoseg.models import read_metadata

    classes = next(o.channels for o in read_metadata(args.model).outputs if o.name == "classes")
    _instrument(args.null_model, args.sleep_model, classes)
    from geoseg.inference import predict

    work = Path(tempfile.mkdtemp(prefix="geoseg-breakdown-"))
    paths = args.inputs or mirrored_mosaic(nc_stack(work), work / "mosaic", args.reps)
    out = []
    for i in range(args.runs + 1):
        _T.clear()
        _SPAN.clear()
        stats: dict[str, Any] = {}
        t = time.perf_counter()
        predict(
            args.model,
            paths,
            work / "classes.tif",
            device=args.device,
            batch_size=args.batch_size,
            workers=args.workers,
            progress=False,
            overwrite=True,
            stats=stats,
        )
        wall = time.perf_counter() - t
        mpx = stats["width"] * stats["height"] / 1e6
        row = {"run": "warm-up" if i == 0 else i, "wall": wall, "mpx_per_s": mpx / wall}
        row.update({k: round(v, 3) for k, v in sorted(_T.items())})
        if _SPAN:
            row["first_model_call"] = round(_SPAN["first"] - t, 3)
            row["after_last_model_call"] = round(t + wall - _SPAN["last"], 3)
        out.append(row)
        parts = "  ".join(f"{k} {v:.2f}" for k, v in sorted(_T.items()))
        if _SPAN:
            parts += (
                f"  model first called at {row['first_model_call']:.2f} s, last done "
                f"{row['after_last_model_call']:.2f} s before the end"
            )
        print(
            f"{row['run']!s:>7}: wall {wall:6.2f} s  {mpx / wall:6.2f} Mpx/s ({mpx:.1f} Mpx, "
            f"{stats['windows']} windows, {stats['backend']}/{stats['device']})  {parts}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
