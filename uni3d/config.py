"""One loader for every task's settings: a typed, frozen dataclass built from a (possibly nested, possibly
partial) mapping, read from YAML or JSON (a run's saved ``config.json`` too). Unknown keys and wrong types are
one-line errors everywhere."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from uni3d.errors import UsageError

T = TypeVar("T")


def build_config(kind: type[T], data: dict[str, Any], where: str) -> T:
    """Instantiate the dataclass ``kind`` from ``data``, recursing into nested dataclasses and tuples.

    An unknown key, or a value of the wrong type, is a one-line :class:`UsageError` naming the setting and
    ``where`` it was given. A partial nested mapping (``field: {blob_radius: 0.2}``) changes only the settings
    it names: the rest keep the values of that field's own default (for text to 3D's ``field``, the small grid
    it defaults to, not :class:`~uni3d.scene.field.FieldConfig`'s)."""
    if not isinstance(data, dict):
        raise UsageError(f"{where} settings must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(kind)
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UsageError(f"unknown {where} setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    values = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            default = _default(fields[key])
            base = dataclasses.asdict(default) if dataclasses.is_dataclass(default) else {}
            value = build_config(hint, _merged(base, value), f"{where}.{key}")
        elif _is_tuple(hint) and isinstance(value, list):
            value = tuple(value)
        values[key] = _checked(hint, value, f"{where} setting {key!r}")
    try:
        return kind(**values)
    except TypeError as err:
        raise UsageError(f"bad {where} settings: {err}") from None


_SCALARS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a text"}


def _checked(hint: Any, value: Any, name: str) -> Any:
    """``value`` if it has the scalar type ``hint`` asks for (an integer stands for a float and becomes one;
    ``None`` where the hint allows it; tuples element by element), else a one-line error naming the setting.
    Other hints (nested settings) pass unchecked: their own dataclass checks them."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    kinds = [k for k in options if k in _SCALARS]
    if not kinds:
        tuple_hint = next((k for k in options if typing.get_origin(k) is tuple), None)
        if tuple_hint is None or not isinstance(value, tuple):
            return value
        args = typing.get_args(tuple_hint)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[float, ...]
            args = (args[0],) * len(value)
        if len(args) != len(value):
            raise UsageError(f"{name} must hold {len(args)} values, got {list(value)!r}")
        return tuple(_checked(a, v, name) for a, v in zip(args, value, strict=True))
    for kind in kinds:
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
    raise UsageError(f"{name} must be {' or '.join(_SCALARS[k] for k in kinds)}, got {value!r}")


def _default(field: dataclasses.Field[Any]) -> Any:
    """A dataclass field's default value (``None`` when it has none)."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` laid over it, nested mappings merged key by key."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _is_tuple(hint: Any) -> bool:
    if typing.get_origin(hint) is tuple:
        return True
    if isinstance(hint, types.UnionType):
        return any(_is_tuple(h) for h in typing.get_args(hint))
    return False


def read_config_file(path: Path, where: str) -> dict[str, Any]:
    """The settings mapping in a YAML or JSON file (then overridden by flags and given to :func:`build_config`)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UsageError(f"cannot read {where} config {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{where} config {path} must hold a mapping of settings")
    return data
