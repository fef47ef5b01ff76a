"""TOML tables into the run file's frozen dataclasses: type checks and coercion by annotation.

``_build`` walks a dataclass's fields, refuses unknown keys and checks each value against its
annotation (``Literal``, unions with ``None``, lists, bool, int, float, str, nested
dataclasses), so a wrong value fails with the file and the key in the message. The ranges of
the values are checked afterwards, in :mod:`temflow.pipeline.config`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

_MAX_INT = 2**31 - 1  # beyond this an integer is a typo or a hostile file rather than a setting


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where} must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list; got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer; got {value!r}")
        if abs(value) > _MAX_INT:
            raise ValueError(f"{where} must be an integer of at most {_MAX_INT}; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number; got {value!r}")
        # nan and inf are valid TOML but pass every range check (nan < 0 is False)
        if not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string; got {value!r}")
        if "\x00" in value:
            raise ValueError(f"{where} must not contain a NUL character (\\x00); got {value!r}")
        return value
    raise ValueError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: Any, data: dict[str, Any], source: str, section: str, skip: set[str] = frozenset()) -> Any:  # type: ignore[assignment]
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)} - set(skip)
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"[{section}]" if section else "the top level"
        raise ValueError(f"{source}: unknown key {unknown[0]!r} in {where}; known keys: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        target = tp if dataclasses.is_dataclass(tp) else (inner[0] if inner else None)
        key = f"{section}.{name}" if section else name
        if target is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{source}: [{key}] must be a table; got {value!r}")
            kwargs[name] = _build(target, value, source, key)
        else:
            kwargs[name] = _coerce(value, tp, f"{source}: {key}")
    return cls(**kwargs)
