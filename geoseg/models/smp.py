"""The segmentation-models-pytorch adapter: U-Net, U-Net++, FPN, DeepLabV3+, SegFormer, ..."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

from torch import nn

from geoseg.classes import ClassTable
from geoseg.errors import ConfigError
from geoseg.models.adapter import ModelAdapter, check_pixel_outputs
from geoseg.models.families import adapter_size_divisor
from geoseg.models.outputs import OutputSpec

#: geoseg's short names -> smp class names (those this smp release has are registered).
SMP_NAMES = {
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "fpn": "FPN",
    "deeplabv3": "DeepLabV3",
    "deeplabv3plus": "DeepLabV3Plus",
    "segformer": "Segformer",
    "upernet": "UPerNet",
    "pspnet": "PSPNet",
    "linknet": "Linknet",
    "manet": "MAnet",
    "pan": "PAN",
    "dpt": "DPT",
}


def arch_key(name: str) -> str:
    """Normalized architecture name: ``DeepLab-V3_Plus`` -> ``deeplabv3plus``."""
    return name.lower().replace("-", "").replace("_", "")


#: Keywords an smp architecture takes through ``**kwargs`` and still honours (deprecated).
SMP_DEPRECATED_KWARGS = frozenset({"decoder_use_batchnorm"})


def check_smp_kwargs(
    factory: Callable[..., nn.Module], arch: str, encoder: str, kwargs: Mapping[str, Any]
) -> None:
    """ConfigError for a keyword the smp architecture would silently drop.

    smp passes keywords it does not name to the encoder, and its own (non-``tu-``)
    encoders ignore them: ``decoder_chanels: [...]`` (a typo) trained the default decoder
    without a word. ``tu-`` (timm) encoders take their own keywords, which timm checks.
    """
    import difflib
    import inspect

    if encoder.startswith(("tu-", "timm-")):
        return
    named = {
        n
        for n, p in inspect.signature(factory).parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"
    }
    named |= SMP_DEPRECATED_KWARGS
    for key in kwargs:
        if key in named:
            continue
        close = difflib.get_close_matches(str(key), sorted(named), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        settable = sorted(named - {"encoder_name", "encoder_weights", "in_channels", "classes"})
        raise ConfigError(
            f"model.kwargs: {key!r} is not an option of {arch!r} with the {encoder!r} encoder"
            f"{hint}; smp would ignore it. Its options: {', '.join(settable)}"
        )


class SmpAdapter(ModelAdapter):
    """Networks of segmentation-models-pytorch: one (B, C, H, W) map of stacked outputs.

    Any smp encoder and any band count; the per-pixel outputs of the task are stacked
    along the channel axis of smp's segmentation head. Pretrained encoder weights are
    never downloaded (``encoder_weights=None`` always; a local file can be loaded
    afterwards, see :func:`geoseg.models.weights.load_local_weights`).
    """

    name = "smp"

    @cached_property
    def architectures(self) -> Mapping[str, Callable[..., nn.Module]]:
        """Smp architectures by geoseg short name."""
        import segmentation_models_pytorch as smp

        return {k: getattr(smp, v) for k, v in SMP_NAMES.items() if hasattr(smp, v)}

    def build(
        self,
        arch: str | Callable[..., nn.Module],
        *,
        in_channels: int,
        outputs: Sequence[OutputSpec],
        encoder: str,
        kwargs: Mapping[str, Any],
        classes: ClassTable | None = None,
    ) -> nn.Module:
        """An smp model with one output channel per stacked per-pixel output channel."""
        factory = self.architectures[arch_key(arch)] if isinstance(arch, str) else arch
        channels = check_pixel_outputs(outputs, self.name)
        if isinstance(arch, str):
            check_smp_kwargs(factory, arch, encoder, kwargs)
        try:
            return factory(
                encoder_name=encoder,
                encoder_weights=None,
                in_channels=in_channels,
                classes=channels,
                **dict(kwargs),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"model: cannot build {arch!r} with encoder {encoder!r}, {in_channels} bands, "
                f"{channels} output channels: {exc}"
            ) from exc

    def size_divisor(self, arch: str, encoder: str, kwargs: Mapping[str, Any]) -> int:
        """``2 ** encoder_depth`` (smp encoders halve the resolution at every stage)."""
        return adapter_size_divisor(self.name, kwargs)
