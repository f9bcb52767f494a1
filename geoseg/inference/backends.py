"""Model runners: what the model outputs per tile, as fast as the hardware allows.

A runner maps a normalized batch ``(B, bands, T, T)`` float32 to the model's **named
outputs**, each ``(B, C, T, T)`` float32 and activated as its
:class:`~geoseg.models.outputs.OutputSpec` says (softmax for class scores: a semantic
model's ``{"classes": probabilities}``). It knows nothing about windows, blending or
writing, which live in :mod:`geoseg.inference.graph`, :mod:`geoseg.inference.products`
and :mod:`geoseg.io.cog`.

Backends (:data:`BACKENDS`):

* ``onnx`` (the CPU fp32 default, chosen by measurement: ~1.5-1.9x the eager PyTorch
  loop on a ResNet U-Net): the checkpoint is exported once per (checkpoint, tile size)
  with ``torch.onnx.export`` to a cache folder and run with ONNX Runtime.
* ``torch``: eager PyTorch; ``channels_last`` memory format; ``bf16`` autocast when
  ``precision="bf16"`` (CPU with AVX512-BF16/AMX, or CUDA).
* ``auto``: ``onnx`` for fp32 on CPU when the export works, else ``torch``.

Runners are cached per process, keyed by their :class:`RunnerSpec`, so the model is
loaded once per worker (never pickled into tasks); each runner sets its own thread
count so that workers do not oversubscribe cores, and holds a lock so concurrent Dask
threads take turns on one model.

The ONNX graph has one output per per-pixel model output, named as the output (its
input is ``x``); the model adapter's :meth:`~geoseg.models.ModelAdapter.export_module`
builds it, so every model family exports the same way.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import ConfigError, GeosegWarning, warn
from geoseg.inference.threads import on_model_thread
from geoseg.io.files import geoseg_cache_dir

#: Backend names accepted by ``predict(backend=...)``.
BACKENDS = ("auto", "onnx", "torch")
#: Numeric precisions accepted by ``predict(precision=...)``.
PRECISIONS = ("fp32", "bf16")


def _d4(kind: str) -> list[tuple[int, bool]]:
    if kind == "flip":
        return [(0, False), (0, True), (2, False), (2, True)]
    return [(k, f) for k in range(4) for f in (False, True)]


#: Test-time augmentation modes: name -> list of (quarter turns, horizontal flip).
TTA_MODES: dict[str, list[tuple[int, bool]]] = {
    "none": [(0, False)],
    "flip": _d4("flip"),
    "d4": _d4("d4"),
}


def tta_transforms(tta: bool | str) -> list[tuple[int, bool]]:
    """The (rot90 k, hflip) transforms for ``tta`` (True means ``d4``: 8-way)."""
    if tta is True:
        tta = "d4"
    elif tta is False or tta is None:
        tta = "none"
    if tta not in TTA_MODES:
        raise ConfigError(f"tta: unknown mode {tta!r}; valid names are {sorted(TTA_MODES)}")
    return TTA_MODES[str(tta)]


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a worker needs to build a runner (small, picklable, hashable)."""

    checkpoint: str
    backend: str
    precision: str
    device: str
    tile_size: int
    tta: tuple[tuple[int, bool], ...] = ((0, False),)
    onnx_path: str | None = None
    threads: int = 0
    threads_by_worker: tuple[tuple[str, int], ...] = ()
    #: torch on a GPU: per-pixel outputs stay there as tensors (blended there by the
    #: block tasks of the same process, :mod:`geoseg.inference.device`)
    keep_on_device: bool = False
    #: the checkpoint file's version (:func:`~geoseg.io.handles.file_stamp`): a checkpoint
    #: rewritten at the same path (retrained) gets a new runner, not the cached model
    checkpoint_version: tuple[int, ...] = ()


#: Device nodes of GPU drivers torch can use (NVIDIA, ROCm, WSL2). On Linux without any of
#: them ``torch.cuda.is_available()`` is False, so ``auto`` resolves to ``cpu`` without
#: importing torch (about 2 s of a fresh process; the ONNX path needs no torch at all).
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def _no_gpu_driver() -> bool:
    return sys.platform == "linux" and not any(os.path.exists(p) for p in GPU_DEVICE_NODES)


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda`` when a GPU is visible, else ``cpu``; validate names."""
    if device in ("auto", "cpu") and _no_gpu_driver():
        return "cpu"
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device!r} requested but no CUDA GPU is visible; use cpu")
        index = device.partition(":")[2]
        if index and not (index.isdigit() and int(index) < torch.cuda.device_count()):
            raise ConfigError(
                f"device: {device!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA GPU(s): cuda:0 .. cuda:"
                f"{torch.cuda.device_count() - 1}"
            )
        return device
    raise ConfigError(f"device: unknown device {device!r}; valid values are cpu, cuda, auto")


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:20]


def default_cache_dir() -> Path:
    """Folder for exported ONNX models (``$GEOSEG_CACHE_DIR`` or ``~/.cache/geoseg``)."""
    return geoseg_cache_dir()


#: Bumped when the exported graph's interface changes (part of the cache key).
ONNX_EXPORT_VERSION = 2


def export_onnx(checkpoint: str | Path, tile_size: int, *, cache_dir: Path | None = None) -> Path:
    """Export ``checkpoint``'s activated outputs to ONNX at ``tile_size``, cached by content.

    The batch axis is dynamic; the spatial size is fixed, which lets ONNX Runtime plan
    every convolution once. The graph's input is ``x``, its outputs are the model's
    per-pixel outputs by name.

    Raises:
        RuntimeError: the export failed (callers fall back to the torch backend).
    """
    folder = cache_dir or default_cache_dir()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"the cache folder {str(folder)!r} ($GEOSEG_CACHE_DIR or ~/.cache/geoseg) is a "
            "file; point GEOSEG_CACHE_DIR at a folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    # the installed torch's version, read without importing torch (a cache hit needs none)
    key = (
        f"{_file_digest(str(checkpoint))}-t{tile_size}-torch{_dist_version('torch')}"
        f"-v{ONNX_EXPORT_VERSION}"
    )
    out = folder / f"{key}.onnx"
    digest = out.with_suffix(".sha256")
    if out.is_file():
        # bytes, not text: a damaged digest file is a mismatch (rebuilt), not an error
        stored = digest.read_bytes().strip() if digest.is_file() else b""
        if stored == _file_digest(str(out)).encode():
            return out
        # a cached file that is truncated, corrupt or from an interrupted export: rebuild
        warn(f"cached ONNX model {str(out)!r} is damaged or incomplete; exporting it again")
        out.unlink(missing_ok=True)
    import torch

    from geoseg.io.outputs import atomic_path
    from geoseg.models import get_adapter, load_model

    model, meta = load_model(checkpoint)
    wrapped = get_adapter(meta.adapter).export_module(model, meta.outputs).eval()
    names = [o.name for o in meta.outputs if o.per_pixel]
    x = torch.zeros(1, meta.in_channels, tile_size, tile_size)
    with atomic_path(out, overwrite=True) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs: dict[str, Any] = {
            "input_names": ["x"],
            "output_names": names,
            "dynamic_axes": {"x": {0: "b"}, **{n: {0: "b"} for n in names}},
            "opset_version": 17,
        }
        try:
            torch.onnx.export(wrapped, (x,), str(tmp), dynamo=False, **kwargs)
        except TypeError:  # older torch without the dynamo switch
            torch.onnx.export(wrapped, (x,), str(tmp), **kwargs)
    with atomic_path(digest, overwrite=True) as tmp:
        tmp.write_text(_file_digest(str(out)))
    return out


def choose_backend(
    backend: str,
    *,
    checkpoint: str,
    precision: str,
    device: str,
    tile_size: int,
    objects: bool = False,
) -> tuple[str, str | None]:
    """Resolve ``auto`` and export ONNX if needed: returns (backend, onnx_path).

    Object-list models (``objects``) run with the PyTorch backend only.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend: unknown backend {backend!r}; valid names are {BACKENDS}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: unknown {precision!r}; valid values are {PRECISIONS}")
    if objects:
        if backend == "onnx":
            raise ConfigError(
                "backend 'onnx': object-list models (maskrcnn, mask2former instance / "
                "panoptic) run with backend='torch'"
            )
        return "torch", None
    if backend == "onnx" and (precision != "fp32" or device != "cpu"):
        raise ConfigError("backend 'onnx' runs fp32 on CPU only; use backend='torch'")
    if backend == "auto":
        if precision != "fp32" or device != "cpu":
            return "torch", None
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "torch", None
        backend = "onnx"
        try:
            return backend, str(export_onnx(checkpoint, tile_size))
        except Exception as exc:  # any exporter failure: eager torch still works
            warn(
                f"ONNX export failed ({type(exc).__name__}: {str(exc)[:200]}); "
                "using the PyTorch backend",
                GeosegWarning,
            )
            return "torch", None
    if backend == "onnx":
        return backend, str(export_onnx(checkpoint, tile_size))
    return backend, None


#: Runners kept for later runs in the same process (a notebook, a service), the most
#: recently built last; at most :data:`MAX_RUNNERS`, so that runs at several tile sizes
#: do not keep a model (or an ONNX Runtime session) each for ever.
_RUNNERS: dict[RunnerSpec, Runner] = {}
_RUNNERS_LOCK = threading.Lock()
MAX_RUNNERS = 4
#: PyTorch models by (checkpoint, version, device), shared by the runners of one
#: checkpoint (tile sizes, test-time augmentation, precision differ by runner, not by
#: weights): one copy of the weights in GPU memory, not one per tile size.
_TORCH_MODELS: dict[tuple[str, tuple[int, ...], str], tuple[Any, Any]] = {}


def _threads_for(spec: RunnerSpec) -> int:
    if spec.threads_by_worker:
        try:
            from distributed import get_worker

            addr = get_worker().address
            table = dict(spec.threads_by_worker)
            if addr in table:
                return table[addr]
        except (ImportError, ValueError):
            pass
    return spec.threads or (os.cpu_count() or 1)


def get_runner(spec: RunnerSpec) -> Runner:
    """The process-wide runner for ``spec`` (built on first use: one model per worker).

    Built on the model thread when there is one (the model's own threads, ONNX Runtime's
    pool, inherit that thread's scheduling priority), under a lock taken on the thread
    that builds: a thread waiting for the model thread never holds it (the model thread
    may itself be preparing the runner, :meth:`ModelPool.prepare`).
    """
    runner = _RUNNERS.get(spec)
    if runner is None:
        runner = on_model_thread(_build_runner, spec)
    return runner


def _build_runner(spec: RunnerSpec) -> Runner:
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(spec)
        if runner is None:
            # runners of an older version of this checkpoint are never used again
            for old in [s for s in _RUNNERS if _outdated(s, spec)]:
                del _RUNNERS[old]
            runner = Runner(spec)
            _RUNNERS[spec] = runner
            while len(_RUNNERS) > MAX_RUNNERS:
                del _RUNNERS[next(iter(_RUNNERS))]
            kept = {_model_key(s) for s in _RUNNERS}
            for key in [k for k in _TORCH_MODELS if k not in kept]:
                del _TORCH_MODELS[key]  # a run still using it holds its own reference
        return runner


def _outdated(old: RunnerSpec, new: RunnerSpec) -> bool:
    return old.checkpoint == new.checkpoint and old.checkpoint_version != new.checkpoint_version


def _model_key(spec: RunnerSpec) -> tuple[str, tuple[int, ...], str]:
    return (spec.checkpoint, spec.checkpoint_version, spec.device)


def _torch_model(spec: RunnerSpec) -> tuple[Any, Any]:
    """The (model, metadata) of ``spec``'s checkpoint on its device, loaded once."""
    key = _model_key(spec)
    if key not in _TORCH_MODELS:
        import torch

        from geoseg.models import load_model

        model, meta = load_model(spec.checkpoint, device=spec.device)
        _TORCH_MODELS[key] = (model.to(memory_format=torch.channels_last), meta)
    return _TORCH_MODELS[key]


#: A runner's result: activated outputs by name, each (B, C, T, T) float32 (per-pixel
#: outputs) or a list of B :class:`~geoseg.instances.objects.ObjectList` (object lists).
Outputs = dict[str, Any]


class Runner:
    """Run a model on normalized batches; returns its activated outputs by name."""

    def __init__(self, spec: RunnerSpec) -> None:
        self.spec = spec
        self.lock = threading.Lock()
        threads = _threads_for(spec)
        self._fn: Callable[[np.ndarray], Outputs]
        if spec.backend == "onnx":
            if spec.onnx_path is None:
                raise ConfigError("backend 'onnx' needs an exported model (onnx_path)")
            self._fn = _onnx_runner(spec.onnx_path, threads)
        else:
            self._fn = _torch_runner(spec, threads)

    def __call__(self, x: np.ndarray) -> Outputs:
        """Outputs for a (B, bands, T, T) float32 batch, with TTA averaging."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return on_model_thread(self._run, x)

    def _run(self, x: np.ndarray) -> Outputs:
        with self.lock:
            if len(self.spec.tta) == 1:
                return self._fn(x)
            acc: Outputs = {}
            for k, flip in self.spec.tta:
                xt = np.rot90(x, k, axes=(2, 3))
                if flip:
                    xt = xt[..., ::-1]
                for name, p in self._fn(np.ascontiguousarray(xt)).items():
                    if flip:
                        p = p[..., ::-1]
                    p = np.rot90(p, -k, axes=(2, 3))
                    acc[name] = p.copy() if name not in acc else acc[name] + p
            n = len(self.spec.tta)
            return {name: np.ascontiguousarray(a / n, dtype=np.float32) for name, a in acc.items()}


def _onnx_runner(onnx_path: str, threads: int) -> Callable[[np.ndarray], Outputs]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT threads must not spin: Dask threads read and blend meanwhile.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Arena on, memory patterns off: measured on a ResNet U-Net, 8 x 512 px
    # tiles, 2 threads: 0.66 s per batch (first 0.85 s) against 0.93 s (first
    # 1.4 s) without the arena, for +6 % peak RSS; patterns on top of the arena
    # only add 800 MiB (benchmarks/results/inference.json has the end result).
    so.enable_cpu_mem_arena = True
    so.enable_mem_pattern = False
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]

    def run_onnx(x: np.ndarray) -> Outputs:
        results = sess.run(None, {"x": x})
        return {n: np.asarray(r, dtype=np.float32) for n, r in zip(names, results)}

    return run_onnx


def _torch_runner(spec: RunnerSpec, threads: int) -> Callable[[np.ndarray], Outputs]:
    import torch

    from geoseg.models import get_adapter
    from geoseg.models.adapter import activate

    if spec.device == "cpu":
        torch.set_num_threads(threads)
    model, meta = _torch_model(spec)
    adapter = get_adapter(meta.adapter)
    pixel = [o for o in meta.outputs if o.per_pixel]
    # object lists (Mask R-CNN) come out of the network as numpy already
    lists = [o.name for o in meta.outputs if not o.per_pixel]
    device = torch.device(spec.device)
    bf16 = spec.precision == "bf16"
    keep = spec.keep_on_device and device.type != "cpu"

    def run_torch(x: np.ndarray) -> Outputs:
        t = torch.from_numpy(x).to(device, non_blocking=True)
        t = t.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16),
        ):
            named = adapter.outputs(model(t), meta.outputs)
            out = {o.name: activate(named[o.name].float(), o.activation) for o in pixel}
        if keep:  # no copy back: the block tasks blend on the device
            result: Outputs = dict(out)
        else:
            result = {name: v.cpu().numpy() for name, v in out.items()}
        result.update({name: named[name] for name in lists})
        return result

    return run_torch
