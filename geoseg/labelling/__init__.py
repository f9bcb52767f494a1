"""SAM-assisted labelling: prompts (points, boxes) over imagery -> class polygons."""

from geoseg.labelling.automatic import automatic_masks
from geoseg.labelling.label import label_image, write_labels
from geoseg.labelling.prompts import group_windows, read_prompts
from geoseg.labelling.sam import SAM_KINDS, SamModelAdapter, load_sam

__all__ = [
    "SAM_KINDS",
    "SamModelAdapter",
    "automatic_masks",
    "group_windows",
    "label_image",
    "load_sam",
    "read_prompts",
    "write_labels",
]
