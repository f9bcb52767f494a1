"""Model adapters by name, architecture lookup and :func:`create_model`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from geoseg.arguments import check_int, check_text
from geoseg.classes import ClassTable
from geoseg.errors import ConfigError
from geoseg.models.adapter import ModelAdapter
from geoseg.models.detection import TorchvisionAdapter
from geoseg.models.families import DEFAULT_ADAPTER, check_adapter_name
from geoseg.models.limits import MAX_BANDS, MAX_CLASSES
from geoseg.models.mask2former import TransformersAdapter
from geoseg.models.outputs import OutputSpec, class_scores
from geoseg.models.smp import SmpAdapter, arch_key
from geoseg.models.weights import PretrainedRecord, load_pretrained, resolve_weights

#: Model adapters by name (``model.adapter`` and the checkpoint's ``adapter``).
ADAPTERS: dict[str, ModelAdapter] = {
    "smp": SmpAdapter(),
    "torchvision": TorchvisionAdapter(),
    "transformers": TransformersAdapter(),
}  # the same names as families.ADAPTER_NAMES (checked by tests/test_contract.py)


def get_adapter(name: str) -> ModelAdapter:
    """The adapter called ``name``; ConfigError listing the valid names."""
    return ADAPTERS[check_adapter_name(name)]


def all_architectures() -> dict[str, Callable[..., nn.Module]]:
    """Every architecture name any adapter builds -> constructor."""
    out: dict[str, Callable[..., nn.Module]] = {}
    for adapter in ADAPTERS.values():
        out.update(adapter.architectures)
    return out


def resolve_adapter(
    arch: str | Callable[..., nn.Module], adapter: str | None = None
) -> ModelAdapter:
    """The adapter that builds ``arch`` (``adapter`` when given; smp for callables).

    Raises:
        ConfigError: unknown adapter, or no adapter knows the architecture name.
    """
    if adapter is not None:
        found = get_adapter(adapter)
        if isinstance(arch, str) and arch_key(arch) not in found.architectures:
            raise ConfigError(
                f"model.arch: adapter {adapter!r} has no architecture {arch!r}; valid names "
                f"are {sorted(found.architectures)}"
            )
        return found
    if not isinstance(arch, str):
        return ADAPTERS[DEFAULT_ADAPTER]
    for candidate in ADAPTERS.values():
        if arch_key(arch) in candidate.architectures:
            return candidate
    raise ConfigError(
        f"model.arch: unknown architecture {arch!r}; valid names are {sorted(all_architectures())}"
    )


def build_model(
    arch: str | Callable[..., nn.Module],
    *,
    in_channels: int,
    outputs: Sequence[OutputSpec],
    encoder: str = "resnet18",
    encoder_weights: str | Path | None = None,
    adapter: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    classes: ClassTable | None = None,
    band_names: Sequence[str] | None = None,
    download_weights: bool = False,
    record: list[PretrainedRecord] | None = None,
) -> nn.Module:
    """Build the network for ``outputs`` with its adapter, then load pretrained weights.

    ``encoder_weights`` is a local file or a torchgeo weight name
    (:mod:`geoseg.models.weights`); its first layer is matched to ``band_names``. What was
    loaded is appended to ``record`` when given.

    Raises:
        ConfigError: unknown architecture/adapter/encoder, or a hub weights name.
        InputFileError: the weights file does not exist.
        CheckpointError: the weights file fits nothing in the model.
    """
    in_channels = check_int(in_channels, "in_channels", low=1, high=MAX_BANDS, unit="bands")
    encoder = check_text(encoder, "encoder")
    found = resolve_adapter(arch, adapter)
    weights = resolve_weights(encoder_weights, download=download_weights)
    model = found.build(
        arch,
        in_channels=in_channels,
        outputs=outputs,
        encoder=encoder,
        kwargs=kwargs or {},
        classes=classes,
    )
    if weights is not None:
        loaded = load_pretrained(model, weights, band_names)
        if record is not None:
            record.append(loaded)
    return model


def create_model(
    arch: str | Callable[..., nn.Module],
    *,
    in_channels: int,
    num_classes: int,
    encoder: str = "resnet18",
    encoder_weights: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a semantic model mapping (B, in_channels, H, W) to (B, num_classes, H, W).

    Args:
        arch: a name from :data:`geoseg.models.ARCHITECTURES` or a callable taking smp's
            keywords.
        in_channels: number of input bands (any number, e.g. 13 for Sentinel-2).
        num_classes: number of output classes.
        encoder: encoder name.
        encoder_weights: None or a local weights file (see
            :class:`~geoseg.config.ModelConfig`).
        **kwargs: passed to the architecture.

    Raises:
        ConfigError: unknown architecture or encoder, or a hub weights name.
        InputFileError: the weights file does not exist.
    """
    num_classes = check_int(num_classes, "num_classes", low=1, high=MAX_CLASSES)
    return build_model(
        arch,
        in_channels=in_channels,
        outputs=[class_scores(num_classes)],
        encoder=encoder,
        encoder_weights=encoder_weights,
        kwargs=kwargs,
    )
