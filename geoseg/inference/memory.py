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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from geoseg.errors import ResourceError

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
#: Probe windows (pixels): the smallest multiple of the model's size divisor from this, and
#: twice that.
PROBE_TILE = 64
#: Bumped when the probe changes (cached probes of another version are not used).
PROBE_VERSION = 2

_PROBES: dict[str, tuple[float, float] | None] = {}


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
    if probe is None:
        return None
    fixed, per_px = probe
    return int(fixed + per_px * tile**2)


def workload(tile: int, *, batch: int = 1, models: int = 1) -> float:
    """Pixels in flight, weighted as the estimate weighs the windows of a batch."""
    return float(tile**2 * (1 + (batch - 1) * BATCH_SHARE) * models)


def estimate_memory(
    checkpoint: str | Path, meta: Any, tile: int, *, batch: int = 1, models: int = 1
) -> int | None:
    """Estimated peak bytes of running ``models`` copies on batches of ``batch`` windows."""
    one = window_bytes(checkpoint, meta, tile)
    if one is None:
        return None
    return int(RUNTIME_BYTES + one * workload(tile, batch=batch, models=models) / tile**2)


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
    need = estimate_memory(checkpoint, meta, tile, batch=batch, models=models)
    if need is None:
        return None
    room = available_memory() if available is None else available
    if need <= room:
        return need
    per_px = window_bytes(checkpoint, meta, tile) or 0
    shape = f"{tile}^2 px windows" + (f" in batches of {batch}" if batch > 1 else "")
    if models > 1:
        shape += f" in {models} worker processes"
    fits = _largest_tile(checkpoint, meta, room, batch, models)
    ways = [f"a smaller tile_size / --tile-size (at most {fits} px fits now)"] if fits else []
    if batch > 1:
        ways.append("fewer windows per batch (batch_size / --batch-size)")
    if models > 1:
        ways.append("fewer worker processes (workers / --workers)")
    advice = "pass " + " or ".join(ways) if ways else "free memory or use a bigger machine"
    raise ResourceError(
        f"tile_size {tile} px needs about {_gb(need)} of memory for this {meta.arch}/"
        f"{meta.encoder} model ({per_px / tile**2:,.0f} bytes per window pixel, {shape}), "
        f"but {_gb(room)} is available: {advice}"
    )


def _largest_tile(checkpoint: str | Path, meta: Any, room: int, batch: int, models: int) -> int:
    """The largest multiple of the model's size divisor (>= 16 px) that fits in ``room``."""
    probe = _probe(checkpoint, meta)
    assert probe is not None
    fixed, per_px = probe
    budget = (room - RUNTIME_BYTES) / models / (1 + (batch - 1) * BATCH_SHARE)
    if budget <= 0:
        return 0
    factor = meta.size_divisor()
    if budget <= fixed or per_px <= 0:
        return 0
    tile = int(math.sqrt((budget - fixed) / per_px)) // factor * factor
    return tile if tile >= max(16, factor) else 0


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def _probe(checkpoint: str | Path, meta: Any) -> tuple[float, float] | None:
    """(fixed bytes, bytes per pixel) of the model, cached in memory and on disk."""
    key = _probe_key(checkpoint)
    if key in _PROBES:
        return _PROBES[key]
    found, cached = _read_cached(key)
    if not found:
        cached = _measure(meta)
        _write_cached(key, cached)
    _PROBES[key] = cached
    return cached


def _measure(meta: Any) -> tuple[float, float] | None:
    """Probe the model's activations at two window sizes (meta device, else CPU)."""
    factor = meta.size_divisor()
    t1 = max(factor, -(-PROBE_TILE // factor) * factor)
    for device in ("meta", "cpu"):
        try:
            b1, b2 = _activation_bytes(meta, (t1, 2 * t1), device)
        except Exception:  # any model failing a probe is just not checked
            continue
        if b1 > 0 and b2 > 0:
            per_px = max((b2 - b1) / (3 * t1 * t1), 0.0)  # (2 t1)^2 - t1^2 = 3 t1^2
            return max(b1 - per_px * t1 * t1, 0.0), per_px
    return None


def _activation_bytes(meta: Any, tiles: tuple[int, ...], device: str) -> list[int]:
    """Bytes of every leaf module's outputs in a forward pass of (1, C, T, T), per tile."""
    import torch

    from geoseg.models.checkpoint import build_network

    with torch.device("meta"):
        net = build_network(meta).eval()
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
    return out


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
        stamp = f"{st.st_mtime_ns}:{st.st_size}"
    except OSError:
        stamp = "?"
    text = f"{PROBE_VERSION}|{path}|{stamp}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cache_file(key: str) -> Path:
    from geoseg.io.files import geoseg_cache_dir

    return geoseg_cache_dir() / "memory" / f"{key}.json"


def _read_cached(key: str) -> tuple[bool, tuple[float, float] | None]:
    """(found, probe): a model that could not be probed is cached as found, None."""
    try:
        data = json.loads(_cache_file(key).read_text())
        if data.get("unknown"):
            return True, None
        return True, (float(data["fixed"]), float(data["per_px"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False, None


def _write_cached(key: str, probe: tuple[float, float] | None) -> None:
    path = _cache_file(key)
    data = {"unknown": True} if probe is None else {"fixed": probe[0], "per_px": probe[1]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass  # no cache: the next run probes again
