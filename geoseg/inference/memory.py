"""Memory a model window needs, checked against the machine before anything is allocated.

A model's activations grow with the square of its window. Measured with ``/usr/bin/time``
(peak RSS of the whole process) on a 2-core, 24 GB machine with ``models/nc_landcover``
(a 0.5 M-parameter U-Net): ``geoseg export`` takes 1.11 GB at 64 px, 1.32 GB at 512 px,
2.37 GB at 1024 px, 4.10 GB at 1536 px and 6.49 GB at 2048 px (8192 px was killed by the
kernel at 23.7 GB); ``geoseg predict`` the same for one window, since it exports the
ONNX model it runs. That is 1310 bytes per window pixel beyond the ~1.1 GB of the
process; a tiny test U-Net (resnet18, decoder 16-8-4) takes 761. Batches add less than
a window each: predicting a 2048 px image in 1024 px windows took 3.8, 4.8 and 4.6 GB
with batches of 4, 8 and 8 windows (ONNX, ONNX, torch backend).

The estimate, per model, without loading its weights:

* ``bytes(T)``: the outputs of every leaf module of one forward pass (shapes only, on
  torch's ``meta`` device; on the CPU for models the meta device cannot run), probed at
  two small windows ``t`` and ``2 t`` and fitted as ``bytes(T) = fixed + per_px * T^2``
  (a Mask R-CNN resizes every window to 800 px: almost all ``fixed``). That is 1640
  bytes per pixel for the nc U-Net and 892 for the tiny one (the measured 1310 and 761,
  plus 17-25 %);
* the process's peak with one window: ``RUNTIME_BYTES + bytes(T)``;
* with batches of ``B`` windows: ``RUNTIME_BYTES + bytes(T) * (1 + (B - 1) * BATCH_SHARE)``,
  the second term times the model copies held at once (one per worker process).

A run no heavier than a default prediction (batches of 8 windows of 512 px, or one
window of up to 849 px) is neither probed nor refused. A heavier one is compared with the
memory the process can use now (what it holds plus ``psutil``'s ``available``, lowered
to a cgroup's limit when the process runs in one). Against the
measured peaks above it is 9-25 % high (2.8 GB for 2.4 GB at 1024 px, 8.0 GB for 6.5 GB
at 2048 px, 5.8 GB for 4.9 GB with batches of 8 windows of 1024 px). Probes are cached
per checkpoint version in the geoseg cache folder, so a later run with its ONNX model
already exported still needs no torch.

**On a CUDA GPU** the same estimate is held against another budget
(:func:`check_gpu_memory`, before the model is loaded): ``B`` windows in flight need
``weights + B * bytes(T) * precision`` on the device, each model copy (one per worker
process) as much again. ``weights`` are the parameters and buffers in float32, 1.5x
with bf16 (autocast keeps a bf16 copy of the weights it casts); ``precision`` is 1 for
fp32 and :data:`BF16_SHARE` for bf16 (autocast halves the outputs of convolutions and
matrix products but keeps normalization layers and softmax in float32, so a little
more than half). Unlike host memory, GPU memory grows with the whole batch (each window
has its own activations), so every window of a batch counts fully. ``bytes(T)`` adds
up the outputs of every layer as if all were alive at once, which inference never
holds on a GPU (most outputs are freed once the next layer has read them); that
surplus is what covers cuDNN's workspaces and the batch outputs kept on the GPU for
blending (:mod:`geoseg.inference.device`), none of which is counted (not measured on a
GPU). A run with no more pixels in flight than a default one (8 windows of 512 px) is
neither probed nor refused; a heavier one is compared with the device's free memory
(``torch.cuda.mem_get_info``, plus what torch's caching allocator holds unused in this
process) and refused with the largest tile size and batch size that fit. If CUDA still
runs out of memory during the run, :func:`gpu_memory_error` turns its
``torch.cuda.OutOfMemoryError`` (or a cuBLAS / cuDNN allocation failure) into one
:class:`~geoseg.errors.ResourceError` with the same advice.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import ResourceError
from geoseg.io.handles import file_stamp

#: Peak memory of a prediction or export process apart from the window's activations:
#: Python, torch or ONNX Runtime, the model, reading and blending buffers (measured:
#: 1.11 GB peak RSS at a 64 px window, for either model).
RUNTIME_BYTES = 1_100_000_000
#: Each window of a batch after the first adds this share of one window's estimate
#: (measured with 1024 px windows: 4 windows 1.6x and 8 windows 2.2-2.4x one window).
BATCH_SHARE = 0.25
#: Windows in flight (in window-equivalents, see :func:`workload`) of a default prediction:
#: batches of 8 windows of 512 px. No lighter run is probed or refused: every default
#: run does as much, and needs no torch to be checked.
DEFAULT_WORKLOAD = 512**2 * (1 + 7 * BATCH_SHARE)
#: On a GPU every window of a batch counts fully (its activations are its own).
GPU_BATCH_SHARE = 1.0
#: Pixels in flight on a GPU in a default prediction (8 windows of 512 px): no run with
#: as few is probed, nor is the device asked for its free memory.
DEFAULT_GPU_WORKLOAD = 512**2 * (1 + 7 * GPU_BATCH_SHARE)
#: Activation bytes with bf16 autocast, as a share of the float32 probe: convolutions and
#: matrix products output bf16 (half), normalization layers and softmax stay float32.
BF16_SHARE = 0.6
#: Weight bytes with bf16 autocast, as a share of the float32 weights: the weights plus
#: the bf16 copies autocast makes of those it casts.
BF16_WEIGHT_SHARE = 1.5
#: Probe windows (pixels): the smallest multiple of the model's size divisor from this, and
#: twice that.
PROBE_TILE = 64
#: Bumped when the probe changes (cached probes of another version are not used).
PROBE_VERSION = 3


@dataclass(frozen=True)
class Probe:
    """What the probe measured of a model: one forward pass is ``fixed + per_px * T^2``."""

    #: bytes of a forward pass that do not grow with the window
    fixed: float
    #: bytes per window pixel
    per_px: float
    #: bytes of the parameters and buffers (float32)
    weights: float

    def window(self, tile: int) -> float:
        """Bytes of one forward pass over a ``tile`` px window."""
        return self.fixed + self.per_px * tile**2


@dataclass(frozen=True)
class Budget:
    """How one window's estimate adds up to the memory of a run (host or GPU)."""

    #: bytes apart from the windows' activations
    base: float
    #: each window of a batch after the first adds this share of one window
    batch_share: float
    #: activation bytes relative to the float32 probe
    scale: float = 1.0

    def need(self, probe: Probe, tile: int, batch: int, models: int) -> float:
        """Bytes of ``models`` copies each running batches of ``batch`` windows."""
        windows = (1 + (batch - 1) * self.batch_share) * models
        return self.base + self.scale * probe.window(tile) * windows

    def largest_tile(self, probe: Probe, room: float, batch: int, models: int, factor: int) -> int:
        """The largest multiple of ``factor`` (>= 16 px) that fits in ``room`` (0: none)."""
        windows = (1 + (batch - 1) * self.batch_share) * models
        one = (room - self.base) / (self.scale * windows)
        if one <= probe.fixed or probe.per_px <= 0:
            return 0
        tile = int(math.sqrt((one - probe.fixed) / probe.per_px)) // factor * factor
        return tile if tile >= max(16, factor) else 0

    def largest_batch(self, probe: Probe, room: float, tile: int, models: int) -> int:
        """The most windows of ``tile`` px per batch that fit in ``room`` (0: not one)."""
        windows = (room - self.base) / (self.scale * probe.window(tile) * models)
        if windows < 1:
            return 0
        return int((windows - 1) / self.batch_share) + 1


_PROBES: dict[str, Probe | None] = {}


def available_memory() -> int:
    """Bytes of memory this process can use: what it holds plus what is available.

    Available is psutil's ``available`` (free plus reclaimable caches), capped by the
    room left under a cgroup's memory limit when the process runs in one.
    """
    import psutil

    avail = int(psutil.virtual_memory().available)
    cgroup = _cgroup_room()
    if cgroup is not None:
        avail = min(avail, cgroup)
    return avail + int(psutil.Process().memory_info().rss)


def _cgroup_room() -> int | None:
    """Bytes left under the cgroup's memory limit (v2 or v1), None without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(int(limit) - usage, 0)
    return None


def window_bytes(checkpoint: str | Path, meta: Any, tile: int) -> int | None:
    """Estimated bytes of one forward pass over a ``tile`` px window (None: cannot tell)."""
    probe = _probe(checkpoint, meta)
    return None if probe is None else int(probe.window(tile))


def workload(
    tile: int, *, batch: int = 1, models: int = 1, batch_share: float = BATCH_SHARE
) -> float:
    """Pixels in flight, weighted as the estimate weighs the windows of a batch."""
    return float(tile**2 * (1 + (batch - 1) * batch_share) * models)


#: The budget of a process's memory (see the module docstring).
HOST_BUDGET = Budget(RUNTIME_BYTES, BATCH_SHARE)


def _gpu_budget(probe: Probe, precision: str, models: int) -> Budget:
    """The budget of a CUDA device: each model copy's weights, then the windows."""
    bf16 = precision == "bf16"
    weights = probe.weights * (BF16_WEIGHT_SHARE if bf16 else 1.0)
    return Budget(weights * models, GPU_BATCH_SHARE, BF16_SHARE if bf16 else 1.0)


def estimate_memory(
    checkpoint: str | Path, meta: Any, tile: int, *, batch: int = 1, models: int = 1
) -> int | None:
    """Estimated peak bytes of running ``models`` copies on batches of ``batch`` windows."""
    probe = _probe(checkpoint, meta)
    return None if probe is None else int(HOST_BUDGET.need(probe, tile, batch, models))


def estimate_gpu_memory(
    checkpoint: str | Path,
    meta: Any,
    tile: int,
    *,
    batch: int = 1,
    models: int = 1,
    precision: str = "fp32",
) -> int | None:
    """Estimated GPU bytes of ``models`` copies on batches of ``batch`` windows."""
    probe = _probe(checkpoint, meta)
    if probe is None:
        return None
    return int(_gpu_budget(probe, precision, models).need(probe, tile, batch, models))


def check_tile_memory(
    checkpoint: str | Path,
    meta: Any,
    tile: int,
    *,
    batch: int = 1,
    models: int = 1,
    available: int | None = None,
) -> int | None:
    """ResourceError when the estimate for ``tile`` exceeds the memory available now.

    Args:
        checkpoint: the checkpoint file (its probe is cached by version).
        meta: its metadata.
        tile: the window in pixels.
        batch: windows per model call.
        models: model copies running at once (one per worker process).
        available: bytes available (default: :func:`available_memory`).

    Returns:
        The estimate in bytes; None when nothing was checked: no heavier than a default
        prediction (:data:`DEFAULT_WORKLOAD`), or a model that cannot be probed.
    """
    if workload(tile, batch=batch, models=models) <= DEFAULT_WORKLOAD:
        return None
    probe = _probe(checkpoint, meta)
    if probe is None:
        return None
    room = available_memory() if available is None else available
    return _check(probe, HOST_BUDGET, room, meta, (tile, batch, models), _Place())


def check_gpu_memory(
    checkpoint: str | Path,
    meta: Any,
    tile: int,
    *,
    device: str,
    batch: int = 1,
    models: int = 1,
    precision: str = "fp32",
) -> int | None:
    """ResourceError when the windows in flight on a CUDA device exceed its free memory.

    Args:
        checkpoint: the checkpoint file (its probe is cached by version).
        meta: its metadata.
        tile: the window in pixels.
        device: the CUDA device (``cuda``, ``cuda:1``).
        batch: windows per model call.
        models: model copies on the device at once (one per worker process).
        precision: ``fp32`` or ``bf16``.

    Returns:
        The estimate in bytes; None when nothing was checked: no more pixels in flight
        than a default prediction (:data:`DEFAULT_GPU_WORKLOAD`; the device is not even
        asked), or a model that cannot be probed.
    """
    if workload(tile, batch=batch, models=models, batch_share=GPU_BATCH_SHARE) <= (
        DEFAULT_GPU_WORKLOAD
    ):
        return None
    probe = _probe(checkpoint, meta)
    if probe is None:
        return None
    label, room = gpu_free_memory(device)
    more: tuple[str, ...] = ()
    if precision != "bf16":
        bf16 = _gpu_budget(probe, "bf16", models).need(probe, tile, batch, models)
        more = (f"precision='bf16' / --precision bf16 (about {_gb(bf16)})",)
    place = _Place(
        memory=f"GPU memory on {label}",
        room="is free there",
        detail=f" at {precision}, {_gb(_gpu_budget(probe, precision, 1).base)} of weights",
        more=more,
    )
    return _check(probe, _gpu_budget(probe, precision, models), room, meta,
                  (tile, batch, models), place)  # fmt: skip


def gpu_free_memory(device: str) -> tuple[str, int]:
    """(``cuda:N (its name)``, bytes this process can still allocate there) of a CUDA device.

    The device's free memory (``torch.cuda.mem_get_info``) plus what torch's caching
    allocator holds unused in this process (an earlier run's freed blocks).
    """
    import torch

    index = _gpu_index(device)
    free, _total = torch.cuda.mem_get_info(index)
    cached = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
    return gpu_label(device), int(free) + max(int(cached), 0)


def _gpu_index(device: str) -> int:
    import torch

    index = torch.device(device).index
    return torch.cuda.current_device() if index is None else int(index)


def gpu_label(device: str) -> str:
    """``cuda:N (device name)``, or ``device`` itself when CUDA cannot say."""
    try:
        import torch

        index = _gpu_index(device)
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    except Exception:  # only a label: never hide the error it is for
        return device


@dataclass(frozen=True)
class _Place:
    """The words of a refusal for one kind of memory."""

    memory: str = "memory"
    room: str = "is available"
    detail: str = ""
    more: tuple[str, ...] = ()


def _check(
    probe: Probe,
    budget: Budget,
    room: int,
    meta: Any,
    run: tuple[int, int, int],
    place: _Place,
) -> int:
    """The estimate of ``run`` = (tile, batch, models); ResourceError when over ``room``."""
    tile, batch, models = run
    need = int(budget.need(probe, tile, batch, models))
    if need <= room:
        return need
    shape = f"{tile}^2 px windows" + (f" in batches of {batch}" if batch > 1 else "")
    if models > 1:
        shape += f" in {models} worker processes"
    fits = budget.largest_tile(probe, room, batch, models, meta.size_divisor())
    ways = [f"a smaller tile_size / --tile-size (at most {fits} px fits now)"] if fits else []
    if batch > 1:
        most = budget.largest_batch(probe, room, tile, models)
        at_most = f"; at most {most} {'fits' if most == 1 else 'fit'} now" if most else ""
        ways.append(f"fewer windows per batch (batch_size / --batch-size{at_most})")
    if models > 1:
        ways.append("fewer worker processes (workers / --workers)")
    ways += place.more
    advice = "pass " + " or ".join(ways) if ways else "free memory or use a bigger machine"
    per_px = budget.scale * probe.window(tile) / tile**2
    raise ResourceError(
        f"tile_size {tile} px needs about {_gb(need)} of {place.memory} for this {meta.arch}/"
        f"{meta.encoder} model ({per_px:,.0f} bytes per window pixel{place.detail}, {shape}), "
        f"but {_gb(room)} {place.room}: {advice}"
    )


#: Messages of the RuntimeErrors CUDA libraries raise when an allocation of their own (not
#: torch's caching allocator, whose failures are ``torch.cuda.OutOfMemoryError``) fails.
GPU_OOM_MESSAGES = ("CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED",
                    "CUDNN_STATUS_ALLOC_FAILED")  # fmt: skip


def gpu_out_of_memory(exc: BaseException) -> BaseException | None:
    """The ``torch.cuda.OutOfMemoryError`` that is ``exc`` or caused it, else None.

    Also a RuntimeError with one of :data:`GPU_OOM_MESSAGES`. Follows ``__cause__`` and
    ``__context__`` (a distributed run wraps a worker's error in a
    :class:`~geoseg.errors.SchedulerError`). Needs no torch when none was imported.
    """
    torch = sys.modules.get("torch")
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom is None:
        return None
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, oom) or (
            isinstance(cur, RuntimeError) and any(m in str(cur) for m in GPU_OOM_MESSAGES)
        ):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def gpu_memory_error(
    exc: BaseException,
    *,
    device: str,
    tile: int,
    batch: int,
    models: int = 1,
    precision: str = "fp32",
) -> ResourceError | None:
    """The ResourceError to raise for CUDA running out of memory in a run, else None.

    ``exc`` is what the run raised; None when it is not (and was not caused by) CUDA
    running out of memory (:func:`gpu_out_of_memory`). Raise the result outside the
    ``except`` block that caught ``exc`` and call :func:`release_gpu_memory` first: the
    error does not chain ``exc``, whose traceback holds the failed batch's tensors on
    the GPU.
    """
    oom = gpu_out_of_memory(exc)
    if oom is None:
        return None
    asked = re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]?i?B)", str(oom))
    more = f"; it could not allocate {asked.group(1)} more" if asked else ""
    copies = f", {models} model copies" if models > 1 else ""
    names = ["batch_size", "tile_size", *(["workers"] if models > 1 else [])]
    lower = " or ".join(f"--{n.replace('_', '-')} ({n})" for n in names)
    bf16 = "" if precision == "bf16" else ", or use --precision bf16 (precision='bf16')"
    return ResourceError(
        f"the GPU {gpu_label(device)} ran out of memory at tile_size {tile} px / batch_size "
        f"{batch} ({precision}{copies}{more}): lower {lower}{bf16}; no output was written"
    )


def release_gpu_memory() -> None:
    """Free what a failed run left on the GPU (its tensors, torch's cached blocks)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    gc.collect()  # tracebacks of the failure hold tensors in reference cycles
    try:
        torch.cuda.empty_cache()
    except Exception:  # only a courtesy to other processes
        pass


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def _probe(checkpoint: str | Path, meta: Any) -> Probe | None:
    """The model's :class:`Probe`, cached in memory and on disk."""
    key = _probe_key(checkpoint)
    if key in _PROBES:
        return _PROBES[key]
    found, cached = _read_cached(key)
    if not found:
        cached = _measure(meta)
        _write_cached(key, cached)
    _PROBES[key] = cached
    return cached


def _measure(meta: Any) -> Probe | None:
    """Probe the model's activations at two window sizes (meta device, else CPU)."""
    factor = meta.size_divisor()
    t1 = max(factor, -(-PROBE_TILE // factor) * factor)
    for device in ("meta", "cpu"):
        try:
            (b1, b2), weights = _activation_bytes(meta, (t1, 2 * t1), device)
        except Exception:  # any model failing a probe is just not checked
            continue
        if b1 > 0 and b2 > 0:
            per_px = max((b2 - b1) / (3 * t1 * t1), 0.0)  # (2 t1)^2 - t1^2 = 3 t1^2
            return Probe(max(b1 - per_px * t1 * t1, 0.0), per_px, float(weights))
    return None


def _activation_bytes(meta: Any, tiles: tuple[int, ...], device: str) -> tuple[list[int], int]:
    """Bytes of every leaf module's outputs in a forward pass of (1, C, T, T), per tile.

    Also returns the bytes of the model's parameters and buffers.
    """
    import torch

    from geoseg.models.checkpoint import build_network

    with torch.device("meta"):
        net = build_network(meta).eval()
    weights = sum(_tensor_bytes(t) for t in (*net.parameters(), *net.buffers()))
    if device != "meta":  # weights allocated, not initialized (slow for big models): zeros
        net = net.to_empty(device=device)
        with torch.no_grad():
            for t in (*net.parameters(), *net.buffers()):
                t.zero_()
    total = 0

    def hook(module: Any, inputs: Any, output: Any) -> None:
        nonlocal total
        total += _tensor_bytes(output)

    leaves = [m for m in net.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    out = []
    try:
        with torch.no_grad():
            for tile in tiles:
                total = 0
                net(torch.zeros(1, meta.in_channels, tile, tile, device=device))
                out.append(total)
    finally:
        for h in handles:
            h.remove()
    return out, weights


def _tensor_bytes(obj: Any) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _probe_key(checkpoint: str | Path) -> str:
    path = os.path.abspath(checkpoint)
    try:
        st = os.stat(path)
        stamp = ":".join(map(str, file_stamp(st)))  # a rewrite keeping size and time too
    except OSError:
        stamp = "?"
    text = f"{PROBE_VERSION}|{path}|{stamp}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cache_file(key: str) -> Path:
    from geoseg.io.files import geoseg_cache_dir

    return geoseg_cache_dir() / "memory" / f"{key}.json"


def _read_cached(key: str) -> tuple[bool, Probe | None]:
    """(found, probe): a model that could not be probed is cached as found, None."""
    try:
        data = json.loads(_cache_file(key).read_text())
        if data.get("unknown"):
            return True, None
        return True, Probe(float(data["fixed"]), float(data["per_px"]), float(data["weights"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False, None


def _write_cached(key: str, probe: Probe | None) -> None:
    path = _cache_file(key)
    data = {"unknown": True} if probe is None else dataclasses.asdict(probe)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass  # no cache: the next run probes again
