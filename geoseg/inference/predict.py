"""The public ``predict()``: checkpoint + GeoTIFF mosaic -> class map COG (+ probabilities)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import ConfigError, SchedulerError, warn
from geoseg.inference.arguments import check_predict_arguments
from geoseg.inference.backends import (
    RunnerSpec,
    choose_backend,
    get_runner,
    resolve_device,
    tta_transforms,
)
from geoseg.inference.blending import DEFAULT_BLEND, BlendFn, weight_window
from geoseg.inference.checks import check_grid, check_value_range
from geoseg.inference.execute import execute_graph
from geoseg.inference.graph import BlockSpec, build_graph
from geoseg.inference.instances import decode_instances, task_map
from geoseg.inference.memory import (
    check_gpu_memory,
    check_tile_memory,
    gpu_memory_error,
    release_gpu_memory,
)
from geoseg.inference.objects import ObjectDecoder, number_objects
from geoseg.inference.products import DECODERS
from geoseg.inference.resume import ResumeStore, discard_outdated, file_digest, fingerprint
from geoseg.inference.tiling import axis_starts, check_tiling
from geoseg.instances.objects import check_key_space
from geoseg.io.cog import BlockWriter
from geoseg.io.handles import file_stamp, gdal_cache_env
from geoseg.io.mosaic import Mosaic, open_mosaic
from geoseg.io.outputs import (
    atomic_path,
    check_distinct,
    check_output_path,
    check_output_suffix,
    remove_stale_temporaries,
    work_folder,
)
from geoseg.io.validity import nodata_rule
from geoseg.tasks import has_objects

#: Local Dask schedulers accepted by name; anything starting with ``tcp://`` (or a
#: ``distributed.Client``) runs on a ``dask.distributed`` cluster.
SCHEDULERS = ("threads", "processes", "synchronous")

#: Default overlap as a fraction of the tile: 512 px tiles overlap by 64 px, so the
#: model runs on (512/448)^2 = 1.31x the pixels of a non-overlapping grid.
DEFAULT_OVERLAP_FRACTION = 8

#: Smallest default tile (pixels). Fully convolutional models predict at any size; a
#: larger window gives the pixels near a seam more context for the same overlap
#: fraction. Measured with the NC land-cover model (trained on 64 px tiles) against one
#: whole-scene window: 64/8 px -> 3.2 % of pixels differ, 128/16 -> 0.68 %,
#: 256/32 -> 0.13 %, 512/64 -> below 0.1 % (benchmarks/bench_inference.py).
DEFAULT_MIN_TILE = 512


def default_tile_size(checkpoint_tile: int, factor: int = 32) -> int:
    """Default window: the checkpoint's tile, at least :data:`DEFAULT_MIN_TILE` px."""
    tile = max(int(checkpoint_tile), DEFAULT_MIN_TILE)
    return -(-tile // factor) * factor


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_overlap(tile_size: int, *, objects: bool = False) -> int:
    """The default overlap for ``tile_size`` (pixels): ``tile_size // 8``.

    Object-list models get ``tile_size // 4``: the claim rule gives each object to one
    window exactly when objects are smaller than the overlap
    (:mod:`geoseg.instances.objects`), so 128 px at 512 px windows.
    """
    return tile_size // (DEFAULT_OVERLAP_FRACTION // 2 if objects else DEFAULT_OVERLAP_FRACTION)


def _connect(scheduler: Any, timeout: float) -> Any:
    """Return a distributed Client for a ``tcp://`` address or Client, else None."""
    if not isinstance(scheduler, str):
        if hasattr(scheduler, "get") and hasattr(scheduler, "scheduler_info"):
            return scheduler
        raise ConfigError(f"scheduler: expected a name or a distributed.Client, got {scheduler!r}")
    if scheduler in SCHEDULERS:
        return None
    if "://" not in scheduler:
        raise ConfigError(
            f"scheduler: unknown scheduler {scheduler!r}; valid values are {list(SCHEDULERS)} "
            "or the address of a dask.distributed scheduler ('tcp://host:8786')"
        )
    try:
        from distributed import Client

        return Client(scheduler, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(
            f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:g} s "
            f"({type(exc).__name__}); start it (`dask scheduler`) or use scheduler='threads'"
        ) from exc


def predict(
    checkpoint: str | Path,
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    probabilities: str | Path | None = None,
    instances: str | Path | None = None,
    objects: str | Path | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    blend: str | BlendFn = DEFAULT_BLEND,
    tta: bool | str = False,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    scheduler: Any = "threads",
    device: str = "auto",
    precision: str = "fp32",
    backend: str = "auto",
    bands: Sequence[int | str] | None = None,
    crs: str | None = None,
    dst_crs: str | None = None,
    resolution: float | tuple[float, float] | None = None,
    resampling: str = "nearest",
    nodata: float | str | None = "auto",
    block_size: int = 1024,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    connect_timeout: float = 5.0,
    stats: dict[str, Any] | None = None,
) -> Path | tuple[Path, ...]:
    """Segment a GeoTIFF mosaic with a geoseg checkpoint, tile by tile, seam-free.

    The mosaic is read window by window and never held in memory; overlapping windows
    are blended as ``sum(w*p)/sum(w)`` with a strictly positive window; output blocks
    are written as they finish and converted to Cloud-Optimized GeoTIFFs at the end
    (written under a temporary name, renamed on success). The result is bit-for-bit
    the same for every scheduler and ``block_size``.

    Args:
        checkpoint: a geoseg checkpoint (bands, normalization, classes, tile size).
        inputs: a GeoTIFF, several GeoTIFFs forming a mosaic (any CRS/resolution:
            reprojected onto one grid), a folder of rasters or a VRT.
        output: the class map COG (uint8 ids, uint16 past 255; colour table, class names).
        probabilities: per-class probability COG (uint8, p = v/254, 255 = no-data).
        instances: instance and panoptic models: the instance-id COG (band 1: uint32 id,
            0 = no object, deterministic and unique over the mosaic, the same for every
            block size and scheduler; band 2: the object's class id).
        objects: instance and panoptic models: a CSV table of the objects (id, class,
            pixels, score: mean footprint probability over the object's seed).
        tile_size: model window in pixels (default: the checkpoint's, >= 512 px).
        overlap: overlap between windows in pixels (default: ``tile_size // 8``).
        batch_size: windows per model call.
        blend: a name from :data:`geoseg.inference.blending.BLEND_WINDOWS` or a callable.
        tta: test-time augmentation: False, True/``"d4"`` (8 flips/rotations) or ``"flip"``.
        workers: Dask workers: threads for ``threads`` (default: cores + 1; one model
            shared), processes for ``processes`` (default: cores; one model each).
        threads_per_worker: intra-op threads of each model (default: cores / models).
        scheduler: ``threads``, ``processes``, ``synchronous``, a ``tcp://`` address of
            a running ``dask.distributed`` scheduler, or a ``distributed.Client``.
            Distributed workers must see the same files as the caller.
        device: ``cpu``, ``cuda`` or ``auto``.
        precision: ``fp32`` or ``bf16`` (autocast; measured disagreement in the README).
        backend: ``auto`` (ONNX Runtime for fp32 CPU, else PyTorch), ``onnx`` or ``torch``.
        bands: 1-based band indexes or band descriptions to read, in model order.
        crs: CRS to assume for inputs without one.
        dst_crs: output grid CRS (default: the first input's).
        resolution: output pixel size in ``dst_crs`` units (default: the first input's).
        resampling: resampling for inputs that need reprojection.
        nodata: no-data of inputs that declare none: ``"auto"`` (the model's training
            value and band rule, :mod:`geoseg.io.validity`), a number, or None.
        block_size: output block side in pixels (the Dask chunking; any value gives the
            same result).
        overwrite: replace existing outputs.
        resume: keep finished blocks in a folder beside the outputs while running and,
            when that folder exists from an interrupted run of the same command (same
            checkpoint, inputs and options), continue from its blocks; the result is
            bit-for-bit that of an uninterrupted run (:mod:`geoseg.inference.resume`).
        progress: show a progress bar.
        connect_timeout: seconds to wait for a distributed scheduler.
        stats: if a dict is given, it is filled with run statistics.

    Returns:
        The class map path; when other outputs are asked for, a tuple of the class map and
        then, in this order, those of ``probabilities``, ``instances``, ``objects``.

    Raises:
        ConfigError: bad option values.
        InputFileError: missing, corrupt or truncated input (named).
        DataError: no CRS, band mismatch between files or with the checkpoint.
        CheckpointError: unreadable checkpoint.
        OutputError: output exists (without overwrite) or cannot be written.
        SchedulerError: the scheduler cannot be reached or the distributed run failed.
        ResourceError: the windows in flight need more memory than the machine (or the GPU)
            has, or CUDA ran out of it mid-run (:mod:`geoseg.inference.memory`).
    """
    args = check_predict_arguments(locals())
    with gdal_cache_env():
        return _predict(**args)


def _predict(
    checkpoint: str | Path,
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    probabilities: str | Path | None,
    instances: str | Path | None,
    objects: str | Path | None,
    tile_size: int | None,
    overlap: int | None,
    batch_size: int,
    blend: str | BlendFn,
    tta: bool | str,
    workers: int | None,
    threads_per_worker: int | None,
    scheduler: Any,
    device: str,
    precision: str,
    backend: str,
    bands: Sequence[int | str] | None,
    crs: str | None,
    dst_crs: str | None,
    resolution: float | tuple[float, float] | None,
    resampling: str,
    nodata: float | str | None,
    block_size: int,
    overwrite: bool,
    resume: bool,
    progress: bool,
    connect_timeout: float,
    stats: dict[str, Any] | None,
) -> Path | tuple[Path, ...]:
    from geoseg.models import read_metadata

    t_start = time.perf_counter()
    meta = read_metadata(checkpoint)
    factor = meta.size_divisor()
    objects_model = has_objects(meta.outputs)
    tile = default_tile_size(meta.tile_size, factor) if tile_size is None else int(tile_size)
    ov = default_overlap(tile, objects=objects_model) if overlap is None else int(overlap)
    _check_options(meta, tile, ov, factor, batch_size)
    _check_object_options(meta, tta, probabilities)
    _check_numbers(block_size=block_size, workers=workers,
                   threads_per_worker=threads_per_worker, resolution=resolution)  # fmt: skip
    targets = _targets(
        meta, {"classes": output, "probabilities": probabilities, "instances": instances,
               "objects": objects}, overwrite, [checkpoint, *_as_list(inputs)],
    )  # fmt: skip
    weight = weight_window(blend, tile, ov)
    transforms = tuple(tta_transforms(tta))
    mosaic = open_mosaic(inputs, model_bands=meta.bands, bands=bands, crs=crs, dst_crs=dst_crs,
                         resolution=resolution, resampling=resampling,
                         nodata=nodata_rule(nodata, meta))  # fmt: skip
    check_grid(mosaic)
    check_value_range(mosaic, np.asarray(meta.mean), np.asarray(meta.std), list(meta.bands))
    decoder = _decoder(meta, "probabilities" in targets, min(block_size, 512))
    _check_key_space(decoder, mosaic, tile, ov, factor)
    dev = resolve_device(device)
    client = _connect(scheduler, connect_timeout)
    n_workers, threads, threads_by_worker = _worker_layout(
        client, scheduler, workers, threads_per_worker
    )
    in_flight = _in_flight(meta, mosaic, (tile, ov, batch_size), scheduler, n_workers)
    if client is None:  # before the model is exported or loaded (not on a cluster's workers)
        _check_memory(checkpoint, meta, tile, in_flight, dev, precision)
    spec = _runner_spec(
        checkpoint, backend, precision, dev, tile, transforms, (threads, threads_by_worker),
        objects=objects_model,
        # one process holds the batches and blends them: they can stay on the GPU
        on_device=client is None and scheduler in ("threads", "synchronous"),
    )  # fmt: skip
    plan = _Plan(
        mosaic=mosaic,
        spec=spec,
        decoder=decoder,
        blend=tuple(o.name for o in meta.outputs if o.per_pixel and o.merge == "blend"),
        claim=next((o.name for o in meta.outputs if o.merge == "claim"), None),
        tile=tile,
        overlap=ov,
        batch_size=batch_size,
        block_size=block_size,
        weight=weight,
        mean=np.asarray(meta.mean, dtype=np.float32),
        std=np.asarray(meta.std, dtype=np.float32),
        align=factor,
    )
    try:
        n_windows, n_blocks = _run_checked(plan, targets, in_flight, overwrite=overwrite,
                                           client=client, scheduler=scheduler, workers=n_workers,
                                           progress=progress, resume=resume)  # fmt: skip
    finally:
        if client is not None and isinstance(scheduler, str):
            client.close()
    if stats is not None:
        stats.update(backend=spec.backend, device=dev, tile_size=tile, overlap=ov,
                     windows=n_windows, blocks=n_blocks, height=mosaic.height, width=mosaic.width,
                     seconds=time.perf_counter() - t_start)  # fmt: skip
    if len(targets) == 1:
        return targets["classes"]
    return tuple(targets.values())


def _decoder(meta: Any, probabilities: bool, chunk: int) -> Any:
    """The task's decoder of a checkpoint (object-list models: the claim-rule decoder)."""
    if has_objects(meta.outputs):
        return ObjectDecoder.for_checkpoint(meta, probabilities=probabilities, chunk=chunk)
    return DECODERS[meta.task](meta, probabilities=probabilities, chunk=chunk)


def _in_flight(
    meta: Any, mosaic: Mosaic, sizes: tuple[int, int, int], scheduler: Any, n_workers: int | None
) -> tuple[int, int]:
    """(windows per model call, model copies) of a local run; ``sizes``: (tile, overlap, batch)."""
    tile, overlap, batch_size = sizes
    windows = _window_count(mosaic, tile, overlap, meta.size_divisor())
    return min(batch_size, windows), ((n_workers or 1) if scheduler == "processes" else 1)


def _check_memory(
    checkpoint: str | Path,
    meta: Any,
    tile: int,
    in_flight: tuple[int, int],
    device: str,
    precision: str,
) -> None:
    """ResourceError when the windows in flight need more memory than there is.

    On the CPU the machine's memory, on a GPU the device's; see
    :mod:`geoseg.inference.memory`.
    """
    batch, copies = in_flight
    if device == "cpu":
        check_tile_memory(checkpoint, meta, tile, batch=batch, models=copies)
    else:
        check_gpu_memory(checkpoint, meta, tile, device=device, batch=batch, models=copies,
                         precision=precision)  # fmt: skip


def _window_count(mosaic: Mosaic, tile: int, overlap: int, align: int) -> int:
    """How many model windows cover the mosaic."""
    n_rows = len(axis_starts(mosaic.height, tile, overlap, align=align))
    return n_rows * len(axis_starts(mosaic.width, tile, overlap, align=align))


def _check_key_space(decoder: Any, mosaic: Mosaic, tile: int, overlap: int, align: int) -> None:
    """Object models: the provisional object keys of the mosaic must fit in uint32."""
    if isinstance(decoder, ObjectDecoder):
        check_key_space(_window_count(mosaic, tile, overlap, align), decoder.max_objects)


def _runner_spec(
    checkpoint: str | Path,
    backend: str,
    precision: str,
    device: str,
    tile: int,
    tta: tuple[tuple[int, bool], ...],
    threads: tuple[int, tuple[tuple[str, int], ...]],
    *,
    objects: bool = False,
    on_device: bool = False,
) -> RunnerSpec:
    """The runner every worker builds (``auto`` resolved, ONNX exported when chosen).

    ``on_device``: the batches are blended in this process, so a torch model on a GPU
    leaves its outputs there (not with test-time augmentation, which averages on the
    host, nor for object-list models).
    """
    chosen, onnx_path = choose_backend(
        backend, checkpoint=str(checkpoint), precision=precision, device=device, tile_size=tile,
        objects=objects,
    )  # fmt: skip
    keep = on_device and chosen == "torch" and device != "cpu" and len(tta) == 1 and not objects
    return RunnerSpec(
        checkpoint=str(Path(checkpoint).resolve()),
        checkpoint_version=file_stamp(os.stat(checkpoint)),
        backend=chosen,
        precision=precision,
        device=device,
        tile_size=tile,
        tta=tta,
        onnx_path=onnx_path,
        threads=threads[0],
        threads_by_worker=threads[1],
        keep_on_device=keep,
    )


def _as_list(inputs: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [inputs] if isinstance(inputs, str | Path) else list(inputs)


def _targets(
    meta: Any, paths: dict[str, str | Path | None], overwrite: bool, inputs: list[str | Path]
) -> dict[str, Path]:
    """The checked output paths by product name (in the order of ``paths``)."""
    if meta.task not in ("instance", "panoptic"):
        asked = [k for k in ("instances", "objects") if paths.get(k) is not None]
        if asked:
            raise ConfigError(
                f"{asked[0]}: the checkpoint is a {meta.task} model; instance ids need an "
                "instance or panoptic model (train one with task: instance)"
            )
    for k, p in paths.items():
        if p:
            check_output_suffix(p, _FORMATS[k][0], what=_FORMATS[k][1])
    targets = {
        k: check_output_path(p, overwrite=overwrite, inputs=inputs) for k, p in paths.items() if p
    }
    check_distinct(targets)
    return targets


#: The extensions and format of each output of predict.
_FORMATS: dict[str, tuple[tuple[str, ...], str]] = {
    "classes": ((".tif", ".tiff"), "a Cloud-Optimized GeoTIFF"),
    "probabilities": ((".tif", ".tiff"), "a Cloud-Optimized GeoTIFF"),
    "instances": ((".tif", ".tiff"), "a Cloud-Optimized GeoTIFF"),
    "objects": ((".csv",), "a CSV table"),
}


def _check_object_options(meta: Any, tta: bool | str, probabilities: Any) -> None:
    """Options an object-list model cannot honour: clear errors, before any work."""
    if not has_objects(meta.outputs):
        return
    if tta not in (False, None, "none"):
        raise ConfigError(
            f"tta: test-time augmentation averages per-pixel outputs; the {meta.arch} model "
            "outputs object lists (drop --tta)"
        )
    if probabilities is not None and not any(o.name == "classes" for o in meta.outputs):
        raise ConfigError(
            f"probabilities: the {meta.arch} model has no per-pixel class scores; ask for "
            "--instances and --objects (per-object scores) instead"
        )


def _check_options(meta: Any, tile: int, overlap: int, factor: int, batch_size: int) -> None:
    check_tiling(tile, overlap)
    if tile % factor:
        raise ConfigError(
            f"tile_size {tile} px must be a multiple of {factor} for this "
            f"{meta.arch}/{meta.encoder} model; try {tile - tile % factor + factor}"
        )
    if not 1 <= batch_size <= 4096:
        raise ConfigError(f"batch_size must be 1 to 4096 windows, got {batch_size}")
    if tile > MAX_TILE:
        raise ConfigError(
            f"tile_size {tile} px is larger than any sensible model window (at most "
            f"{MAX_TILE} px: one window is {tile}^2 px x {len(meta.bands)} bands in memory)"
        )


#: Largest model window (pixels).
MAX_TILE = 8192


def _check_numbers(
    *,
    block_size: int,
    workers: int | None,
    threads_per_worker: int | None,
    resolution: float | tuple[float, float] | None,
) -> None:
    """Options that size work: clear errors before anything is read."""
    if not 16 <= block_size <= 65536:
        raise ConfigError(f"block_size must be 16 to 65536 pixels, got {block_size}")
    if workers is not None and not 1 <= workers <= 4096:
        raise ConfigError(f"workers must be 1 to 4096, got {workers}")
    if threads_per_worker is not None and not 1 <= threads_per_worker <= 4096:
        raise ConfigError(f"threads_per_worker must be 1 to 4096, got {threads_per_worker}")
    if resolution is not None:
        values = [resolution] if isinstance(resolution, int | float) else list(resolution)
        import math

        if not values or not all(math.isfinite(v) and v > 0 for v in values):
            raise ConfigError(
                f"resolution must be a pixel size > 0 in the output CRS units, got {resolution}"
            )


def _worker_layout(
    client: Any, scheduler: Any, workers: int | None, threads_per_worker: int | None
) -> tuple[int | None, int, tuple[tuple[str, int], ...]]:
    """(local workers, model threads, per-distributed-worker threads)."""
    cores = _cpu_count()
    threads_by_worker: tuple[tuple[str, int], ...] = ()
    if client is not None:
        threads = threads_per_worker or 1
        if threads_per_worker is None:
            try:
                info = client.scheduler_info(n_workers=-1)
            except TypeError:
                info = client.scheduler_info()
            hosts: dict[str, int] = {}
            for w in info["workers"].values():
                hosts[w["host"]] = hosts.get(w["host"], 0) + 1
            threads_by_worker = tuple(
                (addr, max(1, cores // hosts[w["host"]])) for addr, w in info["workers"].items()
            )
        return None, threads, threads_by_worker
    if scheduler == "processes":
        n_workers = workers or cores
        return n_workers, threads_per_worker or max(1, cores // n_workers), ()
    return workers or cores + 1, threads_per_worker or cores, ()


@dataclass(frozen=True)
class _Plan:
    """Everything that defines the computation (the result depends on nothing else)."""

    mosaic: Mosaic
    spec: RunnerSpec
    decoder: Any
    blend: tuple[str, ...]
    tile: int
    overlap: int
    batch_size: int
    block_size: int
    weight: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    align: int
    claim: str | None = None


def _run_checked(
    plan: _Plan, targets: dict[str, Path], in_flight: tuple[int, int], **kwargs: Any
) -> tuple[int, int]:
    """:func:`_run_plan`, with CUDA running out of memory turned into one ResourceError.

    ``in_flight``: (windows per model call, model copies). The error is raised after the
    ``except`` block, unchained, so that the failed batch's tensors can be freed.
    """
    spec = plan.spec
    try:
        return _run_plan(plan, targets, **kwargs)
    except Exception as exc:
        failed = None if spec.device == "cpu" else gpu_memory_error(
            exc, device=spec.device, tile=plan.tile, batch=in_flight[0], models=in_flight[1],
            precision=spec.precision)  # fmt: skip
        if failed is None:
            raise
    release_gpu_memory()
    raise failed


def _run_plan(
    plan: _Plan,
    targets: dict[str, Path],
    *,
    overwrite: bool,
    client: Any,
    scheduler: Any,
    workers: int | None,
    progress: bool,
    resume: bool = False,
) -> tuple[int, int]:
    """Run the graph into a work folder beside the outputs; rename the COGs at the end."""
    from rasterio.crs import CRS

    mosaic = plan.mosaic
    first = next(iter(targets.values()))
    with contextlib.ExitStack() as stack:
        tmp = {
            name: stack.enter_context(atomic_path(path, overwrite=overwrite))
            for name, path in targets.items()
        }
        remove_stale_temporaries(first.parent)
        work = str(work_folder(first.parent, "predict"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        store = _resume_store(plan, targets) if resume else None
        writer = BlockWriter(work, crs=CRS.from_wkt(mosaic.crs), transform=mosaic.transform,
                             height=mosaic.height, width=mosaic.width,
                             products=plan.decoder.products())  # fmt: skip
        stack.callback(writer.close)
        out_dir = str(store.folder) if store is not None else work
        dsk, keys, n_windows = build_graph(
            mosaic, plan.spec, tile_size=plan.tile, overlap=plan.overlap,
            batch_size=plan.batch_size, block_size=plan.block_size, weight=plan.weight,
            mean=plan.mean, std=plan.std, token=uuid.uuid4().hex[:12], align=plan.align,
            block_spec=BlockSpec(blend=plan.blend, decoder=plan.decoder, out_dir=out_dir,
                                 claim=plan.claim),
        )  # fmt: skip
        todo, valid_before = _resumed_blocks(dsk, keys, store, writer)
        try:
            execute_graph(dsk, todo, writer=writer, client=client, scheduler=scheduler,
                     workers=workers, progress=progress, store=store,
                     valid_before=valid_before, prepare=partial(get_runner, plan.spec))  # fmt: skip
        except BaseException:
            if store is not None:
                warn(
                    f"prediction stopped: {store.count()} of {len(keys)} blocks are kept in "
                    f"{str(store.folder)!r}; run the same command with --resume "
                    "(resume=True) to continue from them"
                )
            raise
        mosaic.check_unchanged()  # every window was read from the files scanned
        _finish_products(plan, writer, tmp, work, task_map(client, scheduler, workers), progress)
        if store is not None:
            store.remove()
        else:  # the outputs are written: a kept resume folder for them is of no use now
            discard_outdated(first.parent, targets.values())
    return n_windows, len(keys)


def _resume_store(plan: _Plan, targets: dict[str, Path]) -> ResumeStore:
    """The resume folder of this exact computation (see :mod:`geoseg.inference.resume`)."""
    from geoseg import __version__

    spec = plan.spec
    key = fingerprint([
        __version__, file_digest(spec.checkpoint), plan.mosaic, plan.tile, plan.overlap,
        plan.batch_size, plan.block_size, plan.weight, plan.mean, plan.std, plan.align,
        plan.blend, plan.claim, plan.decoder, spec.backend, spec.precision, spec.device,
        spec.tile_size, spec.tta, spec.threads, spec.threads_by_worker, sorted(targets),
    ])  # fmt: skip
    first = next(iter(targets.values()))
    return ResumeStore.open(first.parent, key, targets.values())


def _resumed_blocks(
    dsk: dict[Any, Any], keys: list[Any], store: ResumeStore | None, writer: BlockWriter
) -> tuple[list[Any], int]:
    """Write the blocks a resume folder holds: (keys still to run, valid blocks written)."""
    if store is None:
        return keys, 0
    blocks = {k: dsk[k][1] for k in keys}  # (finalize_block, block, ...)
    done = store.finished(blocks.values())
    for block, path in done.items():
        writer.write(block, path, keep=True)
    return [k for k in keys if blocks[k] not in done], sum(p is not None for p in done.values())


def _finish_products(
    plan: _Plan,
    writer: BlockWriter,
    tmp: dict[str, Path],
    work: str,
    run: Any,
    progress: bool,
) -> None:
    """Turn the intermediate rasters into the outputs (instance tasks: the decode pass)."""
    mosaic = plan.mosaic
    if isinstance(plan.decoder, ObjectDecoder):
        writer.finish({k: v for k, v in tmp.items() if k == "probabilities"})
        number_objects(plan.decoder, writer.tmp["objects"], mosaic, tmp, work=work, run=run,
                       progress=progress)  # fmt: skip
    elif hasattr(plan.decoder, "final_products"):
        writer.finish({k: v for k, v in tmp.items() if k == "probabilities"})
        decode_instances(plan.decoder, writer.tmp["maps"], mosaic, tmp, work=work, run=run,
                         progress=progress)  # fmt: skip
    else:
        writer.finish(tmp)
