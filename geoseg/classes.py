"""Class tables: the id, name and colour of every class a model predicts.

A :class:`ClassTable` travels with datasets, checkpoints and output rasters so that every
output carries its class names and colours (GeoTIFF colour table, vector attributes,
legends). Class ids need not be contiguous: model output channel ``i`` is ``classes[i]``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from geoseg.arguments import check_int
from geoseg.errors import ConfigError, DataError

#: Mask value for pixels excluded from loss and metrics (no-data, ignored labels).
#: Masks hold class *indices* (0..K-1, model output channels), never raw class ids.
IGNORE_INDEX = -100

#: GeoTIFF tag holding a class table as JSON on every class map geoseg writes.
CLASSES_TAG = "GEOSEG_CLASSES"

#: Largest class id: geoseg writes class maps as uint8 or uint16 (with a colour table).
MAX_CLASS_ID = 65535

# A qualitative palette (Tableau 10) used when a class has no colour of its own.
DEFAULT_COLORS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


def _parse_color(value: Any, where: str) -> str:
    """Return a ``#rrggbb`` colour from a hex string or an RGB(A) sequence."""
    if isinstance(value, str):
        text = value.strip().lower()
        if not text.startswith("#"):
            text = "#" + text
        if len(text) == 7:
            try:
                int(text[1:], 16)
            except ValueError:
                pass
            else:
                return text
    elif isinstance(value, Sequence) and len(value) in (3, 4):
        try:
            rgb = [int(v) for v in value[:3]]
        except (TypeError, ValueError):
            rgb = []
        if len(rgb) == 3 and all(0 <= v <= 255 for v in rgb):
            return "#{:02x}{:02x}{:02x}".format(*rgb)
    raise ConfigError(f"{where}: colour {value!r} is not '#rrggbb' or [r, g, b] with values 0-255")


@dataclass(frozen=True)
class ClassInfo:
    """One class: its raster value, a human name, a display colour, and whether it is a thing.

    ``thing`` classes are countable objects (buildings, cars, trees as individuals):
    instance and panoptic tasks give each of their objects its own id. Other classes are
    *stuff* (land cover: water, forest, road surface).
    """

    id: int
    name: str
    color: str
    thing: bool = False

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The colour as an (r, g, b) tuple of 0-255 integers."""
        c = self.color.lstrip("#")
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


class ClassTable(Sequence[ClassInfo]):
    """An ordered table of classes; position ``i`` is model output channel ``i``.

    Args:
        classes: the classes in model-output order; ids must be unique non-negative ints.
    """

    def __init__(self, classes: Iterable[ClassInfo]) -> None:
        self._classes = tuple(classes)
        if not self._classes:
            raise ConfigError("classes: the class table is empty; list at least one class")
        ids = [c.id for c in self._classes]
        dup = sorted(i for i, n in Counter(ids).items() if n > 1)
        if dup:
            raise ConfigError(f"classes: duplicate class ids {dup[:20]}; each id must be unique")
        if min(ids) < 0 or max(ids) > MAX_CLASS_ID:
            bad = min(ids) if min(ids) < 0 else max(ids)
            raise ConfigError(
                f"classes: class ids must be 0..{MAX_CLASS_ID} (a uint16 class map), got {bad}; "
                "renumber the classes"
            )
        names = [c.name for c in self._classes]
        dup_names = sorted(n for n, k in Counter(names).items() if k > 1)
        if dup_names:
            raise ConfigError(
                f"classes: duplicate class names {dup_names[:20]}; each class needs its own name "
                "(reports and outputs are keyed by name)"
            )
        self._index = {c.id: i for i, c in enumerate(self._classes)}

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, value: Any, where: str = "classes") -> ClassTable:
        """Build a table from config data.

        Accepts a list of mappings ``{id, name, color}`` (``color`` optional), a mapping
        ``{id: name}`` or ``{id: {name, color}}``, or a list of names (ids 0, 1, ...).
        """
        if isinstance(value, ClassTable):
            return value
        items: list[tuple[Any, Any]] = []
        if isinstance(value, Mapping):
            items = list(value.items())
        elif isinstance(value, Sequence) and not isinstance(value, str):
            for i, entry in enumerate(value):
                if isinstance(entry, str):
                    items.append((i, entry))
                elif isinstance(entry, Mapping):
                    unknown = set(entry) - {"id", "name", "color", "colour", "thing"}
                    if unknown:
                        raise ConfigError(
                            f"{where}[{i}]: unknown key(s) {sorted(unknown)}; "
                            "valid keys are ['color', 'id', 'name', 'thing']"
                        )
                    if "id" not in entry:
                        raise ConfigError(f"{where}[{i}]: missing 'id'")
                    items.append((entry["id"], dict(entry)))
                else:
                    raise ConfigError(f"{where}[{i}]: expected a name or a mapping, got {entry!r}")
        else:
            raise ConfigError(f"{where}: expected a list or mapping of classes, got {value!r}")
        out = []
        for k, (cid, spec) in enumerate(items):
            try:
                ident = int(cid)
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(f"{where}: class id {cid!r} is not an integer") from None
            thing = False
            if isinstance(spec, Mapping):
                name = str(spec.get("name", f"class_{ident}"))
                raw_color = spec.get("color", spec.get("colour"))
                thing = spec.get("thing", False)
                if not isinstance(thing, bool):
                    raise ConfigError(
                        f"{where}[{name}]: thing must be true or false, got {thing!r}"
                    )
            else:
                name, raw_color = str(spec), None
            color = (
                DEFAULT_COLORS[k % len(DEFAULT_COLORS)]
                if raw_color is None
                else _parse_color(raw_color, f"{where}[{name}]")
            )
            out.append(ClassInfo(ident, name, color, thing))
        return cls(out)

    def to_list(self) -> list[dict[str, Any]]:
        """The table as JSON-ready ``[{id, name, color[, thing]}, ...]``."""
        return [
            {"id": c.id, "name": c.name, "color": c.color, **({"thing": True} if c.thing else {})}
            for c in self._classes
        ]

    def to_json(self) -> str:
        """The table as a JSON string (stored in raster tags and checkpoints)."""
        return json.dumps(self.to_list())

    @classmethod
    def from_json(cls, text: str) -> ClassTable:
        """Inverse of :meth:`to_json`."""
        return cls.from_config(json.loads(text))

    # -- Sequence protocol --------------------------------------------------------------
    def __getitem__(self, index: Any) -> Any:
        return self._classes[index]

    def __len__(self) -> int:
        return len(self._classes)

    def __iter__(self) -> Iterator[ClassInfo]:
        return iter(self._classes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassTable) and self._classes == other._classes

    def __hash__(self) -> int:
        return hash(self._classes)

    def __repr__(self) -> str:
        inner = ", ".join(f"{c.id}:{c.name}" for c in self._classes)
        return f"ClassTable({inner})"

    # -- lookups ------------------------------------------------------------------------
    @property
    def ids(self) -> list[int]:
        """Class ids in model-output order."""
        return [c.id for c in self._classes]

    @property
    def names(self) -> list[str]:
        """Class names in model-output order."""
        return [c.name for c in self._classes]

    @property
    def things(self) -> list[int]:
        """Ids of the thing classes (countable objects), in model-output order."""
        return [c.id for c in self._classes if c.thing]

    def has_id(self, class_id: int) -> bool:
        """True when ``class_id`` is one of the table's ids (constant time)."""
        return int(class_id) in self._index

    def index_of(self, class_id: int) -> int:
        """Model-output channel of ``class_id``; KeyError-free: raises ConfigError."""
        try:
            return self._index[int(class_id)]
        except KeyError:
            shown = self.ids[:50]
            more = f" and {len(self) - 50} more" if len(self) > 50 else ""
            raise ConfigError(
                f"class id {class_id} is not in the class table (ids: {shown}{more})"
            ) from None

    def by_id(self, class_id: int) -> ClassInfo:
        """The class whose raster value is ``class_id``."""
        return self._classes[self.index_of(class_id)]

    def nodata_value(self) -> int:
        """A raster value that is no class: 0 if free, else 255 (or 65535 past uint8)."""
        ids = set(self.ids)
        for candidate in (0, 255, 65535):
            if candidate not in ids:
                return candidate
        raise ConfigError("classes: no free value for no-data among 0, 255, 65535")

    def dtype(self) -> str:
        """Smallest unsigned raster dtype holding every id and the no-data value."""
        top = max([*self.ids, self.nodata_value()])
        return "uint8" if top <= 255 else "uint16"

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A rasterio colour map ``{value: (r, g, b, a)}``; no-data is transparent."""
        cmap = {c.id: (*c.rgb, 255) for c in self._classes}
        cmap[self.nodata_value()] = (0, 0, 0, 0)
        return cmap


def write_class_table(dst: Any, table: ClassTable, band: int = 1) -> None:
    """Store ``table`` on an open, writable rasterio dataset.

    Writes the colour table (QGIS/GDAL show it), the JSON tag :data:`CLASSES_TAG` (names
    and colours round-trip exactly) and GDAL category names (``band.GetCategoryNames``).
    """
    dst.write_colormap(band, table.colormap())
    dst.update_tags(**{CLASSES_TAG: table.to_json()})
    dst.set_band_description(band, "class")


def read_class_table(src: Any, band: int = 1) -> ClassTable | None:
    """The class table of an open rasterio dataset, or None if it has none.

    Reads the :data:`CLASSES_TAG` tag written by :func:`write_class_table`.

    Raises:
        DataError: the tag is not a valid class table (bad JSON, wrong shape, bad ids);
            the message names the file and the tag.
    """
    text = src.tags().get(CLASSES_TAG)
    if not text:
        return None
    try:
        return ClassTable.from_json(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, ConfigError
        detail = str(exc).removeprefix("classes: ")
        raise DataError(
            f"{getattr(src, 'name', 'raster')!r}: its {CLASSES_TAG} tag is not a valid class "
            f"table ({detail}); fix the tag or remove it, e.g. "
            f"`gdal_edit.py -mo {CLASSES_TAG}= FILE`"
        ) from None


def parse_classes(value: Any) -> tuple[list[int] | None, dict[int, str]]:
    """Parse a ``classes`` option into (ids to keep or None for all, names by id).

    Accepts None, a ClassTable, a sequence of ids, a mapping ``{id: name}``, or a string
    ``"1,5,6"`` / ``"1=developed,5=forest"`` / ``"developed,forest"`` (names are matched
    against the class table later).
    """
    if value is None:
        return None, {}
    keep, names = _parse_classes(value)
    if not keep:
        raise ConfigError(
            f"classes: {value!r} names no class; give class ids (classes=[1, 5]), or leave "
            "classes out (None) for all classes"
        )
    return keep, names


def _parse_classes(value: Any) -> tuple[list[int], dict[int, str]]:
    if isinstance(value, ClassTable):
        return value.ids, {c.id: c.name for c in value}
    if isinstance(value, Mapping):
        names = {_class_id(k, f"classes[{k!r}]"): str(v) for k, v in value.items()}
        return sorted(names), names
    if isinstance(value, str):
        items = [s.strip() for s in value.split(",") if s.strip()]
        keep: list[int] = []
        names = {}
        for item in items:
            key, _, name = item.partition("=")
            try:
                cid = int(key)
            except ValueError:
                raise ConfigError(
                    f"classes: {item!r} is not a class id or 'id=name' (example: '1=developed,5')"
                ) from None
            keep.append(cid)
            if name:
                names[cid] = name.strip()
        return keep, names
    if isinstance(value, Iterable):
        return [_class_id(v, f"classes[{i}]") for i, v in enumerate(value)], {}
    raise ConfigError(f"classes: expected ids, a mapping id->name or a string, got {value!r}")


def _class_id(value: Any, where: str) -> int:
    """A class id given to ``classes``: a whole number or a digit string (``"5"``)."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(
                f"{where}: {value!r} is not a class id; give the ids of the classes, e.g. "
                "classes=[1, 5], or names by id, e.g. classes={1: 'water', 5: 'forest'}"
            ) from None
    return check_int(value, where, unit="a class id")


def check_map_classes(
    keep: Iterable[int] | None,
    names: Mapping[int, str],
    path: str | os.PathLike[str],
    band: int = 1,
) -> None:
    """The class ids a ``classes`` option names are classes of the map, if it says which.

    A map that carries its class table (the :data:`CLASSES_TAG` tag that geoseg writes)
    knows its classes: an id that is not one of them is a typo or the wrong map, and
    would otherwise give an empty result. A map without a table is not checked.

    Raises:
        ConfigError: naming the ids and the map's classes.
    """
    import rasterio

    ids = list(dict.fromkeys([*(keep or ()), *names]))
    if not ids:
        return
    with rasterio.open(path) as src:
        table = read_class_table(src, band)
    if table is None:
        return
    unknown = [i for i in ids if not table.has_id(i)]
    if unknown:
        valid = ", ".join(f"{c.id} ({c.name})" for c in table)
        verb = "is not a class" if len(unknown) == 1 else "are not classes"
        raise ConfigError(
            f"classes: {unknown[:10]} {verb} of {str(path)!r}; its classes are {valid}"
        )


def class_table_for(path: str | os.PathLike[str], *, band: int = 1) -> ClassTable | None:
    """The class table of a class map: the GEOSEG_CLASSES tag, else its colour table."""
    import rasterio

    with rasterio.open(path) as src:
        table = read_class_table(src, band)
        if table is not None:
            return table
        try:
            cmap = src.colormap(band)
        except ValueError:
            return None
        nodata = src.nodata
        infos = [
            ClassInfo(int(k), f"class_{k}", "#{:02x}{:02x}{:02x}".format(*rgba[:3]))
            for k, rgba in sorted(cmap.items())
            if rgba[3] > 0 and (nodata is None or k != nodata) and any(rgba[:3])
        ]
        return ClassTable(infos) if 0 < len(infos) <= 64 else None


def names_for(table: ClassTable | None, overrides: Mapping[int, str]) -> Callable[[int], str]:
    """A function giving the name of a class id (overrides first, then the table)."""
    names = {c.id: c.name for c in table} if table is not None else {}
    names.update(overrides)
    return lambda cid: names.get(int(cid), f"class_{int(cid)}")


def class_color(table: ClassTable | None, cid: int, k: int) -> str:
    """The colour of class ``cid`` (table colour, else the default palette by position)."""
    if table is not None and table.has_id(cid):
        return table.by_id(cid).color
    return DEFAULT_COLORS[k % len(DEFAULT_COLORS)]
