"""Checkpoint metadata without torch: :class:`ModelMetadata` and :func:`read_metadata`.

Reading a checkpoint's header and checking it needs no deep-learning library, so
``geoseg predict`` with a cached ONNX model, ``geoseg export`` checks and the demo's model
card never import torch (about 2 s of a fresh process on a small machine). The adapter
facts the header is checked against (names, input size divisors) are in
:mod:`geoseg.models.families`, which the adapters use too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.classes import ClassTable
from geoseg.errors import CheckpointError, ConfigError, InputFileError
from geoseg.models.families import DEFAULT_ADAPTER, adapter_size_divisor, check_adapter_name
from geoseg.models.outputs import OutputSpec
from geoseg.tasks import DEFAULT_TASK, task_info

CHECKPOINT_FORMAT = "geoseg-checkpoint"
#: Bump when the metadata layout changes incompatibly; load_model accepts <= this.
CHECKPOINT_VERSION = 2

#: Sane bounds for header values that size allocations (a corrupt or hostile header
#: must fail with a clear message, not a multi-GB allocation).
MAX_BANDS = 1024
MAX_CLASSES = 65535
MAX_TILE_SIZE = 8192
MAX_HEADER_BYTES = 64 * 1024 * 1024


@dataclass
class ModelMetadata:
    """Everything needed to run a checkpoint on new imagery.

    Attributes:
        arch, encoder, model_kwargs: how the adapter rebuilds the network.
        bands: input band names in model order; ``len(bands)`` is the input channel count.
        mean, std: per-band normalization applied as ``(x - mean) / std``.
        classes: the class table; channel ``i`` of the ``classes`` output is ``classes[i]``.
        task: the task the model was trained for (``geoseg.tasks.TASKS``).
        adapter: the model family that builds ``arch`` (``geoseg.models.ADAPTERS``).
        outputs: the named outputs (default: the task's outputs for ``classes``).
        task_options: the task's own settings (instance and panoptic: the ``encode``
            and ``decode`` parameters of :mod:`geoseg.instances`).
        tile_size: training tile size in pixels (the default prediction tile).
        resolution: ground sample distance of the training data, in CRS units per pixel.
        crs: CRS of the training data (WKT or EPSG string), informative.
        image_nodata: no-data value of the training imagery (None if none).
        metrics: validation/test metrics recorded at training time.
        config: the training config as plain data (for provenance).
        pretrained: what the network started from (source, file, sha256, bands taken from
            the weights and bands initialized; empty for random initialisation).
        geoseg_version: version that wrote the checkpoint.
        created: ISO timestamp.
    """

    arch: str
    encoder: str
    bands: list[str]
    mean: list[float]
    std: list[float]
    classes: ClassTable
    task: str = DEFAULT_TASK
    adapter: str = DEFAULT_ADAPTER
    outputs: list[OutputSpec] = field(default_factory=list)
    task_options: dict[str, Any] = field(default_factory=dict)
    tile_size: int = 256
    resolution: float | None = None
    crs: str | None = None
    image_nodata: float | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    pretrained: dict[str, Any] = field(default_factory=dict)
    geoseg_version: str = ""
    created: str = ""

    def __post_init__(self) -> None:
        if not self.outputs:
            self.outputs = task_info(self.task).outputs(self.classes)

    @property
    def in_channels(self) -> int:
        """Number of input bands."""
        return len(self.bands)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def size_divisor(self) -> int:
        """Input height and width must be multiples of this (from the adapter)."""
        return adapter_size_divisor(self.adapter, self.model_kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the checkpoint header)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "task": self.task,
            "adapter": self.adapter,
            "arch": self.arch,
            "encoder": self.encoder,
            "model_kwargs": self.model_kwargs,
            "outputs": [o.to_dict() for o in self.outputs],
            "task_options": self.task_options,
            "bands": list(self.bands),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "classes": self.classes.to_list(),
            "tile_size": int(self.tile_size),
            "resolution": self.resolution,
            "crs": self.crs,
            "image_nodata": self.image_nodata,
            "metrics": self.metrics,
            "config": self.config,
            "pretrained": self.pretrained,
            "geoseg_version": self.geoseg_version,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "checkpoint") -> ModelMetadata:
        """Inverse of :meth:`to_dict`, with version and bounds checks (reads versions 1, 2)."""
        if not isinstance(data, Mapping) or data.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{source} is not a geoseg checkpoint (no geoseg header)")
        version = data.get("format_version")
        if not isinstance(version, int) or version > CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{source} has checkpoint format version {version!r}, written by geoseg "
                f"{data.get('geoseg_version', '?')}; this geoseg reads versions up to "
                f"{CHECKPOINT_VERSION}. Upgrade geoseg to load it"
            )
        try:
            meta = cls(
                arch=str(data["arch"]),
                encoder=str(data["encoder"]),
                bands=[str(b) for b in _bounded_list(data["bands"], MAX_BANDS, "bands")],
                mean=[float(v) for v in _bounded_list(data["mean"], MAX_BANDS, "mean")],
                std=[float(v) for v in _bounded_list(data["std"], MAX_BANDS, "std")],
                classes=ClassTable.from_config(
                    _bounded_list(data["classes"], MAX_CLASSES, "classes")
                ),
                task=str(data.get("task", DEFAULT_TASK)),
                adapter=str(data.get("adapter", DEFAULT_ADAPTER)),
                outputs=[OutputSpec.from_dict(o) for o in data.get("outputs") or []],
                task_options=dict(data.get("task_options") or {}),
                tile_size=int(data.get("tile_size", 256)),
                resolution=data.get("resolution"),
                crs=data.get("crs"),
                image_nodata=data.get("image_nodata"),
                model_kwargs=dict(data.get("model_kwargs") or {}),
                metrics=dict(data.get("metrics") or {}),
                config=dict(data.get("config") or {}),
                pretrained=dict(data.get("pretrained") or {}),
                geoseg_version=str(data.get("geoseg_version", "")),
                created=str(data.get("created", "")),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise CheckpointError(f"{source} has an invalid geoseg header: {exc}") from exc
        meta.validate(source)
        return meta

    def validate(self, source: str = "checkpoint") -> None:
        """Check every value against sane bounds; CheckpointError naming the bad one."""
        if not (len(self.mean) == len(self.std) == len(self.bands)) or not self.bands:
            raise CheckpointError(
                f"{source}: {len(self.bands)} bands but {len(self.mean)} means and "
                f"{len(self.std)} stds"
            )
        bad = [s for s in self.std if not (math.isfinite(s) and s > 0)]
        if bad or not all(math.isfinite(m) for m in self.mean):
            raise CheckpointError(
                f"{source}: normalization must be finite with std > 0, got mean "
                f"{self.mean} and std {self.std}; the model cannot be used as is"
            )
        if not 8 <= self.tile_size <= MAX_TILE_SIZE:
            raise CheckpointError(
                f"{source}: tile_size {self.tile_size} is outside 8..{MAX_TILE_SIZE} pixels"
            )
        try:
            adapter = check_adapter_name(self.adapter)
            task_info(self.task)
            divisor = self.size_divisor()
        except (ConfigError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: {exc}") from exc
        if self.task in ("instance", "panoptic"):
            from geoseg.instances import DecodeParams, EncodeParams

            if not self.classes.things:
                raise CheckpointError(f"{source}: an {self.task} model needs thing classes")
            try:
                DecodeParams.from_dict(self.task_options.get("decode"))
                EncodeParams(**dict(self.task_options.get("encode") or {}))
            except (ConfigError, TypeError) as exc:
                raise CheckpointError(f"{source}: invalid task_options: {exc}") from exc
        if not 1 <= divisor <= MAX_TILE_SIZE:
            raise CheckpointError(
                f"{source}: the {adapter} model needs inputs divisible by {divisor} "
                f"pixels (model_kwargs {self.model_kwargs}); that is not a usable model"
            )


def _bounded_list(value: Any, limit: int, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{key!r} must be a list, got {type(value).__name__}")
    if len(value) > limit:
        raise ValueError(f"{key!r} has {len(value)} entries (at most {limit})")
    return value


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read only the metadata of a checkpoint (cheap: no weights are loaded)."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"checkpoint {str(p)!r} does not exist")
    try:
        with safe_open(str(p), framework="np") as f:  # "np": no torch import
            header = f.metadata() or {}
    except Exception as exc:  # safetensors raises several types for foreign files
        raise CheckpointError(
            f"checkpoint {str(p)!r} is corrupt or not a safetensors file ({exc}); "
            "re-export it with geoseg train or save_checkpoint"
        ) from exc
    text = header.get("geoseg")
    if text is None:
        raise CheckpointError(f"checkpoint {str(p)!r} is not a geoseg checkpoint (no header)")
    if len(text) > MAX_HEADER_BYTES:
        raise CheckpointError(f"checkpoint {str(p)!r} has an oversized header ({len(text)} B)")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {str(p)!r} has a corrupt header: {exc}") from exc
    return ModelMetadata.from_dict(data, source=f"checkpoint {str(p)!r}")
