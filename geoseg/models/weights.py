"""Pretrained weights from local files only: geoseg never downloads a model on its own.

``model.encoder_weights`` is one of:

* a local file (``.safetensors``, or a ``.pt``/``.pth`` state dict, loaded without
  unpickling code) holding encoder or whole-model weights;
* a **named torchgeo weight**, e.g. ``ResNet18_Weights.SENTINEL2_ALL_MOCO`` or
  ``ResNet50_Weights.LANDSAT_ETM_SR_MOCO`` (SSL4EO), resolved to the file torchgeo would
  cache it as (``<torch hub dir>/checkpoints/<file name of its URL>``). When that file is
  absent the error names it and the URL; it is downloaded only when the config says so
  (``model.download_weights: true``).

Loading (:func:`load_pretrained`) matches tensors by name and shape, trying the prefixes
the encoder families use (smp's own ResNets take torchvision / timm names as they are,
``tu-`` encoders hold timm's under ``model.``). The first convolution is **matched to the
config's band names** when the weights say which bands they were trained on (torchgeo's
``meta["bands"]``): each band of the config takes the kernel slice of the weights' band of
the same name (``B02`` = ``B2``, case-insensitive); a band the weights do not have is
initialized with the mean of the weights' kernels over all bands (the usual choice: it
responds to overall brightness) and named in a warning. What was loaded is returned as a
record that the checkpoint keeps (:class:`PretrainedRecord`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geoseg.errors import CheckpointError, ConfigError, InputFileError, warn


@dataclass(frozen=True)
class WeightsSource:
    """Where pretrained weights come from.

    Attributes:
        name: what the config said (a path or a torchgeo weight name).
        path: the local file.
        bands: the band names the weights were trained on (None: unknown).
        url: where torchgeo publishes them (named weights only).
    """

    name: str
    path: Path
    bands: tuple[str, ...] | None = None
    url: str | None = None


@dataclass
class PretrainedRecord:
    """What a model started from (stored in the checkpoint as ``pretrained``)."""

    source: str
    file: str
    sha256: str
    tensors_loaded: int
    tensors_in_target: int
    bands_from_weights: list[str] = field(default_factory=list)
    bands_initialized: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


#: ``Model_Weights.MEMBER``: a torchgeo weights enum member.
_TORCHGEO_NAME = re.compile(r"^[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*_Weights\.[A-Z0-9_]+$")


def resolve_weights(
    encoder_weights: str | Path | None, *, download: bool = False
) -> WeightsSource | None:
    """The :class:`WeightsSource` named by ``model.encoder_weights`` (None: random init).

    Raises:
        ConfigError: a hub name such as ``imagenet``, or an unknown torchgeo weight.
        InputFileError: the file does not exist (for a torchgeo weight: not in the local
            torch cache, with where to put it).
    """
    if encoder_weights is None:
        return None
    text = str(encoder_weights)
    path = Path(text)
    if path.is_file():
        return WeightsSource(text, path)
    if _TORCHGEO_NAME.match(text):
        return _torchgeo_weights(text, download)
    if path.suffix == "" and "/" not in text:
        raise ConfigError(
            f"model.encoder_weights: {text!r} is neither a local file nor a torchgeo weight "
            "name (such as 'ResNet18_Weights.SENTINEL2_ALL_MOCO'); geoseg never downloads "
            "hub weights such as 'imagenet'. Give the path of a local weights file or null "
            "for random initialisation"
        )
    raise InputFileError(f"model.encoder_weights: file {text!r} not found")


def check_weights_path(encoder_weights: str | Path | None) -> Path | None:
    """The local file of ``encoder_weights`` (see :func:`resolve_weights`), or None."""
    source = resolve_weights(encoder_weights)
    return None if source is None else source.path


def _torchgeo_weights(name: str, download: bool) -> WeightsSource:
    enum_name, _, member = name.partition(".")
    try:
        import torchgeo.models as tgm
    except ImportError as exc:  # pragma: no cover - torchgeo is a dependency
        raise ConfigError(f"model.encoder_weights: {name!r} needs torchgeo") from exc
    enum = getattr(tgm, enum_name, None)
    if enum is None or not hasattr(enum, "__members__"):
        valid = sorted(n for n in dir(tgm) if n.endswith("_Weights"))
        raise ConfigError(
            f"model.encoder_weights: torchgeo has no weights {enum_name!r}; valid names are {valid}"
        )
    if member not in enum.__members__:
        raise ConfigError(
            f"model.encoder_weights: {enum_name} has no member {member!r}; valid members "
            f"are {sorted(enum.__members__)}"
        )
    weights = enum[member]
    url = str(weights.url)
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.split("?")[0].rsplit("/", 1)[-1]
    bands = weights.meta.get("bands")
    if not path.is_file():
        if not download:
            raise InputFileError(
                f"model.encoder_weights: the torchgeo weights {name} are not in the local "
                f"torch cache: expected the file {str(path)!r}. geoseg never downloads on "
                f"its own: put the file there (e.g. curl -L '{url}' -o '{path}'), point "
                "model.encoder_weights at a copy elsewhere, or set model.download_weights: "
                "true to fetch it once"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=True)
    return WeightsSource(name, path, tuple(bands) if bands else None, url)


def read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``.pt``/``.pth`` file, safely (no pickle)."""
    state: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for bad files
        raise CheckpointError(f"cannot read weights file {str(path)!r}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(f"weights file {str(path)!r} does not hold a state dict")
    return state


def band_key(name: str) -> str:
    """Band names compared loosely: ``B02`` = ``b2``, ``B8a`` = ``B8A``."""
    n = str(name).strip().upper()
    m = re.fullmatch(r"B0*(\d+)(A?)", n)
    return f"B{int(m.group(1))}{m.group(2)}" if m else n


#: Prefixes that wrap the same tensors in different model families.
_PREFIXES = (
    "", "model.", "encoder.", "backbone.", "module.", "net.", "net.backbone.body.",
    "swin.",  # transformers SwinModel files into a SwinBackbone (Mask2Former)
)  # fmt: skip


def _best_mapping(
    state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
) -> dict[str, str]:
    """Map state keys to own keys, with the prefix pair that matches the most names."""
    best: dict[str, str] = {}
    for strip in _PREFIXES:
        for add in _PREFIXES:
            mapping = {}
            for k in state:
                if not k.startswith(strip):
                    continue
                target = add + k[len(strip) :]
                if target in own:
                    mapping[k] = target
            if len(mapping) > len(best):
                best = mapping
    return best


def load_pretrained(
    model: nn.Module, source: WeightsSource, band_names: Sequence[str] | None = None
) -> PretrainedRecord:
    """Load ``source`` into ``model``'s encoder (or the whole model) by name and shape.

    Args:
        model: the network (smp models load into ``model.encoder``).
        source: the weights.
        band_names: the config's bands in model order (for matching the first layer).

    Raises:
        CheckpointError: unreadable file, weights of another architecture (few names in
            common), or a first layer for another band count without band names.
    """
    state = read_state_dict(source.path)
    encoder = getattr(model, "encoder", None)
    candidates = [m for m in (encoder, model) if m is not None]
    target, mapping = candidates[-1], dict[str, str]()
    for cand in candidates:
        found = _best_mapping(state, cand.state_dict())
        if len(found) > len(mapping):
            target, mapping = cand, found
    own = target.state_dict()
    if not mapping or len(mapping) < 0.5 * len(state):
        raise CheckpointError(
            f"weights file {str(source.path)!r}: only {len(mapping)} of its {len(state)} "
            f"tensors have a name in the {type(target).__name__}: weights of another "
            "architecture or encoder; check model.arch and model.encoder"
        )
    usable: dict[str, torch.Tensor] = {}
    from_weights: list[str] = []
    initialized: list[str] = []
    for k, t in mapping.items():
        value, want = state[k], own[t]
        if value.shape == want.shape:
            usable[t] = value
            continue
        if (
            value.ndim == 4
            and want.ndim == 4
            and value.shape[0] == want.shape[0]
            and (value.shape[2:] == want.shape[2:])
        ):  # the first convolution, for another band count
            usable[t], from_weights, initialized = _match_bands(
                value, want.shape[1], source, band_names, k
            )
    if len(usable) < 0.5 * len(mapping):
        raise CheckpointError(
            f"weights file {str(source.path)!r}: {len(mapping)} tensor names fit the "
            f"{type(target).__name__} but only {len(usable)} shapes do: weights of another "
            "depth or width (e.g. resnet50 weights for a resnet18); check model.encoder"
        )
    target.load_state_dict(usable, strict=False)
    if initialized:
        warn(
            f"model.encoder_weights: bands {initialized} are not among the bands of "
            f"{source.name} ({list(source.bands or ())}); their first-layer kernels start "
            "as the mean over the pretrained bands"
        )
    return PretrainedRecord(
        source=source.name,
        file=str(source.path),
        sha256=_sha256(source.path),
        tensors_loaded=len(usable),
        tensors_in_target=len(own),
        bands_from_weights=from_weights,
        bands_initialized=initialized,
    )


def _match_bands(
    weight: torch.Tensor,
    n_bands: int,
    source: WeightsSource,
    band_names: Sequence[str] | None,
    key: str,
) -> tuple[torch.Tensor, list[str], list[str]]:
    """The first-layer kernels for the config's bands (see the module docstring)."""
    if source.bands is None or band_names is None or len(band_names) != n_bands:
        raise CheckpointError(
            f"weights file {str(source.path)!r}: its first layer ({key}) takes "
            f"{weight.shape[1]} bands, the model {n_bands}, and the weights do not say which "
            "bands they are: use weights for the same bands, or named torchgeo weights"
        )
    index = {band_key(b): i for i, b in enumerate(source.bands)}
    mean = weight.mean(dim=1)
    out = torch.empty(weight.shape[0], n_bands, *weight.shape[2:], dtype=weight.dtype)
    found, missing = [], []
    for j, name in enumerate(band_names):
        i = index.get(band_key(name))
        if i is None:
            out[:, j] = mean
            missing.append(str(name))
        else:
            out[:, j] = weight[:, i]
            found.append(str(name))
    return out, found, missing


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def load_local_weights(model: nn.Module, path: Path) -> None:
    """Load encoder or full-model weights from a local file (see :func:`load_pretrained`)."""
    load_pretrained(model, WeightsSource(str(path), Path(path)))
