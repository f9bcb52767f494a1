"""SAM models for labelling: one small interface over three sources of weights.

A :class:`SamModelAdapter` embeds one window image once (:meth:`~SamModelAdapter.embed`)
and decodes any number of prompts against that embedding (:meth:`~SamModelAdapter.predict`).
Weights are only ever read from a file or folder the user names: nothing is downloaded.

Sources (``kind``):

- ``"transformers"``: a folder written by ``SamModel.save_pretrained`` (loaded with
  ``local_files_only=True`` on CPU); resizing and normalization are done here.
- ``"segment-anything"``: a ``.pth`` state dict for Meta's ``segment_anything`` package
  (``sam_model_registry[model_type](checkpoint=None)``, weights loaded with
  ``weights_only=True``).
- ``"sam2"``: a SAM 2 checkpoint for the ``sam2`` package (``build_sam2(config, None)``,
  weights under ``sd["model"]``, loaded with ``weights_only=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.arguments import check_path
from geoseg.errors import CheckpointError, ConfigError, InputFileError

#: SAM's pixel normalization (ImageNet mean / std on the 0-255 scale).
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


@dataclass
class Prediction:
    """One decoded prompt: a boolean mask over the window and SAM's predicted IoU."""

    mask: np.ndarray
    score: float


class SamModelAdapter:
    """Common interface of the SAM sources.

    Attributes:
        image_size: the model's square input size in pixels (1024 for released SAMs);
            windows are at most this big so that no pixel is resampled.
        name: a short description for messages.
    """

    image_size: int = 1024
    name: str = "sam"

    def embed(self, image: np.ndarray) -> None:
        """Compute the image embedding of ``image`` (H, W, 3) uint8, H and W <= image_size."""
        raise NotImplementedError

    def predict(
        self,
        *,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
    ) -> Prediction:
        """Decode one prompt against the current embedding.

        Args:
            points: (N, 2) x, y pixel coordinates in the window (column, row).
            labels: (N,) 1 for a foreground point, 0 for a background point.
            box: (4,) x0, y0, x1, y1 pixel box in the window.
        """
        raise NotImplementedError


class TransformersSam(SamModelAdapter):
    """A ``transformers`` ``SamModel`` folder, run on CPU without ``SamProcessor``."""

    def __init__(self, folder: Path) -> None:
        import torch
        from transformers import SamModel

        try:
            self.model = SamModel.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # corrupt safetensors, bad config.json, ...
            raise CheckpointError(
                f"cannot load the SAM model folder {str(folder)!r}: "
                f"{type(exc).__name__}: {str(exc)[:300]}; it must be a folder written by "
                "transformers SamModel.save_pretrained (config.json + model.safetensors)"
            ) from exc
        self.model.eval()
        self.torch = torch
        self.image_size = _checked_size(
            int(getattr(self.model.config.vision_config, "image_size", 0)), folder
        )
        self.name = f"transformers SAM ({folder.name}, input {self.image_size} px)"
        self._emb: Any = None
        self._hw = (0, 0)

    def embed(self, image: np.ndarray) -> None:
        """Normalize, zero-pad to the model size and embed (see the base class)."""
        torch = self.torch
        h, w = image.shape[:2]
        s = self.image_size
        x = np.zeros((s, s, 3), dtype=np.float32)
        x[:h, :w] = (image.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
        t = torch.from_numpy(x).permute(2, 0, 1)[None]
        with torch.no_grad():
            self._emb = self.model.get_image_embeddings(t)
        self._hw = (h, w)

    def predict(
        self,
        *,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
    ) -> Prediction:
        """Decode one prompt (see the base class)."""
        torch = self.torch
        kw: dict[str, Any] = {}
        if points is not None and len(points):
            kw["input_points"] = torch.tensor(points, dtype=torch.float32)[None, None]
            lab = np.ones(len(points)) if labels is None else labels
            kw["input_labels"] = torch.tensor(lab, dtype=torch.int64)[None, None]
        if box is not None:
            kw["input_boxes"] = torch.tensor(box, dtype=torch.float32)[None, None]
        with torch.no_grad():
            out = self.model(image_embeddings=self._emb, multimask_output=False, **kw)
        low = out.pred_masks[0, 0, :1]  # (1, h/4, w/4) logits
        s = self.image_size
        up = torch.nn.functional.interpolate(
            low[None], size=(s, s), mode="bilinear", align_corners=False
        )[0, 0]
        h, w = self._hw
        mask = (up[:h, :w] > 0).numpy()
        return Prediction(mask=mask, score=float(out.iou_scores[0, 0, 0]))


class _PredictorSam(SamModelAdapter):
    """segment-anything's ``SamPredictor`` or sam2's ``SAM2ImagePredictor``."""

    def __init__(self, predictor: Any, name: str) -> None:
        self.predictor = predictor
        self.name = name
        self.image_size = 1024

    def embed(self, image: np.ndarray) -> None:
        """Let the package's predictor resize, normalize and embed (see the base class)."""
        self.predictor.set_image(np.ascontiguousarray(image))

    def predict(
        self,
        *,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
    ) -> Prediction:
        """Decode one prompt (see the base class)."""
        has_points = points is not None and len(points) > 0
        masks, scores, _ = self.predictor.predict(
            point_coords=points if has_points else None,
            point_labels=(np.ones(len(points)) if labels is None else labels)  # type: ignore[arg-type]
            if has_points
            else None,
            box=box,
            multimask_output=False,
        )
        return Prediction(mask=np.asarray(masks[0]).astype(bool), score=float(scores[0]))


def _checked_size(size: int, where: Path) -> int:
    if not 16 <= size <= 4096:
        raise CheckpointError(
            f"SAM model {str(where)!r} declares an input size of {size} px; expected "
            "16-4096 (1024 for released SAM models)"
        )
    return size


def _load_state_dict(path: Path) -> dict[str, Any]:
    import torch

    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read the SAM checkpoint {str(path)!r}: {type(exc).__name__}: "
            f"{str(exc)[:200]}; is it a complete, uncorrupted .pth/.pt file?"
        ) from exc
    if not isinstance(sd, dict):
        raise CheckpointError(f"SAM checkpoint {str(path)!r} does not hold a state dict")
    return sd


def _load_segment_anything(path: Path, *, model_type: str | None, **_: Any) -> SamModelAdapter:
    try:
        from segment_anything import SamPredictor, sam_model_registry
    except ImportError as exc:
        raise ConfigError(
            f"SAM checkpoint {str(path)!r} needs Meta's segment_anything package: "
            "pip install segment-anything (or pass a transformers SAM folder)"
        ) from exc
    mtype = model_type or next((t for t in ("vit_h", "vit_l", "vit_b") if t in path.name), None)
    if mtype not in sam_model_registry:
        raise ConfigError(
            f"cannot tell the SAM model type of {str(path)!r}; pass --sam-model-type, one "
            f"of {sorted(sam_model_registry)}"
        )
    sd = _load_state_dict(path)
    model = sam_model_registry[mtype](checkpoint=None)
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        raise CheckpointError(
            f"SAM checkpoint {str(path)!r} does not match model type {mtype!r}: {str(exc)[:200]}"
        ) from exc
    model.eval()
    return _PredictorSam(SamPredictor(model), f"segment-anything {mtype} ({path.name})")


def _load_sam2(path: Path, *, sam2_config: str | None, **_: Any) -> SamModelAdapter:
    try:
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor
    except ImportError as exc:
        raise ConfigError(
            f"SAM 2 checkpoint {str(path)!r} needs the sam2 package: pip install "
            "'git+https://github.com/facebookresearch/sam2' (or pass a transformers SAM folder)"
        ) from exc
    if not sam2_config:
        raise ConfigError(
            f"SAM 2 checkpoint {str(path)!r}: pass --sam2-config, the model's config "
            "(e.g. configs/sam2.1/sam2.1_hiera_t.yaml)"
        )
    sd = _load_state_dict(path)
    model = build_sam2(sam2_config, None, device="cpu")
    try:
        model.load_state_dict(sd.get("model", sd))
    except RuntimeError as exc:
        raise CheckpointError(
            f"SAM 2 checkpoint {str(path)!r} does not match {sam2_config!r}: {str(exc)[:200]}"
        ) from exc
    model.eval()
    return _PredictorSam(SAM2ImagePredictor(model), f"SAM 2 ({path.name})")


def _load_transformers(path: Path, **_: Any) -> SamModelAdapter:
    if not path.is_dir():
        raise ConfigError(
            f"{str(path)!r} is not a folder; a transformers SAM model is a folder written "
            "by SamModel.save_pretrained"
        )
    return TransformersSam(path)


#: SAM sources by name (``--sam-kind``).
SAM_KINDS: dict[str, Callable[..., SamModelAdapter]] = {
    "transformers": _load_transformers,
    "segment-anything": _load_segment_anything,
    "sam2": _load_sam2,
}


def load_sam(
    path: str | Path,
    *,
    kind: str = "auto",
    model_type: str | None = None,
    sam2_config: str | None = None,
) -> SamModelAdapter:
    """Load a SAM model from a local file or folder, on CPU; never downloads.

    Args:
        path: a transformers SAM folder, a segment-anything ``.pth`` or a SAM 2 ``.pt``.
        kind: ``"auto"`` (a folder is transformers; a file whose name contains "sam2"
            is SAM 2; other files segment-anything) or one of :data:`SAM_KINDS`.
        model_type: segment-anything model type (``vit_b``, ``vit_l``, ``vit_h``);
            default guessed from the file name.
        sam2_config: SAM 2 model config name (``sam2`` package).

    Raises:
        InputFileError: the path does not exist.
        CheckpointError: the checkpoint is corrupt or does not match the model.
        ConfigError: unknown kind, or the package the checkpoint needs is not installed.
    """
    kind = check_sam_options(path, kind=kind, model_type=model_type)
    return SAM_KINDS[kind](Path(path), model_type=model_type, sam2_config=sam2_config)


#: Model types of Meta's ``segment_anything`` (``sam_model_registry``'s keys).
SAM_MODEL_TYPES = ("default", "vit_b", "vit_h", "vit_l")


def check_sam_options(
    path: str | Path, *, kind: str = "auto", model_type: str | None = None
) -> str:
    """Check what :func:`load_sam` is given without loading anything; returns the kind.

    A SAM 2 config is checked by the loader (after the ``sam2`` package is found).

    Raises:
        InputFileError: the path does not exist.
        ConfigError: unknown kind or segment-anything model type.
    """
    p = Path(check_path(path, "sam"))
    if not isinstance(kind, str):
        raise ConfigError(f"kind: expected a name, one of {['auto', *sorted(SAM_KINDS)]}, got "
                          f"{kind!r}")  # fmt: skip
    if not p.exists():
        raise InputFileError(
            f"SAM checkpoint {str(p)!r} does not exist; geoseg never downloads weights: "
            "give a local transformers SAM folder or a .pth/.pt file"
        )
    if kind == "auto":
        kind = (
            "transformers" if p.is_dir() else ("sam2" if "sam2" in p.name else "segment-anything")
        )
    if kind not in SAM_KINDS:
        raise ConfigError(f"unknown SAM kind {kind!r}; valid kinds are {sorted(SAM_KINDS)}")
    if kind == "segment-anything" and model_type is not None and model_type not in SAM_MODEL_TYPES:
        raise ConfigError(
            f"--sam-model-type {model_type!r} is not a segment-anything model type; valid "
            f"types are {list(SAM_MODEL_TYPES)}"
        )
    return kind
