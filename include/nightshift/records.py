"""Typed records that travel between tasks as JSON (XCom): dataclasses of dates, numbers and strings."""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

if TYPE_CHECKING:
    from collections.abc import Mapping

    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def to_json(record: Any) -> dict[str, Any]:
    """The dataclass ``record`` as a JSON-ready dict (dates as ``YYYY-MM-DD``)."""
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in asdict(record).items()}


def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
    """A ``cls`` from what :func:`to_json` wrote, each value checked into its field's type.

    Raises:
        KeyError, ValueError, TypeError: a field is missing or does not convert (XCom is untrusted input).
    """
    hints = get_type_hints(cls)
    values = {}
    for f in fields(cls):
        kind, value = hints[f.name], data[f.name]
        if kind is date:
            value = date.fromisoformat(str(value))
        elif kind in (int, float, str):
            value = kind(value)
        values[f.name] = value
    return cls(**values)


class JsonRecord:
    """A dataclass that travels through XCom: ``as_dict()`` out, ``from_dict()`` back in, typed."""

    def as_dict(self: DataclassInstance) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        return from_json(cls, data)
