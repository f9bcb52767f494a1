"""The config machinery: YAML mappings onto dataclasses, with typo-proof keys.

One config system for the whole package: each section of a YAML file maps onto a
dataclass, and :func:`from_mapping` builds it, naming any unknown key together with the
valid keys. Command-line overrides use dotted keys, ``training.max_epochs=3``, whose
values are parsed as YAML (so ``3`` is an int, ``null`` is None, ``[1, 2]`` is a list).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from geoseg.arguments import check_path, check_texts
from geoseg.errors import ConfigError, InputFileError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with clear errors for missing or broken files."""
    p = Path(check_path(path, "config file"))
    if not p.is_file():
        raise InputFileError(f"config file {str(p)!r} does not exist")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {str(p)!r} is {p.stat().st_size} bytes; a config is text of at "
            f"most {MAX_CONFIG_BYTES} bytes"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {str(p)!r} is not UTF-8 text (a binary file?): {exc}"
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError(
            f"config file {str(p)!r} holds a value that cannot be read "
            f"({str(exc).split(';')[0]}); a config's numbers are small: fix that value"
        ) from exc
    except RecursionError as exc:
        raise ConfigError(f"config file {str(p)!r} is nested too deeply") from exc
    if data is None:
        raise ConfigError(
            f"config file {str(p)!r} is empty; it needs at least a data: section (see the "
            "configs/ folder for examples)"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    check_size(data, where=f"config file {str(p)!r}")
    return data


#: Largest config file read (bytes).
MAX_CONFIG_BYTES = 1_000_000
#: Largest config once YAML aliases are expanded (values counted; a "billion laughs"
#: alias bomb is a few lines that expand to billions).
MAX_CONFIG_NODES = 200_000


def check_size(data: Any, *, where: str, limit: int = MAX_CONFIG_NODES) -> None:
    """ConfigError when ``data`` expands to more than ``limit`` values (aliases counted)."""
    count = 0
    stack = [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            raise ConfigError(
                f"{where} expands to more than {limit} values (YAML aliases referencing "
                "each other?); a config is small: write the values out"
            )
        if isinstance(node, Mapping):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied.

    Values are parsed as YAML. Intermediate mappings are created as needed; whether the
    final key is valid is checked later by :func:`from_mapping`.
    """
    import copy

    out = copy.deepcopy(data)
    for item in check_texts(overrides, "overrides"):
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} is not KEY=VALUE (for example training.max_epochs=3)"
            )
        key, raw = item.split("=", 1)
        parts = [k for k in key.strip().split(".") if k]
        if not parts:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise ConfigError(
                f"override {key!r}: the value cannot be read ({str(exc).split(';')[0]})"
            ) from exc
        check_size(value, where=f"override {key!r}")
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def check_class_ids(value: Any, where: str) -> None:
    """ConfigError when a class id of a class table is a float or a bool.

    Ids are whole numbers (``id: 1``); a digit string (``"1"``, as JSON object keys
    are) stays accepted. ``1.5`` or ``true`` would silently become ``1``.
    """
    if isinstance(value, Mapping):
        ids = [(f"{where}[{k!r}]", k) for k in value]
    elif isinstance(value, (list, tuple)):
        ids = [
            (f"{where}[{i}].id", e["id"])
            for i, e in enumerate(value)
            if isinstance(e, Mapping) and "id" in e
        ]
    else:
        return
    for key, ident in ids:
        if isinstance(ident, (bool, float)):
            raise ConfigError(
                f"{key}: class id {ident!r} is not a whole number; give an integer such "
                "as 1 (the value of those pixels in the class raster)"
            )


def unknown_key_error(key: str, valid: Iterable[str], where: str) -> ConfigError:
    """A ConfigError naming an unknown key, the closest valid key and all valid keys."""
    valid = sorted(valid)
    hint = difflib.get_close_matches(key, valid, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(f"{where}: unknown key {key!r}{did_you_mean}; valid keys are {valid}")


def check_rules(where: str, obj: Any, rules: Mapping[str, tuple[bool, str]]) -> None:
    """ConfigError for the first key whose check failed (``rules``: key -> (ok, rule)).

    The message is ``"<where>.<key>: <value> is not valid; it must be <rule>"``.
    """
    for key, (ok, rule) in rules.items():
        if not ok:
            raise ConfigError(
                f"{where}.{key}: {getattr(obj, key)!r} is not valid; it must be {rule}"
            )


#: A number in scientific notation without a dot (``1e-3``, ``5E+4``): YAML 1.1 text.
SCIENTIFIC = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)[eE][-+]?\d+")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Light type check/coercion for config values (ints to floats, lists to tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and SCIENTIFIC.fullmatch(value.strip()):
        # PyYAML reads YAML 1.1, where ``1e-3`` (no dot) is a string; YAML 1.2 and every
        # user mean the number
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(
                f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}"
            )
        return value
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        return list(value) if origin is list else tuple(value)
    if origin in (list, tuple):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if origin is dict and not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return from_mapping(tp, value, where)  # type: ignore[arg-type]
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ConfigError.

    Args:
        cls: a dataclass type whose field names are the valid keys.
        data: the mapping read from YAML (None means all defaults).
        where: the config path shown in error messages, e.g. ``"training"``.
    """
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise unknown_key_error(str(key), fields, where)
        kwargs[key] = _check_type(value, hints.get(key, Any), f"{where}.{key}")
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    return cls(**kwargs)


def to_mapping(obj: Any) -> Any:
    """Dataclasses (nested) to plain YAML/JSON-ready data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_mapping(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj
